"""A table stored as a part set: Arrow IPC part files and a manifest, in one folder.

``<folder>/<name>.parts/part-000001.arrow, part-000003.arrow, ..., manifest.json``: the
on-disk form of a stream (:mod:`phasekit.stores.streamparts`, its manifest format and
part names), written by several writers. Each part is written once under its final
name by whoever holds its rows (a cluster worker, :mod:`phasekit.workflow.blockwrite`),
atomically and fsynced (``phasekit.IpcWriter``), and its checksum, size and rows are
reported to the one committer; the committer then writes the manifest listing the
parts in table order (:func:`commit`), which is the commit point: a reader sees
exactly the parts it lists, each verified against its checksum
(:func:`read_part_set`, :func:`part_set_batches`), and a part it lists that is missing
or damaged is a :class:`~phasekit.errors.CorruptDataError`. Part numbers need not be
contiguous (a part is named after its block). The folder's catalog checksum is the
folder form of :mod:`phasekit.checksum`, computed from the parts' checksums without
reading them (:func:`phasekit.checksum.tree_checksum_of`).

Other readers: the parts are plain Arrow IPC files, so ``pyarrow.dataset.dataset(
part_files(folder), format="arrow")``, ``polars.scan_ipc(f"{folder}/part-*.arrow")`` or
DuckDB over either read the table (in part order, which is the manifest's).
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pyarrow as pa

from phasekit.checksum import bytes_checksum, file_checksum, tree_checksum, tree_checksum_of
from phasekit.errors import CorruptDataError, InvalidArgument, StorageError
from phasekit.paths import contained, make_private_dir
from phasekit.stores import values
from phasekit.stores.streamparts import MANIFEST, Part, StreamFolder, write_arrow_part

if TYPE_CHECKING:
    from phasekit.objstore import ObjectRoot

log = logging.getLogger(__name__)

SUFFIX = ".parts"
"""The suffix of a part set's folder (``containers.parts``)."""
PROBE = ".parts-probe"
"""The file (or object) in a phase's folder that tells a writer elsewhere (a cluster
worker, :class:`~phasekit.workflow.blockwrite.PartSink`) it sees the run's results."""

__all__ = [
    "PROBE",
    "SUFFIX",
    "commit",
    "fetch_part_set",
    "is_part_set",
    "is_part_set_key",
    "listed",
    "object_part_set_problem",
    "part_files",
    "part_name",
    "part_set_batches",
    "part_set_keys",
    "read_part_set",
    "write_object_part",
    "write_part",
]


def part_name(index: int) -> str:
    """The file of part ``index`` (0, 1, ...): ``part-000001.arrow``, ..."""
    if index < 0 or index >= 999_999:
        raise InvalidArgument(f"part index {index} is out of range (0 to 999998)")
    return f"part-{index + 1:06d}.arrow"


def is_part_set(path: Path) -> bool:
    """``path`` is a part set's folder (a ``.parts`` folder)."""
    return path.name.endswith(SUFFIX) and path.is_dir()


def write_part(folder: Path, index: int, table: pa.Table, compression: Optional[str]) -> Part:
    """Write ``table`` as part ``index`` of the part set ``folder`` (under its final name,
    atomically and fsynced; a part written again, by a retried writer, is replaced by
    the same rows). Returns what the manifest lists of it."""
    make_private_dir(folder)
    name = part_name(index)
    path = contained(name, folder, f"part {name} of {folder.name}")
    info = write_arrow_part(path, table, table.schema, compression, f"writing {name} of {folder}")
    batches = int(info.get("batches", len(table.to_batches())))
    return Part(name, str(info["checksum"]), int(info["size_bytes"]), table.num_rows, [batches])


def write_object_part(
    root: ObjectRoot, rel_folder: str, index: int, table: pa.Table, compression: Optional[str]
) -> Part:
    """Write ``table`` as part ``index`` of the part set ``rel_folder`` on object storage:
    one object under its final key, its bytes checked before it becomes visible
    (:meth:`~phasekit.objstore.ObjectRoot.put_stream`)."""
    from phasekit.stores.formats.arrow import ipc_file_bytes

    name = part_name(index)
    data = ipc_file_bytes(table, compression, table.schema)
    checksum = bytes_checksum(data)
    root.put_stream(f"{rel_folder}/{name}", io.BytesIO(data), checksum)
    batches = pa.ipc.open_file(pa.py_buffer(data)).num_record_batches
    return Part(name, checksum, len(data), table.num_rows, [batches])


def commit(
    folder: Path,
    schema: pa.Schema,
    compression: Optional[str],
    parts: Sequence[Part],
    local: bool = True,
) -> tuple[int, str]:
    """Commit the part set ``folder``: files it does not list (a killed writer's
    leftovers) are removed, then its manifest is written listing ``parts`` in order.
    Returns the folder's size and checksum (the folder form of
    :mod:`phasekit.checksum`). ``local``: every part is a file of the folder (else some
    are objects already, which publishing the folder checks,
    :class:`~phasekit.catalog.publish.PublishingCatalog`)."""
    make_private_dir(folder)
    listed = {p.file for p in parts}
    for child in folder.iterdir():
        if child.name in listed or child.name == MANIFEST:
            continue
        log.info("part set %s: removing %s (no part of it)", folder, child.name)
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    for part in parts if local else ():
        if not (folder / part.file).is_file():
            raise StorageError(f"part set {folder}: part {part.file} is missing; cannot commit")
    stream = StreamFolder(folder, folder.name.removesuffix(SUFFIX), compression)
    stream.kind, stream.schema, stream.parts = values.TABLE, schema, list(parts)
    stream.finish()
    manifest = folder / MANIFEST
    size = manifest.stat().st_size
    files = [(MANIFEST, file_checksum(manifest), size)]
    files += [(p.file, p.checksum, p.size_bytes) for p in parts]
    return size + sum(p.size_bytes for p in parts), tree_checksum_of(files)


def _load(folder: Path, label: str) -> StreamFolder:
    if not folder.is_dir():
        raise CorruptDataError(f"{label}: part set {folder} is missing")
    stream = StreamFolder.load(folder, folder.name.removesuffix(SUFFIX))
    if stream is None:
        raise CorruptDataError(f"{label}: part set {folder} has no manifest")
    if stream.schema is None:
        raise CorruptDataError(f"{label}: the manifest of part set {folder} has no schema")
    return stream


def listed(folder: Path, label: str = "part set") -> list[tuple[Path, Part]]:
    """The parts a part set's manifest lists, in order, each with its path in the folder
    (not verified)."""
    stream = _load(folder, label)
    return [(contained(p.file, folder, f"{label}: part"), p) for p in stream.parts]


def part_files(folder: Path, label: str = "part set") -> list[Path]:
    """The part files a part set's manifest lists, in order (not verified)."""
    return [path for path, _ in listed(folder, label)]


def part_set_batches(
    folder: Path, label: str, columns: Optional[Sequence[str]] = None
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The schema and record batches of a part set, part by part, each part verified
    against its checksum before its batches are given (CorruptDataError naming
    ``label`` otherwise)."""
    stream = _load(folder, label)
    schema = stream.schema
    assert schema is not None
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise InvalidArgument(
                f"{label} has no column {', '.join(map(repr, missing))}; allowed: "
                f"{', '.join(schema.names)}"
            )
        schema = pa.schema([schema.field(c) for c in columns])

    def batches() -> Iterator[pa.RecordBatch]:
        for part in stream.parts:
            table = _conformed(stream.read_part(part), stream.schema, folder, label)
            if columns is not None:
                table = table.select(list(columns))
            yield from table.to_batches()

    return schema, batches()


def _conformed(table: pa.Table, schema: Optional[pa.Schema], folder: Path, label: str) -> pa.Table:
    if schema is None or table.schema.equals(schema):
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowException, ValueError) as exc:
        raise CorruptDataError(
            f"{label}: a part of {folder} does not have the manifest's schema: {exc}"
        ) from None


def read_part_set(folder: Path, label: str = "part set") -> pa.Table:
    """A part set's table (every part verified; CorruptDataError naming ``label`` for a
    missing manifest, a missing or damaged part)."""
    schema, batches = part_set_batches(folder, label)
    return pa.Table.from_batches(list(batches), schema=schema)


# ------------------------------------------------------------------ on object storage


def is_part_set_key(rel: str) -> bool:
    """``rel`` (a key below a results root) names a part set (its ``.parts`` folder)."""
    return rel.endswith(SUFFIX)


def part_set_keys(root: ObjectRoot, rel: str) -> list[str]:
    """The keys of a part set's objects on ``root`` (its manifest, its parts, anything
    else under its folder)."""
    return list(root.list(f"{rel}/"))


def fetch_part_set(root: ObjectRoot, rel: str, dest: Path, label: str) -> Path:
    """Download the part set ``rel`` into the local folder ``dest``: its manifest, then
    each part it lists, verified against the manifest's checksum (CorruptDataError
    naming ``label`` otherwise). Returns ``dest``, read as any local part set."""
    make_private_dir(dest)
    root.download(f"{rel}/{MANIFEST}", dest / MANIFEST, None, label)
    for part in _load(dest, label).parts:
        target = contained(part.file, dest, f"{label}: part")
        root.download(f"{rel}/{part.file}", target, part.checksum, label)
    return dest


def object_part_set_problem(
    root: ObjectRoot, rel: str, size_bytes: Optional[int], checksum: Optional[str]
) -> Optional[str]:
    """Why the part set ``rel`` on ``root`` does not hold the recorded bytes (None when it
    does): its manifest or a part missing or failing its check, or the whole not the
    recorded size and checksum."""
    if not root.exists(f"{rel}/{MANIFEST}"):
        return "is missing (no manifest)"
    with tempfile.TemporaryDirectory(prefix="phasekit-parts-") as tmp:
        local = Path(tmp) / Path(rel).name
        try:
            fetch_part_set(root, rel, local, rel)
        except CorruptDataError as exc:
            return f"fails its check ({exc})"
        actual_size = sum(p.stat().st_size for p in local.iterdir())
        if size_bytes is not None and actual_size != size_bytes:
            return f"has {actual_size} bytes, recorded {size_bytes}"
        actual = tree_checksum(local)
        if checksum is not None and actual != checksum:
            return f"fails its checksum: {actual}, recorded {checksum}"
    return None
