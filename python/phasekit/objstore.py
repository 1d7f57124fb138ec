"""Object storage: results under ``s3://bucket/prefix`` instead of a local folder.

An object store has no rename, so the local write protocol (temporary name, fsync,
rename) becomes: every object is written **once under its final key** (on S3 a single
``PutObject``, or a multipart upload completed only after its last part and its
checksum check; through fsspec a transaction committed after the check; through
pyarrow.fs one write of bytes checked before the stream opens, :class:`_Pyarrow`; any
failure aborts the upload, so a partial object never becomes visible), and only then is its
catalog row committed. Reads verify the recorded ``crc32:...`` checksum
(:mod:`phasekit.checksum`).

URLs: a ``results_dir`` may be ``s3://`` (:data:`OBJECT_SCHEMES`, S3 through boto3), a bare
URL of any protocol fsspec's registry knows (``memory://``, ``gs://``, ``abfs://``,
``hdfs://``...: :func:`storage_schemes`; pyarrow.fs's URI schemes ``gs``, ``hdfs`` and
``abfs`` are among them) or ``fsspec+PROTOCOL://`` (:data:`FSSPEC_PREFIX`, the same
filesystem), or ``pyarrow+SCHEME://`` (:data:`PYARROW_PREFIX`, SCHEME one of
:data:`PYARROW_SCHEMES`): the filesystem ``pyarrow.fs.FileSystem.from_uri`` opens for
``SCHEME://`` (pyarrow's own S3, GCS, Azure and HDFS clients, no boto3 nor fsspec). A
bare fsspec URL is recorded in its prefixed form (``memory://b/p`` becomes
``fsspec+memory://b/p``, :meth:`ObjectRoot.from_url`), so the references in catalog rows
(:func:`is_object_url`) are only ``s3://``, ``fsspec+...://`` and ``pyarrow+...://``,
never one of phasekit's own reference schemes (``memory://``, ``file://``,
``stream://``). The endpoint, region and credentials come from the environment as for
any AWS client (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``); pyarrow's S3 client reads the same variables.

Versions: where a bucket keeps old versions of objects (:attr:`ObjectRoot.keeps_versions`:
S3 versioning through boto3, for ``s3://`` and ``pyarrow+s3://``), :meth:`ObjectRoot.delete`
deletes every version and delete marker of the key and :meth:`ObjectRoot.drop_old_versions`
the noncurrent ones; a transport that cannot tell deletes the current version and says so
once per bucket (:func:`unknown_versions`).

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
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Optional, Protocol
from urllib.parse import urlsplit

from phasekit._optional import require
from phasekit.checksum import format_crc32
from phasekit.errors import (
    CorruptDataError,
    InvalidArgument,
    MissingDependency,
    StorageError,
    UnsafePath,
)
from phasekit.names import MANIFEST_DIR

log = logging.getLogger(__name__)

OBJECT_SCHEMES = ("s3",)
"""URL schemes that name object storage (the one owner of this list)."""
FSSPEC_PREFIX = "fsspec+"
"""``fsspec+PROTOCOL://bucket/prefix`` names storage through fsspec's PROTOCOL filesystem
(``fsspec+memory://``, ``fsspec+gcs://``...): the prefix keeps fsspec's own schemes apart
from phasekit's reference schemes (``memory://``, ``file://``, ``stream://``)."""
PYARROW_PREFIX = "pyarrow+"
"""``pyarrow+SCHEME://bucket/prefix`` names storage through the filesystem pyarrow.fs opens
for ``SCHEME://bucket/prefix`` (``pyarrow.fs.FileSystem.from_uri``)."""
PYARROW_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")
"""The schemes a ``pyarrow+`` URL may have: pyarrow.fs's remote filesystems (its ``file``
and ``local`` are a local folder, give its path; its ``mock`` lives in one process)."""
OBJECT_PREFIXES = (FSSPEC_PREFIX, PYARROW_PREFIX)
"""The prefixes of a scheme that names the library a filesystem is opened through."""
LOCAL_SCHEMES = frozenset({"file", "local", "asynclocal"})
"""Schemes of a local folder (refused as URLs: a folder is given by its path)."""
PART_BYTES = 8 << 20
"""Objects up to this size are one ``PutObject``; larger ones are multipart uploads of
parts this size (S3 needs at least 5 MiB per part but the last)."""
CACHE_DIR = ".phasekit-objects"
"""The folder (in a run's local folder) where objects a run reads back are fetched to."""
NOT_STORAGE = frozenset(
    {
        *LOCAL_SCHEMES,  # a local folder: give its path
        *("cached", "filecache", "simplecache", "blockcache", "dir", "generic", "reference"),
        *("async_wrapper", "asyncwrapper"),  # wrappers of another filesystem
        *("http", "https", "data", "zip", "tar", "libarchive", "github", "gist", "git"),
    }
)
"""fsspec protocols that are not a place to write results (local files, wrappers and
caches of another filesystem, read-only sources)."""
UNVERSIONED_FSSPEC = frozenset({"memory"})
"""fsspec protocols whose filesystems keep no old versions of an object."""
UNVERSIONED_PYARROW = frozenset({"hdfs", "viewfs"})
"""pyarrow.fs schemes whose filesystems keep no old versions of a file."""
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def url_scheme(text: str) -> Optional[str]:
    match = _SCHEME.match(text)
    return match.group(1).lower() if match else None


def _unprefixed(scheme: str, prefix: str) -> Optional[str]:
    """The scheme after ``prefix`` (``fsspec+gcs`` -> ``gcs``); None without it."""
    if scheme.startswith(prefix) and len(scheme) > len(prefix):
        return scheme[len(prefix) :]
    return None


def is_object_url(text: object) -> bool:
    """True when ``text`` is a URL of object storage: a scheme of :data:`OBJECT_SCHEMES`,
    ``fsspec+PROTOCOL`` (any fsspec filesystem) or ``pyarrow+SCHEME`` (SCHEME one of
    :data:`PYARROW_SCHEMES`)."""
    scheme = url_scheme(text) if isinstance(text, str) else None
    if scheme is None:
        return False
    return (
        scheme in OBJECT_SCHEMES
        or _unprefixed(scheme, FSSPEC_PREFIX) is not None
        or _unprefixed(scheme, PYARROW_PREFIX) in PYARROW_SCHEMES
    )


def names_local(text: str) -> bool:
    """True when ``text`` is a URL of a local folder (``file://``, ``pyarrow+file://``,
    ``fsspec+local://``...): such a results_dir is given by its path."""
    scheme = url_scheme(text) or ""
    for prefix in OBJECT_PREFIXES:
        scheme = _unprefixed(scheme, prefix) or scheme
    return scheme in LOCAL_SCHEMES


def storage_schemes() -> tuple[str, ...]:
    """The schemes a ``results_dir`` URL may have: :data:`OBJECT_SCHEMES` and every
    protocol fsspec knows (its registry, ``fsspec.available_protocols()``) but those of
    :data:`NOT_STORAGE`; only :data:`OBJECT_SCHEMES` when fsspec is not installed."""
    try:
        import fsspec
    except ImportError:
        return OBJECT_SCHEMES
    known = {str(p).lower() for p in fsspec.available_protocols()} - NOT_STORAGE
    return (*OBJECT_SCHEMES, *sorted(known - set(OBJECT_SCHEMES)))


def allowed_storage() -> str:
    """The forms of an object storage ``results_dir``, for error messages."""
    bare = ", ".join(f"{s}://" for s in storage_schemes())
    arrow = ", ".join(PYARROW_SCHEMES)
    return (
        f"BUCKET/PREFIX under {bare}, {FSSPEC_PREFIX}PROTOCOL:// (PROTOCOL one of the "
        f"same fsspec protocols) or {PYARROW_PREFIX}SCHEME:// (pyarrow.fs; SCHEME one of "
        f"{arrow})"
    )


def is_storage_url(text: object) -> bool:
    """True when ``text`` is a URL of object storage as a ``results_dir`` may name it: an
    object URL (:func:`is_object_url`) or a bare URL of :func:`storage_schemes`."""
    scheme = url_scheme(text) if isinstance(text, str) else None
    if scheme is None:
        return False
    return is_object_url(text) or scheme in storage_schemes()


def not_storage(url: str) -> str:
    """Why ``url`` is no ``results_dir``, naming what is allowed (for error messages)."""
    hint = " (it names a local folder: give the folder's path instead)" if names_local(url) else ""
    return (
        f"results_dir {url!r} is a URL of no storage phasekit writes to{hint}; allowed: a "
        f"folder path, or {allowed_storage()}"
    )


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
    def get_bucket_versioning(self, **kw: object) -> dict[str, object]: ...
    def delete_objects(self, **kw: object) -> dict[str, object]: ...


Check = Callable[[int], None]
"""Called with the CRC-32 of every byte uploaded before the object is made visible;
raises to abort."""


class _Transport(Protocol):
    def put(self, bucket: str, key: str, source: BinaryIO, check: Check) -> int: ...
    def get(self, bucket: str, key: str) -> bytes: ...
    def exists(self, bucket: str, key: str) -> bool: ...
    def delete(self, bucket: str, key: str) -> None: ...
    def entries(self, bucket: str, prefix: str) -> Iterator[tuple[str, Optional[float]]]: ...
    def keeps_versions(self, bucket: str) -> Optional[bool]: ...
    def versions(self, bucket: str, prefix: str) -> Iterator[Version]: ...
    def delete_versions(self, bucket: str, versions: Sequence[Version]) -> None: ...


@dataclass(frozen=True)
class Version:
    """One version of an object in a bucket that keeps versions (a delete marker too)."""

    key: str
    version_id: str
    latest: bool


VERSION_BATCH = 1000
"""Versions listed per ``ListObjectVersions`` page and deleted per ``DeleteObjects`` call
(S3's limit for both)."""


def _no_versions(what: str) -> StorageError:
    """Asked for versions of a transport that cannot tell whether its bucket keeps any
    (:meth:`ObjectRoot.keeps_versions` is then None and never asks)."""
    return StorageError(
        f"{what} cannot list or delete object versions (phasekit cannot tell whether its "
        "buckets keep versions; s3:// and pyarrow+s3:// with boto3 installed can)"
    )


class _S3:
    """S3 through boto3: one ``PutObject`` up to :data:`PART_BYTES`, else a multipart
    upload completed after ``check`` and aborted on any failure."""

    def __init__(self) -> None:
        boto3 = require("boto3", feature="results on object storage (s3://)")
        self.client: _Client = boto3.client("s3")

    def put(self, bucket: str, key: str, source: BinaryIO, check: Check) -> int:
        first = source.read(PART_BYTES)
        if len(first) < PART_BYTES:
            check(zlib.crc32(first))
            self.client.put_object(Bucket=bucket, Key=key, Body=first)
            return len(first)
        upload = self.client.create_multipart_upload(Bucket=bucket, Key=key)
        upload_id = str(upload["UploadId"])
        try:
            parts, size, crc = self._parts(bucket, key, upload_id, first, source)
            check(crc)
            self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self._abort(bucket, key, upload_id)
            raise
        return size

    def _parts(
        self, bucket: str, key: str, upload_id: str, chunk: bytes, source: BinaryIO
    ) -> tuple[list[dict[str, object]], int, int]:
        parts: list[dict[str, object]] = []
        size = crc = 0
        while chunk:
            crc = zlib.crc32(chunk, crc)
            number = len(parts) + 1
            done = self.client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
            )
            parts.append({"PartNumber": number, "ETag": done["ETag"]})
            size += len(chunk)
            chunk = source.read(PART_BYTES)
        return parts, size, crc

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # the bucket's lifecycle rule must reap it then
            log.warning("cannot abort the upload %s of %s: %s", upload_id, key, exc)

    def get(self, bucket: str, key: str) -> bytes:
        body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        return bytes(body.read())  # type: ignore[attr-defined]

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except Exception:
            return False
        return True

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)

    def entries(self, bucket: str, prefix: str) -> Iterator[tuple[str, Optional[float]]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
            Bucket=bucket, Prefix=prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                yield str(obj["Key"]), _epoch(obj.get("LastModified"))

    def keeps_versions(self, bucket: str) -> Optional[bool]:
        """True when versioning is enabled or suspended (a suspended bucket keeps the
        versions made while it was enabled); None when the bucket does not say."""
        try:
            status = self.client.get_bucket_versioning(Bucket=bucket).get("Status")
        except Exception as exc:  # e.g. no s3:GetBucketVersioning permission
            log.warning("cannot read the versioning of bucket %s: %s", bucket, exc)
            return None
        return status in ("Enabled", "Suspended")

    def versions(self, bucket: str, prefix: str) -> Iterator[Version]:
        pages = self.client.get_paginator("list_object_versions").paginate(  # type: ignore[attr-defined]
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": VERSION_BATCH}
        )
        for page in pages:
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                yield Version(str(entry["Key"]), str(entry["VersionId"]), bool(entry["IsLatest"]))

    def delete_versions(self, bucket: str, versions: Sequence[Version]) -> None:
        for start in range(0, len(versions), VERSION_BATCH):
            batch = versions[start : start + VERSION_BATCH]
            listed = [{"Key": v.key, "VersionId": v.version_id} for v in batch]
            done = self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": listed, "Quiet": True}
            )
            errors = done.get("Errors")
            if isinstance(errors, list) and errors:
                first = errors[0] if isinstance(errors[0], dict) else {}
                raise StorageError(
                    f"{len(errors)} object versions not deleted (first: {first.get('Key')} "
                    f"version {first.get('VersionId')}: {first.get('Message')})"
                )


class _Fsspec:
    """Any fsspec filesystem: each upload in a transaction of its own (files open with
    ``autocommit`` off), committed after ``check``, discarded on any failure. Uploads to
    one filesystem are serialised (an fsspec transaction is the filesystem's state)."""

    def __init__(self, protocol: str) -> None:
        fsspec = require("fsspec", feature=f"results on {FSSPEC_PREFIX}{protocol}:// storage")
        try:
            self.fs = fsspec.filesystem(protocol)
        except (ImportError, ValueError) as exc:
            raise InvalidArgument(f"fsspec has no usable filesystem {protocol!r}: {exc}") from exc
        self._lock = threading.Lock()
        self.protocol = protocol

    def put(self, bucket: str, key: str, source: BinaryIO, check: Check) -> int:
        size = crc = 0
        with self._lock, self.fs.transaction, self.fs.open(f"{bucket}/{key}", "wb") as out:
            while chunk := source.read(PART_BYTES):
                crc = zlib.crc32(chunk, crc)
                out.write(chunk)
                size += len(chunk)
            check(crc)
        return size

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self.fs.cat_file(f"{bucket}/{key}"))

    def exists(self, bucket: str, key: str) -> bool:
        return bool(self.fs.isfile(f"{bucket}/{key}"))

    def delete(self, bucket: str, key: str) -> None:
        self.fs.rm_file(f"{bucket}/{key}")

    def entries(self, bucket: str, prefix: str) -> Iterator[tuple[str, Optional[float]]]:
        folder = f"{bucket}/{prefix}".rstrip("/")
        if not self.fs.isdir(folder):
            return
        found = self.fs.find(folder, detail=True)
        for path in sorted(found):
            full = str(path).lstrip("/")
            if full.startswith(f"{bucket}/"):
                yield full[len(bucket) + 1 :], _modified(found[path])

    def keeps_versions(self, bucket: str) -> Optional[bool]:
        """False for filesystems that keep no versions (:data:`UNVERSIONED_FSSPEC`); None
        for the others (phasekit has no version API of theirs)."""
        return False if self.protocol in UNVERSIONED_FSSPEC else None

    def versions(self, bucket: str, prefix: str) -> Iterator[Version]:
        raise _no_versions(f"{FSSPEC_PREFIX}{self.protocol}://")

    def delete_versions(self, bucket: str, versions: Sequence[Version]) -> None:
        raise _no_versions(f"{FSSPEC_PREFIX}{self.protocol}://")


class _Pyarrow:
    """The filesystem ``pyarrow.fs.FileSystem.from_uri`` opens for ``SCHEME://BUCKET``,
    bound to that bucket (its paths are ``<bucket path>/<key>``).

    pyarrow offers no way to abandon an output stream from Python: closing one (even by
    dropping it) completes the upload. So the bytes are read and checked before the stream
    opens (held in memory up to :data:`PART_BYTES`, spooled to a local temporary file
    beyond) and sent by one write: a read error or a checksum mismatch opens nothing, and
    a failed write fails the stream's close, which then completes nothing."""

    def __init__(self, scheme: str, bucket: str) -> None:
        import pyarrow.fs as pafs

        self._fs_mod = pafs
        try:
            self.fs, base = pafs.FileSystem.from_uri(f"{scheme}://{bucket}/")
        except (OSError, ValueError, ImportError) as exc:
            raise InvalidArgument(
                f"pyarrow.fs cannot open {PYARROW_PREFIX}{scheme}://{bucket}: {exc}"
            ) from exc
        self.base = base.rstrip("/")
        self.scheme = scheme
        self._versions: Optional[_S3] = None

    def _s3(self) -> Optional[_S3]:
        """boto3's S3 client for the version API of a ``pyarrow+s3://`` bucket (pyarrow.fs
        has none; both read the endpoint and credentials from the same environment);
        None for other schemes or without boto3."""
        if self.scheme != "s3":
            return None
        if self._versions is None:
            try:
                self._versions = _S3()
            except MissingDependency:
                return None
        return self._versions

    def keeps_versions(self, bucket: str) -> Optional[bool]:
        """As S3 says through boto3 for ``pyarrow+s3://`` (None without boto3); False for
        HDFS (:data:`UNVERSIONED_PYARROW`); None for the others."""
        if self.scheme in UNVERSIONED_PYARROW:
            return False
        s3 = self._s3()
        return None if s3 is None else s3.keeps_versions(bucket)

    def versions(self, bucket: str, prefix: str) -> Iterator[Version]:
        s3 = self._s3()
        if s3 is None:
            raise _no_versions(f"{PYARROW_PREFIX}{self.scheme}://")
        yield from s3.versions(bucket, prefix)

    def delete_versions(self, bucket: str, versions: Sequence[Version]) -> None:
        s3 = self._s3()
        if s3 is None:
            raise _no_versions(f"{PYARROW_PREFIX}{self.scheme}://")
        s3.delete_versions(bucket, versions)

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}"

    def put(self, bucket: str, key: str, source: BinaryIO, check: Check) -> int:
        with _checked_bytes(source, check) as (data, size):
            out = self.fs.open_output_stream(self._path(key))
            try:
                out.write(data)
            finally:
                out.close()
        return size

    def get(self, bucket: str, key: str) -> bytes:
        with self.fs.open_input_stream(self._path(key)) as fh:
            return bytes(fh.read())

    def exists(self, bucket: str, key: str) -> bool:
        found = self.fs.get_file_info(self._path(key))
        return bool(found.type == self._fs_mod.FileType.File)

    def delete(self, bucket: str, key: str) -> None:
        self.fs.delete_file(self._path(key))

    def entries(self, bucket: str, prefix: str) -> Iterator[tuple[str, Optional[float]]]:
        head = f"{self.base}/"
        folder = (head + prefix).rstrip("/")
        chosen = self._fs_mod.FileSelector(folder, recursive=True, allow_not_found=True)
        found = [i for i in self.fs.get_file_info(chosen) if i.type == self._fs_mod.FileType.File]
        for info in sorted(found, key=lambda i: str(i.path)):
            path = str(info.path)
            if path.startswith(head):  # directories (S3 folder markers) are not objects
                yield path[len(head) :], _epoch(info.mtime)


@contextmanager
def _checked_bytes(source: BinaryIO, check: Check) -> Iterator[tuple[object, int]]:
    """All of ``source`` once ``check`` accepted its CRC-32: bytes up to
    :data:`PART_BYTES`, else a memory map of a temporary file it was spooled to."""
    first = source.read(PART_BYTES)
    if len(first) < PART_BYTES:
        check(zlib.crc32(first))
        yield first, len(first)
        return
    import pyarrow as pa

    with tempfile.NamedTemporaryFile(prefix="phasekit-upload-") as spool:
        crc = size = 0
        chunk = first
        while chunk:
            crc = zlib.crc32(chunk, crc)
            spool.write(chunk)
            size += len(chunk)
            chunk = source.read(PART_BYTES)
        spool.flush()
        check(crc)
        with pa.memory_map(spool.name) as mapped:
            yield mapped.read_buffer(), size


_TIME_FIELDS = ("mtime", "LastModified", "last_modified", "modified", "updated", "created")
"""Where fsspec filesystems put an entry's modification time (the first found is used)."""


def _modified(info: Mapping[str, object]) -> Optional[float]:
    """The modification time (seconds since the epoch) an fsspec entry carries, if any."""
    for name in _TIME_FIELDS:
        found = _epoch(info.get(name))
        if found is not None:
            return found
    return None


def _epoch(value: object) -> Optional[float]:
    """Seconds since the epoch of a time as stores give it (a datetime, a number or an
    ISO 8601 text); None when there is none."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return _epoch(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


@dataclass
class ObjectRoot:
    """``s3://bucket/prefix`` (or ``fsspec+PROTOCOL://bucket/prefix``, also written
    ``PROTOCOL://bucket/prefix``, or ``pyarrow+SCHEME://bucket/prefix``): the root every key
    of a run's results lies under."""

    bucket: str
    prefix: str
    scheme: str = "s3"
    _transport: Optional[_Transport] = field(default=None, repr=False, compare=False)
    _versioning: Optional[tuple[Optional[bool]]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_url(cls, url: str) -> ObjectRoot:
        """The root ``url`` names (see :func:`is_storage_url`); a bare fsspec URL gets the
        ``fsspec+`` prefix (``memory://b/p`` -> ``fsspec+memory://b/p``)."""
        scheme = url_scheme(url) if isinstance(url, str) else None
        if not is_storage_url(url) or scheme is None:
            raise InvalidArgument(not_storage(str(url)))
        if not is_object_url(url):
            scheme = FSSPEC_PREFIX + scheme
        parts = urlsplit(url)
        if not parts.netloc or parts.query or parts.fragment:
            raise InvalidArgument(
                f"results_dir {url!r} must be {scheme}://BUCKET/PREFIX (a bucket, no query "
                "or fragment)"
            )
        check_relative(parts.netloc, f"the bucket of {url!r}")
        prefix = parts.path.strip("/")
        if prefix:
            check_relative(prefix, f"the prefix of {url!r}")
        return cls(parts.netloc, prefix, scheme)

    @property
    def url(self) -> str:
        base = f"{self.scheme}://{self.bucket}"
        return f"{base}/{self.prefix}" if self.prefix else base

    def key(self, rel: str) -> str:
        """The full key of ``rel`` (checked by :func:`check_relative`)."""
        check_relative(rel, "object key")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def uri(self, rel: str) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key(rel)}"

    def relative(self, uri: str) -> str:
        """The key of ``uri`` below this root; UnsafePath when it lies elsewhere."""
        parts = urlsplit(uri)
        head = f"{self.prefix}/" if self.prefix else ""
        full = parts.path.lstrip("/")
        same = url_scheme(uri) == self.scheme and parts.netloc == self.bucket
        if not same or not full.startswith(head):
            raise UnsafePath(f"object {uri!r} lies outside the results root {self.url}")
        return check_relative(full[len(head) :], f"the key of {uri!r}")

    @property
    def transport(self) -> _Transport:
        if self._transport is None:
            arrow = _unprefixed(self.scheme, PYARROW_PREFIX)
            if self.scheme.startswith(FSSPEC_PREFIX):
                self._transport = _fsspec(self.scheme[len(FSSPEC_PREFIX) :])
            elif arrow is not None:
                self._transport = _Pyarrow(arrow, self.bucket)
            else:
                self._transport = _S3()
        return self._transport

    # ------------------------------------------------------------------ write

    def put_file(self, rel: str, path: Path, checksum: Optional[str]) -> int:
        """Upload the local file ``path`` once under ``rel``; returns its size. The bytes
        sent are checksummed on the way and must match ``checksum`` (when given)."""
        with open(path, "rb") as fh:
            return self.put_stream(rel, fh, checksum)

    def put_stream(self, rel: str, source: BinaryIO, checksum: Optional[str]) -> int:
        """Upload what ``source`` reads once under ``rel`` (see :meth:`put_file`)."""
        key = self.key(rel)

        def check(crc: int) -> None:
            if checksum is not None and format_crc32(crc) != checksum:
                raise CorruptDataError(
                    f"object {rel!r}: the bytes to upload checksum to {format_crc32(crc)}, "
                    f"not {checksum} (the local file changed); nothing was made visible"
                )

        try:
            return self.transport.put(self.bucket, key, source, check)
        except (CorruptDataError, InvalidArgument, MissingDependency):
            raise
        except Exception as exc:  # the stores' errors share no base we can name lazily
            raise StorageError(
                f"writing {self.uri(rel)} failed: {exc}; no object was made visible"
            ) from exc

    # ------------------------------------------------------------------ read, list, delete

    def read(self, rel: str, checksum: Optional[str], what: str = "") -> bytes:
        """The bytes of ``rel``, verified against ``checksum`` (CorruptDataError if not)."""
        label = what or repr(rel)
        key = self.key(rel)
        try:
            data = self.transport.get(self.bucket, key)
        except (InvalidArgument, MissingDependency):
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
        return self.transport.exists(self.bucket, self.key(rel))

    @property
    def keeps_versions(self) -> Optional[bool]:
        """True when the bucket keeps old versions of an object (S3 versioning enabled or
        suspended), False when it keeps none, None when the transport cannot tell (logged
        once per bucket: what phasekit deletes or re-wraps may survive there as old
        versions). Asked once per root."""
        if self._versioning is None:
            self._versioning = (self.transport.keeps_versions(self.bucket),)
            if self._versioning[0] is None:
                _warn_unknown_versions(self.scheme, self.bucket)
        return self._versioning[0]

    def delete(self, rel: str) -> None:
        """Delete ``rel``; where the bucket keeps versions, every version of it and every
        delete marker, so nothing of it stays behind."""
        key = self.key(rel)
        try:
            if self.keeps_versions:
                self._delete_versions(key, list(self._versions_of(key)))
            else:
                self.transport.delete(self.bucket, key)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"deleting {self.uri(rel)} failed: {exc}") from exc

    def drop_old_versions(self, rel: str) -> int:
        """Delete the noncurrent versions of ``rel`` (and delete markers), keeping its
        current version; returns how many were deleted (0 where the bucket keeps none).
        Call it only once the current version is confirmed to be the one to keep."""
        if not self.keeps_versions:
            return 0
        key = self.key(rel)
        try:
            old = [v for v in self._versions_of(key) if not v.latest]
            self._delete_versions(key, old)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"deleting old versions of {self.uri(rel)} failed: {exc}") from exc
        return len(old)

    def versioned_keys(self, below: str = "") -> list[str]:
        """The keys below the root (and ``below``) that have any version or delete marker
        (a key whose current version was deleted too); :meth:`list` where the bucket keeps
        no versions."""
        if not self.keeps_versions:
            return list(self.list(below))
        if below:
            check_relative(below.rstrip("/"), "listed folder")
        head = f"{self.prefix}/" if self.prefix else ""
        found = {v.key for v in self.transport.versions(self.bucket, head + below)}
        return sorted(k[len(head) :] for k in found if k.startswith(head + below))

    def _versions_of(self, key: str) -> Iterator[Version]:
        return (v for v in self.transport.versions(self.bucket, key) if v.key == key)

    def _delete_versions(self, key: str, versions: Sequence[Version]) -> None:
        if versions:
            self.transport.delete_versions(self.bucket, versions)
            log.debug("deleted %d versions of %s", len(versions), key)

    def list(self, below: str = "") -> Iterator[str]:
        """The keys below the root (and below ``below``, a folder ending in ``/``),
        relative to the root."""
        for rel, _ in self.entries(below):
            yield rel

    def entries(self, below: str = "") -> Iterator[tuple[str, Optional[float]]]:
        """:meth:`list` with each object's modification time (seconds since the epoch, as
        the store records it; None when the store gives none). A key the store lists
        outside ``below`` is skipped."""
        if below:
            check_relative(below.rstrip("/"), "listed folder")
        head = f"{self.prefix}/" if self.prefix else ""
        for key, modified in self.transport.entries(self.bucket, head + below):
            if not key.startswith(head + below):
                log.warning("%s listed %r outside %r; skipped", self.url, key, head + below)
                continue
            yield key[len(head) :], modified


_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


def _warn_unknown_versions(scheme: str, bucket: str) -> None:
    """Say once per bucket that phasekit cannot tell whether it keeps old versions."""
    with _WARNED_LOCK:
        if (scheme, bucket) in _WARNED:
            return
        _WARNED.add((scheme, bucket))
    log.warning("%s", unknown_versions(scheme, bucket))


def unknown_versions(scheme: str, bucket: str) -> str:
    """What it means that phasekit cannot tell whether ``bucket`` keeps old versions."""
    how = (
        " (install boto3: phasekit reads S3 versioning through it)" if scheme.endswith("s3") else ""
    )
    return (
        f"cannot tell whether {scheme}://{bucket} keeps old versions of objects{how}; if it "
        "does, objects phasekit deletes (crypto-shredded data keys included) and key "
        "objects it re-wraps survive there as old versions: delete those with the store's "
        "own tools or a lifecycle rule"
    )


_FSSPEC: dict[str, _Fsspec] = {}
_FSSPEC_LOCK = threading.Lock()


def _fsspec(protocol: str) -> _Fsspec:
    """One transport per fsspec protocol (fsspec caches its filesystem instances too)."""
    with _FSSPEC_LOCK:
        found = _FSSPEC.get(protocol)
        if found is None:
            found = _FSSPEC[protocol] = _Fsspec(protocol)
        return found


__all__ = [
    "CACHE_DIR",
    "FSSPEC_PREFIX",
    "LOCAL_SCHEMES",
    "NOT_STORAGE",
    "OBJECT_PREFIXES",
    "OBJECT_SCHEMES",
    "PART_BYTES",
    "PYARROW_PREFIX",
    "PYARROW_SCHEMES",
    "UNVERSIONED_FSSPEC",
    "UNVERSIONED_PYARROW",
    "VERSION_BATCH",
    "ObjectRoot",
    "Version",
    "allowed_storage",
    "check_relative",
    "is_object_url",
    "is_storage_url",
    "manifest_of",
    "names_local",
    "not_storage",
    "refuse",
    "storage_schemes",
    "unknown_versions",
    "url_scheme",
]
