"""Value kinds: what a store accepts, the tag it records, and the round trip through Arrow.

A kind tag is recorded in every Ref so that ``get`` returns the type that was put.
polars and pandas frames and numpy arrays travel through Arrow (numpy arrays as one
flat ``values`` column with dtype and shape in the schema metadata); JSON-like values
(dicts with string keys, lists, str, int, float, bool, None) travel as JSON text.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from typing import Any

import pyarrow as pa

from phasekit.errors import InvalidArgument

TABLE = "pyarrow.Table"
BATCH = "pyarrow.RecordBatch"
POLARS = "polars.DataFrame"
PANDAS = "pandas.DataFrame"
NUMPY = "numpy.ndarray"
JSON = "json"
OBJECT = "object"
"""Any other Python object: held by MemoryStore only, or written by the pickle format."""

KINDS = (TABLE, BATCH, POLARS, PANDAS, NUMPY, JSON)
TABULAR = (TABLE, BATCH, POLARS, PANDAS)
ARROW_KIND_KEY = b"phasekit.kind"
NUMPY_INFO_KEY = b"phasekit.numpy"
JSON_COLUMN = "json"
NUMPY_COLUMN = "values"

_ALLOWED = (
    "pyarrow Table or RecordBatch, polars or pandas DataFrame, numpy array, or a JSON-like "
    "value (dict with str keys, list, str, int, float, bool, None)"
)


def _module_of(value: Any) -> str:
    return type(value).__module__.split(".", 1)[0]


def _is_instance(value: Any, module: str, name: str) -> bool:
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls is not None and isinstance(value, cls)


def json_problem(value: Any, path: str = "value", depth: int = 0) -> str | None:
    """Where ``value`` stops being JSON-like (e.g. ``value['a'][2] is a tuple``), or None."""
    if value is None or type(value) in (bool, int, float, str):
        return None
    if depth > 200:
        return f"{path} is nested more than 200 levels deep"
    if isinstance(value, list):
        for i, item in enumerate(value):
            problem = json_problem(item, f"{path}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                return f"{path} has the non-string key {k!r}"
            problem = json_problem(item, f"{path}[{k!r}]", depth + 1)
            if problem:
                return problem
        return None
    return f"{path} is a {type(value).__module__}.{type(value).__qualname__}"


def kind_of(value: Any, allow_object: bool = False) -> str:
    """The kind tag of ``value``; ``InvalidArgument`` lists the accepted types."""
    if isinstance(value, pa.Table):
        return TABLE
    if isinstance(value, pa.RecordBatch):
        return BATCH
    module = _module_of(value)
    if module == "polars" and _is_instance(value, "polars", "DataFrame"):
        return POLARS
    if module == "pandas" and _is_instance(value, "pandas", "DataFrame"):
        return PANDAS
    if module == "numpy" and _is_instance(value, "numpy", "ndarray"):
        return NUMPY
    problem = json_problem(value)
    if problem is None:
        return JSON
    if allow_object:
        return OBJECT
    raise InvalidArgument(f"cannot store this value: {problem}; allowed: {_ALLOWED}")


def copy_value(value: Any, kind: str) -> Any:
    """A copy that the caller's later in-place changes cannot reach (Arrow data is immutable)."""
    if kind in (TABLE, BATCH):
        return value
    if kind == NUMPY:
        return value.copy()
    if kind == PANDAS:
        return value.copy(deep=True)
    if kind == POLARS:
        return value.clone()
    return copy.deepcopy(value)


# ------------------------------------------------------------------ Arrow round trip


def _numpy_to_arrow(arr: Any) -> pa.Table:
    import numpy as np

    if arr.dtype.hasobject or arr.dtype.names is not None:
        raise InvalidArgument(
            f"numpy arrays of dtype {arr.dtype} cannot be stored as Arrow; allowed: numeric, "
            "bool, datetime, timedelta, str and bytes dtypes"
        )
    flat = np.ravel(arr, order="C")
    try:
        column = pa.array(flat)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidArgument(f"numpy array of dtype {arr.dtype} has no Arrow type: {exc}") from exc
    meta = {ARROW_KIND_KEY: NUMPY.encode(), NUMPY_INFO_KEY: json.dumps(numpy_info(arr)).encode()}
    return pa.table({NUMPY_COLUMN: column}).replace_schema_metadata(meta)


def _numpy_from_arrow(table: pa.Table, info: dict[str, Any] | None) -> Any:
    import numpy as np

    if info is None:
        info = numpy_info_from_schema(table.schema)
    if info is None:
        raise InvalidArgument("the Arrow data has no numpy dtype and shape metadata")
    dtype = dtype_from_info(info)
    flat = table.column(0).to_numpy()
    return np.asarray(flat).astype(dtype, copy=False).reshape(tuple(info["shape"]))


def dtype_from_info(info: dict[str, Any]) -> Any:
    """The numpy dtype recorded by :func:`numpy_info`."""
    import numpy as np

    return np.lib.format.descr_to_dtype(descr_from_json(info["dtype"]))


def descr_from_json(descr: Any) -> Any:
    """JSON turns descr tuples into lists; numpy wants tuples back."""
    if isinstance(descr, list):
        return [tuple(descr_from_json(x) if isinstance(x, list) else x for x in d) for d in descr]
    return descr


def numpy_info_from_schema(schema: pa.Schema) -> dict[str, Any] | None:
    """The numpy dtype/shape recorded in a schema by :func:`to_arrow`, if any."""
    raw = (schema.metadata or {}).get(NUMPY_INFO_KEY)
    return None if raw is None else dict(json.loads(raw))


@functools.lru_cache(maxsize=256)
def _descr(dtype: Any) -> Any:
    import numpy as np

    return np.lib.format.dtype_to_descr(dtype)


def numpy_info(arr: Any) -> dict[str, Any]:
    """dtype descr and shape of an array (what restoring it needs)."""
    return {"dtype": _descr(arr.dtype), "shape": list(arr.shape)}


def to_arrow(value: Any, kind: str) -> pa.Table:
    """``value`` as a pyarrow Table (no copy for Arrow data and where the source allows)."""
    try:
        if kind == TABLE:
            return value
        if kind == BATCH:
            return pa.Table.from_batches([value])
        if kind == POLARS:
            return value.to_arrow()
        if kind == PANDAS:
            return pa.Table.from_pandas(value)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidArgument(f"cannot convert the {kind} to Arrow: {exc}") from exc
    if kind == NUMPY:
        return _numpy_to_arrow(value)
    if kind == JSON:
        text = json.dumps(value, allow_nan=True)
        meta = {ARROW_KIND_KEY: JSON.encode()}
        return pa.table({JSON_COLUMN: pa.array([text], pa.large_string())}).replace_schema_metadata(
            meta
        )
    raise InvalidArgument(f"values of kind {kind!r} cannot be stored as Arrow; allowed: {_ALLOWED}")


def _single_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    if len(batches) == 1:
        return batches[0]
    arrays = [pa.array([], type=f.type) for f in table.schema]
    return pa.RecordBatch.from_arrays(arrays, schema=table.schema)


def from_arrow(table: pa.Table, kind: str, info: dict[str, Any] | None = None) -> Any:
    """Inverse of :func:`to_arrow`; ``info`` is the numpy dtype/shape when not in the schema."""
    if kind == TABLE:
        return table
    if kind == BATCH:
        return _single_batch(table)
    if kind == POLARS:
        import polars as pl

        return pl.from_arrow(table)
    if kind == PANDAS:
        return table.to_pandas()
    if kind == NUMPY:
        return _numpy_from_arrow(table, info)
    if kind == JSON:
        return json.loads(table.column(JSON_COLUMN)[0].as_py())
    raise InvalidArgument(f"unknown value kind {kind!r}; allowed: {', '.join(KINDS)}")


def strip_phasekit_metadata(schema: pa.Schema) -> pa.Schema:
    """``schema`` without phasekit's own metadata keys."""
    meta = {k: v for k, v in (schema.metadata or {}).items() if not k.startswith(b"phasekit.")}
    return schema.with_metadata(meta or None)


__all__ = [
    "BATCH",
    "JSON",
    "KINDS",
    "NUMPY",
    "OBJECT",
    "PANDAS",
    "POLARS",
    "TABLE",
    "TABULAR",
    "copy_value",
    "dtype_from_info",
    "from_arrow",
    "json_problem",
    "kind_of",
    "numpy_info",
    "numpy_info_from_schema",
    "to_arrow",
]
