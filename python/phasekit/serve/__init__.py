"""``phasekit serve``: an HTTP API (FastAPI on uvicorn) over a catalog and its results.

:func:`create_app` builds the application for an open catalog; :func:`serve` runs it,
bound to 127.0.0.1 unless the catalog holds an active API token. See docs/serve.md.
FastAPI, uvicorn, uvloop and httptools come with the ``serve`` extra (``pip install
'phasekit[serve]'``). :func:`phasekit.serve.client.read_table` reads an item's table from
a running server (no extra needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phasekit.serve.auth import check_bind, is_loopback
from phasekit.serve.launch import DEFAULT_HOST, DEFAULT_PORT, open_served_catalog, serve

if TYPE_CHECKING:
    from fastapi import FastAPI

    from phasekit.catalog import Catalog
    from phasekit.crypt import Encryption


def create_app(catalog: Catalog, encryption: Encryption | None = None) -> FastAPI:
    """The FastAPI application serving ``catalog`` (see :mod:`phasekit.serve.app`)."""
    from phasekit._optional import require

    require("fastapi", feature="phasekit serve")
    from phasekit.serve.app import create_app as build

    return build(catalog, encryption)


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "check_bind",
    "create_app",
    "is_loopback",
    "open_served_catalog",
    "serve",
]
