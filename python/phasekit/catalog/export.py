"""Exporting a run's stored items to a folder, as they are or converted to one format.

Each file is verified against its recorded checksum first (a mismatch raises
``CorruptDataError`` naming the item and file). Tables (arrow, parquet, csv; a
partitioned parquet folder too) are converted to the requested format with pyarrow;
other files (json, pickle, ...) are copied and the copy is verified. Encrypted files
(docs/security.md) are exported decrypted, with the key source the run recorded: the
export is for use elsewhere (its files are 0600 in 0700 folders). Inline values are
written as JSON. Objects (a run's results on object storage) are fetched and verified
first. Items held only in memory or in a stream have no bytes on disk and are listed as
skipped. Files keep their place under ``<results_dir>/<run>/``; others go to
``<stage>/<entity>-<id><suffix>``. ``manifest.json`` lists every exported file with
its checksum. Every file appears under its final name only once complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from phasekit.catalog.encode import to_json
from phasekit.catalog.integrity import reference_checksum, reference_size
from phasekit.catalog.names import TMP_SUFFIX
from phasekit.catalog.rows import ItemRow, ProcessRow
from phasekit.crypt import Encryption, decrypt_file, recorded_encryption
from phasekit.errors import CatalogError, InvalidArgument, StorageError, UnsafePath
from phasekit.objstore import is_object_url
from phasekit.paths import contained, make_private, make_private_dir
from phasekit.stores.partset import is_part_set, read_part_set

if TYPE_CHECKING:
    import pyarrow as pa

    from phasekit.catalog.base import Catalog

FORMATS = ("arrow", "parquet", "csv")
SUFFIXES = {"arrow": ".arrow", "parquet": ".parquet", "csv": ".csv"}
_BY_SUFFIX = {
    ".arrow": "arrow",
    ".ipc": "arrow",
    ".feather": "arrow",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".json": "json",
}
_FORMAT_ALIASES = {"ipc": "arrow", "feather": "arrow", "arrow_ipc": "arrow"}


@dataclass
class ExportedItem:
    item_id: int
    stage_name: str
    entity_name: str
    source: str
    target: str  # relative to the export folder
    format: str | None
    converted: bool
    size_bytes: int
    checksum: str


@dataclass
class ExportReport:
    run: str
    to_dir: str
    format: str | None
    exported: list[ExportedItem] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (item id, reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "to_dir": self.to_dir,
            "format": self.format,
            "exported": [asdict(e) for e in self.exported],
            "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
        }


def source_format(item: ItemRow, path: Path) -> str | None:
    """The item's format, normalised (from the row, else from the file suffix)."""
    fmt = (item.format or "").lower() or _BY_SUFFIX.get(path.suffix.lower())
    return _FORMAT_ALIASES.get(fmt, fmt) if fmt else None


def read_table(path: Path | Any, fmt: str) -> pa.Table:
    """A table from a file (``path``) or from a file's bytes (a bytes-like object)."""
    import pyarrow as pa

    def source() -> Any:
        return pa.OSFile(str(path), "rb") if isinstance(path, Path) else pa.BufferReader(path)

    if isinstance(path, Path) and is_part_set(path):  # a table of Arrow parts
        return read_part_set(path, str(path))
    if fmt == "arrow":
        with source() as raw:
            try:
                return pa.ipc.open_file(raw).read_all()
            except pa.ArrowInvalid:
                raw.seek(0)
                return pa.ipc.open_stream(raw).read_all()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(str(path) if isinstance(path, Path) else source())
    import pyarrow.csv as pcsv

    return pcsv.read_csv(str(path) if isinstance(path, Path) else source())


def write_table(table: pa.Table, path: Path, fmt: str) -> None:
    import pyarrow as pa

    if fmt == "arrow":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, str(path), compression="zstd", write_page_checksum=True)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, str(path))


def _atomic(target: Path, produce: Callable[[Path], object]) -> None:
    """Run ``produce(tmp)`` then rename the result to ``target`` (a file or a folder)."""
    make_private_dir(target.parent)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        produce(tmp)
        make_private(tmp)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


class _Exporter:
    def __init__(self, catalog: Catalog, proc: ProcessRow, to_dir: Path, fmt: str | None) -> None:
        self.catalog = catalog
        self.proc = proc
        self.to_dir = to_dir
        self.fmt = fmt
        self.used: set[Path] = set()
        self._encryption: Encryption | None = None
        rdir = proc.results_dir or (str(catalog.results_dir) if catalog.results_dir else None)
        local = rdir is not None and not is_object_url(rdir)
        self.run_dir: Path | None = Path(str(rdir)) / proc.process_id if local else None

    def _target(self, item: ItemRow, path: Path | None, suffix: str) -> Path:
        rel: Path | None = None
        if path is not None and self.run_dir is not None and path.is_relative_to(self.run_dir):
            rel = path.relative_to(self.run_dir)
        if rel is None:
            name = path.name if path is not None else item.entity_name
            rel = Path(item.stage_name) / f"{item.entity_name}-{item.id}{Path(name).suffix}"
        if suffix:
            rel = rel.with_name(Path(rel.name).stem + suffix)
        if rel in self.used:
            rel = rel.with_name(f"{rel.stem}-{item.id}{rel.suffix}")
        try:  # names come from the row: they may not leave the export folder
            contained(rel, self.to_dir, f"export target of {item.label}")
        except UnsafePath as exc:
            raise CatalogError(str(exc)) from None
        self.used.add(rel)
        return rel

    def _record(
        self, item: ItemRow, source: str, rel: Path, fmt: str | None, converted: bool
    ) -> ExportedItem:
        full = self.to_dir / rel
        return ExportedItem(
            item.id,
            item.stage_name,
            item.entity_name,
            source,
            rel.as_posix(),
            fmt,
            converted,
            reference_size(full),
            reference_checksum(full),
        )

    def inline(self, item: ItemRow) -> ExportedItem:
        rel = self._target(item, None, ".json")
        text = to_json(item.inline_data)
        _atomic(self.to_dir / rel, lambda tmp: tmp.write_text(text))
        return self._record(item, "inline", rel, "json", False)

    def _plaintext(self, item: ItemRow, path: Path) -> Any:
        """The decrypted bytes of an encrypted item's file (None: it is not encrypted)."""
        if item.key_id is None:
            return None
        if self._encryption is None:
            self._encryption = recorded_encryption(self.proc.config, item.key_id)
        return decrypt_file(path, self._encryption, item.label)

    def file(self, item: ItemRow, path: Path) -> ExportedItem:
        self.catalog.verify_item(item)
        src_fmt = source_format(item, path)
        convert = self.fmt is not None and src_fmt in FORMATS and src_fmt != self.fmt
        plain = self._plaintext(item, path)
        if convert and self.fmt is not None and src_fmt is not None:
            rel = self._target(item, path, SUFFIXES[self.fmt])
            out_fmt, in_fmt = self.fmt, src_fmt
            try:
                table = read_table(path if plain is None else plain, in_fmt)
                _atomic(self.to_dir / rel, lambda tmp: write_table(table, tmp, out_fmt))
            except (OSError, ValueError, NotImplementedError) as exc:
                raise StorageError(
                    f"cannot convert {item.label} ({path}) to {out_fmt}: {exc}"
                ) from exc
            return self._record(item, item.data_reference or "", rel, out_fmt, True)
        rel = self._target(item, path, "")
        if plain is not None:
            _atomic(self.to_dir / rel, lambda tmp: tmp.write_bytes(plain))
            return self._record(item, item.data_reference or "", rel, src_fmt, False)
        copy: Callable[[Path], Any] = (
            (lambda tmp: shutil.copytree(path, tmp))
            if path.is_dir()
            else (lambda tmp: shutil.copyfile(path, tmp))
        )
        _atomic(self.to_dir / rel, copy)
        done = self._record(item, item.data_reference or "", rel, src_fmt, False)
        if item.checksum is not None and done.checksum != item.checksum:
            raise StorageError(f"copy of {item.label} to {self.to_dir / rel} fails its checksum")
        return done


NOT_EXPORTED = {
    "released": "released: held in memory while its run ran, never stored",
    "missing": "marked missing by doctor",
    "corrupt": "marked corrupt by doctor",
    "deleting": "being deleted by a cleanup",
}
"""Why an item in each state but ``present`` is not exported."""


def _export_item(
    catalog: Catalog, exporter: _Exporter, item: ItemRow, cache: Path, report: ExportReport
) -> None:
    if item.state != "present":
        report.skipped.append((item.id, NOT_EXPORTED[item.state]))
        return
    if item.storage_type == "inline":
        report.exported.append(exporter.inline(item))
        return
    path = catalog.item_local(item, cache)
    if path is None:
        report.skipped.append((item.id, f"{item.data_reference} has no bytes on disk"))
    else:
        report.exported.append(exporter.file(item, path))


def export_run(
    catalog: Catalog, run: str, to_dir: str | Path, fmt: str | None = None
) -> ExportReport:
    """Export every item of ``run`` into ``to_dir`` (``fmt``: None keeps each file's format)."""
    if fmt is not None:
        fmt = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
        if fmt not in FORMATS:
            raise InvalidArgument(
                f"export format {fmt!r} is not valid; allowed: {', '.join(FORMATS)} (or none to copy)"
            )
    proc = catalog.resolve_run(run)
    out = Path(to_dir).absolute()
    make_private_dir(out)
    exporter = _Exporter(catalog, proc, out, fmt)
    report = ExportReport(proc.process_id, str(out), fmt)
    with tempfile.TemporaryDirectory(prefix="phasekit-export-") as fetched:
        cache = Path(fetched)  # objects (results on object storage) are fetched here first
        if is_object_url(proc.results_dir):
            exporter.run_dir = cache / proc.process_id
        for item in catalog.list_items(proc.process_id):
            _export_item(catalog, exporter, item, cache, report)
    manifest = {
        "run": proc.to_dict(),
        "format": fmt,
        "items": [asdict(e) for e in report.exported],
        "skipped": report.to_dict()["skipped"],
    }
    text = json.dumps(manifest, indent=2, default=str)
    _atomic(out / "manifest.json", lambda tmp: tmp.write_text(text))
    return report
