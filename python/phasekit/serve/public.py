"""What remote clients are sent, without the server's filesystem paths.

The CLI prints an error in full (the paths help whoever runs it). A remote client of
``phasekit serve`` gets the same text, and every run's config, item's metadata and
config difference (:func:`public_value`), with every absolute path of the server
rewritten (:func:`public_text`): a path under the results folder becomes its path relative to that
folder (``run-1/optimize/x.arrow``: the run and item it names), the results folder
itself and the catalog file become ``<results>`` and ``<catalog>``, and any other
absolute path (a key file, a temporary folder) becomes ``<server path>``. ``file://``
and ``sqlite://`` URLs are rewritten the same way; object storage URLs (``s3://``) and
database URLs (their password already replaced by ``***``) name no server file and stay.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_LABEL = "<results>"
CATALOG_LABEL = "<catalog>"
OTHER_LABEL = "<server path>"
LOCAL_SCHEMES = ("file", "sqlite")
"""URL schemes whose path part is a path on the server (rewritten like a bare path)."""

_TOKEN = re.compile(r"(?<![\w/.~-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:)?(?P<path>/[^\s'\"`<>]+)")
_TRAILING = ".,;:)]}!?"


@dataclass(frozen=True)
class ServerPaths:
    """The server's own places, each with the name a remote client sees instead."""

    results_dir: Path | None
    catalog_file: Path | None

    def roots(self) -> list[tuple[str, str]]:
        """``(absolute path text, label)``, longest first, each spelling of a place (as
        given and with symbolic links resolved)."""
        found: dict[str, str] = {}
        for place, label in ((self.catalog_file, CATALOG_LABEL), (self.results_dir, RESULTS_LABEL)):
            if place is None:
                continue
            for spelling in (os.path.abspath(place), os.path.realpath(place)):
                found.setdefault(spelling.rstrip("/") or "/", label)
        return sorted(found.items(), key=lambda pair: -len(pair[0]))


def _rewrite(path: str, paths: ServerPaths) -> str:
    normal = "/" + path.lstrip("/")
    for root, label in paths.roots():
        if normal == root:
            return label
        if label == RESULTS_LABEL and normal.startswith(root + "/"):
            return normal[len(root) + 1 :]
    return OTHER_LABEL


def public_text(text: str, paths: ServerPaths) -> str:
    """``text`` with every absolute server path rewritten (see the module docstring)."""

    def replace(match: re.Match[str]) -> str:
        scheme, path = match.group("scheme"), match.group("path")
        tail = ""
        while path and path[-1] in _TRAILING:
            path, tail = path[:-1], path[-1] + tail
        if scheme is not None:
            name = scheme[:-1].lower()
            if name not in LOCAL_SCHEMES:
                return match.group(0)
        if len(path) < 2 or "{" in path:  # "/items/{id}/file": an API route, not a file
            return match.group(0)
        return _rewrite(path, paths) + tail

    return _TOKEN.sub(replace, text)


def public_value(value: Any, paths: ServerPaths) -> Any:
    """A JSON value (a run's config, an item's metadata) with :func:`public_text` applied
    to every string in it; keys, numbers and the shape stay."""
    if isinstance(value, str):
        return public_text(value, paths)
    if isinstance(value, dict):
        return {key: public_value(item, paths) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_value(item, paths) for item in value]
    return value


def server_paths(results_dir: Path | None, dialect: str, target: str) -> ServerPaths:
    """The places of a server over a catalog (``target``: its SQLite file, or a database
    URL, which names no file)."""
    return ServerPaths(results_dir, Path(target) if dialect == "sqlite" else None)


__all__ = [
    "CATALOG_LABEL",
    "OTHER_LABEL",
    "RESULTS_LABEL",
    "ServerPaths",
    "public_text",
    "public_value",
    "server_paths",
]
