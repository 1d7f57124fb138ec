"""CSV for tables and frames, read back with the exact Arrow schema recorded at write time.

Null strings are written unquoted and empty strings quoted, so both survive the trip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.csv as pcsv

from phasekit.errors import InvalidArgument
from phasekit.stores import values
from phasekit.stores.durable import atomic_file, file_checksum, path_size
from phasekit.stores.formats.base import (
    WriteOptions,
    Written,
    check_kind,
    decode_schema,
    restore,
    tabular_info,
)


class CsvFormat:
    """Tables, frames and numpy arrays as CSV (``.csv``) with a header row."""

    name = "csv"
    kinds: tuple[str, ...] = (*values.TABULAR, values.NUMPY)
    compressions: tuple[Optional[str], ...] = (None,)

    def path_for(self, folder: Path, key: str, kind: str, options: WriteOptions) -> Path:
        return folder / f"{key}.csv"

    def write(self, value: Any, kind: str, path: Path, options: WriteOptions, what: str) -> Written:
        check_kind(self, kind)
        table = values.to_arrow(value, kind)
        info = tabular_info(table, kind)
        with atomic_file(path, what) as tmp:
            try:
                pcsv.write_csv(table, str(tmp))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise InvalidArgument(
                    f"format 'csv' cannot store this value ({exc}); use 'arrow' or 'parquet' "
                    "for nested or binary columns"
                ) from exc
        return Written(path, path_size(path), file_checksum(path), info)

    def read(self, path: Path, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        schema = decode_schema(info["schema"])
        types = {f.name: f.type for f in schema}
        convert = pcsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
        )
        table = pcsv.read_csv(str(path), convert_options=convert)
        return restore(table, kind, info)
