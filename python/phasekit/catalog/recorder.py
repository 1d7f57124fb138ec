"""The bridge from stores to the catalog: a recorder bound to one run, phase and container.

Stores report each durable item as a ref (an object with ``uri``, ``key``, ``kind``,
``format``, ``size_bytes``, ``checksum``, ``metadata`` and ``created_at`` in epoch
seconds) through ``record_item(ref)``, and deleted ones through ``forget_item(ref)``.
:class:`CatalogRecorder` turns these into catalog rows: the entity is the ref's key,
``kind`` is kept in the metadata under :data:`KIND_KEY`. :func:`ref_fields` gives back
the fields a ref is rebuilt from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from phasekit.catalog.names import check_name, check_optional_name
from phasekit.catalog.rows import ItemRow

if TYPE_CHECKING:
    from phasekit.catalog.base import Catalog

KIND_KEY = "_kind"


class CatalogRecorder:
    """Records the refs of one run/phase (optionally window and container) in a catalog."""

    def __init__(
        self,
        catalog: Catalog,
        process_id: str,
        phase: str,
        *,
        stage_name: str | None = None,
        window_id: str | None = None,
        container_id: str | None = None,
    ) -> None:
        self.catalog = catalog
        self.process_id = check_name("process_id", process_id)
        self.phase = check_name("phase", phase)
        self.stage_name = check_name("stage_name", stage_name or phase)
        self.window_id = check_optional_name("window_id", window_id)
        self.container_id = check_optional_name("container_id", container_id)

    def record_item(self, ref: Any) -> int:
        """Record one durable ref; returns the item id."""
        created = getattr(ref, "created_at", None)
        metadata = dict(getattr(ref, "metadata", None) or {})
        kind = getattr(ref, "kind", None)
        if kind is not None:
            metadata[KIND_KEY] = kind
        return self.catalog.record_item(
            self.process_id,
            self.stage_name,
            ref.key,
            data_reference=ref.uri,
            metadata=metadata,
            size_bytes=int(getattr(ref, "size_bytes", 0) or 0),
            checksum=getattr(ref, "checksum", None),
            format=getattr(ref, "format", None),
            phase=self.phase,
            window_id=self.window_id or _name_or_none(metadata.get("window_id")),
            container_id=self.container_id or _name_or_none(metadata.get("container_id")),
            created_at=datetime.fromtimestamp(created, UTC) if created else None,
            replace=True,  # a put under a key already stored replaces its item
            key_id=getattr(ref, "key_id", None),
        )

    def forget_item(self, ref: Any) -> None:
        """Delete the rows of a ref whose store has deleted it (files are left to the store)."""
        ids = [
            row.id
            for row in self.catalog.items_by_reference(ref.uri)
            if row.process_id == self.process_id
        ]
        if ids:
            self.catalog.remove_items(ids, delete_files=False)


def _name_or_none(value: Any) -> str | None:
    """A window or container id taken from an item's metadata (None when absent)."""
    return check_optional_name("metadata id", value) if isinstance(value, str) else None


def ref_fields(item: ItemRow) -> dict[str, Any]:
    """The fields of the ref an item was recorded from (``Ref.from_dict`` input)."""
    metadata = dict(item.metadata)
    kind = metadata.pop(KIND_KEY, None)
    return {
        "uri": item.data_reference,
        "key": item.entity_name,
        "kind": kind,
        "format": item.format,
        "size_bytes": item.size_bytes,
        "checksum": item.checksum,
        "metadata": metadata,
        "created_at": item.created_at.timestamp(),
        **({"key_id": item.key_id} if item.key_id is not None else {}),
    }
