"""Finding and repairing inconsistencies between the catalog and the files on disk.

Kinds of finding (severity; what ``repair`` does):

- ``temp_file`` (warning): a leftover ``*.phasekit-tmp`` file or folder; removed, unless
  its run is still running and it changed less than ``grace_seconds`` ago.
- ``missing_file`` (error): a row whose file is gone; the row is marked ``missing``.
- ``corrupt_file`` (error): a row whose file is truncated, longer than recorded or fails
  its checksum; the row is marked ``corrupt`` and the file is kept for inspection.
- ``interrupted_delete`` (warning): rows left ``deleting`` by a crashed cleanup; the
  removal is finished (files still recorded by other rows are kept).
- ``recovered_file`` (info): a row marked missing or corrupt whose file verifies again;
  marked ``present``.
- ``marked_item`` (info): a row already marked missing or corrupt, still so.
- ``bad_reference`` (error): a ``file://`` reference that names no local path, or one
  outside the results folder; left alone (nothing outside the results folder is touched).
- ``catalog_unreadable`` (error): the catalog file is missing or empty next to run
  folders, or SQLite cannot open it; with ``repair`` (:func:`doctor_location`) the
  damaged file is kept aside as ``catalog.sqlite.damaged-<time>`` and a new catalog is
  rebuilt from the results (see :mod:`.rebuild`).
- ``integrity`` (error): SQLite's ``PRAGMA integrity_check`` found damage in the file.
  When only indexes are damaged, ``repair`` rebuilds them (``REINDEX``); damage to the
  tables themselves makes the file unreadable (see ``catalog_unreadable``).
- ``schema`` (error): a table or column the catalog needs is missing.
- ``bad_run`` / ``bad_row`` (error): a run or item row whose values are damaged (JSON
  that does not parse, a time, a name or an enum that is not valid, a row check that
  does not match); read paths refuse these rows with ``CatalogError``; left alone
  (a rebuild replaces them).
- ``corrupt_manifest`` (error): a store manifest (``.phasekit/<key>.json`` or a
  stream's ``manifest.json``) that does not parse, names a file outside its folder, or
  whose file is missing or fails its checksum; left alone.
- ``unreferenced_file`` (info): a file under a results folder that no row records;
  left alone (nothing is deleted that might be wanted). Hidden files and folders (a
  store's own manifests) are only searched for temp files; a folder holding its own
  catalog (a results folder nested in this one) is another catalog's and is skipped.
- ``unreferenced_object`` (info): an object under the results prefix of a run on object
  storage (below ``PREFIX/<run id>/``) that no row (nor a row's store manifest, nor a
  block row's parts of its window's part sets: a cluster worker's parts of a window not
  yet complete) records, such as an upload whose row was never committed (a crash
  between the two); a running run's ``.parts-probe`` objects are not reported. ``repair``
  deletes it when it is older than ``object_grace_seconds`` (:data:`OBJECT_GRACE_SECONDS`
  by default; by the store's modification time), after checking again that no row names
  it; a younger one (perhaps an upload whose row is about to be committed) or one whose
  store gives no time is kept. A running run's objects younger than the grace are not
  even reported. Nothing outside a run's recorded prefix is listed or deleted.
- ``ended_memory`` (warning): an in-memory (``memory://``) item still ``present`` though
  its run has ended or the process that held it is gone (a crash); marked ``released``.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from phasekit.catalog.base import MEMORY_PREFIX, OWNER_HOST_KEY, OWNER_PID_KEY
from phasekit.catalog.integrity import object_problem, problem_with
from phasekit.catalog.names import TMP_SUFFIX
from phasekit.catalog.rows import ItemRow, ProcessRow
from phasekit.catalog.schema import TABLES
from phasekit.catalog.uris import CATALOG_FILENAME, uri_to_path
from phasekit.checksum import seal_problem
from phasekit.crypt import (
    HEADER_BYTES,
    Encryption,
    decrypt_file,
    is_sealed,
    key_id_of_file,
    recorded_encryption,
)
from phasekit.crypt.aead import read_header
from phasekit.crypt.objects import key_owners, key_stem, key_stems
from phasekit.errors import (
    CatalogError,
    CorruptDataError,
    InvalidArgument,
    KeyUnavailable,
    StorageError,
    UnsafePath,
)
from phasekit.names import check_name
from phasekit.objstore import ObjectRoot, is_object_url, manifest_of, unknown_versions
from phasekit.paths import contained, read_bytes_nofollow
from phasekit.stores.partset import PROBE, is_part_set_key, part_set_keys
from phasekit.stores.partset import SUFFIX as PART_SET
from phasekit.stores.streamparts import part_of

if TYPE_CHECKING:
    from phasekit.catalog.base import Catalog

log = logging.getLogger("phasekit.catalog.doctor")

SEVERITIES = ("error", "warning", "info")
GRACE_SECONDS = 300.0
"""``grace_seconds``: a running run's temporary files younger than this are kept."""
OBJECT_GRACE_SECONDS = 3600.0
"""``object_grace_seconds``: unreferenced objects younger than this are kept by ``repair``
(an upload is committed to the catalog right after it completes; an hour leaves room for
slow batches and clock skew between the store and this host)."""
_CATALOG_FILES = {CATALOG_FILENAME + s for s in ("", "-wal", "-shm", "-journal")}
_DAMAGED = CATALOG_FILENAME + ".damaged-"


@dataclass
class Finding:
    kind: str
    severity: str
    detail: str
    path: str | None = None
    item_id: int | None = None
    repaired: bool = False
    action: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DoctorReport:
    repair: bool
    findings: list[Finding] = field(default_factory=list)
    items_checked: int = 0
    files_scanned: int = 0

    @property
    def problems(self) -> list[Finding]:
        """Errors and warnings that are not repaired."""
        return [f for f in self.findings if f.severity != "info" and not f.repaired]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "repair": self.repair,
            "items_checked": self.items_checked,
            "files_scanned": self.files_scanned,
            "findings": [f.to_dict() for f in self.findings],
        }


def _check_rows(catalog: Catalog, rows: list[ItemRow], report: DoctorReport, verify: bool) -> None:
    for row in rows:
        if row.state == "deleting" or row.data_reference is None:
            continue
        try:
            found = catalog.item_object(row)
            path = catalog.item_path(row)
        except CatalogError as exc:
            report.findings.append(Finding("bad_reference", "error", str(exc), item_id=row.id))
            continue
        if found is not None:
            report.items_checked += 1
            problem = object_problem(found[0], found[1], row.size_bytes, row.checksum)
            _judge(catalog, row, str(row.data_reference), problem, report)
        if path is None:
            continue
        report.items_checked += 1
        problem = problem_with(path, row.size_bytes, row.checksum, full=verify)
        _judge(catalog, row, str(path), problem, report)


def _judge(
    catalog: Catalog, row: ItemRow, where: str, problem: str | None, report: DoctorReport
) -> None:
    if row.state in ("missing", "corrupt"):
        if problem is None:
            finding = Finding(
                "recovered_file", "info", f"{row.label}: file verifies again", where, row.id
            )
            if report.repair:
                catalog.mark_items([row.id], "present", from_states=(row.state,))
                finding.repaired, finding.action = True, "marked present"
        else:
            finding = Finding(
                "marked_item",
                "info",
                f"{row.label} is marked {row.state}: file {problem}",
                where,
                row.id,
            )
        report.findings.append(finding)
        return
    if problem is None:
        return
    missing = problem == "is missing"
    kind, state = ("missing_file", "missing") if missing else ("corrupt_file", "corrupt")
    finding = Finding(kind, "error", f"{row.label}: file {where} {problem}", where, row.id)
    if report.repair:
        if catalog.mark_items([row.id], state, from_states=("present",)):
            finding.repaired, finding.action = True, f"row marked {state}"
    report.findings.append(finding)


def _finish_deletes(catalog: Catalog, rows: list[ItemRow], report: DoctorReport) -> None:
    stuck = [row for row in rows if row.state == "deleting"]
    if not stuck:
        return
    finding = Finding(
        "interrupted_delete",
        "warning",
        f"{len(stuck)} rows left 'deleting' by an interrupted cleanup: "
        + ", ".join(str(row.id) for row in stuck[:20]),
    )
    if report.repair:
        removal = catalog.remove_items([row.id for row in stuck])
        finding.repaired = not removal.failed
        finding.action = f"removed {len(removal.removed)} rows, {len(removal.files_deleted)} files"
    report.findings.append(finding)


def _memory_gone(row: ItemRow, run: ProcessRow | None) -> str | None:
    """Why a present ``memory://`` item's memory is gone, or None while it may live."""
    if run is None or run.status != "running":
        return f"its run is {run.status if run else 'unknown'}"
    pid, host = row.metadata.get(OWNER_PID_KEY), row.metadata.get(OWNER_HOST_KEY)
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"its process {pid} has ended"
    except PermissionError:
        return None
    return None


def _release_memory(
    catalog: Catalog, rows: list[ItemRow], runs: dict[str, ProcessRow], report: DoctorReport
) -> None:
    for row in rows:
        if row.state != "present" or not (row.data_reference or "").startswith(MEMORY_PREFIX):
            continue
        why = _memory_gone(row, runs.get(row.process_id))
        if why is None:
            continue
        finding = Finding("ended_memory", "warning", f"{row.label} is in memory but {why}")
        finding.item_id = row.id
        if report.repair and catalog.mark_items([row.id], "released", from_states=("present",)):
            finding.repaired, finding.action = True, "marked released"
        report.findings.append(finding)


def _run_of(path: Path, root: Path, runs: dict[str, ProcessRow]) -> ProcessRow | None:
    try:
        first = path.relative_to(root).parts[0]
    except (ValueError, IndexError):
        return None
    return runs.get(first)


def _temp_finding(
    path: Path, root: Path, runs: dict[str, ProcessRow], report: DoctorReport, grace: float
) -> None:
    finding = Finding(
        "temp_file",
        "warning",
        f"leftover temporary {'folder' if path.is_dir() else 'file'} {path}",
        str(path),
    )
    if report.repair:
        run = _run_of(path, root, runs)
        try:
            age = time.time() - path.lstat().st_mtime
        except FileNotFoundError:
            return  # finished (renamed) or removed meanwhile
        if run is not None and run.status == "running" and age < grace:
            finding.action = f"kept: run {run.process_id} is running and the file is {age:.0f}s old"
        else:
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                finding.repaired, finding.action = True, "removed"
            except FileNotFoundError:
                finding.repaired, finding.action = True, "already gone"
            except OSError as exc:
                finding.action = f"cannot remove: {exc.strerror or exc}"
    report.findings.append(finding)


KeyOf = Callable[[Path], Optional[Encryption]]
"""The master key that reads an encrypted manifest (its run's recorded key), if at hand."""


def _manifest_problem(path: Path, root: Path, verify: bool, key_of: KeyOf) -> str | None:
    """What is wrong with a store manifest (None when ``path`` is none or it is sound).

    A FileStore manifest ``<store>/.phasekit/<key>.json`` names its data file in
    ``ref.uri`` (a file directly in ``<store>``); a stream's ``<key>.stream/manifest.json``
    lists part files of its folder. The files must exist with the recorded checksum. An
    encrypted manifest is read with ``key_of(path)``; without a key only its envelope
    is checked (:func:`_sealed_manifest_problem`).
    """
    folder = path.parent
    if folder.name == ".phasekit" and path.suffix == ".json" and not path.name.startswith("."):
        kind = "file"
    elif folder.name.endswith((".stream", PART_SET)) and path.name == "manifest.json":
        kind = "stream"
    else:
        return None
    try:
        body = read_bytes_nofollow(path)
        if is_sealed(body):
            envelope = _sealed_manifest_problem(path)
            encryption = key_of(path) if envelope is None else None
            if encryption is None:
                return envelope
            body = bytes(decrypt_file(path, encryption, f"manifest {path}") or b"")
        raw = json.loads(body)
    except KeyUnavailable as exc:  # the run's recorded key is another one now: unread
        log.info("doctor: %s", exc)
        return None
    except CorruptDataError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:
        return f"does not parse ({exc})"
    problem = seal_problem(raw)
    if problem is not None:
        return problem
    try:
        if kind == "file":
            ref = raw["ref"]
            target = uri_to_path(ref["uri"])
            if target is None:
                return "its ref is not a file:// reference"
            files = [(contained(target, folder.parent, "its file"), ref.get("checksum"))]
            if files[0][0].parent != folder.parent:
                return f"its file {target} is not in the store folder {folder.parent}"
        else:
            files = [
                (contained(str(p["file"]), folder, "part"), p.get("checksum"))
                for p in raw.get("parts", [])
            ]
    except (KeyError, TypeError, AttributeError, CatalogError, UnsafePath) as exc:
        return f"is not a valid manifest ({type(exc).__name__}: {exc})"
    for target, checksum in files:
        problem = problem_with(
            target, None, checksum if isinstance(checksum, str) else None, verify
        )
        if problem is not None:
            return f"its file {target} {problem}"
    return None


def _recorded_keys(root: Path, runs: dict[str, ProcessRow]) -> KeyOf:
    """The key of a file of a run folder under ``root``: the master key its run recorded
    (``encryption.key``), loaded once per run; None when the run did not encrypt or the
    key cannot be loaded here."""
    loaded: dict[str, Encryption | None] = {}

    def key_of(path: Path) -> Encryption | None:
        parts = path.relative_to(root).parts
        proc = runs.get(parts[0]) if parts else None
        if proc is None:
            return None
        if proc.process_id not in loaded:
            try:
                loaded[proc.process_id] = recorded_encryption(proc.config)
            except (KeyUnavailable, InvalidArgument) as exc:
                log.info("doctor: encrypted manifests of run %s unread: %s", proc.process_id, exc)
                loaded[proc.process_id] = None
        return loaded[proc.process_id]

    return key_of


def _sealed_manifest_problem(path: Path) -> str | None:
    """An encrypted manifest (a run with encryption on): its content cannot be read
    without the master key; its envelope must be sound and its data key present (its
    item's file is checked through the item's row)."""
    try:
        read_header(read_bytes_nofollow(path)[:HEADER_BYTES], f"manifest {path}")
    except CorruptDataError as exc:
        return str(exc)
    if key_id_of_file(path) is None:
        return "is encrypted, but its data key is missing or damaged (it cannot be read)"
    return None


def _scan(
    root: Path,
    referenced: set[Path],
    runs: dict[str, ProcessRow],
    report: DoctorReport,
    grace: float,
    verify: bool = True,
) -> None:
    """Walk a results folder for temp files and files no row records.

    Hidden entries (a store's own manifests, say) are searched for temp files only:
    item names never start with '.', so they are never items.
    """
    key_of = _recorded_keys(root, runs)
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        hidden = any(part.startswith(".") for part in base.relative_to(root).parts)
        keep_dirs = []
        for name in sorted(dirs):
            path = base / name
            if name.endswith(TMP_SUFFIX):
                _temp_finding(path, root, runs, report, grace)
            elif (path / CATALOG_FILENAME).is_file():
                continue  # a nested results folder: its own catalog answers for it
            elif path not in referenced:
                keep_dirs.append(name)
        dirs[:] = keep_dirs
        for name in sorted(files):
            path = base / name
            if base == root and (name in _CATALOG_FILES or name.startswith(_DAMAGED)):
                continue
            report.files_scanned += 1
            problem = _manifest_problem(path, root, verify, key_of)
            if problem is not None:
                report.findings.append(
                    Finding("corrupt_manifest", "error", f"manifest {path}: {problem}", str(path))
                )
            if name.endswith(TMP_SUFFIX):
                _temp_finding(path, root, runs, report, grace)
            elif path not in referenced and not hidden and not name.startswith("."):
                report.findings.append(
                    Finding(
                        "unreferenced_file", "info", f"no catalog row records {path}", str(path)
                    )
                )


def _check_database(catalog: Catalog, report: DoctorReport) -> bool:
    """Integrity and schema checks; False when the tables cannot be read at all."""
    problems = catalog.integrity_problems()
    for problem in problems[:20]:
        report.findings.append(
            Finding("integrity", "error", f"catalog {catalog.url}: {problem}", catalog.url)
        )
    if problems and report.repair and all(" index " in f" {p} " for p in problems):
        catalog.reindex()  # only the indexes are damaged: they are rebuilt from the tables
        if not catalog.integrity_problems():
            for finding in report.findings:
                if finding.kind == "integrity":
                    finding.repaired, finding.action = True, "indexes rebuilt (REINDEX)"
    readable = True
    for table, columns in TABLES.items():
        try:
            have = set(catalog.table_columns(table))
        except CatalogError as exc:
            report.findings.append(Finding("schema", "error", str(exc)))
            readable = False
            continue
        missing = [c for c in columns if c not in have]
        if missing:
            what = "is missing" if not have else f"lacks the columns {', '.join(missing)}"
            report.findings.append(
                Finding("schema", "error", f"catalog {catalog.url}: table {table} {what}")
            )
            readable = False
    return readable


def run_doctor(
    catalog: Catalog,
    *,
    repair: bool = False,
    verify: bool = True,
    grace_seconds: float = GRACE_SECONDS,
    object_grace_seconds: float = OBJECT_GRACE_SECONDS,
) -> DoctorReport:
    """Check the database (integrity, schema), every row, every file row (size, and
    checksum unless ``verify=False``) and scan the results folders, store manifests
    included, and the runs' object prefixes; with ``repair`` fix what is safe (see the
    module docstring)."""
    report = DoctorReport(repair=repair)
    if not _check_database(catalog, report):
        return report
    try:
        processes, rows, bad = catalog.scan_rows()
    except CatalogError as exc:
        report.findings.append(Finding("integrity", "error", str(exc), catalog.url))
        return report
    for kind, item_id, detail in bad:
        report.findings.append(Finding(kind, "error", detail, item_id=item_id))
    _finish_deletes(catalog, rows, report)
    _check_rows(catalog, rows, report, verify)
    runs = {p.process_id: p for p in processes}
    _release_memory(catalog, rows, runs, report)
    roots = {Path(catalog.results_dir)} if catalog.results_dir else set()
    referenced: set[Path] = set()
    for row in rows:
        try:
            path = catalog.item_path(row)
        except CatalogError:
            continue
        if path is not None:
            referenced.add(path)
    for root in sorted(roots):
        if root.is_dir():
            _scan(root, referenced, runs, report, grace_seconds, verify)
    _scan_objects(catalog, processes, rows, report, object_grace_seconds)
    for finding in report.problems:
        log.warning("%s: %s", finding.kind, finding.detail)
    return report


def _scan_objects(
    catalog: Catalog,
    processes: list[ProcessRow],
    rows: list[ItemRow],
    report: DoctorReport,
    grace: float,
) -> None:
    """Report (and with ``repair`` delete, past ``grace`` seconds) objects under a run's
    prefix on object storage that no row (nor a row's store manifest, nor the key object
    of a row's encrypted object) names."""
    named: set[tuple[str, str]] = set()
    for row in rows:
        try:
            found = catalog.item_object(row)
        except CatalogError:
            continue
        if found is not None:
            root, rel = found
            manifest = manifest_of(rel, row.entity_name)
            named.update({(root.url, rel), (root.url, manifest)})
            if is_part_set_key(rel):  # its manifest and parts
                named.update((root.url, key) for key in part_set_keys(root, rel))
            named.update((root.url, stem) for stem in [*key_stems(rel), *key_stems(manifest)])
        named.update(_block_parts(catalog, row))
    buckets: set[tuple[str, str]] = set()
    for proc in processes:
        if not is_object_url(proc.results_dir):
            continue
        root = ObjectRoot.from_url(str(proc.results_dir))
        if (root.scheme, root.bucket) not in buckets:  # asked once per bucket
            buckets.add((root.scheme, root.bucket))
            _report_versions(root, report)
        for rel, modified in root.entries(f"{proc.process_id}/"):
            stem = key_stem(rel)  # a key object is named when its data object is
            if (root.url, rel) in named or (stem is not None and (root.url, stem) in named):
                continue
            if proc.status == "running" and posixpath.basename(rel) == PROBE:
                continue  # a running phase's probe for its cluster workers
            age = None if modified is None else time.time() - modified
            if proc.status == "running" and (age is None or age < grace):
                continue  # perhaps an upload whose row is about to be committed
            uri = root.uri(rel)
            detail = f"object {uri} of run {proc.process_id} is recorded by no row"
            finding = Finding("unreferenced_object", "info", detail, uri)
            if report.repair:
                _delete_object(catalog, root, rel, stem, age, grace, finding)
            report.findings.append(finding)


def _block_parts(catalog: Catalog, row: ItemRow) -> set[tuple[str, str]]:
    """The objects a block row names (its parts of its window's tables, written by a
    cluster worker; :mod:`phasekit.workflow.blockwrite`), which its window's table row
    names only once the window is complete."""
    parts, uri = row.metadata.get("parts"), row.metadata.get("uri")
    if not isinstance(parts, dict) or not isinstance(uri, str) or not is_object_url(uri):
        return set()
    try:
        found = catalog.item_object(replace(row, data_reference=uri))
    except CatalogError:
        return set()
    if found is None:
        return set()
    root, rel = found
    window = posixpath.dirname(posixpath.dirname(rel))  # <window>/containers.parts/<part>
    named = set()
    for table, raw in parts.items():
        try:  # only a part name (part-NNNNNN.arrow) of a table name
            key = f"{window}/{check_name('table', table)}{PART_SET}/{part_of(raw).file}"
        except (ValueError, TypeError, InvalidArgument):
            continue
        named.add((root.url, key))
    return named


def _report_versions(root: ObjectRoot, report: DoctorReport) -> None:
    """An ``object_versions_unknown`` finding when phasekit cannot tell whether the bucket
    of ``root`` keeps old versions (what cleanup deletes may survive there)."""
    if root.keeps_versions is None:
        detail = unknown_versions(root.scheme, root.bucket)
        report.findings.append(Finding("object_versions_unknown", "info", detail, root.url))


def _delete_object(
    catalog: Catalog,
    root: ObjectRoot,
    rel: str,
    stem: str | None,
    age: float | None,
    grace: float,
    finding: Finding,
) -> None:
    """Delete an unreferenced object (the key object of ``stem`` when that is given) older
    than ``grace`` seconds that still no row names."""
    if age is None:
        finding.action = "kept: the store gives no modification time"
        return
    if age < grace:
        finding.action = f"kept: {age:.0f} s old, younger than the grace of {grace:.0f} s"
        return
    owners = [rel] if stem is None else key_owners(stem)  # a key object: its data's rows
    if any(catalog.items_by_reference(root.uri(owner)) for owner in owners):
        finding.action = "kept: a row records it now"
        return
    try:
        root.delete(rel)
    except StorageError as exc:
        finding.action = f"cannot delete: {exc}"
        return
    finding.repaired, finding.action = True, f"deleted ({age:.0f} s old)"


def doctor_location(
    location: str | os.PathLike[str],
    *,
    results_dir: str | os.PathLike[str] | None = None,
    repair: bool = False,
    verify: bool = True,
    grace_seconds: float = GRACE_SECONDS,
    object_grace_seconds: float = OBJECT_GRACE_SECONDS,
    encryption: Encryption | None = None,
) -> DoctorReport:
    """Doctor a catalog by location, reporting a catalog that cannot be opened (missing or
    empty next to run folders, not a database) as a ``catalog_unreadable`` finding instead
    of raising; with ``repair`` such a catalog is rebuilt from the results (``encryption``
    reads the encrypted manifests of runs that encrypted, see :mod:`.rebuild`)."""
    from phasekit.catalog.factory import open_catalog

    try:
        catalog = open_catalog(location, results_dir=results_dir, create=False)
    except CatalogError as exc:
        report = DoctorReport(repair=repair)
        finding = Finding("catalog_unreadable", "error", str(exc), os.fspath(location))
        report.findings.append(finding)
        if repair:
            from phasekit.catalog.rebuild import rebuild_catalog

            rebuilt = rebuild_catalog(location, results_dir=results_dir, encryption=encryption)
            finding.repaired = True
            finding.action = rebuilt.summary
        return report
    with catalog:
        return catalog.doctor(
            repair=repair,
            verify=verify,
            grace_seconds=grace_seconds,
            object_grace_seconds=object_grace_seconds,
        )
