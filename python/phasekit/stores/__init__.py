"""Where intermediate results live: memory, file, hybrid (memory that spills) and stream stores.

Every store has one protocol (:class:`Store`): ``put(key, data, metadata=None) -> Ref``,
``get(ref_or_key)``, ``list()``, ``delete(ref_or_key)``, ``stats()``, ``close()``, and is
a context manager. Values: pyarrow Tables and RecordBatches, polars and pandas
DataFrames, numpy arrays and JSON-like values; ``get`` returns the type that was put.
"""

from __future__ import annotations

from phasekit.stores.base import Store, check_metadata
from phasekit.stores.file import FileStore
from phasekit.stores.formats import FORMATS
from phasekit.stores.hybrid import HybridStore
from phasekit.stores.memory import MemoryStore
from phasekit.stores.names import check_name, is_valid_name
from phasekit.stores.recorder import ItemRecorder, JsonLinesRecorder
from phasekit.stores.ref import Ref, file_uri, named_uri, parse_uri
from phasekit.stores.stream import StreamStore, Subscription
from phasekit.stores.values import KINDS, kind_of

__all__ = [
    "FORMATS",
    "KINDS",
    "FileStore",
    "HybridStore",
    "ItemRecorder",
    "JsonLinesRecorder",
    "MemoryStore",
    "Ref",
    "Store",
    "StreamStore",
    "Subscription",
    "check_metadata",
    "check_name",
    "file_uri",
    "is_valid_name",
    "kind_of",
    "named_uri",
    "parse_uri",
]
