"""Object storage: results under ``s3://bucket/prefix`` instead of a local folder.

An object store has no rename, so the local write protocol (temporary name, fsync,
rename) becomes: every object is written **once under its final key** (a single
``PutObject``, or a multipart upload completed only after its last part and its
checksum check; any failure aborts the upload, so a partial object never becomes
visible), and only then is its catalog row committed. Reads verify the recorded
``crc32:...`` checksum (:mod:`phasekit.checksum`).

URLs: only the schemes in :data:`OBJECT_SCHEMES` name object storage. phasekit's own
reference schemes (``memory://``, ``file://``, ``stream://``) never do, so a results
folder can never be mistaken for one of them. The endpoint, region and credentials come
from the environment as for any AWS client (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``).

Containment: a key phasekit builds from a manifest, a catalog row or a name is
relative to the root's prefix and may hold no empty, ``.`` or ``..`` segment, no
backslash, NUL or control character (:func:`check_relative`); a URI from a catalog row
must lie under the root (:meth:`ObjectRoot.relative`). Both raise
:class:`~phasekit.errors.UnsafePath`.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Optional, Protocol
from urllib.parse import urlsplit

from phasekit._optional import require
from phasekit.checksum import format_crc32
from phasekit.errors import CorruptDataError, InvalidArgument, StorageError, UnsafePath
from phasekit.names import MANIFEST_DIR

log = logging.getLogger(__name__)

OBJECT_SCHEMES = ("s3",)
"""URL schemes that name object storage (the one owner of this list)."""
PART_BYTES = 8 << 20
"""Objects up to this size are one ``PutObject``; larger ones are multipart uploads of
parts this size (S3 needs at least 5 MiB per part but the last)."""
CACHE_DIR = ".phasekit-objects"
"""The folder (in a run's local folder) where objects a run reads back are fetched to."""
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def url_scheme(text: str) -> Optional[str]:
    match = _SCHEME.match(text)
    return match.group(1).lower() if match else None


def is_object_url(text: object) -> bool:
    """True when ``text`` is a URL of object storage (see :data:`OBJECT_SCHEMES`)."""
    return isinstance(text, str) and url_scheme(text) in OBJECT_SCHEMES


def check_relative(rel: str, what: str) -> str:
    """``rel`` (a key below a root's prefix) if it cannot leave the prefix; else UnsafePath."""
    if not isinstance(rel, str) or not rel:
        raise UnsafePath(f"{what} {rel!r} is empty; an object key names a file below the prefix")
    if _BAD_CHARS.search(rel):
        raise UnsafePath(
            f"{what} {rel!r} holds a backslash, NUL or control character; not allowed in keys"
        )
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(
            f"{what} {rel!r} is absolute or has an empty, '.' or '..' segment; phasekit reads, "
            "writes and deletes only below the results prefix"
        )
    return rel


def manifest_of(rel: str, key: str) -> str:
    """The key of the FileStore manifest of item ``key`` whose data object is ``rel``
    (``<folder>/.phasekit/<key>.json``, as the store writes it)."""
    return posixpath.join(posixpath.dirname(rel), MANIFEST_DIR, f"{key}.json")


def refuse(setting: str, why: str = "") -> InvalidArgument:
    """The error for a setting object storage cannot honour."""
    tail = f" ({why})" if why else ""
    return InvalidArgument(
        f"{setting} is not supported with results on object storage{tail}; "
        "use a local results_dir for it"
    )


class _Client(Protocol):  # the part of boto3's S3 client phasekit uses
    def put_object(self, **kw: object) -> dict[str, object]: ...
    def get_object(self, **kw: object) -> dict[str, object]: ...
    def head_object(self, **kw: object) -> dict[str, object]: ...
    def delete_object(self, **kw: object) -> dict[str, object]: ...
    def create_multipart_upload(self, **kw: object) -> dict[str, object]: ...
    def upload_part(self, **kw: object) -> dict[str, object]: ...
    def complete_multipart_upload(self, **kw: object) -> dict[str, object]: ...
    def abort_multipart_upload(self, **kw: object) -> dict[str, object]: ...
    def get_paginator(self, name: str) -> object: ...


@dataclass
class ObjectRoot:
    """``s3://bucket/prefix``: the root every key of a run's results lies under."""

    bucket: str
    prefix: str
    _client: Optional[_Client] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_url(cls, url: str) -> ObjectRoot:
        scheme = url_scheme(url) if isinstance(url, str) else None
        if scheme not in OBJECT_SCHEMES:
            raise InvalidArgument(
                f"results_dir {url!r} is not an object storage URL; allowed: "
                + ", ".join(f"{s}://BUCKET/PREFIX" for s in OBJECT_SCHEMES)
            )
        parts = urlsplit(url)
        if not parts.netloc or parts.query or parts.fragment:
            raise InvalidArgument(
                f"results_dir {url!r} must be s3://BUCKET/PREFIX (a bucket, no query or fragment)"
            )
        prefix = parts.path.strip("/")
        if prefix:
            check_relative(prefix, f"the prefix of {url!r}")
        return cls(parts.netloc, prefix)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, rel: str) -> str:
        """The full key of ``rel`` (checked by :func:`check_relative`)."""
        check_relative(rel, "object key")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def uri(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.key(rel)}"

    def relative(self, uri: str) -> str:
        """The key of ``uri`` below this root; UnsafePath when it lies elsewhere."""
        parts = urlsplit(uri)
        head = f"{self.prefix}/" if self.prefix else ""
        full = parts.path.lstrip("/")
        if url_scheme(uri) != "s3" or parts.netloc != self.bucket or not full.startswith(head):
            raise UnsafePath(f"object {uri!r} lies outside the results root {self.url}")
        return check_relative(full[len(head) :], f"the key of {uri!r}")

    # ------------------------------------------------------------------ client

    @property
    def client(self) -> _Client:
        if self._client is None:
            boto3 = require("boto3", feature="results on object storage (s3://)")
            self._client = boto3.client("s3")
        return self._client

    def _fail(self, exc: Exception, what: str) -> StorageError:
        return StorageError(f"{what} failed: {exc}; no object was made visible")

    # ------------------------------------------------------------------ write

    def put_file(self, rel: str, path: Path, checksum: Optional[str]) -> int:
        """Upload the local file ``path`` once under ``rel``; returns its size. The bytes
        sent are checksummed on the way and must match ``checksum`` (when given)."""
        with open(path, "rb") as fh:
            return self.put_stream(rel, fh, checksum)

    def put_stream(self, rel: str, source: BinaryIO, checksum: Optional[str]) -> int:
        """Upload what ``source`` reads once under ``rel`` (see :meth:`put_file`)."""
        key = self.key(rel)
        first = source.read(PART_BYTES)
        crc = zlib.crc32(first)
        if len(first) < PART_BYTES:
            self._check(crc, checksum, rel)
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=first)
            except Exception as exc:  # botocore's errors share no base we can name lazily
                raise self._fail(exc, f"writing {self.uri(rel)}") from exc
            return len(first)
        return self._multipart(rel, key, first, crc, source, checksum)

    def _multipart(
        self, rel: str, key: str, first: bytes, crc: int, source: BinaryIO, sum_: Optional[str]
    ) -> int:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        upload_id = str(upload["UploadId"])
        parts: list[dict[str, object]] = []
        size = 0
        try:
            chunk = first
            while chunk:
                number = len(parts) + 1
                done = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"PartNumber": number, "ETag": done["ETag"]})
                size += len(chunk)
                chunk = source.read(PART_BYTES)
                crc = zlib.crc32(chunk, crc)
            self._check(crc, sum_, rel)
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException as exc:
            self._abort(key, upload_id)
            if isinstance(exc, (CorruptDataError, KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, Exception):
                raise self._fail(exc, f"writing {self.uri(rel)}") from exc
            raise
        return size

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # the bucket's lifecycle rule must reap it then
            log.warning("cannot abort the upload %s of %s: %s", upload_id, key, exc)

    @staticmethod
    def _check(crc: int, expected: Optional[str], rel: str) -> None:
        if expected is not None and format_crc32(crc) != expected:
            raise CorruptDataError(
                f"object {rel!r}: the bytes to upload checksum to {format_crc32(crc)}, not "
                f"{expected} (the local file changed); nothing was made visible"
            )

    # ------------------------------------------------------------------ read, list, delete

    def read(self, rel: str, checksum: Optional[str], what: str = "") -> bytes:
        """The bytes of ``rel``, verified against ``checksum`` (CorruptDataError if not)."""
        label = what or repr(rel)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"]
            data: bytes = body.read()  # type: ignore[attr-defined]
        except UnsafePath:
            raise
        except Exception as exc:
            raise CorruptDataError(f"{label}: cannot read {self.uri(rel)}: {exc}") from exc
        actual = format_crc32(zlib.crc32(data))
        if checksum is not None and actual != checksum:
            raise CorruptDataError(
                f"{label}: {self.uri(rel)} fails its checksum (expected {checksum}, found "
                f"{actual}); the object is truncated, corrupted or was replaced"
            )
        return data

    def download(self, rel: str, dest: Path, checksum: Optional[str], what: str = "") -> Path:
        """Write the verified bytes of ``rel`` to the local file ``dest``."""
        data = self.read(rel, checksum, what)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return dest

    def exists(self, rel: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(rel))
        except UnsafePath:
            raise
        except Exception:
            return False
        return True

    def delete(self, rel: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(rel))
        except UnsafePath:
            raise
        except Exception as exc:
            raise StorageError(f"deleting {self.uri(rel)} failed: {exc}") from exc

    def list(self, below: str = "") -> Iterator[str]:
        """The keys below the root (and below ``below``, a folder ending in ``/``),
        relative to the root."""
        if below:
            check_relative(below.rstrip("/"), "listed folder")
        head = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
            Bucket=self.bucket, Prefix=head + below
        )
        for page in pages:
            for obj in page.get("Contents", []):
                yield str(obj["Key"])[len(head) :]


__all__ = [
    "CACHE_DIR",
    "OBJECT_SCHEMES",
    "PART_BYTES",
    "ObjectRoot",
    "check_relative",
    "is_object_url",
    "manifest_of",
    "refuse",
]
