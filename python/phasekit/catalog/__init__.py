"""The catalog: one row per run and one per stored item, in SQLite or PostgreSQL.

``open_catalog(url_or_path)`` returns a :class:`Catalog`; see :mod:`phasekit.catalog.base`
for the API and the signature of ``record_item`` that stores call.
"""

from __future__ import annotations

from phasekit.catalog.base import INLINE_MAX_BYTES, Catalog
from phasekit.catalog.cleanup import POLICIES as CLEANUP_POLICIES
from phasekit.catalog.export import FORMATS as EXPORT_FORMATS
from phasekit.catalog.factory import default_location, open_catalog
from phasekit.catalog.integrity import reference_checksum, reference_size
from phasekit.catalog.names import TMP_SUFFIX, check_name
from phasekit.catalog.recorder import CatalogRecorder, ref_fields
from phasekit.catalog.rows import (
    FINAL_STATUSES,
    ITEM_STATES,
    PROCESS_STATUSES,
    STORAGE_TYPES,
    ItemRow,
    NewItem,
    ProcessRow,
    UsageRow,
)
from phasekit.catalog.uris import CATALOG_FILENAME, path_to_uri, uri_to_path

__all__ = [
    "CATALOG_FILENAME",
    "CLEANUP_POLICIES",
    "EXPORT_FORMATS",
    "FINAL_STATUSES",
    "INLINE_MAX_BYTES",
    "ITEM_STATES",
    "PROCESS_STATUSES",
    "STORAGE_TYPES",
    "TMP_SUFFIX",
    "Catalog",
    "CatalogRecorder",
    "ItemRow",
    "NewItem",
    "ProcessRow",
    "UsageRow",
    "check_name",
    "default_location",
    "open_catalog",
    "path_to_uri",
    "ref_fields",
    "reference_checksum",
    "reference_size",
    "uri_to_path",
]
