"""Run the API on uvicorn: open the catalog, apply the loopback rule, serve until stopped."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from phasekit._optional import require
from phasekit.catalog import Catalog, open_catalog
from phasekit.crypt import Encryption
from phasekit.errors import InvalidArgument
from phasekit.serve.auth import check_bind

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

log = logging.getLogger("phasekit.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750


def open_served_catalog(
    results_dir: str | os.PathLike[str] | None, catalog_url: str | None
) -> Catalog:
    """The catalog of a results folder, or at ``catalog_url`` with ``results_dir`` as the
    root its files must lie under (a PostgreSQL catalog needs one to serve files)."""
    if results_dir is None and catalog_url is None:
        raise InvalidArgument(
            "phasekit serve needs a results folder (RESULTS_DIR) or a catalog (--catalog URL)"
        )
    if results_dir is not None and not Path(results_dir).is_dir():
        raise InvalidArgument(f"results folder {os.fspath(results_dir)!r} is not a folder")
    location = catalog_url if catalog_url is not None else os.fspath(results_dir or "")
    return open_catalog(location, results_dir=results_dir, create=False)


def check_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise InvalidArgument(f"port {port} is not valid; allowed: 0 to 65535 (0: any free port)")
    return port


def serve(
    catalog: Catalog,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    encryption: Encryption | None = None,
) -> None:
    """Serve ``catalog`` on ``host``:``port`` until interrupted (blocks); ``encryption``
    decrypts encrypted items."""
    require("fastapi", feature="phasekit serve")
    uvicorn = require("uvicorn", feature="phasekit serve")
    check_bind(catalog, host)
    check_port(port)
    from phasekit.serve.app import create_app

    app = create_app(catalog, encryption)
    log.warning("serving catalog %s on http://%s:%d", catalog.url, host, port)
    uvicorn.Server(server_config(app, host, port)).run()


def server_config(app: FastAPI, host: str, port: int, parser: str | None = None) -> uvicorn.Config:
    """The ``uvicorn.Config`` :func:`serve` runs ``app`` with: uvloop's event loop and the
    httptools parser when they are installed (uvicorn's ``auto``), else asyncio and h11;
    a request the parser refuses gets a JSON error (:mod:`phasekit.serve.protocol`).
    ``parser``: ``httptools`` or ``h11`` instead of the installed choice."""
    import uvicorn

    from phasekit.serve.protocol import http_protocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http_protocol(parser),
        log_level="warning",
        access_log=False,
    )
