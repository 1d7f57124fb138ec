"""Deleting stored items safely, and the cleanup policies keep_all, keep_latest, keep_none.

Order of a removal, so that a crash at any point leaves a state ``doctor`` repairs:

1. the rows are marked ``deleting`` (one transaction; listings leave them out);
2. each file is deleted (a folder is first renamed to a temporary name, then removed),
   unless another row still records it; the folders are fsynced;
3. the rows still marked ``deleting`` are deleted (one transaction);
4. folders left empty under the run's results folder are removed.

A crash after 1 leaves rows marked ``deleting``: ``doctor --repair`` finishes their
removal (the same steps, so it is safe even while a cleanup runs); a crash in 2 can also
leave a renamed folder ``.<name>.<hex>.phasekit-tmp``, which doctor removes. A file is
never deleted while a row that is not being deleted records it. Crash tests stop a removal
at each of these steps through :mod:`phasekit.failpoints` (inert unless asked).

A file a store wrote comes with a manifest ``<folder>/.phasekit/<key>.json`` (its
metadata and metrics); the manifest goes with the file. An encrypted file's data keys
(``<folder>/.phasekit/keys/<file name>.<token>.key``) are destroyed with it
(crypto-shredding: copies of the file left elsewhere cannot be decrypted either).

Policies: ``keep_all`` deletes nothing; ``keep_latest`` deletes the items of every run
except the most recently started completed run of each run name (a failed or
interrupted newer run does not displace it); ``keep_none`` deletes the items of every
run. Runs still ``running`` are never touched, and items of a stage listed in
``stages_to_persist`` are kept whatever the policy. Run rows are kept (the history).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import secrets
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phasekit import failpoints
from phasekit.catalog.names import TMP_SUFFIX
from phasekit.catalog.rows import ITEM_STATES, ItemRow
from phasekit.crypt import is_sealed
from phasekit.crypt.keyring import destroy_keys, destroy_keys_for, nested_name
from phasekit.crypt.objects import shred_object_keys
from phasekit.errors import CatalogError, InvalidArgument, StorageError
from phasekit.fsync import fsync_dir
from phasekit.names import MANIFEST_DIR
from phasekit.objstore import ObjectRoot, manifest_of
from phasekit.stores.partset import is_part_set_key, part_set_keys
from phasekit.stores.streamparts import MANIFEST

if TYPE_CHECKING:
    from phasekit.catalog.base import Catalog

log = logging.getLogger("phasekit.catalog.cleanup")

POLICIES = ("keep_all", "keep_latest", "keep_none")


@dataclass
class RemovalReport:
    """What :func:`remove_items` deleted and what it could not."""

    removed: list[int] = field(default_factory=list)
    freed_bytes: int = 0
    files_deleted: list[str] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (item id, reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": self.removed,
            "freed_bytes": self.freed_bytes,
            "files_deleted": self.files_deleted,
            "failed": [{"id": i, "reason": r} for i, r in self.failed],
        }


@dataclass
class CleanupReport:
    """The items a policy selects, and (unless a dry run) what was removed."""

    policy: str
    dry_run: bool
    stages_to_persist: list[str]
    kept_runs: list[str]
    running_runs: list[str]
    selected: list[ItemRow]
    removal: RemovalReport | None = None

    @property
    def selected_bytes(self) -> int:
        return sum(item.size_bytes for item in self.selected)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "dry_run": self.dry_run,
            "stages_to_persist": self.stages_to_persist,
            "kept_runs": self.kept_runs,
            "running_runs": self.running_runs,
            "selected": [item.to_dict() for item in self.selected],
            "selected_bytes": self.selected_bytes,
            "removal": self.removal.to_dict() if self.removal else None,
        }


def _delete_path(path: Path) -> None:
    """Delete a file, or a folder by renaming it to a temporary name first."""
    if path.is_dir() and not path.is_symlink():
        doomed = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        os.rename(path, doomed)
        fsync_dir(path.parent, best_effort=True)
        failpoints.reach("cleanup.after_rename")
        shutil.rmtree(doomed, ignore_errors=True)  # the rename was the commit point
    else:
        path.unlink()


def _delete_manifest(path: Path, reference: str, key: str, report: RemovalReport) -> None:
    """Delete ``<folder>/.phasekit/<key>.json`` when it describes ``reference`` (and the
    data key of an encrypted one)."""
    manifest = path.parent / MANIFEST_DIR / f"{key}.json"
    try:
        if manifest.is_symlink() or manifest.parent.is_symlink():
            return
        raw = manifest.read_bytes()
        if is_sealed(raw):
            if not _sealed_manifest_is_of(path, key):
                return
        else:
            body = json.loads(raw)
            ref = body.get("ref") if isinstance(body, dict) else None
            if not isinstance(ref, dict) or ref.get("uri") != reference:
                return
    except (OSError, ValueError):
        return
    with contextlib.suppress(FileNotFoundError):
        manifest.unlink()
        report.files_deleted.append(str(manifest))
    shredded = destroy_keys(path.parent, nested_name(manifest.parent, manifest.name))
    report.files_deleted.extend(str(k) for k in shredded)


def _sealed_manifest_is_of(path: Path, key: str) -> bool:
    """Whether the encrypted manifest of ``key`` (unreadable without the master key) can
    only describe the deleted file ``path``: a FileStore names an item's file
    ``<key>.<suffix>`` in its folder, so it does unless another such file is there (the
    item rewritten in another format)."""
    others = [
        p
        for p in path.parent.glob(f"{glob.escape(key)}.*")
        if p != path and p.name.split(".", 1)[0] == key and not p.name.endswith(TMP_SUFFIX)
    ]
    return not others


def _prune_empty(folders: set[Path], stops: set[Path]) -> None:
    """Remove folders left empty, up to (not including) a results folder in ``stops``."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        current = folder
        while current not in stops and any(current.is_relative_to(s) for s in stops):
            try:
                current.rmdir()
            except OSError:
                break
            current = current.parent


def _delete_files(
    catalog: Catalog, rows: Sequence[ItemRow], report: RemovalReport
) -> tuple[set[int], set[Path]]:
    """Delete the files of ``rows`` no other row records; returns (failed ids, their folders).

    A row whose file lies outside the results folder (or names none) keeps its file: its
    removal fails and the row stays, so nothing outside the results folder is deleted.
    """
    by_ref: dict[str, list[ItemRow]] = defaultdict(list)
    paths: dict[str, Path] = {}
    failed: set[int] = set()
    objects: dict[str, tuple[ObjectRoot, str, str]] = {}
    for row in rows:
        try:
            found = catalog.item_object(row)
            path = catalog.item_path(row)
        except CatalogError as exc:
            failed.add(row.id)
            report.failed.append((row.id, str(exc)))
            continue
        if found is not None and row.data_reference:
            objects[row.data_reference] = (*found, row.entity_name)
        if path is not None and row.data_reference:
            by_ref[row.data_reference].append(row)
            paths[row.data_reference] = path
    live = catalog.live_references([*by_ref, *objects])
    _delete_objects(objects, live, rows, failed, report)
    folders: set[Path] = set()
    for ref, ref_rows in by_ref.items():
        path = paths[ref]
        if ref in live:
            continue
        try:
            was_folder = path.is_dir() and not path.is_symlink()
            _delete_path(path)
            report.files_deleted.append(str(path))
            shredded = destroy_keys_for(path, was_folder)
            report.files_deleted.extend(str(k) for k in shredded)
            _delete_manifest(path, ref, ref_rows[0].entity_name, report)
            failpoints.reach("cleanup.mid_delete")
        except FileNotFoundError:
            pass
        except OSError as exc:
            for row in ref_rows:
                failed.add(row.id)
                report.failed.append((row.id, f"cannot delete {path}: {exc.strerror or exc}"))
            continue
        folders.add(path.parent)
        folders.add(path.parent / MANIFEST_DIR)
    for folder in folders:
        fsync_dir(folder, best_effort=True)
    return failed, folders


def _delete_objects(
    objects: dict[str, tuple[ObjectRoot, str, str]],
    live: set[str],
    rows: Sequence[ItemRow],
    failed: set[int],
    report: RemovalReport,
) -> None:
    """Delete the objects (with a file store's manifest object and the key objects of an
    encrypted one) no other row records."""
    for ref, (root, rel, entity) in objects.items():
        if ref in live:
            continue
        manifest = manifest_of(rel, entity)
        try:
            if is_part_set_key(rel):  # its manifest first (then it is no table), its parts
                for key in sorted(part_set_keys(root, rel), key=lambda k: k != f"{rel}/{MANIFEST}"):
                    root.delete(key)
                    report.files_deleted.append(root.uri(key))
                failpoints.reach("cleanup.mid_delete")
                continue
            root.delete(rel)
            report.files_deleted.append(ref)
            report.files_deleted.extend(shred_object_keys(root, rel))  # crypto-shredding
            present = root.exists(manifest)
            if present or root.keeps_versions:  # old versions of it go too
                root.delete(manifest)
                report.files_deleted.extend([root.uri(manifest)] if present else [])
                report.files_deleted.extend(shred_object_keys(root, manifest))
            failpoints.reach("cleanup.mid_delete")
        except StorageError as exc:
            for row in rows:
                if row.data_reference == ref:
                    failed.add(row.id)
                    report.failed.append((row.id, str(exc)))


def remove_items(
    catalog: Catalog, ids: Sequence[int], *, delete_files: bool = True
) -> RemovalReport:
    """Delete items in the crash-safe order of the module docstring."""
    report = RemovalReport()
    rows = catalog.get_items(ids)
    if not rows:
        return report
    catalog.mark_items([row.id for row in rows], "deleting")
    failpoints.reach("cleanup.after_mark")
    failed: set[int] = set()
    folders: set[Path] = set()
    if delete_files:
        failed, folders = _delete_files(catalog, rows, report)
    by_state: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.id in failed:
            by_state[row.state if row.state != "deleting" else "present"].append(row.id)
    for state, state_ids in by_state.items():
        catalog.mark_items(state_ids, state, from_states=("deleting",))
    done = [row for row in rows if row.id not in failed]
    failpoints.reach("cleanup.before_commit")
    catalog.delete_item_rows([row.id for row in done], state="deleting")
    failpoints.reach("cleanup.after_commit")
    report.removed = [row.id for row in done]
    report.freed_bytes = sum(row.size_bytes for row in done)
    if folders and catalog.results_dir is not None:
        _prune_empty(folders, {Path(catalog.results_dir)})
    for item_id, reason in report.failed:
        log.warning("item %s kept: %s", item_id, reason)
    return report


def select_items(
    catalog: Catalog,
    policy: str,
    stages_to_persist: Sequence[str] | None,
    workflow: str | None,
    run_name: str | None = None,
) -> tuple[list[ItemRow], list[str], list[str]]:
    """(items the policy deletes, runs kept as latest, runs skipped as running)."""
    if policy not in POLICIES:
        raise InvalidArgument(
            f"cleanup policy {policy!r} is not valid; allowed: {', '.join(POLICIES)}"
        )
    processes = catalog.list_processes(workflow, run_name=run_name)
    running = [p.process_id for p in processes if p.status == "running"]
    kept: list[str] = []
    if policy == "keep_all":
        return [], kept, running
    if policy == "keep_latest":
        seen: set[str] = set()
        for proc in processes:  # newest first
            name = proc.run_name or proc.workflow
            if proc.status == "completed" and name not in seen:
                seen.add(name)
                kept.append(proc.process_id)
    persist = set(stages_to_persist or ())
    selected: list[ItemRow] = []
    for proc in processes:
        if proc.process_id in kept or proc.status == "running":
            continue
        items = catalog.list_items(proc.process_id, states=ITEM_STATES)
        selected.extend(item for item in items if item.stage_name not in persist)
    return sorted(selected, key=lambda item: item.id), kept, running


def run_cleanup(
    catalog: Catalog,
    policy: str,
    stages_to_persist: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    workflow: str | None = None,
    run_name: str | None = None,
) -> CleanupReport:
    """Apply ``policy`` to the runs of ``workflow`` and ``run_name`` (all when ``None``);
    with ``dry_run`` only report what would be deleted."""
    selected, kept, running = select_items(catalog, policy, stages_to_persist, workflow, run_name)
    report = CleanupReport(
        policy=policy,
        dry_run=dry_run,
        stages_to_persist=list(stages_to_persist or ()),
        kept_runs=kept,
        running_runs=running,
        selected=selected,
    )
    if not dry_run and selected:
        report.removal = remove_items(catalog, [item.id for item in selected])
        log.info(
            "cleanup %s removed %d items (%d bytes)",
            policy,
            len(report.removal.removed),
            report.removal.freed_bytes,
        )
    return report
