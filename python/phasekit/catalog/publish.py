"""A run's catalog when its results live on object storage.

The stores and the results writer of a run write their files by the local protocol
into the run's local folder (``--local-dir``; spills and stream buffers stay there too)
and report each durable file to the catalog. :class:`PublishingCatalog` stands between
them and the catalog: before a ``file://`` row under the local folder is committed, it
uploads the file once under its final key (its path relative to the local folder, below
the results prefix), with the file store's manifest of the item when there is one and,
for an encrypted file, the key file of its wrapped data key first
(:func:`phasekit.crypt.objects.publish_key`), and commits the row with the ``s3://``
URI instead. So an object exists, complete and
checked, before any row names it. Everything else is the wrapped catalog's.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from phasekit.catalog.rows import ItemRow, NewItem
from phasekit.catalog.uris import uri_to_path
from phasekit.crypt.objects import publish_key
from phasekit.errors import StorageError
from phasekit.objstore import ObjectRoot, manifest_of, refuse
from phasekit.paths import contained
from phasekit.stores.partset import is_part_set, listed
from phasekit.stores.streamparts import MANIFEST

log = logging.getLogger(__name__)


class PublishingCatalog:
    """``catalog`` with every file under ``local_root`` uploaded to ``root`` before its
    row is committed (see the module docstring)."""

    def __init__(self, catalog: Any, local_root: Path, root: ObjectRoot) -> None:
        self._catalog = catalog
        self.local_root = Path(local_root).absolute()
        self.root = root

    def __getattr__(self, name: str) -> Any:
        return getattr(self._catalog, name)

    # ------------------------------------------------------------------ mapping

    def object_uri(self, reference: Optional[str]) -> Optional[str]:
        """The ``s3://`` URI a local ``file://`` reference is published under (others
        unchanged)."""
        rel = self._relative(reference)
        return reference if rel is None else self.root.uri(rel)

    def object_key(self, path: Path) -> str:
        """The key (below the results root) a local path of the run is published under;
        UnsafePath when it lies outside the run's local folder."""
        checked = contained(path, self.local_root, "a file of the run")
        return checked.relative_to(self.local_root).as_posix()

    def _relative(self, reference: Optional[str]) -> Optional[str]:
        path = uri_to_path(reference) if reference else None
        if path is None:
            return None
        checked = contained(path, self.local_root, "a file of the run")
        return checked.relative_to(self.local_root).as_posix()

    def _publish(self, reference: Optional[str], checksum: Optional[str], entity: str) -> Any:
        rel = self._relative(reference)
        if rel is None:
            return reference
        path = self.local_root / rel
        if is_part_set(path):
            return self._publish_part_set(rel, path, entity)
        if path.is_dir():
            raise refuse(
                f"{entity}: a folder of files ({rel}; partition_by writes one)",
                "an object is one file",
            )
        publish_key(self.root, self.local_root, rel)  # an encrypted file's key goes first
        self.root.put_file(rel, path, checksum)
        rel_manifest = manifest_of(rel, entity)
        manifest = self.local_root / rel_manifest
        if manifest.is_file():
            publish_key(self.root, self.local_root, rel_manifest)  # an encrypted manifest's
            self.root.put_file(rel_manifest, manifest, None)
        log.debug("published %s as %s", path, self.root.uri(rel))
        return self.root.uri(rel)

    def _publish_part_set(self, rel: str, folder: Path, entity: str) -> str:
        """Publish a committed part set (:mod:`phasekit.stores.partset`): each part it
        lists that is a local file (written here) is uploaded, each other one must be an
        object already (a worker wrote it), then the manifest, the commit point, last."""
        for file, part in listed(folder, entity):
            key = f"{rel}/{part.file}"
            if file.is_file():
                self.root.put_file(key, file, part.checksum)
            elif not self.root.exists(key):
                raise StorageError(
                    f"{entity}: part {self.root.uri(key)} is neither a local file nor an "
                    "object; the table cannot be committed"
                )
        self.root.put_file(f"{rel}/{MANIFEST}", folder / MANIFEST, None)
        log.debug("published part set %s as %s", folder, self.root.uri(rel))
        return self.root.uri(rel)

    # ------------------------------------------------------------------ catalog calls

    def record_item(self, process_id: str, stage_name: str, entity_name: str, **fields: Any) -> int:
        fields["data_reference"] = self._publish(
            fields.get("data_reference"), fields.get("checksum"), entity_name
        )
        return int(self._catalog.record_item(process_id, stage_name, entity_name, **fields))

    def record_items(self, items: Sequence[NewItem], *, replace: bool = False) -> list[int]:
        published = [
            dataclasses.replace(
                item,
                data_reference=self._publish(item.data_reference, item.checksum, item.entity_name),
            )
            for item in items
        ]
        return list(self._catalog.record_items(published, replace=replace))

    def items_by_reference(self, reference: str) -> list[ItemRow]:
        return list(self._catalog.items_by_reference(self.object_uri(reference)))

    def remove_local(self, run_id: str) -> None:
        """Remove the run's local copies once the run completed (the objects stay)."""
        import shutil

        folder = self.local_root / run_id
        if not folder.is_dir():
            return
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("cannot remove the local copies %s: %s", folder, exc)


__all__ = ["PublishingCatalog"]
