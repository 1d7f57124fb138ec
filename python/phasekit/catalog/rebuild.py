"""Rebuilding a lost or damaged SQLite catalog from the results folder.

The results folder holds everything a run wrote: ``<results>/<run>/<phase>/[<window>/]``
files. A rebuild keeps the damaged catalog file aside as
``catalog.sqlite.damaged-<UTC time>`` (with its ``-wal``), creates a new catalog and
records, for every run folder, a run (workflow from the folder name
``<workflow>-<date>-<time>-<hex>``, else ``recovered``; status ``completed`` when every
phase folder holds its ``phase_summary.json``, else ``interrupted``; started at its
oldest file) and one item per file (stage and phase: the phase folder; window: the
folder below it, ``containers`` excepted; entity: the file name without its suffix;
size and checksum computed now; metadata ``{"rebuilt": true}``, plus, for a file of a
FileStore, the key, kind, format and metadata its sealed manifest records; an encrypted
file's key id from its key file). A run that encrypted has encrypted manifests: they are
read with the master key given (``encryption``; ``phasekit doctor --repair --key``),
else their items come back without their metadata. Items held only in
memory or streams are not on disk and cannot come back; nor can metadata (metrics)
that lived only in the lost rows. Hidden files (store manifests) and temporary files
are not items.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phasekit.catalog.integrity import reference_checksum, reference_size
from phasekit.catalog.names import TMP_SUFFIX
from phasekit.catalog.recorder import KIND_KEY
from phasekit.catalog.rows import NewItem
from phasekit.catalog.uris import parse_location, path_to_uri
from phasekit.checksum import seal_problem
from phasekit.crypt import Encryption, decrypt_file, is_sealed, key_id_of_file
from phasekit.errors import CatalogError, CorruptDataError, KeyUnavailable, UnsafePath
from phasekit.names import MANIFEST_DIR, is_valid_name
from phasekit.paths import read_bytes_nofollow
from phasekit.stores.partset import SUFFIX as PART_SET
from phasekit.stores.partset import listed

log = logging.getLogger("phasekit.catalog.rebuild")

_RUN_NAME = re.compile(r"^(?P<workflow>.+)-\d{8}-\d{6}-[0-9a-f]{6}$")
_FORMATS = {".arrow": "arrow", ".parquet": "parquet", ".csv": "csv", ".json": "json"}


@dataclass
class RebuildReport:
    catalog: str
    kept_as: str | None
    runs: list[str] = field(default_factory=list)
    items: int = 0
    skipped: list[str] = field(default_factory=list)
    sealed_manifests: list[str] = field(default_factory=list)
    """Encrypted manifests not read (no key, or another one): their items came back
    without their metadata."""

    @property
    def summary(self) -> str:
        kept = f"; the damaged file is kept as {self.kept_as}" if self.kept_as else ""
        sealed = ""
        if self.sealed_manifests:
            sealed = (
                f"; {len(self.sealed_manifests)} encrypted manifests were not read (give the "
                "master key to restore their metadata)"
            )
        return (
            f"rebuilt {len(self.runs)} runs and {self.items} items from the results{kept}{sealed}"
        )


def _set_aside(path: Path) -> str | None:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    kept = None
    for suffix in ("", "-wal", "-shm", "-journal"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            dst = path.with_name(f"{path.name}.damaged-{stamp}{suffix}")
            os.replace(src, dst)
            kept = kept or str(dst)
    return kept


def _manifest_ref(
    path: Path, encryption: Encryption | None, report: RebuildReport
) -> dict[str, Any] | None:
    """The ref a FileStore manifest ``.phasekit/<stem>.json`` next to ``path`` records for
    it (metadata, key, kind, format), when the manifest is sound and names this file. An
    encrypted manifest is read with ``encryption``; without it (or with another key) it
    is listed in ``report.sealed_manifests`` and the item is rebuilt without it."""
    manifest = path.parent / MANIFEST_DIR / f"{path.name.split('.', 1)[0]}.json"
    try:
        body = read_bytes_nofollow(manifest)
        if is_sealed(body):
            body = bytes(decrypt_file(manifest, encryption, f"manifest {manifest}") or b"")
        raw = json.loads(body)
    except KeyUnavailable as exc:
        report.sealed_manifests.append(str(manifest))
        log.warning("rebuild: %s", exc)
        return None
    except (OSError, ValueError, CorruptDataError):
        return None
    if seal_problem(raw) is not None or not isinstance(raw.get("ref"), dict):
        return None
    ref: dict[str, Any] = raw["ref"]
    if ref.get("uri") != path.as_uri() or not isinstance(ref.get("metadata") or {}, dict):
        return None
    return ref


def _items_of(
    run_dir: Path, run: str, report: RebuildReport, encryption: Encryption | None
) -> list[NewItem]:
    items = []
    for folder, dirs, files in os.walk(run_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(TMP_SUFFIX))
        rel = Path(folder).relative_to(run_dir).parts
        if not rel:
            continue
        for name in [d for d in dirs if d.endswith(PART_SET)]:  # a table of parts: one item
            dirs.remove(name)
            item = _part_set_item(run, rel, Path(folder) / name)
            if item is None:
                report.skipped.append(str(Path(folder) / name))
            else:
                items.append(item)
        for name in sorted(files):
            path = Path(folder) / name
            stem = name.split(".", 1)[0]
            if name.startswith(".") or name.endswith(TMP_SUFFIX) or path.is_symlink():
                continue
            window = rel[1] if len(rel) > 1 and rel[1] != "containers" else None
            names_ok = all(is_valid_name(n) for n in (rel[0], stem, window or "w"))
            if not names_ok:
                report.skipped.append(str(path))
                continue
            ref = _manifest_ref(path, encryption, report)
            metadata = dict(ref.get("metadata") or {}) if ref else {}
            if ref and ref.get("kind"):
                metadata[KIND_KEY] = ref["kind"]
            metadata["rebuilt"] = True
            entity = str(ref["key"]) if ref and is_valid_name(ref.get("key")) else stem
            items.append(
                NewItem(
                    process_id=run,
                    stage_name=rel[0],
                    entity_name=entity,
                    data_reference=path_to_uri(path),
                    metadata=metadata,
                    size_bytes=path.stat().st_size,
                    checksum=reference_checksum(path),
                    format=(ref or {}).get("format") or _FORMATS.get(path.suffix.lower()),
                    phase=rel[0],
                    window_id=window,
                    created_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
                    key_id=key_id_of_file(path),  # an encrypted file's, from its key file
                )
            )
    return items


def _part_set_item(run: str, rel: tuple[str, ...], path: Path) -> NewItem | None:
    """The item of a part set's folder (:mod:`phasekit.stores.partset`: a block window's
    table, ``<name>.parts``), when its manifest lists its parts; None otherwise."""
    stem = path.name.removesuffix(PART_SET)
    window = rel[1] if len(rel) > 1 and rel[1] != "containers" else None
    if not all(is_valid_name(n) for n in (rel[0], stem, window or "w")):
        return None
    try:
        rows = sum(part.rows for _, part in listed(path, str(path)))
    except (CorruptDataError, OSError, UnsafePath):
        return None
    return NewItem(
        process_id=run,
        stage_name=rel[0],
        entity_name=stem,
        data_reference=path_to_uri(path),
        metadata={"rows": rows, "rebuilt": True},
        size_bytes=reference_size(path),
        checksum=reference_checksum(path),
        format="arrow",
        phase=rel[0],
        window_id=window,
        created_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
    )


def rebuild_catalog(
    location: str | os.PathLike[str],
    *,
    results_dir: str | os.PathLike[str] | None = None,
    encryption: Encryption | None = None,
) -> RebuildReport:
    """Set a damaged SQLite catalog aside and rebuild it from its results folder;
    ``encryption`` reads the encrypted manifests of runs that encrypted (their metadata
    and metrics come back only with it)."""
    from phasekit.catalog.factory import open_catalog
    from phasekit.catalog.sqlite import run_folders

    where = parse_location(location, results_dir)
    if where.dialect != "sqlite" or where.results_dir is None:
        raise CatalogError("only a SQLite catalog with a results folder can be rebuilt")
    path = Path(where.target)
    report = RebuildReport(str(path), _set_aside(path))
    results = where.results_dir
    with open_catalog(path, results_dir=results) as catalog:
        for run in run_folders(results):
            run_dir = results / run
            if not is_valid_name(run):
                report.skipped.append(str(run_dir))
                continue
            items = _items_of(run_dir, run, report, encryption)
            match = _RUN_NAME.match(run)
            workflow = match.group("workflow") if match else "recovered"
            phases = {item.stage_name for item in items}
            done = bool(phases) and all(
                (run_dir / p / "phase_summary.json").exists() for p in phases
            )
            times = [i.created_at for i in items if i.created_at is not None]
            started = min(times) if times else datetime.now(UTC)
            catalog.start_process(
                workflow if is_valid_name(workflow) else "recovered",
                process_id=run,
                results_dir=results,
                started_at=started,
                config={"rebuilt": True},
            )
            catalog.record_items(items)
            catalog.finish_process(
                run, "completed" if done else "interrupted", max(times) if times else started
            )
            report.runs.append(run)
            report.items += len(items)
    log.warning("catalog %s: %s", path, report.summary)
    return report


__all__ = ["RebuildReport", "rebuild_catalog"]
