"""Data keys: one random AES-256 key per item, wrapped by the master key.

A folder's wrapped keys live in ``<folder>/.phasekit/keys/<file name>.<token>.key``
(JSON: the master key id and the wrapped key); an encrypted file's header names its
token. Writing an item makes a new key file first; once the item is committed the
item's older key files go (:meth:`Keyring.settle`). Deleting an item destroys its key
files (:meth:`Keyring.shred`): its data can then not be decrypted, by anyone.
:func:`rewrap_tree` re-wraps every key file under a folder with a new master key
without touching the data. Spill segments live no longer than their process: their
data keys are held in memory only (:class:`MemoryKeyring`).
"""

from __future__ import annotations

import base64
import json
import logging
import mmap
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phasekit.crypt.aead import (
    Alloc,
    ChunkWriter,
    Header,
    Sink,
    aesgcm,
    invalid_tag,
    new_header,
    new_token,
    read_header,
    seal,
    seal_into,
    unseal,
)
from phasekit.crypt.master import KEY_BYTES, MasterKey
from phasekit.errors import CorruptDataError, KeyUnavailable
from phasekit.fsync import fsync_dir, fsync_file
from phasekit.names import KEY_SUFFIX, KEYS_DIR, MANIFEST_DIR
from phasekit.paths import make_private_dir, open_nofollow, read_bytes_nofollow

log = logging.getLogger(__name__)

_WRAP_DOMAIN = b"phasekit data key\x00"
_VERSION = 1


def keys_dir(folder: Path) -> Path:
    """Where the wrapped data keys of the files in ``folder`` live."""
    return folder / MANIFEST_DIR / KEYS_DIR


def _wrap_ad(name: str, token: str) -> bytes:
    return _WRAP_DOMAIN + name.encode() + b"\x00" + token.encode()


def wrap(master: MasterKey, data_key: bytes, name: str, token: str) -> dict[str, Any]:
    nonce = secrets.token_bytes(12)
    wrapped = aesgcm(master.secret).encrypt(nonce, data_key, _wrap_ad(name, token))
    return {
        "version": _VERSION,
        "key_id": master.key_id,
        "wrapped": base64.b64encode(nonce + wrapped).decode("ascii"),
    }


def unwrap(master: MasterKey, body: dict[str, Any], name: str, token: str, where: str) -> bytes:
    key_id = body.get("key_id")
    if key_id != master.key_id:
        raise KeyUnavailable(
            f"{where} is encrypted under master key {key_id}; the configured key is "
            f"{master.key_id} (give the key {key_id}, or rotate with phasekit keys rotate)"
        )
    try:
        raw = base64.b64decode(str(body["wrapped"]), validate=True)
        return bytes(aesgcm(master.secret).decrypt(raw[:12], raw[12:], _wrap_ad(name, token)))
    except (KeyError, ValueError, invalid_tag()) as exc:
        raise CorruptDataError(f"{where}: its wrapped data key is damaged ({exc!r})") from None


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably (temporary name, fsync, rename), mode 0600."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.phasekit-tmp")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def destroy_file(path: Path) -> None:
    """Overwrite a key file with zeros, durably (``fdatasync``: its data, not its times,
    where the platform has it), then remove it (missing: nothing to do)."""
    try:
        fd = open_nofollow(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.write(fd, b"\x00" * size)
        getattr(os, "fdatasync", os.fsync)(fd)
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)


class PendingKey:
    """A new data key whose key file (``path``, holding ``body``) is being written
    durably in a thread while the caller encrypts with the key."""

    def __init__(self, data_key: bytes, header: Header, path: Path, body: bytes) -> None:
        self.data_key = data_key
        self.header = header
        self._path = path
        self._error: BaseException | None = None
        self._waited = False
        self._thread = threading.Thread(
            target=self._run, args=(body,), name="phasekit-key-file", daemon=True
        )
        self._thread.start()

    def _run(self, body: bytes) -> None:
        try:
            _write_private(self._path, body)
        except BaseException as exc:  # raised again by wait(), in the caller's thread
            self._error = exc

    @property
    def token(self) -> str:
        return self.header.token_hex

    def writer(
        self, name: str, sink: Sink, overlap: bool = False, checksum: bool = False
    ) -> ChunkWriter:
        """A streaming encrypter for file ``name`` under this key, writing into ``sink``
        (``overlap``, ``checksum``: see :class:`ChunkWriter`)."""
        return ChunkWriter(sink, self.data_key, name, self.header, overlap, checksum)

    def wait(self) -> None:
        """Return once the key file is durable (call it before the file it keys is
        committed); its write's error (OSError) otherwise."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._waited = True

    def discard(self) -> None:
        """After a failure: wait for the write to end and, when the keyed file was not
        committed (:meth:`wait` never returned), remove the key file: it keys nothing."""
        self._thread.join()
        if not self._waited:
            self._path.unlink(missing_ok=True)


@dataclass
class Keyring:
    """The data keys of the files directly in ``folder``, under ``master``."""

    folder: Path
    master: MasterKey

    @property
    def dir(self) -> Path:
        return keys_dir(self.folder)

    def _key_path(self, name: str, token: str) -> Path:
        return self.dir / f"{name}.{token}{KEY_SUFFIX}"

    def new_key(self, name: str) -> tuple[bytes, Header]:
        """A new data key for file ``name``, its wrapped form written durably; and the
        header the file is to start with."""
        pending = self.start_key(name)
        pending.wait()
        return pending.data_key, pending.header

    def start_key(self, name: str) -> PendingKey:
        """A new data key for file ``name``, its wrapped form being written durably in a
        thread while the caller encrypts with it: :meth:`PendingKey.wait` before the file
        is committed (renamed into place)."""
        token = new_token()
        data_key = secrets.token_bytes(KEY_BYTES)
        make_private_dir(self.dir)
        body = json.dumps(wrap(self.master, data_key, name, token.hex())).encode()
        return PendingKey(data_key, new_header(token), self._key_path(name, token.hex()), body)

    def key_for(self, name: str, header: Header, what: str) -> bytes:
        """The data key a file's header names (KeyUnavailable when destroyed or under
        another master key)."""
        path = self._key_path(name, header.token_hex)
        return unwrap(self.master, read_key_file(path, what), name, header.token_hex, what)

    def seal_to(self, name: str, data: Any, sink: Sink) -> str:
        """Encrypt ``data`` for file ``name`` straight into ``sink`` (a file, say) under a
        new key (durable on return); returns the key's token."""
        pending = self.start_key(name)
        try:
            seal_into(data, pending.writer(name, sink))
        except BaseException:
            pending.discard()
            raise
        pending.wait()
        return pending.token

    def writer(self, name: str, sink: Sink) -> tuple[ChunkWriter, str]:
        """A streaming encrypter for file ``name`` writing into ``sink``."""
        data_key, header = self.new_key(name)
        return ChunkWriter(sink, data_key, name, header), header.token_hex

    def open(self, name: str, blob: Any, what: str, alloc: Alloc = bytearray) -> Any:
        """The plaintext of file ``name``'s encrypted bytes (any bytes-like object), in a
        buffer from ``alloc``."""
        return unseal(blob, name, lambda h: self.key_for(name, h, what), what, alloc)

    def read(self, path: Path, what: str, name: str | None = None, alloc: Alloc = bytearray) -> Any:
        """Read (through a memory map) and decrypt the file at ``path``, whose data keys
        are this folder's under ``name`` (default: its file name)."""
        fd = open_nofollow(path)
        try:
            if os.fstat(fd).st_size == 0:
                return self.open(name or path.name, b"", what, alloc)
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                return self.open(name or path.name, mapped, what, alloc)
        finally:
            os.close(fd)

    def tokens(self, name: str) -> list[str]:
        return _tokens(self.dir, name)

    def settle(self, name: str, keep: str) -> None:
        """Destroy the key files of ``name`` other than token ``keep`` (older versions)."""
        for token in self.tokens(name):
            if token != keep:
                destroy_file(self._key_path(name, token))

    def shred(self, name: str) -> None:
        """Destroy every data key of file ``name``: its data is unreadable from now on."""
        destroy_keys(self.folder, name)


class Settling:
    """:meth:`Keyring.settle` of each ``(keyring, name, keep)``, each in a thread of its
    own, started at once (each destroyed key file is fsynced: the waits overlap each
    other and whatever the caller does meanwhile); :meth:`wait` returns once all have
    ended, raising the first error."""

    def __init__(self, settles: Sequence[tuple[Keyring, str, str]]) -> None:
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._run, args=args, name="phasekit-settle", daemon=True)
            for args in settles
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, keyring: Keyring, name: str, keep: str) -> None:
        try:
            keyring.settle(name, keep)
        except BaseException as exc:  # raised by wait(), in the caller's thread
            self._errors.append(exc)

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self._errors[0]


def _tokens(kdir: Path, name: str) -> list[str]:
    prefix = f"{name}."
    try:
        names = os.listdir(kdir)
    except FileNotFoundError:
        return []
    tokens = (
        n[len(prefix) : -len(KEY_SUFFIX)]
        for n in names
        if n.startswith(prefix) and n.endswith(KEY_SUFFIX)
    )
    return [t for t in tokens if len(t) == 16 and all(c in "0123456789abcdef" for c in t)]


def destroy_keys(folder: Path, name: str) -> list[Path]:
    """Destroy every data key of the file ``name`` in ``folder`` (crypto-shredding: its
    data is unreadable from now on, master key or not); returns the key files removed."""
    kdir = keys_dir(folder)
    done = []
    for token in _tokens(kdir, name):
        path = kdir / f"{name}.{token}{KEY_SUFFIX}"
        destroy_file(path)
        done.append(path)
    if done:
        fsync_dir(kdir, best_effort=True)
    return done


def read_key_file(path: Path, what: str) -> dict[str, Any]:
    try:
        body = json.loads(read_bytes_nofollow(path))
    except FileNotFoundError:
        raise KeyUnavailable(
            f"{what}: its data key {path.name} does not exist (destroyed when the item was "
            "deleted); the data cannot be decrypted"
        ) from None
    except (OSError, ValueError) as exc:
        raise CorruptDataError(f"{what}: its key file {path} is unreadable: {exc}") from None
    if not isinstance(body, dict):
        raise CorruptDataError(f"{what}: its key file {path} is not a JSON object")
    return body


def key_id_of_file(path: Path) -> str | None:
    """The master key id an encrypted file's data key is wrapped with (None if unknown)."""
    try:
        header = read_header(read_bytes_nofollow(path)[:64], str(path))
        folder, name = key_place(path, header)
        key_file = keys_dir(folder) / f"{name}.{header.token_hex}{KEY_SUFFIX}"
        body = read_key_file(key_file, str(path))
    except (CorruptDataError, KeyUnavailable, OSError):
        return None
    key_id = body.get("key_id")
    return key_id if isinstance(key_id, str) else None


NESTED_PREFIX = "part-"
"""Files inside a folder item (a stream's parts) keep their keys beside the folder, named
``<folder name>.<file name>`` with file names starting with this prefix."""
NESTED_MANIFEST = "manifest.json"
"""The manifest of a folder item (a stream's), whose key lives beside the folder too."""


def nested_name(folder: Path, name: str) -> str:
    """The key name of file ``name`` inside the folder item ``folder``."""
    return f"{folder.name}.{name}"


def destroy_keys_for(path: Path, was_folder: bool) -> list[Path]:
    """Destroy the data keys of a deleted file or folder item: its own, those of the
    files inside a folder item and of its manifest (beside it), and a file's inside a
    folder item."""
    done = destroy_keys(path.parent, path.name)
    done += destroy_keys(path.parent.parent, nested_name(path.parent, path.name))
    if was_folder:
        done += destroy_keys(path.parent, nested_name(path, NESTED_MANIFEST))
        kdir = keys_dir(path.parent)
        prefix = nested_name(path, NESTED_PREFIX)
        try:
            names = os.listdir(kdir)
        except FileNotFoundError:
            names = []
        for name in names:
            if name.startswith(prefix) and name.endswith(KEY_SUFFIX):
                destroy_file(kdir / name)
                done.append(kdir / name)
    return done


def key_place(path: Path, header: Header) -> tuple[Path, str]:
    """Where the data key of the encrypted file ``path`` lives: beside it (its folder,
    its name), or, for a file inside a folder item, beside that folder
    (:func:`nested_name`). The first that holds the key its header names; else beside it."""
    own = (path.parent, path.name)
    nested = (path.parent.parent, nested_name(path.parent, path.name))
    for folder, name in (own, nested):
        if (keys_dir(folder) / f"{name}.{header.token_hex}{KEY_SUFFIX}").exists():
            return folder, name
    return own


@dataclass
class MemoryKeyring:
    """Data keys held in memory only (spill segments, which do not outlive the process)."""

    keys: dict[str, bytes] = field(default_factory=dict, repr=False)

    def seal(self, name: str, data: Any) -> bytearray:
        data_key = secrets.token_bytes(KEY_BYTES)
        header = new_header(new_token())
        self.keys[name] = data_key
        return seal(data, data_key, name, header)

    def open(self, name: str, blob: Any, what: str) -> bytearray:
        def key_of(_header: Header) -> bytes:
            try:
                return self.keys[name]
            except KeyError:
                raise KeyUnavailable(f"{what}: its data key was destroyed") from None

        return unseal(blob, name, key_of, what)

    def shred(self, name: str) -> None:
        self.keys.pop(name, None)


@dataclass
class RotateReport:
    """What :func:`rewrap_tree` did."""

    rewrapped: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    old_key_ids: set[str] = field(default_factory=set)
    old_versions_deleted: int = 0
    """Noncurrent versions of key objects deleted (a bucket that keeps versions)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rewrapped": len(self.rewrapped),
            "already_current": len(self.already),
            "old_key_ids": sorted(self.old_key_ids),
            "old_versions_deleted": self.old_versions_deleted,
        }


def key_files(root: Path) -> list[Path]:
    """Every wrapped data key file under ``root``."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        if Path(folder).name == KEYS_DIR and Path(folder).parent.name == MANIFEST_DIR:
            found += [Path(folder) / f for f in files if f.endswith(KEY_SUFFIX)]
    return sorted(found)


def _split_key_name(path: Path) -> tuple[str, str]:
    stem = path.name[: -len(KEY_SUFFIX)]
    name, _, token = stem.rpartition(".")
    return name, token


def needs_rewrap(
    body: dict[str, Any],
    place: str,
    by_id: dict[str, MasterKey],
    new: MasterKey,
    report: RotateReport,
) -> bool:
    """Whether the wrapped key ``body`` (at ``place``: a key file's path or a key
    object's URI) is to be re-wrapped with ``new`` (False: it already is, recorded in
    ``report``); KeyUnavailable when it is wrapped with a key that is neither ``new``
    nor one of ``by_id`` (nothing was changed yet)."""
    key_id = body.get("key_id")
    if key_id == new.key_id:
        report.already.append(place)
        return False
    if key_id not in by_id:
        raise KeyUnavailable(
            f"the data key {place} is wrapped with master key {key_id}, which is not among "
            f"the old keys given ({', '.join(by_id) or 'none'}); nothing was changed"
        )
    return True


def rewrap_tree(root: Path, old: Sequence[MasterKey], new: MasterKey) -> RotateReport:
    """Re-wrap every data key under ``root`` with ``new`` (data files are not touched).

    A key wrapped with none of ``old`` (nor ``new``) is KeyUnavailable naming its key id,
    before anything is changed.
    """
    by_id = {k.key_id: k for k in old}
    report = RotateReport()
    plan: list[tuple[Path, dict[str, Any]]] = []
    for path in key_files(root):
        body = read_key_file(path, f"key file {path}")
        if needs_rewrap(body, str(path), by_id, new, report):
            plan.append((path, body))
    for path, body in plan:
        name, token = _split_key_name(path)
        master = by_id[str(body["key_id"])]
        data_key = unwrap(master, body, name, token, f"key file {path}")
        _write_private(path, json.dumps(wrap(new, data_key, name, token)).encode())
        report.rewrapped.append(str(path))
        report.old_key_ids.add(master.key_id)
    return report


__all__ = [
    "NESTED_MANIFEST",
    "Keyring",
    "MemoryKeyring",
    "PendingKey",
    "RotateReport",
    "Settling",
    "destroy_file",
    "destroy_keys",
    "destroy_keys_for",
    "key_files",
    "key_id_of_file",
    "key_place",
    "keys_dir",
    "needs_rewrap",
    "nested_name",
    "rewrap_tree",
]
