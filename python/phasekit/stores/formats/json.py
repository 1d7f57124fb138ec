"""JSON for small, human-read data.

JSON-like values are written as one JSON document (``.json``); tables and frames as
JSON lines, one object per row (``.jsonl``), restored to their exact Arrow schema
(recorded at write time); numpy arrays as nested lists (``.json``).
"""

from __future__ import annotations

import datetime
import decimal
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pj

from phasekit.errors import InvalidArgument
from phasekit.stores import values
from phasekit.stores.formats.base import (
    Format,
    WriteOptions,
    decode_schema,
    restore,
    tabular_info,
)


def _default(obj: Any) -> Any:
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _as_text(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_decimal(t)


def _as_integer(t: pa.DataType) -> bool:
    return pa.types.is_time(t) or pa.types.is_duration(t)


def _friendly(table: pa.Table) -> pa.Table:
    """Columns whose values JSON cannot carry as text are cast to their integer storage."""
    for i, f in enumerate(table.schema):
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            raise InvalidArgument(
                f"format 'json' cannot store the binary column {f.name!r}; use 'arrow' or 'parquet'"
            )
        if _as_integer(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
        elif pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(f.type.value_type))
    return table


def _read_schema(schema: pa.Schema) -> pa.Schema:
    """The schema the JSON reader parses into before the cast to the recorded one."""
    fields = []
    for f in schema:
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if _as_text(t):
            t = pa.string()
        elif _as_integer(t):
            t = pa.int64()
        elif pa.types.is_string_view(t) or pa.types.is_large_string(t):
            t = pa.string()
        fields.append(pa.field(f.name, t))
    return pa.schema(fields)


class JsonFormat(Format):
    """JSON documents, JSON lines for tables, nested lists for numpy arrays."""

    name = "json"
    extension = ".json"
    kinds: tuple[str, ...] = values.KINDS

    def path_for(self, folder: Path, key: str, kind: str, options: WriteOptions) -> Path:
        return folder / (f"{key}.jsonl" if kind in values.TABULAR else f"{key}.json")

    def encode(self, value: Any, kind: str, path: Path, options: WriteOptions) -> dict[str, Any]:
        data, info = self.to_bytes(value, kind, options)
        path.write_bytes(data)
        return info

    def to_bytes(self, value: Any, kind: str, options: WriteOptions) -> tuple[Any, dict[str, Any]]:
        info: dict[str, Any] = {}
        if kind == values.JSON:
            data = json.dumps(value).encode()
        elif kind == values.NUMPY:
            info["numpy"] = values.numpy_info(value)
            data = json.dumps(value.tolist(), default=_default).encode()
        else:
            table = values.to_arrow(value, kind)
            info = tabular_info(table, kind)
            rows = _friendly(table).to_pylist()
            data = "".join(json.dumps(r, default=_default) + "\n" for r in rows).encode()
        return data, info

    def read(self, path: Path, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        return self.from_bytes(path.read_bytes(), kind, info, options)

    def from_bytes(self, data: Any, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        if not isinstance(data, (bytes, bytearray)):
            data = memoryview(data).tobytes()  # json reads bytes only
        if kind == values.JSON:
            return json.loads(data)
        if kind == values.NUMPY:
            import numpy as np

            meta = info["numpy"]
            dtype = values.dtype_from_info(meta)
            return np.asarray(json.loads(data), dtype=dtype).reshape(meta["shape"])
        schema = decode_schema(info["schema"])
        if len(data) == 0:
            return restore(schema.empty_table(), kind, info)
        table = pj.read_json(
            pa.BufferReader(data),
            parse_options=pj.ParseOptions(explicit_schema=_read_schema(schema)),
        )
        return restore(table, kind, info)
