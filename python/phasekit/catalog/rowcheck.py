"""Row checks: what makes damage inside a catalog row visible, and the validation of rows.

SQLite keeps no checksum of its own pages, so a flipped bit in a row reads back as a
different but plausible value (a size, a metric, a time). Every row the SQLite catalog
writes therefore carries ``row_check``: ``crc32:xxxxxxxx`` of its stored values (all
columns but the mutable ``state`` of an item), recomputed whenever phasekit changes
them. A read recomputes it and refuses a row that does not match with a
:class:`CatalogError` naming the row. Rows written before the column existed have none
and are validated field by field only. (PostgreSQL checksums its own pages: its rows
carry no row check.)
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from phasekit.catalog.rows import ITEM_STATES, PROCESS_STATUSES, STORAGE_TYPES
from phasekit.errors import CatalogError, InvalidArgument
from phasekit.names import is_valid_name

CHECK_COLUMN = "row_check"


def row_check(values: Sequence[Any]) -> str:
    """``crc32:xxxxxxxx`` of stored values (ints, floats, text, None)."""
    text = json.dumps(list(values), separators=(",", ":"), ensure_ascii=True, default=str)
    return f"crc32:{zlib.crc32(text.encode()):08x}"


def verify_check(values: Sequence[Any], stored: Any, what: str) -> None:
    """Raise ``CatalogError`` naming ``what`` unless ``stored`` is ``None`` or matches."""
    if stored is None:
        return
    actual = row_check(values)
    if stored != actual:
        raise CatalogError(
            f"{what} is damaged: its values do not match their row check "
            f"({stored!r} recorded, {actual} now); run `phasekit doctor`"
        )


def _need(ok: bool, what: str, problem: str) -> None:
    if not ok:
        raise CatalogError(f"{what} is damaged: {problem}; run `phasekit doctor`")


def load_json(value: Any, what: str, field: str) -> Any:
    """A JSON column's value, or ``CatalogError`` naming the row and the column."""
    if not isinstance(value, (str, bytes)):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise CatalogError(f"{what} is damaged: its {field} is not JSON ({exc})") from None


def check_name_field(value: Any, what: str, field: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    _need(is_valid_name(value), what, f"its {field} {str(value)[:80]!r} is not a valid name")


def check_time(value: datetime, what: str, field: str) -> None:
    _need(
        value.tzinfo is not None and 1970 <= value.year <= 9999,
        what,
        f"its {field} {value} is not a UTC time",
    )


def check_item_fields(values: dict[str, Any], what: str) -> None:
    """Validate the stored fields of an item row (types and allowed values)."""
    for field in ("process_id", "stage_name", "entity_name"):
        check_name_field(values[field], what, field)
    for field in ("phase", "window_id", "container_id"):
        check_name_field(values[field], what, field, optional=True)
    _need(values["storage_type"] in STORAGE_TYPES, what, "its storage_type is not valid")
    _need(values["state"] in ITEM_STATES, what, "its state is not valid")
    size = values["size_bytes"]
    _need(type(size) is int and size >= 0, what, f"its size_bytes {size!r} is not a count")
    for field in ("format", "checksum", "data_reference", "key_id"):
        value = values[field]
        _need(value is None or isinstance(value, str), what, f"its {field} is not text")
    if values["storage_type"] == "reference":
        _need(values["data_reference"] is not None, what, "a reference item has no reference")
    if values["data_reference"] is not None:
        from phasekit.catalog.uris import check_reference

        try:
            check_reference(values["data_reference"])
        except (CatalogError, InvalidArgument) as exc:
            raise CatalogError(f"{what} is damaged: {exc}") from None


def check_process_fields(values: dict[str, Any], what: str) -> None:
    check_name_field(values["process_id"], what, "process_id")
    check_name_field(values["workflow"], what, "workflow")
    _need(values["status"] in PROCESS_STATUSES, what, "its status is not valid")
    for field in ("backend", "results_dir"):
        value = values[field]
        _need(value is None or isinstance(value, str), what, f"its {field} is not text")
    _need(isinstance(values["config"], dict), what, "its config is not a JSON object")


__all__ = [
    "CHECK_COLUMN",
    "check_item_fields",
    "check_process_fields",
    "check_time",
    "load_json",
    "row_check",
    "verify_check",
]
