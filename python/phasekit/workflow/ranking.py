"""A block window's container summaries as columns, ranked with numpy.

:class:`SummaryColumns` holds a window's containers as columns (their ids, their
parameter sets as the phase lists them, their metrics as an Arrow table and as float64
columns) and, once ranked, their order and objective scores. It is a sequence of
summaries (``container_id``, ``parameters``, ``metrics``, ``objective``), each made only
when it is taken: the best ``top_k``, a report's row. Its :meth:`SummaryColumns.ranking`
is the window's ``aggregate_results.json`` ranking, the text of each entry made from the
columns (each column's values by the C JSON encoder at once, the entries put together by
``str.format``: the same text ``json.dumps(entry, sort_keys=True)`` gives), never a dict
per container.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Optional, overload

import numpy as np
import pyarrow as pa

from phasekit.backtest.metrics import AVERAGED_METRICS
from phasekit.catalog.encode import plain_array

_NUMBERS = {int, float, bool, type(None)}
"""Value types whose ``json.dumps`` text holds no ``", "``."""
PIECE_ROWS = 2_000
"""Entries of a ranking encoded and handed to the writer at a time."""


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
        metrics: dict[str, Any] = {}
        for name in self.metrics.schema.names:
            value = self.metrics.column(name)[k].as_py()
            metrics[name] = None if isinstance(value, float) and not np.isfinite(value) else value
        out: dict[str, Any] = {
            "container_id": str(self.ids[k]),
            "parameters": self.parameters[k],
            "metrics": metrics,
        }
        if self.objective is not None:
            score = float(self.objective[k])
            out["objective"] = None if np.isnan(score) else score
        return out

    # ---------------------------------------------------------------- the ranking file

    def ranking(self) -> RankingRows:
        """The summaries as the ranking of ``aggregate_results.json``."""
        return RankingRows(self)

    def entry_texts(self, lo: int = 0, hi: Optional[int] = None) -> list[str]:
        """The JSON text (``json.dumps(summary, sort_keys=True)``) of the summaries
        ``[lo, hi)``, in order: each column's values encoded at once by the C encoder,
        the entries put together by ``str.format`` (no Python step per entry)."""
        order = self.order if self.order is not None else np.arange(len(self))
        order = order[lo:hi]
        take = pa.array(order)
        names = sorted(self.metrics.schema.names)
        fields = [_texts(self.ids[order].tolist())]
        fields += [_texts(_plain(self.metrics.column(n).take(take))) for n in names]
        metrics = ", ".join(f"{_literal(n)}: {{}}" for n in names)
        template = f'{{{{"container_id": {{}}, "metrics": {{{{{metrics}}}}}'
        if self.objective is not None:
            fields.append(_texts(_plain(pa.array(self.objective[order], pa.float64()))))
            template += ', "objective": {}'
        params = list(map(self.parameters.__getitem__, order.tolist()))
        fields.append(_parameter_texts(params))
        template += ', "parameters": {}}}'
        return list(map(template.format, *fields))


class RankingRows:
    """A ranking a JSON writer takes in pieces (:meth:`json_pieces`, the compact text
    of the list of entries) or whole (:meth:`json_value`, the list of dicts)."""

    def __init__(self, summaries: SummaryColumns) -> None:
        self.summaries = summaries

    def json_pieces(self) -> Iterator[str]:
        yield "["
        for lo in range(0, len(self.summaries), PIECE_ROWS):
            texts = self.summaries.entry_texts(lo, lo + PIECE_ROWS)
            yield (", " if lo else "") + ", ".join(texts)
        yield "]"

    def json_value(self) -> list[dict[str, Any]]:
        return list(self.summaries)

    def __len__(self) -> int:
        return len(self.summaries)


def _literal(text: str) -> str:
    """``text`` as a JSON string, ready to stand in a ``str.format`` template."""
    return json.dumps(text).replace("{", "{{").replace("}", "}}")


def _plain(values: pa.Array | pa.ChunkedArray) -> list[Any]:
    """A column as plain JSON values (None where a value is missing or not finite), by
    numpy and Arrow."""
    if pa.types.is_floating(values.type):
        return plain_array(values.to_numpy(zero_copy_only=False).astype(np.float64))
    return values.to_pylist()  # type: ignore[no-any-return]


def _texts(values: list[Any]) -> list[str]:
    """Each value's ``json.dumps`` text: the list encoded at once by the C encoder and
    cut at its separators when no value's text holds one (numbers, booleans, None,
    text without ``", "``), one by one otherwise."""
    if not values:
        return []
    kinds = set(map(type, values))
    plain = kinds <= _NUMBERS
    if kinds == {str}:
        plain = ", " not in "\x00".join(values)
    if plain:
        return json.dumps(values)[1:-1].split(", ")
    return [json.dumps(v, sort_keys=True) for v in values]


def _parameter_texts(params: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each parameter set's JSON text (keys sorted): by column when the sets share
    their keys, one ``json.dumps`` per set otherwise."""
    if not params:
        return []
    keys = params[0].keys()
    same: Callable[[Any], bool] = keys.__eq__
    key_sets: Callable[[Any], Any] = dict.keys
    shared = set(map(type, params)) == {dict} and all(map(same, map(key_sets, params)))
    if not shared or not all(isinstance(k, str) for k in keys):
        return [json.dumps(p, sort_keys=True) for p in params]
    names = sorted(keys)
    if not names:
        return ["{}"] * len(params)
    template = "{{" + ", ".join(f"{_literal(k)}: {{}}" for k in names) + "}}"
    columns = (_texts(list(map(itemgetter(k), params))) for k in names)
    return list(map(template.format, *columns))
