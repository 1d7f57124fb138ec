"""Group commit for a file store: many small files durable with a few syncs, not four each.

All data files and their manifests are encoded under temporary names and made durable
together (one ``syncfs`` of the filesystem on Linux, else one fsync each), then the previous versions
are kept aside, every file is renamed and the folder fsynced once; then the manifests
the same way. A failure before the manifests are renamed restores every previous
version and leaves no new name behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phasekit.checksum import seal
from phasekit.errors import StorageError
from phasekit.paths import make_private
from phasekit.stores.durable import (
    OLD_SUFFIX,
    file_checksum,
    fsync_dir,
    fsync_many,
    remove_path,
    restore_backup,
    storage_error,
    tmp_name,
)
from phasekit.stores.ref import Ref, file_uri

if TYPE_CHECKING:
    from phasekit.stores.file import FileStore, _Plan

MANIFEST_VERSION = 1


def manifest_body(ref: Ref, info: dict[str, Any]) -> dict[str, Any]:
    """A FileStore manifest: the item's Ref and what restoring it needs, sealed (its
    ``check`` is the checksum of the rest, see :func:`phasekit.checksum.seal`)."""
    return seal({"version": MANIFEST_VERSION, "ref": ref.to_dict(), "info": info})


def _stage(
    store: FileStore, plans: list[_Plan], tmps: list[Path]
) -> list[tuple[Path, Path, Path, Ref]]:
    """Encode every item and its manifest under temporary names, fsynced; nothing visible yet."""
    staged = []
    for p in plans:
        tmp = tmp_name(p.path)
        tmps.append(tmp)
        info = p.fmt.encode(p.data, p.kind, tmp, p.options)
        make_private(tmp)
        ref = Ref(
            uri=file_uri(p.path),
            key=p.key,
            kind=p.kind,
            format=p.fmt.name,
            size_bytes=tmp.stat().st_size,
            checksum=file_checksum(tmp),
            metadata=p.meta,
        )
        manifest_path = store._manifest_path(p.key)
        manifest_tmp = tmp_name(manifest_path)
        tmps.append(manifest_tmp)
        body = manifest_body(ref, info)
        manifest_tmp.write_bytes(json.dumps(body, indent=1, sort_keys=True).encode())
        make_private(manifest_tmp)
        staged.append((tmp, p.path, manifest_tmp, ref))
    fsync_many(tmps)
    return staged


def commit_group(store: FileStore, plans: list[_Plan]) -> list[Ref]:
    """Write and commit ``plans`` (plain files) together; returns their Refs."""
    if not plans:
        return []
    tmps: list[Path] = []
    backups: dict[Path, Path] = {}
    renamed: list[Path] = []
    what = f"writing {len(plans)} items to {store.base_path}"
    try:
        staged = _stage(store, plans, tmps)
        for _tmp, final, _m, _r in staged:
            if final.exists():
                backups[final] = tmp_name(final, OLD_SUFFIX)
                os.link(final, backups[final])
        for tmp, final, _m, _r in staged:
            os.replace(tmp, final)
            renamed.append(final)
        fsync_dir(store.base_path)
    except BaseException as exc:
        _roll_back(renamed, backups)
        for tmp in tmps:
            remove_path(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise storage_error(exc, what) from exc
        raise
    _commit_manifests(store, staged, backups, what)
    return [ref for *_rest, ref in staged]


def _commit_manifests(
    store: FileStore,
    staged: list[tuple[Path, Path, Path, Ref]],
    backups: dict[Path, Path],
    what: str,
) -> None:
    """Rename the manifests (the commit point of each item), then drop the backups."""
    committed: set[Path] = set()
    try:
        for _tmp, final, manifest_tmp, _ref in staged:
            os.replace(manifest_tmp, store.manifest_dir / f"{_ref.key}.json")
            committed.add(final)
        fsync_dir(store.manifest_dir)
    except OSError as exc:
        _roll_back([f for _t, f, _m, _r in staged if f not in committed], backups)
        for _tmp, final, manifest_tmp, _ref in staged:
            if final not in committed:
                remove_path(manifest_tmp)
        raise storage_error(exc, f"{what} (committed: {len(committed)} of {len(staged)})") from exc
    for backup in backups.values():
        remove_path(backup)


def _roll_back(renamed: list[Path], backups: dict[Path, Path]) -> None:
    """Put previous versions back; remove new files that had none."""
    for final in renamed:
        backup = backups.pop(final, None)
        if backup is not None:
            restore_backup(final, backup)
        else:
            remove_path(final)
    for backup in backups.values():
        remove_path(backup)
    if renamed:
        fsync_dir(renamed[0].parent)


__all__ = ["commit_group"]
