"""CSV for tables and frames, read back with the exact Arrow schema recorded at write time.

Null strings are written unquoted and empty strings quoted, so both survive the trip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv

from phasekit.errors import InvalidArgument
from phasekit.stores import values
from phasekit.stores.formats.base import (
    Format,
    WriteOptions,
    decode_schema,
    restore,
    tabular_info,
)


class CsvFormat(Format):
    """Tables, frames and numpy arrays as CSV (``.csv``) with a header row."""

    name = "csv"
    extension = ".csv"
    kinds: tuple[str, ...] = (*values.TABULAR, values.NUMPY)

    def encode(self, value: Any, kind: str, path: Path, options: WriteOptions) -> dict[str, Any]:
        return self._encode(value, kind, str(path))

    def _encode(self, value: Any, kind: str, target: Any) -> dict[str, Any]:
        table = values.to_arrow(value, kind)
        try:
            pcsv.write_csv(table, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise InvalidArgument(
                f"format 'csv' cannot store this value ({exc}); use 'arrow' or 'parquet' "
                "for nested or binary columns"
            ) from exc
        return tabular_info(table, kind)

    def to_bytes(self, value: Any, kind: str, options: WriteOptions) -> tuple[Any, dict[str, Any]]:
        sink = pa.BufferOutputStream()
        info = self._encode(value, kind, sink)
        return sink.getvalue(), info

    def from_bytes(self, data: Any, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        return self._decode(pa.BufferReader(data), kind, info)

    def read(self, path: Path, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        return self._decode(str(path), kind, info)

    def _decode(self, source: Any, kind: str, info: dict[str, Any]) -> Any:
        schema = decode_schema(info["schema"])
        types = {f.name: f.type for f in schema}
        convert = pcsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
        )
        table = pcsv.read_csv(source, convert_options=convert)
        return restore(table, kind, info)
