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
FileStore, the key, kind, format and metadata its sealed manifest records). Items held only in
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

from phasekit.catalog.integrity import reference_checksum
from phasekit.catalog.names import TMP_SUFFIX
from phasekit.catalog.recorder import KIND_KEY
from phasekit.catalog.rows import NewItem
from phasekit.catalog.uris import parse_location, path_to_uri
from phasekit.checksum import seal_problem
from phasekit.errors import CatalogError
from phasekit.names import is_valid_name
from phasekit.paths import read_bytes_nofollow

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

    @property
    def summary(self) -> str:
        kept = f"; the damaged file is kept as {self.kept_as}" if self.kept_as else ""
        return f"rebuilt {len(self.runs)} runs and {self.items} items from the results{kept}"


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


def _manifest_ref(path: Path) -> dict[str, Any] | None:
    """The ref a FileStore manifest ``.phasekit/<stem>.json`` next to ``path`` records for
    it (metadata, key, kind, format), when the manifest is sound and names this file."""
    manifest = path.parent / ".phasekit" / f"{path.name.split('.', 1)[0]}.json"
    try:
        raw = json.loads(read_bytes_nofollow(manifest))
    except (OSError, ValueError):
        return None
    if seal_problem(raw) is not None or not isinstance(raw.get("ref"), dict):
        return None
    ref: dict[str, Any] = raw["ref"]
    if ref.get("uri") != path.as_uri() or not isinstance(ref.get("metadata") or {}, dict):
        return None
    return ref


def _items_of(run_dir: Path, run: str, report: RebuildReport) -> list[NewItem]:
    items = []
    for folder, dirs, files in os.walk(run_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(TMP_SUFFIX))
        rel = Path(folder).relative_to(run_dir).parts
        if not rel:
            continue
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
            ref = _manifest_ref(path)
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
                )
            )
    return items


def rebuild_catalog(
    location: str | os.PathLike[str], *, results_dir: str | os.PathLike[str] | None = None
) -> RebuildReport:
    """Set a damaged SQLite catalog aside and rebuild it from its results folder."""
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
            items = _items_of(run_dir, run, report)
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
