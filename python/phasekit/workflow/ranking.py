"""A block window's container summaries as columns, ranked with numpy.

:class:`SummaryColumns` holds a window's containers as columns (their ids, their
parameter sets as the phase lists them, their metrics as an Arrow table and as float64
columns) and, once ranked, their order and objective scores. It is a sequence of
summaries (``container_id``, ``parameters``, ``metrics``, ``objective``), each made only
when it is taken: the best ``top_k``, a report's row. Its :meth:`SummaryColumns.ranking`
is the window's ``aggregate_results.json`` ranking, the text of each entry made from the
columns by numpy's string functions (the same text ``json.dumps(entry, sort_keys=True)``
gives), never a dict per container.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, overload

import numpy as np
import pyarrow as pa

from phasekit.backtest.metrics import AVERAGED_METRICS

PIECE_ROWS = 2_000
"""Entries of a ranking encoded and handed to the writer at a time."""
_PLAIN_TEXT = re.compile(r'^[^"\\\x00-\x1f\x7f-\U0010ffff]*$')
"""Text ``json.dumps`` writes as it is, between quotes (no escapes)."""


class SummaryColumns(Sequence[dict[str, Any]]):
    """A window's container summaries as columns (see the module docstring)."""

    def __init__(
        self,
        ids: np.ndarray,
        parameters: Sequence[Mapping[str, Any]],
        metrics: pa.Table,
        order: Optional[np.ndarray] = None,
        objective: Optional[np.ndarray] = None,
    ) -> None:
        self.ids = ids
        self.parameters = parameters
        self.metrics = metrics
        self.order = order
        self.objective = objective
        self._columns: Optional[dict[str, np.ndarray]] = None

    @classmethod
    def concat(
        cls, parts: Sequence[tuple[Sequence[str], Sequence[Mapping[str, Any]], pa.Table]]
    ) -> SummaryColumns:
        """The summaries of blocks (their ids, parameter sets and metrics), in order."""
        ids = (
            np.concatenate([np.asarray(p[0], dtype=str) for p in parts])
            if parts
            else np.array([], dtype=str)
        )
        parameters: list[Mapping[str, Any]] = []
        for part in parts:
            parameters.extend(part[1])
        metrics = pa.concat_tables([p[2] for p in parts]) if parts else pa.table({})
        return cls(ids, parameters, metrics)

    # ---------------------------------------------------------------- columns

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The metrics as float64 columns, NaN where a value is missing or not finite
        (in the containers' order, not the ranking's)."""
        if self._columns is None:
            out = {}
            for name in self.metrics.schema.names:
                col = self.metrics.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
                out[name] = np.where(np.isfinite(col), col, np.nan)
            self._columns = out
        return self._columns

    def ranked(self, score: np.ndarray, sign: float, keep_order: bool) -> SummaryColumns:
        """These summaries best first by ``sign * score`` (NaN last, ties by container
        id), each scored; ``keep_order`` scores them in their order."""
        nan = np.isnan(score)
        if keep_order:
            order = np.arange(len(self.ids))
        else:
            order = np.lexsort((self.ids, np.where(nan, 0.0, sign * score), nan))
        out = SummaryColumns(self.ids, self.parameters, self.metrics, order, score)
        out._columns = self._columns
        return out

    def average(self) -> dict[str, Optional[float]]:
        """``avg_<name>`` of the averaged metrics (None where no container has one), as
        :func:`~phasekit.backtest.metrics.average_metrics` gives them (summed in the
        ranking's order)."""
        out: dict[str, Optional[float]] = {}
        for key in AVERAGED_METRICS:
            col = self.columns.get(key)
            if col is not None and self.order is not None:
                col = col[self.order]
            vals = col[~np.isnan(col)] if col is not None else np.empty(0)
            out[f"avg_{key}"] = float(np.mean(vals)) if vals.shape[0] else None
        return out

    # ---------------------------------------------------------------- summaries

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return [self._summary(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self._summary(i % n)

    def _summary(self, position: int) -> dict[str, Any]:
        k = int(self.order[position]) if self.order is not None else position
        metrics = {}
        for name in self.metrics.schema.names:
            value = self.metrics.column(name)[k].as_py()
            metrics[name] = None if isinstance(value, float) and not np.isfinite(value) else value
        out = {
            "container_id": str(self.ids[k]),
            "parameters": self.parameters[k],
            "metrics": metrics,
        }
        if self.objective is not None:
            value = float(self.objective[k])
            out["objective"] = None if np.isnan(value) else value
        return out

    # ---------------------------------------------------------------- the ranking file

    def ranking(self) -> RankingRows:
        """The summaries as the ranking of ``aggregate_results.json``."""
        return RankingRows(self)

    def entry_texts(self, lo: int = 0, hi: Optional[int] = None) -> np.ndarray:
        """The JSON text (``json.dumps(summary, sort_keys=True)``) of the summaries
        ``[lo, hi)``, in order."""
        order = self.order if self.order is not None else np.arange(len(self))
        order = order[lo:hi]
        ids = self.ids[order]
        text = _add('{"container_id": ', _quoted(ids))
        text = _add(text, ', "metrics": {')
        for j, name in enumerate(sorted(self.metrics.schema.names)):
            col = self.metrics.column(name).combine_chunks().take(pa.array(order))
            text = _add(text, (", " if j else "") + json.dumps(name) + ": ")
            text = _add(text, _metric_texts(col))
        text = _add(text, "}")
        if self.objective is not None:
            text = _add(text, ', "objective": ')
            text = _add(text, _float_texts(self.objective[order], "null"))
        params = [self.parameters[k] for k in order.tolist()]
        text = _add(text, ', "parameters": ')
        return _add(_add(text, _parameter_texts(params)), "}")


class RankingRows:
    """A ranking a JSON writer takes in pieces (:meth:`json_pieces`, the compact text
    of the list of entries) or whole (:meth:`json_value`, the list of dicts)."""

    def __init__(self, summaries: SummaryColumns) -> None:
        self.summaries = summaries

    def json_pieces(self) -> Iterator[str]:
        yield "["
        for lo in range(0, len(self.summaries), PIECE_ROWS):
            texts = self.summaries.entry_texts(lo, lo + PIECE_ROWS)
            yield (", " if lo else "") + ", ".join(texts.tolist())
        yield "]"

    def json_value(self) -> list[dict[str, Any]]:
        return list(self.summaries)

    def __len__(self) -> int:
        return len(self.summaries)


def _add(a: Any, b: Any) -> np.ndarray:
    return np.strings.add(np.asarray(a), np.asarray(b))  # type: ignore[no-any-return]


def _quoted(values: np.ndarray) -> np.ndarray:
    """Text values as JSON strings."""
    if values.shape[0] == 0 or _PLAIN_TEXT.match("".join(values.tolist())):
        return _add(_add('"', values), '"')
    return np.array([json.dumps(v) for v in values.tolist()], dtype=str)


def _float_texts(values: np.ndarray, missing: str) -> np.ndarray:
    """Float64 values as ``json.dumps`` writes them; ``missing`` where not finite."""
    finite = np.isfinite(values)
    text = values.astype(str)
    return np.where(finite, text, missing) if not finite.all() else text


def _metric_texts(col: pa.Array) -> np.ndarray:
    """A metric column as its summaries' plain JSON values (null where a value is
    missing or not finite)."""
    if pa.types.is_floating(col.type):
        return _float_texts(col.to_numpy(zero_copy_only=False).astype(np.float64), "null")
    if (pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)) and not col.null_count:
        values = col.to_numpy(zero_copy_only=False)
        return np.where(values, "true", "false") if values.dtype == bool else values.astype(str)
    return np.array([json.dumps(v) for v in col.to_pylist()], dtype=str)


def _parameter_texts(params: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Each parameter set's JSON text (keys sorted): by column when the sets share
    their keys, one ``json.dumps`` per set otherwise."""
    if not params:
        return np.array([], dtype=str)
    keys = params[0].keys()
    if not all(isinstance(k, str) for k in keys) or any(p.keys() != keys for p in params):
        return np.array([json.dumps(p, sort_keys=True) for p in params], dtype=str)
    text = np.full(len(params), "{")
    for j, key in enumerate(sorted(keys)):
        text = _add(text, (", " if j else "") + json.dumps(key) + ": ")
        text = _add(text, _value_texts([p[key] for p in params]))
    return _add(text, "}")


def _value_texts(values: list[Any]) -> np.ndarray:
    """Values as ``json.dumps`` writes them: numbers, booleans and plain text by numpy,
    anything else one by one."""
    kinds = {type(v) for v in values}
    try:
        if kinds == {int}:
            return np.array(values, dtype=np.int64).astype(str)
        if kinds == {float}:
            arr = np.array(values, dtype=np.float64)
            if np.isfinite(arr).all():
                return arr.astype(str)
        if kinds == {bool}:
            return np.where(np.array(values, dtype=bool), "true", "false")
        if kinds == {str}:
            return _quoted(np.array(values, dtype=str))
    except OverflowError:  # an int past 64 bits
        pass
    return np.array([json.dumps(v, sort_keys=True) for v in values], dtype=str)
