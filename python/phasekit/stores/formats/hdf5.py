"""HDF5 through h5py (optional: ``pip install phasekit[hdf5]``).

numpy arrays become one dataset ``values``; tables and frames one dataset per column
under ``columns`` (numeric, bool, temporal and string columns without nulls), restored
with the Arrow schema recorded at write time; JSON-like values one string dataset ``json``.
"""

from __future__ import annotations

import io
import json
from typing import Any, Optional

import pyarrow as pa

from phasekit._optional import require
from phasekit.errors import InvalidArgument
from phasekit.stores import values
from phasekit.stores.formats.base import Format, WriteOptions, decode_schema, restore, tabular_info


def _h5py() -> Any:
    return require(
        "h5py", feature="format 'hdf5'", alternatives="other formats: arrow, parquet, json, csv"
    )


def _column_array(name: str, column: pa.ChunkedArray) -> Any:
    import numpy as np

    if column.null_count:
        raise InvalidArgument(
            f"format 'hdf5' cannot store nulls (column {name!r}); use 'arrow' or 'parquet'"
        )
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return np.array(column.to_pylist(), dtype=object), _h5py().string_dtype()
    if pa.types.is_temporal(t):
        return column.cast(pa.int64()).to_numpy(), None
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return column.to_numpy(), None
    raise InvalidArgument(
        f"format 'hdf5' cannot store the {t} column {name!r}; it stores numeric, bool, "
        "temporal and string columns (use 'arrow' or 'parquet')"
    )


def _read_column(ds: Any, field: pa.Field) -> pa.Array:
    t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.array(ds.asstr()[()].tolist(), pa.string())
    data = ds[()]
    if pa.types.is_temporal(t):
        return pa.array(data, pa.int64())
    return pa.array(data)


class Hdf5Format(Format):
    """numpy arrays, tables and JSON-like values as HDF5 (``.h5``)."""

    name = "hdf5"
    extension = ".h5"
    kinds: tuple[str, ...] = values.KINDS
    compressions: tuple[Optional[str], ...] = (None, "gzip", "lzf")

    def check(self, kind: str, options: WriteOptions) -> None:
        super().check(kind, options)
        _h5py()

    def to_bytes(self, value: Any, kind: str, options: WriteOptions) -> tuple[Any, dict[str, Any]]:
        buf = io.BytesIO()
        info = self.encode(value, kind, buf, options)
        return buf.getbuffer(), info

    def from_bytes(self, data: Any, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        return self.read(io.BytesIO(data), kind, info, options)

    def encode(self, value: Any, kind: str, path: Any, options: WriteOptions) -> dict[str, Any]:
        """Write ``value`` to ``path`` (a path, or a binary file object)."""
        h5py = _h5py()
        info: dict[str, Any] = {}
        columns = []
        if kind in values.TABULAR:
            table = values.to_arrow(value, kind)
            info = tabular_info(table, kind)
            columns = [
                (f.name, *_column_array(f.name, table.column(i)))
                for i, f in enumerate(table.schema)
            ]
        with h5py.File(path, "w") as f:
            if kind == values.NUMPY:
                f.create_dataset("values", data=value, compression=options.compression)
            elif kind == values.JSON:
                f.create_dataset("json", data=json.dumps(value), dtype=h5py.string_dtype())
            else:
                group = f.create_group("columns")
                for i, (name, data, dtype) in enumerate(columns):
                    ds = group.create_dataset(
                        str(i), data=data, dtype=dtype, compression=options.compression
                    )
                    ds.attrs["name"] = name
        return info

    def read(self, path: Any, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        h5py = _h5py()
        with h5py.File(path, "r") as f:
            if kind == values.NUMPY:
                return f["values"][()]
            if kind == values.JSON:
                return json.loads(f["json"].asstr()[()])
            schema = decode_schema(info["schema"])
            group = f["columns"]
            arrays = [_read_column(group[str(i)], field) for i, field in enumerate(schema)]
        table = pa.Table.from_arrays(arrays, names=schema.names)
        return restore(table, kind, info)
