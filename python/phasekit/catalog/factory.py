"""``open_catalog``: a catalog location (path or URL) to a :class:`Catalog`."""

from __future__ import annotations

import os
from pathlib import Path

from phasekit.catalog.base import Catalog
from phasekit.catalog.uris import parse_location


def open_catalog(
    url_or_path: str | os.PathLike[str],
    *,
    results_dir: str | os.PathLike[str] | None = None,
    create: bool = True,
) -> Catalog:
    """Open (and with ``create`` make) the catalog at ``url_or_path``.

    - a folder, or a path without a ``.sqlite``/``.sqlite3``/``.db`` suffix: the results
      folder; the catalog is ``<folder>/catalog.sqlite``
    - a file path or ``sqlite:///PATH``: that SQLite file (its folder is the results folder);
      ``sqlite:///PATH?synchronous=full&timeout=60`` sets SQLite options
    - ``postgresql://...`` (or ``postgres://``): PostgreSQL through psycopg 3;
      ``results_dir`` says which folder :meth:`Catalog.doctor` scans

    Any other scheme raises :class:`phasekit.errors.CatalogError` naming the allowed ones.
    """
    location = parse_location(url_or_path, results_dir)
    if location.dialect == "postgresql":
        from phasekit.catalog.postgres import PostgresCatalog

        return PostgresCatalog(location, create=create)
    from phasekit.catalog.sqlite import sqlite_catalog

    return sqlite_catalog(location, create=create)


def default_location(results_dir: str | os.PathLike[str] | None = None) -> str:
    """The catalog to use when none is given: ``$PHASEKIT_CATALOG``, else the results folder
    (``results_dir``, ``$PHASEKIT_RESULTS_DIR`` or ``./results``)."""
    env = os.environ.get("PHASEKIT_CATALOG")
    if env:
        return env
    folder = results_dir or os.environ.get("PHASEKIT_RESULTS_DIR") or "results"
    return str(Path(folder))
