"""The atomic write protocol and checksums of every file a store writes.

A file (or a folder, for partitioned datasets) is written under a temporary name
``.<name>.<random hex>.phasekit-tmp`` in its final folder, fsynced, renamed to its
final name, and the folder is fsynced. Only then is it reported (and recorded).
Checksums are CRC-32 in the ``crc32:xxxxxxxx`` form; a folder's checksum is the
catalog's: CRC-32 over each file in relative-path order of its path, a NUL byte and
its bytes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Optional, Protocol

from phasekit._pure.ipc import TMP_SUFFIX
from phasekit.backend import backend_module
from phasekit.checksum import bytes_checksum, crc32, format_crc32
from phasekit.checksum import tree_checksum as _tree_checksum
from phasekit.errors import CorruptDataError, InvalidArgument, StorageError
from phasekit.fsync import fsync_dir
from phasekit.fsync import fsync_file as _fsync_file
from phasekit.paths import O_NOFOLLOW, make_private, open_nofollow

log = logging.getLogger(__name__)

OLD_SUFFIX = ".phasekit-old"
"""Suffix of a replaced folder while its successor is renamed into place."""


def tmp_name(final: Path, suffix: str = TMP_SUFFIX) -> Path:
    """``<folder>/.<name>.<random hex><suffix>``: the temporary twin of ``final``."""
    return final.parent / f".{final.name}.{secrets.token_hex(8)}{suffix}"


def is_tmp_name(name: str) -> bool:
    """True for names of in-progress or replaced files (never a final name)."""
    return name.startswith(".") and (name.endswith(TMP_SUFFIX) or name.endswith(OLD_SUFFIX))


def fsync_file(path: Path) -> None:
    _fsync_file(path, O_NOFOLLOW)


def _syncfs() -> Optional[Any]:
    """libc's ``syncfs`` where there is one (Linux), else None."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _syncfs() if sys.platform.startswith("linux") else None
SYNCFS_FROM = 4
"""From this many files on, one ``syncfs`` of their filesystem replaces one fsync each."""


def fsync_many(paths: list[Path]) -> None:
    """Make every file of ``paths`` durable: one ``syncfs`` of their filesystem when there
    are many of them (Linux), else one fsync each. Raises OSError on failure."""
    if _SYNCFS is None or len(paths) < SYNCFS_FROM:
        for path in paths:
            fsync_file(path)
        return
    fd = os.open(paths[0], os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            code = ctypes_errno()
            raise OSError(code, os.strerror(code), str(paths[0].parent))
    finally:
        os.close(fd)


def ctypes_errno() -> int:
    import ctypes

    return ctypes.get_errno()


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(Path(folder) / name)
        fsync_dir(Path(folder))


def _errno_of(exc: BaseException) -> Optional[int]:
    """The errno of ``exc`` or of the first exception in its cause chain that has one."""
    seen: Optional[BaseException] = exc
    while seen is not None:
        code = getattr(seen, "errno", None)
        if isinstance(code, int):
            return code
        if "No space left on device" in str(seen):
            return errno.ENOSPC
        seen = seen.__cause__ or seen.__context__
    return None


def storage_error(exc: BaseException, what: str) -> StorageError:
    """A StorageError that says what failed, why, and that the previous state is intact."""
    code = _errno_of(exc)
    reason = "the disk is full: " if code in (errno.ENOSPC, errno.EDQUOT) else ""
    err = StorageError(f"{what} failed: {reason}{exc}; the previous state is intact")
    err.errno = code
    return err


def is_disk_full(exc: BaseException) -> bool:
    return _errno_of(exc) in (errno.ENOSPC, errno.EDQUOT)


def remove_path(path: Path) -> None:
    """Remove a file or folder if it exists; log (not raise) what cannot be removed."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)


@contextmanager
def atomic_file(
    final: Path, what: str, ready: Optional[Callable[[], None]] = None
) -> Iterator[Path]:
    """Yield a temporary path; on success fsync it, rename it to ``final``, fsync the folder.
    ``ready``: called after the fsync, before the rename (it waits for what the file needs
    to be durable first, e.g. its data key).

    On any error the temporary file is removed and ``final`` is untouched; ``OSError``
    becomes :class:`StorageError` (``what`` says which item was being written).
    """
    tmp = tmp_name(final)
    try:
        yield tmp
        make_private(tmp)
        fsync_file(tmp)
        if ready is not None:
            ready()
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        remove_path(tmp)
        raise storage_error(exc, what) from exc
    except BaseException:
        remove_path(tmp)
        raise


@contextmanager
def atomic_dir(final: Path, what: str) -> Iterator[Path]:
    """Like :func:`atomic_file` for a folder; a previous folder is replaced after success."""
    tmp = tmp_name(final)
    old: Optional[Path] = None
    try:
        tmp.mkdir(mode=0o700)
        yield tmp
        make_private(tmp)
        _fsync_tree(tmp)
        if final.exists():
            old = tmp_name(final, OLD_SUFFIX)
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        remove_path(tmp)
        if old is not None and not final.exists():
            os.replace(old, final)
            old = None
        raise storage_error(exc, what) from exc
    except BaseException:
        remove_path(tmp)
        raise
    finally:
        if old is not None:
            remove_path(old)


def restore_backup(final: Path, backup: Path) -> None:
    """Put ``backup`` back at ``final`` (replacing whatever is there) and fsync the folder."""
    if final.is_dir() and not final.is_symlink():
        doomed = tmp_name(final, OLD_SUFFIX)
        os.replace(final, doomed)
        os.replace(backup, final)
        remove_path(doomed)
    elif final.exists() and os.path.samefile(final, backup):
        backup.unlink()  # rename() between two links of one file does nothing
    else:
        os.replace(backup, final)
    fsync_dir(final.parent)


def backup_of(name: str) -> Optional[str]:
    """The final name a ``.<name>.<hex>.phasekit-old`` backup belongs to, else None."""
    if not (name.startswith(".") and name.endswith(OLD_SUFFIX)):
        return None
    stem = name[1 : -len(OLD_SUFFIX)]
    final, _, token = stem.rpartition(".")
    return final if final and len(token) == 16 else None


@contextmanager
def replacing(final: Path, what: str) -> Iterator[None]:
    """Keep the current version of ``final`` aside while the block replaces it.

    The current file is hard-linked (a folder is renamed) to ``.<name>.<hex>.phasekit-old``;
    if the block fails the backup is put back, so the previous state is intact; if it
    succeeds the backup is removed. A backup left by a crash is resolved by the store
    (see ``FileStore.recover``).
    """
    backup: Optional[Path] = None
    try:
        if final.exists():
            backup = tmp_name(final, OLD_SUFFIX)
            if final.is_dir() and not final.is_symlink():
                os.replace(final, backup)
            else:
                os.link(final, backup)
            fsync_dir(final.parent)
    except OSError as exc:
        if backup is not None and backup.exists() and not final.exists():
            os.replace(backup, final)
        raise storage_error(exc, what) from exc
    try:
        yield
    except BaseException:
        if backup is not None:
            try:
                restore_backup(final, backup)
            except OSError as exc:  # the backup stays: FileStore.recover finds it
                log.error("cannot restore %s from %s: %s", final, backup, exc)
        raise
    if backup is not None:
        remove_path(backup)


def write_bytes(final: Path, data: bytes, what: str) -> str:
    """Write ``data`` atomically to ``final``; returns its checksum."""
    with atomic_file(final, what) as tmp:
        fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    return bytes_checksum(data)


_JSON_BUFFER = 1 << 16
"""Bytes of JSON text gathered before a write; also the size up to which a document is
written indented (larger ones are written compact, see :func:`write_json`)."""


def write_json(final: Path, obj: Any, what: str) -> str:
    """Write ``obj`` as JSON (keys sorted) atomically to ``final``; returns its checksum.

    A document up to 64 KiB is written with an indent of 1, for reading; a larger one
    (a window's ranking of thousands of containers) compact, by the C encoder, and piece
    by piece into the file, so it never exists whole as one string."""
    crc = 0
    pending: list[bytes] = []
    size = 0
    with atomic_file(final, what) as tmp:
        fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "wb", buffering=0) as raw:
            flushed = False
            for piece in _json_pieces(obj):
                data = piece.encode()
                pending.append(data)
                size += len(data)
                if size >= _JSON_BUFFER:
                    crc = _flush(raw, pending, crc)
                    size, flushed = 0, True
            if not flushed:  # small: indented instead
                pending = [json.dumps(obj, indent=1, sort_keys=True, default=json_default).encode()]
            crc = _flush(raw, pending, crc)
    return format_crc32(crc)


class JsonPieces(Protocol):
    """A value :func:`write_json` takes in pieces (``json_pieces``: its compact text,
    as ``json.dumps(value, sort_keys=True)`` gives it) or whole (``json_value``: plain
    JSON values), such as a window's ranking made from columns."""

    def json_pieces(self) -> Iterable[str]: ...

    def json_value(self) -> Any: ...


def json_default(value: Any) -> Any:
    """``json.dumps``'s ``default``: a :class:`JsonPieces` as its plain value."""
    if hasattr(value, "json_value") and hasattr(value, "json_pieces"):
        return value.json_value()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json_pieces(obj: Any) -> Iterator[str]:
    """The text of ``json.dumps(obj, sort_keys=True)`` in pieces: a mapping with string
    keys by key, a list value by element (each piece by the C encoder), a
    :class:`JsonPieces` value by its own pieces."""
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        yield json.dumps(obj, sort_keys=True, default=json_default)
        return
    yield "{"
    for i, key in enumerate(sorted(obj)):
        value = obj[key]
        yield (", " if i else "") + json.dumps(key) + ": "
        if hasattr(value, "json_pieces") and hasattr(value, "json_value"):
            yield from value.json_pieces()
        elif isinstance(value, list):
            yield "["
            for j, element in enumerate(value):
                yield (", " if j else "") + json.dumps(element, sort_keys=True)
            yield "]"
        else:
            yield json.dumps(value, sort_keys=True)
    yield "}"


def _flush(raw: BinaryIO, pending: list[bytes], crc: int) -> int:
    """Write the ``pending`` pieces as one block; returns the CRC-32 continued over them."""
    block = b"".join(pending)
    pending.clear()
    raw.write(block)
    return crc32(block, crc)


FLUSH_EVERY = 32 << 20
"""A file written through a :class:`FileSink` with ``flush_every`` on (or the Rust
``IpcWriter``, its own ``SYNC_EVERY``) has its written pages flushed to disk in the
background every this many bytes, so the fsync that commits it has little left to wait for."""


class _Flusher:
    """``fdatasync`` of one open file in a thread of its own, started by :meth:`kick`
    while writing goes on (a kick while one runs is dropped: that flush and the final
    fsync cover its bytes); :meth:`wait` returns once it ends, raising its error."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[OSError] = None

    def kick(self) -> None:
        if self._error is None and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._run, name="phasekit-flush", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            _fdatasync(self._fd)
        except OSError as exc:  # raised again by wait(), in the writer's thread
            self._error = exc

    def wait(self) -> None:
        """Return once no flush runs (call it before the file is closed); a flush's
        error otherwise (a later fsync through another descriptor may not see it)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error


_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class FileSink:
    """Writes every buffer given to it whole to an unbuffered file (its writer computes
    the checksum, e.g. :class:`phasekit.crypt.aead.ChunkWriter`'s ``checksum``).

    ``flush_every``: every this many bytes written, the file's pages are flushed to disk
    in the background (:data:`FLUSH_EVERY`; None: never), so its commit's fsync waits
    for less; :meth:`finish` waits for the flush and must be called before the file is
    closed."""

    def __init__(self, raw: BinaryIO, flush_every: Optional[int] = None) -> None:
        if flush_every is not None and flush_every <= 0:
            raise InvalidArgument(f"flush_every must be a positive byte count, got {flush_every}")
        self._raw = raw
        self._flush_every = flush_every
        self._unflushed = 0
        self._flusher: Optional[_Flusher] = None

    def write(self, data: Any) -> int:
        with memoryview(data) as view, view.cast("B") as block:
            done = 0
            while done < block.nbytes:  # an unbuffered write may take part of it
                n = self._raw.write(block[done:])
                if not n:
                    raise OSError(errno.EIO, f"the file took none of {block.nbytes - done} bytes")
                done += n
            self._wrote(done)
            return done

    def _wrote(self, n: int) -> None:
        if self._flush_every is None:
            return
        self._unflushed += n
        if self._unflushed >= self._flush_every:
            self._unflushed = 0
            if self._flusher is None:
                self._flusher = _Flusher(self._raw.fileno())
            self._flusher.kick()

    def finish(self) -> None:
        """Wait for a background flush (its OSError is raised); the file may be closed
        then."""
        if self._flusher is not None:
            self._flusher.wait()


def file_checksum(path: Path) -> str:
    """``crc32:xxxxxxxx`` of a file (through the backend in use)."""
    return str(backend_module().file_checksum(os.fspath(path)))


def tree_checksum(root: Path) -> str:
    """Checksum of a folder (:func:`phasekit.checksum.tree_checksum`)."""
    return _tree_checksum(root)


def path_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_dir():
        return sum(
            (Path(folder) / name).stat().st_size
            for folder, _dirs, files in os.walk(path)
            for name in files
        )
    return path.stat().st_size


def path_checksum(path: Path) -> str:
    return tree_checksum(path) if path.is_dir() else file_checksum(path)


def verify(path: Path, expected: Optional[str], item: str) -> None:
    """Raise :class:`CorruptDataError` naming ``item`` and ``path`` unless the checksum matches."""
    if not path.exists():
        raise CorruptDataError(f"item {item!r}: its file {path} is missing")
    if expected is None:
        return
    try:
        actual = path_checksum(path)
    except OSError as exc:
        raise CorruptDataError(f"item {item!r}: cannot read {path}: {exc}") from exc
    if actual != expected:
        raise CorruptDataError(
            f"item {item!r}: {path} fails its checksum (expected {expected}, found {actual}); "
            "the file is truncated, corrupted or was replaced"
        )


__all__ = [
    "OLD_SUFFIX",
    "TMP_SUFFIX",
    "atomic_dir",
    "atomic_file",
    "backup_of",
    "file_checksum",
    "fsync_dir",
    "fsync_many",
    "is_disk_full",
    "is_tmp_name",
    "path_checksum",
    "path_size",
    "remove_path",
    "replacing",
    "restore_backup",
    "storage_error",
    "tmp_name",
    "tree_checksum",
    "verify",
    "write_bytes",
    "write_json",
]
