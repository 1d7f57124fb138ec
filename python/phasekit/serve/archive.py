"""A run as a tar stream: its files under their places in the run's folder, inline values
as JSON, and ``manifest.json`` (every member with its checksum, and the items skipped).

Headers and bytes are written as they are read, one file chunk at a time; each file's
CRC-32 is checked as it goes (a mismatch raises CorruptDataError, which cuts the
archive short rather than end it as if it were whole). An encrypted file is archived
decrypted, chunk by chunk, with the server's key (each chunk authenticated by AES-GCM);
its manifest entry carries the checksum of the archived bytes and ``"decrypted": true``.
Without the key the export is refused (KeyUnavailable) before anything is sent.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from phasekit.catalog import Catalog, ItemRow, ProcessRow
from phasekit.checksum import bytes_checksum, format_crc32
from phasekit.crypt import CHUNK_BYTES, Encryption, SealedFile, open_sealed
from phasekit.crypt.aead import plain_size
from phasekit.crypt.objects import open_object
from phasekit.errors import CatalogError, CorruptDataError, KeyUnavailable
from phasekit.objstore import ObjectRoot
from phasekit.serve.data import file_chunks, folder_files, inline_json
from phasekit.stores.partset import is_part_set_key, listed
from phasekit.stores.streamparts import MANIFEST

BLOCK = 512


@dataclass(frozen=True)
class Member:
    name: str  # the path inside the archive
    path: Path | None  # the file to copy, or None for ``data``
    size: int
    checksum: str | None
    data: bytes = b""
    fetch: Callable[[], bytes] | None = None  # an object's verified bytes, read when streamed
    sealed: SealedFile | None = None  # an encrypted file, archived decrypted (``size``: plain)
    decrypted: bool = False  # ``fetch`` gives an encrypted object's plaintext


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(time.time())
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def _object_member(
    catalog: Catalog,
    found: tuple[ObjectRoot, str],
    run: ProcessRow,
    item: ItemRow,
    encryption: Encryption | None,
) -> Member:
    """An object of the run, under its place in the run (``<run>/<phase>/...``), its
    verified bytes read when the archive is streamed; an encrypted one (its row has a
    key id) archived decrypted: without the key, or under another master key than the
    row's, KeyUnavailable is raised here, before anything is sent."""
    root, rel = found
    name = rel
    if not rel.startswith(f"{run.process_id}/"):
        name = f"{run.process_id}/{item.stage_name}/{item.entity_name}-{item.id}"
    master = None if encryption is None else encryption.master
    decrypt = item.key_id is not None
    if decrypt and (master is None or master.key_id != item.key_id):
        given = "no key is configured" if master is None else f"the key given is {master.key_id}"
        raise KeyUnavailable(f"{item.label} is encrypted under master key {item.key_id}; {given}")
    size = plain_size(item.size_bytes, CHUNK_BYTES, item.label) if decrypt else item.size_bytes

    def fetch() -> bytes:
        data = catalog.read_object(item) or b""
        plain = open_object(root, rel, data, master, item.label)
        out = data if plain is None else bytes(plain)
        if len(out) != size:
            raise CorruptDataError(f"{item.label}: {len(out)} bytes to archive, planned {size}")
        return out

    checksum = None if decrypt else item.checksum
    return Member(name, None, size, checksum, fetch=fetch, decrypted=decrypt)


def _part_set_members(
    found: tuple[ObjectRoot, str], run: ProcessRow, item: ItemRow
) -> list[Member]:
    """A part set on object storage (:mod:`phasekit.stores.partset`) as its manifest and
    its parts, each read (and checked against the manifest) when streamed."""
    root, rel = found
    if not rel.startswith(f"{run.process_id}/"):
        raise CatalogError(f"{item.label}: {rel} is not a key of run {run.process_id}")
    manifest = root.read(f"{rel}/{MANIFEST}", None, item.label)
    with tempfile.TemporaryDirectory(prefix="phasekit-archive-") as tmp:
        folder = Path(tmp) / PurePosixPath(rel).name
        folder.mkdir()
        (folder / MANIFEST).write_bytes(manifest)
        parts = [part for _, part in listed(folder, item.label)]
    members = [Member(f"{rel}/{MANIFEST}", None, len(manifest), None, manifest)]
    for part in parts:
        key = f"{rel}/{part.file}"

        def fetch(key: str = key, checksum: str = part.checksum) -> bytes:
            return root.read(key, checksum, item.label)

        members.append(Member(key, None, part.size_bytes, part.checksum, fetch=fetch))
    return members


def _file_member(
    name: str, path: Path, size: int, checksum: str | None, encryption: Encryption | None
) -> Member:
    """A file's member; an encrypted file is archived decrypted (KeyUnavailable without
    its key: raised here, before anything is sent)."""
    sealed = open_sealed(path, encryption, name)
    if sealed is None:
        return Member(name, path, size, checksum)
    return Member(name, path, sealed.size, None, sealed=sealed)


def _file_members(
    catalog: Catalog, run: ProcessRow, item: ItemRow, path: Path, encryption: Encryption | None
) -> list[Member]:
    base = Path(catalog.results_dir or path.parent) / run.process_id
    rel = _relative(path, base) or f"{item.stage_name}/{item.entity_name}-{item.id}{path.suffix}"
    if not path.is_dir():
        name = f"{run.process_id}/{rel}"
        return [_file_member(name, path, item.size_bytes, item.checksum, encryption)]
    return [
        _file_member(f"{run.process_id}/{rel}/{sub}", full, full.stat().st_size, None, encryption)
        for sub, full in folder_files(path, item.label)
    ]


def plan(
    catalog: Catalog, run: ProcessRow, items: list[ItemRow], encryption: Encryption | None = None
) -> tuple[list[Member], list[dict[str, Any]]]:
    """The members of the archive (checked paths only) and the items it leaves out;
    encrypted files are decrypted with ``encryption`` (KeyUnavailable without it)."""
    members: list[Member] = []
    skipped: list[dict[str, Any]] = []
    for item in items:
        if item.storage_type == "inline":
            data = inline_json(item.inline_data)
            name = f"{run.process_id}/inline/{item.stage_name}/{item.entity_name}-{item.id}.json"
            members.append(Member(name, None, len(data), bytes_checksum(data), data))
            continue
        found = catalog.item_object(item)
        if found is not None and is_part_set_key(found[1]):  # its manifest and parts
            members.extend(_part_set_members(found, run, item))
            continue
        if found is not None:  # an object: its place in the run, bytes read when streamed
            members.append(_object_member(catalog, found, run, item, encryption))
            continue
        path = catalog.item_path(item)
        if path is None:
            skipped.append({"id": item.id, "reason": "no bytes on disk (memory or stream)"})
            continue
        members.extend(_file_members(catalog, run, item, path, encryption))
    seen: set[str] = set()
    unique = []
    for member in members:  # a file recorded by several rows is archived once
        if member.name not in seen and ".." not in PurePosixPath(member.name).parts:
            seen.add(member.name)
            unique.append(member)
    return unique, skipped


def stream(
    run: ProcessRow, members: list[Member], skipped: list[dict[str, Any]]
) -> Iterator[bytes]:
    """The tar bytes of ``members`` then ``manifest.json``."""
    listed = []
    for member in members:
        yield _header(member.name, member.size)
        checksum = member.checksum
        if member.sealed is not None:
            crc = 0
            for chunk in member.sealed.chunks():
                crc = zlib.crc32(chunk, crc)
                yield chunk
            checksum = format_crc32(crc)  # of the archived (decrypted) bytes
        elif member.fetch is not None:
            data = member.fetch()
            if member.decrypted:
                checksum = format_crc32(zlib.crc32(data))  # of the archived (decrypted) bytes
            yield data
        elif member.path is None:
            yield member.data
        else:
            yield from file_chunks(member.path, 0, member.size - 1, member.checksum, member.name)
        yield _padding(member.size)
        entry: dict[str, Any] = {
            "name": member.name,
            "size_bytes": member.size,
            "checksum": checksum,
        }
        if member.sealed is not None or member.decrypted:
            entry["decrypted"] = True
        listed.append(entry)
    manifest = json.dumps(
        {"run": run.process_id, "files": listed, "skipped": skipped}, indent=2
    ).encode()
    yield _header(f"{run.process_id}/manifest.json", len(manifest))
    yield manifest + _padding(len(manifest))
    yield b"\0" * (2 * BLOCK)
