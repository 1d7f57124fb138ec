"""Ref: the immutable description of one stored item, and its URI forms.

URIs:

* ``memory://<run>/<phase>[/<namespace>...]/<key>`` for items held in memory
  (memory and hybrid stores),
* ``stream://<run>/<phase>[/<namespace>...]/<key>`` for streams,
* ``file:///<absolute path>`` for files and folders written by a file store.

Every name part is percent-encoded, so any valid name survives the round trip.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional
from urllib.parse import quote, unquote, urlsplit

from phasekit.errors import InvalidArgument
from phasekit.stores.names import check_name

SCHEMES = ("memory", "file", "stream")
NAMED_SCHEMES = ("memory", "stream")


@dataclass(frozen=True)
class ParsedUri:
    """The parts of a URI: ``names`` (run, phase, namespaces..., key) or a file ``path``."""

    scheme: str
    names: tuple[str, ...] = ()
    path: Optional[Path] = None


def named_uri(scheme: str, names: tuple[str, ...] | list[str]) -> str:
    """``memory://`` or ``stream://`` URI of validated, percent-encoded names."""
    if scheme not in NAMED_SCHEMES:
        raise InvalidArgument(f"scheme must be one of {', '.join(NAMED_SCHEMES)}, got {scheme!r}")
    if len(names) < 3:
        raise InvalidArgument(f"a {scheme}:// URI needs run, phase and key, got {list(names)!r}")
    for i, name in enumerate(names):
        check_name(f"{scheme} URI part {i}", name)
    return f"{scheme}://" + "/".join(quote(n, safe="") for n in names)


def file_uri(path: str | os.PathLike[str]) -> str:
    """``file://`` URI of an absolute path (made absolute when relative)."""
    return Path(os.path.abspath(os.fspath(path))).as_uri()


def parse_uri(uri: str) -> ParsedUri:
    """Split a phasekit URI; ``InvalidArgument`` names what is wrong with it."""
    if not isinstance(uri, str):
        raise InvalidArgument(f"uri must be a string, got {type(uri).__name__}")
    parts = urlsplit(uri)
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise InvalidArgument(
            f"uri {uri!r}: unknown scheme {scheme!r}; allowed: {', '.join(SCHEMES)}"
        )
    if parts.query or parts.fragment:
        raise InvalidArgument(f"uri {uri!r}: a query or fragment is not allowed")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidArgument(f"uri {uri!r}: only local files are supported (no host)")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise InvalidArgument(f"uri {uri!r}: the path must be absolute")
        return ParsedUri(scheme, path=Path(path))
    raw = [parts.netloc, *parts.path.split("/")[1:]] if parts.path else [parts.netloc]
    names = tuple(unquote(p) for p in raw)
    if len(names) < 3:
        raise InvalidArgument(f"uri {uri!r}: expected {scheme}://<run>/<phase>/<key>")
    for i, name in enumerate(names):
        check_name(f"uri {uri!r} part {i}", name)
    return ParsedUri(scheme, names=names)


def _frozen(metadata: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    return MappingProxyType(dict(metadata or {}))


@dataclass(frozen=True)
class Ref:
    """One stored item: where it is (``uri``), what it is and how to check it.

    ``kind`` is the value type tag (see :mod:`phasekit.stores.values`) that ``get``
    restores; ``format`` is ``memory``, ``hybrid``, ``stream`` or a file format
    (``arrow``, ``parquet``, ``json``, ``csv``, ``pickle``, ``hdf5``); ``checksum`` is
    ``crc32:xxxxxxxx`` of the file (``None`` for items held only in memory);
    ``metadata`` is the caller's JSON-like metadata (read-only).
    """

    uri: str
    key: str
    kind: str
    format: str
    size_bytes: int = 0
    checksum: Optional[str] = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    created_at: float = field(default_factory=time.time, compare=False)
    key_id: Optional[str] = field(default=None, compare=False)
    """The master key id of an encrypted item (None: not encrypted)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _frozen(self.metadata))

    @property
    def scheme(self) -> str:
        return self.uri.split(":", 1)[0]

    @property
    def path(self) -> Optional[Path]:
        """The file or folder of a ``file://`` ref, else ``None``."""
        return parse_uri(self.uri).path if self.scheme == "file" else None

    @property
    def names(self) -> tuple[str, ...]:
        """(run, phase, namespaces..., key) of a ``memory://`` or ``stream://`` ref."""
        return parse_uri(self.uri).names if self.scheme in NAMED_SCHEMES else ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what a catalog row or a manifest holds)."""
        return {
            "uri": self.uri,
            "key": self.key,
            "kind": self.kind,
            "format": self.format,
            "size_bytes": self.size_bytes,
            "checksum": self.checksum,
            "metadata": dict(self.metadata),
            "created_at": self.created_at,
            **({"key_id": self.key_id} if self.key_id is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ref:
        """Inverse of :meth:`to_dict`; ``InvalidArgument`` when a field is missing."""
        try:
            return cls(
                uri=str(data["uri"]),
                key=str(data["key"]),
                kind=str(data["kind"]),
                format=str(data["format"]),
                size_bytes=int(data.get("size_bytes", 0)),
                checksum=data.get("checksum"),
                metadata=data.get("metadata") or {},
                created_at=float(data.get("created_at", 0.0)),
                key_id=str(data["key_id"]) if data.get("key_id") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"not a ref description: {exc} in {dict(data)!r}") from exc


__all__ = ["NAMED_SCHEMES", "SCHEMES", "ParsedUri", "Ref", "file_uri", "named_uri", "parse_uri"]
