"""The rows of the catalog as typed dataclasses, and the allowed values of their enums."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from phasekit.catalog.uris import uri_to_path

PROCESS_STATUSES = ("running", "completed", "failed", "interrupted")
FINAL_STATUSES = PROCESS_STATUSES[1:]
STORAGE_TYPES = ("inline", "reference")
# present: recorded and on disk; deleting: a cleanup is removing it; missing/corrupt: doctor;
# released: an in-memory item (memory://) whose process has ended
ITEM_STATES = ("present", "deleting", "missing", "corrupt", "released")


def _jsonable(row: Any) -> dict[str, Any]:
    out = asdict(row)
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    return out


@dataclass(frozen=True)
class ProcessRow:
    """One run: ``processes`` table."""

    process_id: str
    workflow: str
    config: dict[str, Any]
    backend: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    results_dir: str | None
    run_name: str | None = None
    pid: int | None = None
    """The process that runs (or last ran) the run, on ``host``."""
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True)
class ItemRow:
    """One stored item: ``intermediate_data`` table."""

    id: int
    process_id: str
    stage_name: str
    entity_name: str
    storage_type: str
    data_reference: str | None
    inline_data: Any
    metadata: dict[str, Any]
    created_at: datetime
    size_bytes: int
    format: str | None
    checksum: str | None
    phase: str | None
    window_id: str | None
    container_id: str | None
    state: str = "present"
    key_id: str | None = None
    """The master key id of an encrypted item (None: not encrypted)."""

    @property
    def path(self) -> Path | None:
        """The local path of a ``file://`` reference, else ``None``."""
        return uri_to_path(self.data_reference) if self.data_reference else None

    @property
    def label(self) -> str:
        """A short human name: ``item 12 (run/stage/entity)``."""
        return f"item {self.id} ({self.process_id}/{self.stage_name}/{self.entity_name})"

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True)
class NewItem:
    """The arguments of one :meth:`Catalog.record_item` call, for batch recording."""

    process_id: str
    stage_name: str
    entity_name: str
    data_reference: str | None = None
    inline_data: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0
    checksum: str | None = None
    format: str | None = None
    phase: str | None = None
    window_id: str | None = None
    container_id: str | None = None
    created_at: datetime | None = None
    storage_type: str | None = None
    key_id: str | None = None


@dataclass(frozen=True)
class UsageRow:
    """Space used by one stage of one run (``stage_name`` is ``None`` for a run's total)."""

    process_id: str
    stage_name: str | None
    items: int
    size_bytes: int
    files: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
