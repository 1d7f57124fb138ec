"""Catalog locations (a path, ``sqlite:///...``, ``postgresql://...``) and data references.

A data reference is the URI a store returned: ``file:///abs/path`` for files and folders
on disk, ``memory://run/phase/key`` for values held by a running process and
``stream://...`` for streams, and ``s3://bucket/key`` (or ``fsspec+PROTOCOL://...``,
``pyarrow+SCHEME://...``) for objects of a run whose results live on object storage
(:mod:`phasekit.objstore`). ``file://`` and object references point at bytes the catalog
can check.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from phasekit.errors import CatalogError
from phasekit.objstore import FSSPEC_PREFIX, OBJECT_SCHEMES, PYARROW_PREFIX, is_object_url

CATALOG_FILENAME = "catalog.sqlite"
CATALOG_SCHEMES = ("sqlite", "postgresql", "postgres")
REFERENCE_SCHEMES = ("file", "memory", "stream", *OBJECT_SCHEMES)
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class CatalogLocation:
    """Where a catalog lives: ``dialect`` is ``"sqlite"`` or ``"postgresql"``."""

    dialect: str
    target: str  # the SQLite file path, or the PostgreSQL connection URL
    results_dir: Path | None
    options: tuple[tuple[str, str], ...] = ()  # sqlite:///PATH?synchronous=full


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _allowed_message(url: str) -> str:
    return (
        f"catalog location {redact(url)!r} has an unsupported scheme; allowed: a file or folder "
        "path, sqlite:///PATH, file:///PATH, postgresql://USER@HOST:PORT/DB (or postgres://)"
    )


def _sqlite_location(
    path: Path, results_dir: Path | None, options: tuple[tuple[str, str], ...] = ()
) -> CatalogLocation:
    path = path.expanduser()
    if path.is_dir() or (not path.exists() and path.suffix.lower() not in SQLITE_SUFFIXES):
        path = path / CATALOG_FILENAME
    path = path.absolute()
    return CatalogLocation("sqlite", str(path), results_dir or path.parent, options)


def parse_location(
    url_or_path: str | os.PathLike[str], results_dir: str | os.PathLike[str] | None = None
) -> CatalogLocation:
    """Resolve a catalog location; an unknown URL scheme raises :class:`CatalogError`."""
    rdir = Path(results_dir).absolute() if results_dir is not None else None
    if not isinstance(url_or_path, str):
        return _sqlite_location(Path(os.fspath(url_or_path)), rdir)
    match = _SCHEME.match(url_or_path)
    if match is None:
        if not url_or_path.strip():
            raise CatalogError("catalog location is empty; allowed: a path or a URL")
        return _sqlite_location(Path(url_or_path), rdir)
    scheme = match.group(1).lower()
    if scheme in ("postgresql", "postgres"):
        if "\x00" in url_or_path:
            raise CatalogError(f"catalog URL {redact(url_or_path)!r} contains a NUL character")
        return CatalogLocation("postgresql", url_or_path, rdir)
    if scheme == "sqlite":
        parts = urlsplit(url_or_path)
        raw = unquote(parts.path)
        if raw.startswith("//"):  # sqlite:////abs/path, as SQLAlchemy spells it
            raw = "/" + raw.lstrip("/")
        if not raw:
            raise CatalogError(f"catalog URL {url_or_path!r} names no file; use sqlite:///PATH")
        return _sqlite_location(Path(raw), rdir, tuple(parse_qsl(parts.query)))
    if scheme == "file":
        return _sqlite_location(Path(unquote(urlsplit(url_or_path).path)), rdir)
    raise CatalogError(_allowed_message(url_or_path))


def reference_scheme(reference: str) -> str | None:
    match = _SCHEME.match(reference)
    return match.group(1).lower() if match else None


def path_to_uri(path: str | os.PathLike[str]) -> str:
    """``file://`` URI of an absolute path (percent-encoded)."""
    return "file://" + quote(str(Path(path).absolute()), safe="/")


def uri_to_path(reference: str) -> Path | None:
    """The local path of a ``file://`` reference, else ``None``."""
    if reference_scheme(reference) != "file":
        return None
    parts = urlsplit(reference)
    if parts.netloc not in ("", "localhost"):
        raise CatalogError(
            f"data reference {reference!r} names host {parts.netloc!r}; "
            "only local file:///PATH references are supported"
        )
    return Path(unquote(parts.path))


def check_reference(reference: str) -> str:
    """Accept a data reference with one of :data:`REFERENCE_SCHEMES`."""
    if not isinstance(reference, str) or "\x00" in reference:
        raise CatalogError(f"data reference {reference!r} is not a valid URI string")
    scheme = reference_scheme(reference)
    if scheme not in REFERENCE_SCHEMES and not is_object_url(reference):
        raise CatalogError(
            f"data reference {reference!r} has an unsupported scheme; allowed: "
            + ", ".join(f"{s}://" for s in REFERENCE_SCHEMES)
            + f", {FSSPEC_PREFIX}PROTOCOL://, {PYARROW_PREFIX}SCHEME://"
        )
    if scheme == "file":
        path = uri_to_path(reference)
        if path is None or not path.is_absolute():
            raise CatalogError(f"data reference {reference!r} must name an absolute path")
    return reference
