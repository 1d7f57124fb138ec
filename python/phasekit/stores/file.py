"""FileStore: every item a durable, checksummed file (or partitioned folder) under one folder.

Layout: ``<base_path>/<key>.<ext>`` (``.arrow``, ``.parquet`` (a folder with
``partition_by``), ``.json``/``.jsonl``, ``.csv``, ``.pkl``, ``.h5``) and a manifest
``<base_path>/.phasekit/<key>.json`` holding the item's Ref and what restoring it needs.
A put writes the data file by the atomic protocol, then the manifest the same way, and
only then calls the recorder. Reads verify the file's checksum first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

from phasekit.checksum import seal_problem
from phasekit.crypt import Encryption, Keyring, destroy_keys, is_sealed
from phasekit.crypt.keyring import PendingKey, Settling, nested_name
from phasekit.errors import (
    CorruptDataError,
    InvalidArgument,
    StorageError,
    UnknownKey,
    UnsafePath,
)
from phasekit.names import MANIFEST_DIR
from phasekit.paths import (
    check_not_symlink,
    contained,
    make_private,
    make_private_dir,
    read_bytes_nofollow,
)
from phasekit.stores import values
from phasekit.stores.base import DEFAULT_PHASE, DEFAULT_RUN, StoreBase, check_metadata
from phasekit.stores.durable import (
    backup_of,
    fsync_dir,
    is_tmp_name,
    path_checksum,
    remove_path,
    replacing,
    restore_backup,
    storage_error,
    verify,
    write_json,
)
from phasekit.stores.formats import (
    DEFAULT_FORMAT,
    FORMAT_DEFAULT,
    Format,
    WriteOptions,
    Written,
    check_compression,
    get_format,
    partitioned_formats,
)
from phasekit.stores.formats.pickle import refuse
from phasekit.stores.groupcommit import commit_group, manifest_body
from phasekit.stores.names import check_name
from phasekit.stores.recorder import ItemRecorder
from phasekit.stores.ref import Ref, file_uri
from phasekit.stores.sealed import (
    INFO_KEY,
    read_plain,
    read_sealed,
    sealed_key_id,
    start_sealed_key,
    write_sealed,
    write_sealed_bytes,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Plan:
    """One item of a put, checked and placed, before anything is written."""

    key: str
    data: Any
    meta: dict[str, Any]
    fmt: Format
    kind: str
    options: WriteOptions
    path: Path
    what: str


class FileStore(StoreBase):
    """Items as files under ``base_path`` in ``format`` (default ``arrow``).

    ``compression`` applies to the store's own format (the format's ``compressions``:
    arrow: lz4, zstd; parquet: snappy, zstd, gzip, lz4, brotli; hdf5: gzip, lzf); None
    or ``"none"`` is uncompressed, ``"default"`` (the default) the format's default
    (snappy for parquet, uncompressed for the others). ``partition_by`` writes
    table-like values in the parquet format as hive-partitioned folders (other value
    kinds ignore it). ``formats`` maps an output type to a format (e.g.
    ``{"metrics": "json", "signals": "parquet"}``); a put uses, in order, its
    ``format=`` argument, ``formats[metadata["output_type"]]``, ``formats[key]``, then
    ``format``. Pickle files are written and loaded only with ``allow_pickle=True``.
    ``verify=False`` skips the checksum check on reads. With ``encryption`` (see
    :mod:`phasekit.crypt`) every file is written encrypted under its own data key and
    read back decrypted; deleting an item destroys its data key.
    """

    scheme = "file"

    def __init__(
        self,
        base_path: str | os.PathLike[str],
        *,
        format: str = DEFAULT_FORMAT,
        compression: Optional[str] = FORMAT_DEFAULT,
        partition_by: Optional[list[str] | tuple[str, ...]] = None,
        formats: Optional[Mapping[str, str]] = None,
        allow_pickle: bool = False,
        verify: bool = True,
        run: str = DEFAULT_RUN,
        phase: str = DEFAULT_PHASE,
        recorder: Optional[ItemRecorder] = None,
        encryption: Optional[Encryption] = None,
    ) -> None:
        super().__init__(run=run, phase=phase, recorder=recorder)
        self.format = get_format(format)
        self.compression = check_compression(self.format, compression)
        self.partition_by = tuple(self._check_columns(partition_by))
        if self.partition_by and not self.format.partitioned:
            raise InvalidArgument(
                f"partition_by {list(self.partition_by)} needs format "
                f"{' or '.join(map(repr, partitioned_formats()))}, got {format!r}"
            )
        self.formats = {
            check_name("formats key", k): get_format(v, f"formats[{k!r}]").name
            for k, v in (formats or {}).items()
        }
        self.allow_pickle = bool(allow_pickle)
        self.verify = bool(verify)
        self.base_path = Path(os.path.abspath(os.fspath(base_path)))
        self.manifest_dir = self.base_path / MANIFEST_DIR
        self.encryption = encryption
        self._keyring: Optional[Keyring] = (
            encryption.keyring(self.base_path) if encryption is not None else None
        )
        if self._keyring is not None and self.partition_by:
            raise InvalidArgument(
                "partition_by (folders of Parquet files) cannot be combined with encryption; "
                "turn one of them off"
            )
        check_not_symlink(self.manifest_dir, "the manifest folder")
        try:
            if not self.manifest_dir.exists():
                make_private_dir(self.manifest_dir)
                fsync_dir(self.base_path)
                fsync_dir(self.base_path.parent)
        except OSError as exc:
            raise storage_error(exc, f"creating the store folder {self.manifest_dir}") from exc
        self._key_locks: dict[str, threading.Lock] = {}
        self.recover()
        self._counts = {
            "puts": 0,
            "gets": 0,
            "deletes": 0,
            "bytes_written": 0,
            "bytes_read": 0,
            "write_failures": 0,
            "corrupt_reads": 0,
        }

    def recover(self) -> list[str]:
        """Resolve backups left by a crash during an overwrite; returns what was done.

        A backup whose checksum is the one the manifest records (while the file under the
        final name does not match) is put back; any other backup is stale and removed.
        Run at construction. Assumes one writing process per store folder.
        """
        backups = [n for n in os.listdir(self.base_path) if backup_of(n) is not None]
        if not backups:
            return []
        committed = {r.path: r.checksum for r in self.list()}
        done = []
        for name in backups:
            backup = self.base_path / name
            final = self.base_path / str(backup_of(name))
            expected = committed.get(final)
            try:
                restore = (
                    expected is not None
                    and path_checksum(backup) == expected
                    and not (final.exists() and path_checksum(final) == expected)
                )
                if restore:
                    restore_backup(final, backup)
                    done.append(f"restored {final} from {backup}")
                else:
                    remove_path(backup)
                    done.append(f"removed the stale backup {backup}")
            except OSError as exc:
                log.warning("cannot resolve the backup %s: %s", backup, exc)
        for line in done:
            log.warning("FileStore %s: %s", self.base_path, line)
        return done

    @staticmethod
    def _check_columns(columns: Optional[list[str] | tuple[str, ...]]) -> list[str]:
        if columns is None:
            return []
        if isinstance(columns, str) or not all(isinstance(c, str) and c for c in columns):
            raise InvalidArgument(f"partition_by must be a list of column names, got {columns!r}")
        return list(columns)

    # ---------------------------------------------------------------- paths

    def uri(self, key: str) -> str:
        """The URI of ``key``'s file (from its manifest); ``UnknownKey`` if absent."""
        return self.ref(key).uri

    def _check_own(self, ref: Ref) -> None:
        path = ref.path
        if path is None:
            raise InvalidArgument(f"ref {ref.uri!r} is not a file:// ref of a FileStore")
        if path.parent != self.base_path:
            raise InvalidArgument(
                f"ref {ref.uri!r} is not in this store's folder {self.base_path}; a store reads "
                "only its own files"
            )

    def _manifest_path(self, key: str) -> Path:
        """``.phasekit/<key>.json``, checked to lie under the store folder (no link leaves it)."""
        check_not_symlink(self.manifest_dir, "the manifest folder")
        return contained(
            Path(MANIFEST_DIR) / f"{key}.json", self.base_path, f"the manifest of item {key!r}"
        )

    def _data_path(self, path: Optional[Path], key: str, where: str) -> Path:
        """A data file's path from a manifest or a plan, checked to be one of this store's."""
        if path is None:
            raise CorruptDataError(f"item {key!r}: {where} names no file:// path")
        checked = contained(path, self.base_path, f"the file of item {key!r} (from {where})")
        if checked.parent != self.base_path:
            raise UnsafePath(
                f"the file of item {key!r} (from {where}) is {checked}, not directly in the "
                f"store folder {self.base_path}"
            )
        return checked

    def _lock_for(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _manifest_key_place(self, key: str) -> tuple[Path, str]:
        """Where the data key of ``key``'s encrypted manifest lives: beside the manifest
        folder (:func:`phasekit.crypt.keyring.nested_name`, found by ``key_place``)."""
        return self.base_path, nested_name(self.manifest_dir, f"{key}.json")

    def _write_manifest(
        self,
        key: str,
        manifest: dict[str, Any],
        what: str,
        pending: Optional[PendingKey] = None,
    ) -> None:
        """Write ``key``'s manifest durably: encrypted when the store encrypts (its
        metadata and metrics are no less private than its data), else as JSON.
        ``pending``: its new data key, started earlier (:func:`start_sealed_key`)."""
        path = self._manifest_path(key)
        if self.encryption is None:
            write_json(path, manifest, what)
            return
        text = json.dumps(manifest, indent=1, sort_keys=True).encode()
        place = self._manifest_key_place(key)
        # a key started for the manifest is settled by the caller, beside the data's
        write_sealed_bytes(path, text, self.encryption, what, place, pending, pending is None)

    def _read_manifest(self, key: str) -> Optional[dict[str, Any]]:
        path = self._manifest_path(key)
        try:
            raw = read_bytes_nofollow(path)
            if is_sealed(raw):  # an encrypted manifest (KeyUnavailable without the key)
                plain = read_plain(path, self.encryption, f"the manifest of item {key!r}")
                raw = raw if plain is None else bytes(plain)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read the manifest {path} of item {key!r}: {exc}") from exc
        try:
            manifest = json.loads(raw)
            problem = seal_problem(manifest)
            if problem is not None:
                raise ValueError(problem)
            if not isinstance(manifest.get("ref"), dict):
                raise ValueError("it is not an object with a 'ref' object")
            ref = Ref.from_dict(manifest["ref"])
            if ref.key != key:
                raise ValueError(f"it describes item {ref.key!r}")
            if not isinstance(manifest.get("info") or {}, dict):
                raise ValueError("its 'info' is not an object")
            get_format(ref.format)
            path_of_ref = ref.path
        except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
            raise CorruptDataError(
                f"item {key!r}: its manifest {path} is unreadable: {exc}"
            ) from exc
        self._data_path(path_of_ref, key, f"its manifest {path}")
        return dict(manifest)

    # ---------------------------------------------------------------- put

    def _format_for(self, key: str, meta: Mapping[str, Any], format: Optional[str]) -> Format:
        if format is not None:
            return get_format(format)
        output_type = meta.get("output_type")
        if isinstance(output_type, str) and output_type in self.formats:
            return get_format(self.formats[output_type])
        if key in self.formats:
            return get_format(self.formats[key])
        return self.format

    def _options(self, fmt: Format, kind: str) -> WriteOptions:
        own = fmt is self.format
        partition = self.partition_by if own and kind in values.TABULAR else ()
        return WriteOptions(
            compression=self.compression if own else fmt.default_compression,
            partition_by=partition,
            allow_pickle=self.allow_pickle,
        )

    def _plan(
        self, key: str, data: Any, metadata: Optional[Mapping[str, Any]], format: Optional[str]
    ) -> _Plan:
        key = check_name("key", key)
        meta = check_metadata(metadata)
        fmt = self._format_for(key, meta, format)
        kind = values.kind_of(data, allow_object=fmt.name == "pickle")
        options = self._options(fmt, kind)
        fmt.check(kind, options)
        path = self._data_path(fmt.path_for(self.base_path, key, kind, options), key, "its name")
        return _Plan(key, data, meta, fmt, kind, options, path, f"writing item {key!r} to {path}")

    def path_for(self, key: str, data: Any, metadata: Optional[Mapping[str, Any]] = None) -> Path:
        """The path ``put(key, data, metadata)`` would write (nothing is written)."""
        return self._plan(key, data, metadata, None).path

    def put(
        self,
        key: str,
        data: Any,
        metadata: Optional[Mapping[str, Any]] = None,
        *,
        format: Optional[str] = None,
    ) -> Ref:
        """Write ``data`` durably as ``<key>.<ext>`` and return its Ref (then record it)."""
        self._check_open()
        p = self._plan(key, data, metadata, format)
        with self._lock_for(p.key):
            previous = self._read_manifest(p.key)
            try:
                with replacing(p.path, p.what):
                    ref, settling = self._write(
                        p.fmt, data, p.kind, p.key, p.path, p.options, p.what, p.meta
                    )
            except StorageError:
                self._counts["write_failures"] += 1
                raise
            if settling is not None:  # the older keys destroyed while the backup was removed
                settling.wait()
            self._drop_replaced(previous, p.path)
            self._counts["puts"] += 1
            self._counts["bytes_written"] += ref.size_bytes
        if previous is not None:
            self._forget(Ref.from_dict(previous["ref"]))
        self._record(ref)
        return ref

    def put_many(
        self,
        items: Mapping[str, Any] | Iterable[tuple[str, Any]],
        metadata: Optional[Mapping[str, Any]] = None,
        *,
        format: Optional[str] = None,
    ) -> list[Ref]:
        """Write many items with one group commit; returns their Refs in order.

        Every file is written under its temporary name, all are fsynced, renamed, and
        the folder fsynced once; then their manifests the same way; only then is each
        recorded. Many small items cost a few syncs instead of four each. If anything
        fails before the manifests are renamed, nothing changes (previous versions stay);
        partitioned datasets (folders) are written one by one with :meth:`put`.
        """
        self._check_open()
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        plans = [self._plan(k, v, metadata, format) for k, v in pairs]
        keys = [p.key for p in plans]
        if len(set(keys)) != len(keys):
            raise InvalidArgument("put_many: a key appears more than once")
        grouped = [p for p in plans if self._keyring is None and p.fmt.groupable(p.kind, p.options)]
        refs = {
            p.key: self.put(p.key, p.data, p.meta, format=p.fmt.name)
            for p in plans
            if p not in grouped
        }
        with contextlib.ExitStack() as stack:
            for key in sorted(p.key for p in grouped):
                stack.enter_context(self._lock_for(key))
            previous = {p.key: self._read_manifest(p.key) for p in grouped}
            try:
                done = commit_group(self, grouped)
            except StorageError:
                self._counts["write_failures"] += len(grouped)
                raise
            for p in grouped:
                self._drop_replaced(previous[p.key], p.path)
            self._counts["puts"] += len(done)
            self._counts["bytes_written"] += sum(r.size_bytes for r in done)
        for ref in done:
            old = previous[ref.key]
            if old is not None:
                self._forget(Ref.from_dict(old["ref"]))
            self._record(ref)
            refs[ref.key] = ref
        return [refs[k] for k in keys]

    def _write(
        self,
        fmt: Format,
        data: Any,
        kind: str,
        key: str,
        path: Path,
        options: WriteOptions,
        what: str,
        meta: dict[str, Any],
    ) -> tuple[Ref, Optional[Settling]]:
        """The data file, then the manifest that commits it; returns the item's Ref and,
        encrypted, the destruction of the data file's and the manifest's older keys,
        started side by side once the item is committed (the caller waits for it).
        Encrypted, the manifest's new key file is written (in a thread) while the data
        is encoded and sealed."""
        manifest_key: Optional[PendingKey] = None
        if self.encryption is not None:
            place = self._manifest_key_place(key)
            manifest_key = start_sealed_key(self._manifest_path(key), self.encryption, place)
        try:
            written, token = self._write_data(fmt, data, kind, path, options, what)
            ref = Ref(
                uri=file_uri(written.path),
                key=key,
                kind=kind,
                format=fmt.name,
                size_bytes=written.size_bytes,
                checksum=written.checksum,
                metadata=meta,
                key_id=sealed_key_id(written.info),
            )
            manifest = manifest_body(ref, written.info)
            self._write_manifest(key, manifest, f"{what} (its manifest)", manifest_key)
        except BaseException:
            if manifest_key is not None:
                manifest_key.discard()
            raise
        encryption, keyring = self.encryption, self._keyring
        if manifest_key and encryption is not None and keyring is not None and token:
            # committed: the older keys of the data file and of the manifest go
            manifest_folder, manifest_name = self._manifest_key_place(key)
            settling = Settling(
                [
                    (keyring, path.name, token),
                    (encryption.keyring(manifest_folder), manifest_name, manifest_key.token),
                ]
            )
            return ref, settling
        return ref, None

    def _write_data(
        self, fmt: Format, data: Any, kind: str, path: Path, options: WriteOptions, what: str
    ) -> tuple[Written, Optional[str]]:
        """The data file, encrypted when the store encrypts; and its data key's token."""
        if self._keyring is not None:
            return write_sealed(fmt, data, kind, path, options, what, self._keyring)
        written = fmt.write(data, kind, path, options, what)
        try:
            make_private(written.path)
        except OSError as exc:
            raise storage_error(exc, what) from exc
        return written, None

    @staticmethod
    def _drop_replaced(previous: Optional[dict[str, Any]], path: Path) -> None:
        """Remove the previous version's file when the new one has another name."""
        if previous is None:
            return
        old = Ref.from_dict(previous["ref"]).path  # checked by _read_manifest
        if old is not None and old != path:
            remove_path(old)
            destroy_keys(old.parent, old.name)

    # ---------------------------------------------------------------- get

    def ref(self, key: str) -> Ref:
        """The Ref of ``key`` from its manifest; ``UnknownKey`` if absent."""
        key = check_name("key", key)
        manifest = self._read_manifest(key)
        if manifest is None:
            raise self._missing(key)
        return Ref.from_dict(manifest["ref"])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self._manifest_path(check_name("key", key)).exists()

    def get(self, ref: Ref | str) -> Any:
        """The value of a key or Ref, after verifying its file's checksum."""
        self._check_open()
        key = self._key(ref)
        with self._lock_for(key):
            return self._get(key, ref)

    def _get(self, key: str, ref: Ref | str) -> Any:
        manifest = self._read_manifest(key)
        if manifest is None:
            raise self._missing(key)
        current = Ref.from_dict(manifest["ref"])
        if isinstance(ref, Ref) and (ref.uri, ref.checksum) != (current.uri, current.checksum):
            raise UnknownKey(
                f"item {key!r} was replaced or rewritten since this ref was made "
                f"(ref {ref.uri} {ref.checksum}, now {current.uri} {current.checksum})"
            )
        path = self._data_path(current.path, key, "its manifest")
        fmt = get_format(current.format)
        options = self._options(fmt, current.kind)
        if fmt.name == "pickle" and not self.allow_pickle:
            raise refuse(key, path)
        try:
            info = manifest.get("info") or {}
            if self.verify and INFO_KEY not in info:  # encrypted: its tags verify it
                verify(path, current.checksum, key)
            if INFO_KEY in info:
                value = read_sealed(
                    fmt, path, current.kind, info, options, self._keyring, f"item {key!r} ({path})"
                )
            else:
                value = fmt.read(path, current.kind, info, options)
        except CorruptDataError:
            self._counts["corrupt_reads"] += 1
            raise
        except (OSError, ValueError, KeyError, EOFError, pa.ArrowException) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            self._counts["corrupt_reads"] += 1
            raise CorruptDataError(f"item {key!r}: cannot read {path}: {exc}") from exc
        with self._lock:
            self._counts["gets"] += 1
            self._counts["bytes_read"] += current.size_bytes
        return value

    # ---------------------------------------------------------------- list, delete, stats

    def list(self) -> list[Ref]:
        """Refs of every item with a manifest, oldest first."""
        refs = []
        try:
            names = sorted(os.listdir(self.manifest_dir))
        except FileNotFoundError:
            return []
        for name in names:
            if is_tmp_name(name) or not name.endswith(".json"):
                continue
            manifest = self._read_manifest(name[: -len(".json")])
            if manifest is not None:
                refs.append(Ref.from_dict(manifest["ref"]))
        return sorted(refs, key=lambda r: (r.created_at, r.key))

    def delete(self, ref: Ref | str) -> None:
        """Remove the item: its manifest first (durably), then its file."""
        self._check_open()
        key = self._key(ref)
        with self._lock_for(key):
            manifest = self._read_manifest(key)
            if manifest is None:
                raise self._missing(key)
            current = Ref.from_dict(manifest["ref"])
            try:
                self._manifest_path(key).unlink()
                fsync_dir(self.manifest_dir)
            except OSError as exc:
                raise storage_error(exc, f"deleting item {key!r}") from exc
            destroy_keys(*self._manifest_key_place(key))
            if current.path is not None:
                remove_path(current.path)
                destroy_keys(current.path.parent, current.path.name)
            self._counts["deletes"] += 1
        self._forget(current)

    def stats(self) -> dict[str, Any]:
        """items, bytes_on_disk, and counts of puts, gets, deletes, bytes written and read."""
        refs = self.list()
        with self._lock:
            return {
                "store": "file",
                "path": str(self.base_path),
                "format": self.format.name,
                "items": len(refs),
                "bytes_in_memory": 0,
                "bytes_on_disk": sum(r.size_bytes for r in refs),
                **self._counts,
            }


__all__ = ["MANIFEST_DIR", "FileStore"]
