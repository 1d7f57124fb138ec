"""``ohlc_resample``: ticks or bars into OHLCV bars of an interval, vectorised per batch.

Bars are left-closed and labelled by their start, cut as polars ``group_by_dynamic``
cuts them (``phasekit.stream.intervals``: fixed durations aligned to the Unix epoch
plus ``offset``; calendar days, weeks, months in ``time_zone``). A bar holds open
(first price), high, low, close (last price), volume (sum) and trades (tick count, or
the sum of the input bars' ``trades``); only bars with data are emitted.

Ticks arrive either one at a time (mappings or objects with the named fields) or in
batches (pyarrow RecordBatch/Table, polars DataFrame, or a mapping of column arrays);
a batch is aggregated with numpy in one pass, never tick by tick. Watermark and
lateness follow ``phasekit.stream.eventtime`` (``max_delay``, ``allowed_lateness``):
each tick is judged against the watermark before it, in input order, whatever the
batches (the rows of a columnar batch in their order), so the bars do not depend on
how the input is cut. A bar is emitted once the watermark reaches its end, and at the
end of the input. With ``allowed_lateness`` an emitted bar takes later ticks until the
watermark passes ``end + allowed_lateness`` and is emitted again with each, carrying
a ``firing`` field (0 the first time). A tick for no open bar is late: it goes to the
``late`` port and is counted. Batches in produce a ``pyarrow.RecordBatch`` of bars;
single ticks produce one dict per bar.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from phasekit.errors import InvalidArgument
from phasekit.stream.eventtime import (
    MAX_TIME,
    MIN_TIME,
    CarriedWatermark,
    EventTimePolicy,
    Mark,
    to_ns,
)
from phasekit.stream.intervals import FixedInterval, Interval, parse_interval
from phasekit.stream.nodes import Out

log = logging.getLogger(__name__)

LATE_PORT = "late"
BAR_FIELDS = ("open", "high", "low", "close", "volume", "trades")


@dataclass
class _Chunk:
    """Columns of one input chunk as numpy arrays, rows in arrival order."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    trades: Optional[np.ndarray]  # None for ticks (one trade each)
    keys: Optional[np.ndarray]  # global key codes (int64) or None
    source: Any  # what late rows are cut from: a pyarrow table/batch or a list of items
    columnar: bool
    ts_type: Any = None  # pyarrow type of the input ts column, if any


class OhlcResample:
    """OHLCV bars of ``interval`` (e.g. ``"1m"``, ``"1d"``, ``"1mo"``) from ticks or bars
    (see the module doc).

    ``ts``/``price``/``volume``: input field names (``volume=None``: volume 0); ``by``:
    a key field (one bar series per key); ``max_delay``, ``allowed_lateness``: see
    ``phasekit.stream.eventtime``; ``offset``: shift of fixed bar boundaries from the
    epoch; ``time_zone``: the zone of calendar intervals; ``bars``: force bar input
    (open/high/low/close/[trades]) or tick input (default: detected from the fields).
    """

    output_ports = (LATE_PORT,)

    def __init__(
        self,
        interval: Any,
        *,
        ts: str = "ts",
        price: str = "price",
        volume: Optional[str] = "volume",
        by: Optional[str] = None,
        max_delay: Any = None,
        allowed_lateness: Any = None,
        offset: Any = 0,
        time_zone: Any = None,
        bars: Optional[bool] = None,
    ) -> None:
        self.bins: Interval = parse_interval(
            interval, time_zone=time_zone, offset=offset, name="ohlc_resample: interval"
        )
        self.ts_field = ts
        self.price_field = price
        self.volume_field = volume
        self.by = by
        self.bars_in = bars
        self.policy = EventTimePolicy.of(max_delay, allowed_lateness)
        self.wm = self.policy.watermark()
        self._carried: Optional[CarriedWatermark] = None
        self.counters = {"late": 0, "bars": 0, "ticks": 0, "updates": 0}
        self._state: dict[tuple[int, int], list[Any]] = {}
        self._state_max_bucket = MIN_TIME
        self._emitted: dict[tuple[int, int], list[Any]] = {}  # open for allowed_lateness
        self._firings: dict[tuple[int, int], int] = {}
        self._key_ids: dict[Any, int] = {}
        self._key_values: list[Any] = []
        self._ts_type: Any = None
        self._columnar_out = False

    @property
    def interval(self) -> int:
        """The length of every bar in nanoseconds, for fixed intervals (calendar bars vary
        in length: use ``bar_end``)."""
        if isinstance(self.bins, FixedInterval):
            return self.bins.size
        raise InvalidArgument(
            f"ohlc_resample: {self.bins!r} bars have no single length; use bar_end(start)"
        )

    def bar_end(self, start: int) -> int:
        """The end (exclusive, UTC nanoseconds) of the bar starting at ``start``."""
        return self.bins.end1(start)

    def event_time(self, item: Any) -> int:
        """The largest timestamp in an input item (a tick, or a columnar batch)."""
        if self._is_columnar(item):  # no state touched: the runtime calls this elsewhere
            table = _as_table(item)
            if self.ts_field not in table.schema.names:
                raise InvalidArgument(
                    f"ohlc_resample: input batch has no column {self.ts_field!r} "
                    f"(columns: {table.schema.names})"
                )
            ts = _ts_ns(table, self.ts_field)[0]
            return int(ts.max()) if len(ts) else MIN_TIME
        return to_ns(
            item[self.ts_field] if isinstance(item, Mapping) else getattr(item, self.ts_field)
        )

    def expect_watermarks(self, senders: Any) -> None:
        """Take the watermark from the marks of these inputs (the runtime calls this when
        the node is partitioned or has several inputs)."""
        self._carried = CarriedWatermark(senders)

    @property
    def watermark(self) -> int:
        return self._carried.value if self._carried is not None else self.wm.value

    # -------------------------------------------------------------- input

    def process_batch(self, items: list[Any]) -> list[Any]:
        out: list[Any] = []
        singles: list[Any] = []
        for item in items:
            if type(item) is Mark:
                if singles:
                    self._ingest(self._from_items(singles), out)
                    singles = []
                self._on_mark(item, out)
            elif self._is_columnar(item):
                if singles:
                    self._ingest(self._from_items(singles), out)
                    singles = []
                self._ingest(self._from_columns(item), out)
            else:
                singles.append(item)
        if singles:
            self._ingest(self._from_items(singles), out)
        return out

    def _is_columnar(self, item: Any) -> bool:
        if hasattr(item, "__arrow_c_stream__") or hasattr(item, "__arrow_c_array__"):
            return True
        if isinstance(item, Mapping):
            value = item.get(self.ts_field)
            return isinstance(value, (np.ndarray, list)) or hasattr(value, "__arrow_c_array__")
        return False

    def _codes(self, values: Any) -> np.ndarray:
        ids = self._key_ids
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            code = ids.get(v)
            if code is None:
                code = ids[v] = len(self._key_values)
                self._key_values.append(v)
            out[i] = code
        return out

    def _is_bars(self, names: Any) -> bool:
        if self.bars_in is not None:
            return self.bars_in
        return "open" in names and "high" in names and "low" in names and "close" in names

    def _from_items(self, items: list[Any]) -> _Chunk:
        def get(item: Any, name: str) -> Any:
            if isinstance(item, Mapping):
                return item[name]
            return getattr(item, name)

        first = items[0]
        names = first.keys() if isinstance(first, Mapping) else dir(first)
        bars = self._is_bars(names)
        vol_name = self.volume_field
        ts = np.fromiter((to_ns(get(x, self.ts_field)) for x in items), np.int64, len(items))
        if bars:
            o, h, lo, c = (
                np.array([float(get(x, f)) for x in items])
                for f in ("open", "high", "low", "close")
            )
            has_trades = "trades" in names
            trades = np.array(
                [int(get(x, "trades")) if has_trades else 1 for x in items], dtype=np.int64
            )
        else:
            o = np.array([float(get(x, self.price_field)) for x in items])
            h = lo = c = o
            trades = None
        vol = (
            np.array([float(get(x, vol_name)) for x in items])
            if vol_name is not None
            else np.zeros(len(items))
        )
        keys = self._codes([get(x, self.by) for x in items]) if self.by is not None else None
        return _Chunk(ts, o, h, lo, c, vol, trades, keys, items, False)

    def _from_columns(self, item: Any) -> _Chunk:
        table = _as_table(item)
        names = table.schema.names
        for name in (self.ts_field, self.price_field if not self._is_bars(names) else "open"):
            if name not in names:
                raise InvalidArgument(
                    f"ohlc_resample: input batch has no column {name!r} (columns: {names})"
                )
        ts, ts_type = _ts_ns(table, self.ts_field)
        n = len(ts)
        if self._is_bars(names):
            o, h, lo, c = (
                _np(table.column(f), np.float64) for f in ("open", "high", "low", "close")
            )
            trades = (
                _np(table.column("trades"), np.int64) if "trades" in names else np.ones(n, np.int64)
            )
        else:
            o = _np(table.column(self.price_field), np.float64)
            h = lo = c = o
            trades = None
        vol = (
            _np(table.column(self.volume_field), np.float64)
            if self.volume_field is not None and self.volume_field in names
            else np.zeros(n)
        )
        keys = None
        if self.by is not None:
            keys = self._arrow_codes(table.column(self.by))
        self._columnar_out = True
        return _Chunk(ts, o, h, lo, c, vol, trades, keys, table, True, ts_type)

    def _arrow_codes(self, column: Any) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(column)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        lookup = self._codes(encoded.dictionary.to_pylist())
        return lookup[_np(encoded.indices, np.int64)]

    # -------------------------------------------------------------- aggregation

    def _ingest(self, chunk: _Chunk, out: list[Any]) -> None:
        if chunk.ts_type is not None and self._ts_type is None:
            self._ts_type = chunk.ts_type
        n = len(chunk.ts)
        if n == 0:
            return
        self.counters["ticks"] += n
        w_before, w_after = self._watermarks(chunk.ts)
        buckets = self.bins.floor(chunk.ts)
        ends = self.bins.end(buckets)
        late = ends + self.policy.allowed_lateness <= w_before
        if late.any():
            self._late(chunk, late, out)
        update = ~late & (ends <= w_before)  # for a bar already due: emitted again at once
        if not update.any():
            self._fold_rows(chunk, ~late, w_after, out)
            return
        start = 0
        for row in np.flatnonzero(update).tolist():
            keep = ~late[start:row]
            if keep.any():
                self._fold_rows(_rows(chunk, start, row), keep, int(w_before[row]), out)
            self._update(chunk, row, int(buckets[row]), int(ends[row]), out)
            start = row + 1
        if start < n:
            self._fold_rows(_rows(chunk, start, n), ~late[start:], w_after, out)
        else:
            self._advance(w_after, chunk, out)

    def _watermarks(self, ts: np.ndarray) -> tuple[np.ndarray, int]:
        """The watermark before each row, and after the last."""
        if self._carried is not None:
            w = self._carried.value
            return np.full(len(ts), w, dtype=np.int64), w
        w0 = self.wm.value
        running = np.maximum.accumulate(ts)
        before = np.empty(len(ts), dtype=np.int64)
        before[0] = w0
        if len(ts) > 1:
            np.maximum(running[:-1] - self.policy.max_delay, w0, out=before[1:])
        return before, self.wm.observe(int(running[-1]))

    def _fold_rows(self, chunk: _Chunk, keep: np.ndarray, w: int, out: list[Any]) -> None:
        """Fold the kept rows (none of them late) into the open bars; emit the bars due at
        ``w``."""
        if not keep.all():
            chunk = _select(chunk, keep)
        direct = self._merge(_partials(chunk, self.bins), w) if len(chunk.ts) else None
        self._advance(w, chunk, out, direct)

    def _advance(
        self,
        w: int,
        chunk: Optional[_Chunk],
        out: list[Any],
        direct: Optional[dict[str, np.ndarray]] = None,
    ) -> None:
        finals = self._due(w)
        if direct is not None and len(direct["bucket"]):
            finals = {f: np.concatenate([finals[f], direct[f]]) for f in finals}
            if len(finals["bucket"]) > 1:
                order = np.lexsort((finals["bucket"], finals["key"], finals["end"]))
                finals = {f: v[order] for f, v in finals.items()}
        self._emit(finals, chunk, out)
        if self._emitted:
            horizon = self.policy.allowed_lateness
            for slot in [s for s, bar in self._emitted.items() if bar[8] + horizon <= w]:
                del self._emitted[slot]
                self._firings.pop(slot, None)

    def _update(self, chunk: _Chunk, row: int, bucket: int, end: int, out: list[Any]) -> None:
        """A row for a bar already due (within ``allowed_lateness``): fold it and emit the
        bar again (or for the first time, if the row opens it)."""
        parts = _partials(_rows(chunk, row, row + 1), self.bins)
        key = int(parts["key"][0])
        slot = (key, bucket)
        bar = self._emitted.get(slot)
        if bar is None:
            bar = self._emitted[slot] = [parts[f][0].item() for f in _PART_FIELDS] + [end]
        else:
            _fold(bar, parts, 0)
        self.counters["updates"] += 1
        self._emit(_finals_of([(slot, bar)]), chunk, out)

    def _on_mark(self, mark: Mark, out: list[Any]) -> None:
        if self._carried is None:
            raise InvalidArgument(
                "ohlc_resample received a watermark mark but expects none (marks come "
                "from the runtime)"
            )
        if self._carried.update(mark):
            self._advance(self._carried.value, None, out)

    def _late(self, chunk: _Chunk, late: np.ndarray, out: list[Any]) -> None:
        count = int(late.sum())
        self.counters["late"] += count
        if chunk.columnar:
            out.append(Out(LATE_PORT, chunk.source.filter(late)))
        else:
            for item, is_late in zip(chunk.source, late.tolist()):
                if is_late:
                    out.append(Out(LATE_PORT, item))

    def _merge(self, parts: dict[str, np.ndarray], w: int) -> dict[str, np.ndarray]:
        """Fold the partial bars of rows that are not late into the open bars; return the
        partial bars that are whole bars already due at ``w`` (no open bar, vectorised)."""
        state = self._state
        buckets, keys = parts["bucket"], parts["key"]
        ends = self.bins.end(buckets)
        candidates = (
            np.flatnonzero(buckets <= self._state_max_bucket) if state else np.empty(0, np.int64)
        )
        handled = np.zeros(len(buckets), dtype=bool)
        for i in candidates.tolist():
            bar = state.get((int(keys[i]), int(buckets[i])))
            if bar is not None:
                _fold(bar, parts, i)
                handled[i] = True
        due = ends <= w
        for i in np.flatnonzero(~handled & ~due).tolist():
            b = int(buckets[i])
            state[(int(keys[i]), b)] = [parts[f][i].item() for f in _PART_FIELDS] + [int(ends[i])]
            if b > self._state_max_bucket:
                self._state_max_bucket = b
        direct = ~handled & due
        finals = {f: parts[f][direct] for f in ("key", "bucket", *BAR_FIELDS)}
        finals["end"] = ends[direct]
        if self.policy.allowed_lateness:
            for i in np.flatnonzero(direct).tolist():
                slot = (int(keys[i]), int(buckets[i]))
                self._emitted[slot] = [parts[f][i].item() for f in _PART_FIELDS] + [int(ends[i])]
        return finals

    def _due(self, w: int) -> dict[str, np.ndarray]:
        """Take the open bars whose end the watermark ``w`` has reached, in (end, key) order."""
        state = self._state
        closing = [slot for slot, bar in state.items() if bar[8] <= w]
        rows = [(slot, state.pop(slot)) for slot in closing]
        if not state:
            self._state_max_bucket = MIN_TIME
        if self.policy.allowed_lateness:
            for slot, bar in rows:
                self._emitted[slot] = bar
        rows.sort(key=lambda row: (row[1][8], row[0][0], row[0][1]))
        return _finals_of(rows)

    # -------------------------------------------------------------- output

    def _emit(self, finals: dict[str, np.ndarray], chunk: Optional[_Chunk], out: list[Any]) -> None:
        n = len(finals["bucket"])
        if n == 0:
            return
        self.counters["bars"] += n
        if self.policy.allowed_lateness:
            firings = self._firings
            numbers = []
            for slot in zip(finals["key"].tolist(), finals["bucket"].tolist()):
                numbers.append(firings.get(slot, 0))
                firings[slot] = numbers[-1] + 1
            finals["firing"] = np.array(numbers, dtype=np.int64)
        columnar = chunk.columnar if chunk is not None else self._columnar_out
        if columnar:
            out.append(self._batch(finals))
        else:
            out.extend(self._dicts(finals))

    def _batch(self, finals: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        cols: dict[str, Any] = {}
        if self.by is not None:
            cols[self.by] = pa.array([self._key_values[k] for k in finals["key"].tolist()])
        ts = pa.array(finals["bucket"].astype(np.int64), pa.int64())
        if self._ts_type is not None and pa.types.is_timestamp(self._ts_type):
            ts = ts.cast(pa.timestamp("ns", self._ts_type.tz)).cast(self._ts_type)
        cols[self.ts_field] = ts
        for f in BAR_FIELDS:
            values = finals[f]
            cols[f] = pa.array(
                values.astype(np.int64) if f == "trades" else values.astype(np.float64)
            )
        if "firing" in finals:
            cols["firing"] = pa.array(finals["firing"], pa.int64())
        return pa.RecordBatch.from_pydict(cols)

    def _dicts(self, finals: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        rows = []
        columns = {f: finals[f].tolist() for f in ("key", "bucket", *BAR_FIELDS)}
        firing = finals["firing"].tolist() if "firing" in finals else None
        for i in range(len(columns["bucket"])):
            row: dict[str, Any] = {}
            if self.by is not None:
                row[self.by] = self._key_values[columns["key"][i]]
            row[self.ts_field] = columns["bucket"][i]
            for f in BAR_FIELDS:
                row[f] = columns[f][i]
            row["trades"] = int(row["trades"])
            if firing is not None:
                row["firing"] = firing[i]
            rows.append(row)
        return rows

    def close(self) -> list[Any]:
        """End of input: every open bar is emitted."""
        out: list[Any] = []
        self.wm.advance_to(MAX_TIME)
        self._emit(self._due(MAX_TIME), None, out)
        return out


_PART_FIELDS = ("first_ts", "open", "high", "low", "last_ts", "close", "volume", "trades")


def _as_table(item: Any) -> Any:
    """A columnar input item as a pyarrow Table or RecordBatch."""
    import pyarrow as pa

    if isinstance(item, Mapping):
        return pa.table({k: np.asarray(v) if isinstance(v, list) else v for k, v in item.items()})
    if isinstance(item, (pa.RecordBatch, pa.Table)):
        return item
    if hasattr(item, "to_arrow") and type(item).__module__.startswith("polars"):
        return item.to_arrow()
    return pa.table(item)


def _ts_ns(table: Any, field: str) -> tuple[np.ndarray, Any]:
    """The timestamps of a table as int64 nanoseconds, and the column's Arrow type."""
    import pyarrow as pa

    column = table.column(field)
    ts_type = column.type
    if pa.types.is_timestamp(ts_type):
        column = column.cast(pa.timestamp("ns", ts_type.tz)).cast(pa.int64())
    return _np(column, np.int64), ts_type


def _np(column: Any, dtype: Any) -> np.ndarray:
    """A numpy view (or copy when needed) of an Arrow array or chunked array."""
    try:
        arr = column.to_numpy(zero_copy_only=False)
    except TypeError:
        arr = column.to_numpy()
    return np.asarray(arr, dtype=dtype)


def _select(chunk: _Chunk, keep: np.ndarray) -> _Chunk:
    """The rows of ``keep`` (arrays shared between fields stay shared)."""
    picked: dict[int, np.ndarray] = {}

    def sel(a: np.ndarray) -> np.ndarray:
        got = picked.get(id(a))
        if got is None:
            got = picked[id(a)] = a[keep]
        return got

    return _Chunk(
        sel(chunk.ts),
        sel(chunk.open),
        sel(chunk.high),
        sel(chunk.low),
        sel(chunk.close),
        sel(chunk.volume),
        None if chunk.trades is None else sel(chunk.trades),
        None if chunk.keys is None else sel(chunk.keys),
        chunk.source,
        chunk.columnar,
        chunk.ts_type,
    )


def _rows(chunk: _Chunk, start: int, stop: int) -> _Chunk:
    """Rows ``start:stop`` of a chunk."""
    keep = np.zeros(len(chunk.ts), dtype=bool)
    keep[start:stop] = True
    return _select(chunk, keep)


def _finals_of(rows: list[tuple[tuple[int, int], list[Any]]]) -> dict[str, np.ndarray]:
    """Bars as columns from ((key, bucket), bar state) pairs."""
    finals = {
        "key": np.array([s[0] for s, _ in rows], dtype=np.int64),
        "bucket": np.array([s[1] for s, _ in rows], dtype=np.int64),
        "end": np.array([bar[8] for _, bar in rows], dtype=np.int64),
    }
    for f in BAR_FIELDS:
        idx = _PART_FIELDS.index(f)
        finals[f] = np.array([bar[idx] for _, bar in rows], dtype=np.float64)
    return finals


def _run_starts(ts: np.ndarray, bins: Interval) -> Optional[np.ndarray]:
    """Row indices where a new bar starts in time-sorted ``ts`` (None if the span is too
    sparse for a boundary search)."""
    first, last = int(ts[0]), int(ts[-1])
    if not bins.calendar and (last - bins.floor1(first)) // bins.size + 1 > len(ts):  # type: ignore[union-attr]
        return None
    starts_of_bins = bins.starts_between(first, last)
    if len(starts_of_bins) > len(ts):
        return None
    idx = np.searchsorted(ts, starts_of_bins[1:], "left")
    starts = np.concatenate((np.zeros(1, np.int64), idx))
    keep = np.empty(len(starts), dtype=bool)
    keep[0] = True
    np.not_equal(starts[1:], starts[:-1], out=keep[1:])
    starts = starts[keep]
    return starts[starts < len(ts)]


def _partials(chunk: _Chunk, bins: Interval) -> dict[str, np.ndarray]:
    """One partial bar per (key, bar) of the chunk, in (key, time) order."""
    ts = chunk.ts
    keys = chunk.keys
    n = len(ts)
    ordered = bool(np.all(ts[1:] >= ts[:-1])) if n > 1 else True
    single_key = keys is None or bool(np.all(keys == keys[0]))
    starts: Optional[np.ndarray] = None
    order: Optional[np.ndarray] = None
    if ordered and single_key:
        starts = _run_starts(ts, bins)
    elif single_key:
        order = np.argsort(ts, kind="stable")
    else:
        assert keys is not None
        order = np.argsort(keys, kind="stable") if ordered else np.lexsort((ts, keys))

    def take(a: np.ndarray) -> np.ndarray:
        return a if order is None else a[order]

    t = take(ts)
    k = None if keys is None or single_key else take(keys)
    if starts is None:
        b = bins.floor(t)
        change = b[1:] != b[:-1]
        if k is not None:
            change |= k[1:] != k[:-1]
        starts = np.concatenate((np.zeros(1, np.int64), np.flatnonzero(change) + 1))
    ends = np.concatenate((starts[1:], [n]))
    first_ts = t[starts]
    if k is not None:
        key_of = k[starts]
    else:
        key_of = np.full(len(starts), 0 if keys is None else keys[0], dtype=np.int64)
    high = take(chunk.high)
    low = high if chunk.low is chunk.high else take(chunk.low)
    trades = ends - starts if chunk.trades is None else np.add.reduceat(take(chunk.trades), starts)
    return {
        "key": key_of,
        "bucket": bins.floor(first_ts),
        "first_ts": first_ts,
        "open": take(chunk.open)[starts],
        "high": np.maximum.reduceat(high, starts),
        "low": np.minimum.reduceat(low, starts),
        "last_ts": t[ends - 1],
        "close": take(chunk.close)[ends - 1],
        "volume": np.add.reduceat(take(chunk.volume), starts),
        "trades": trades,
    }


def _fold(bar: list[Any], parts: dict[str, np.ndarray], i: int) -> None:
    """Merge partial ``i`` into an open bar (first_ts, open, high, low, last_ts, close, volume, trades)."""
    first_ts = int(parts["first_ts"][i])
    if first_ts < bar[0]:
        bar[0], bar[1] = first_ts, float(parts["open"][i])
    bar[2] = max(bar[2], float(parts["high"][i]))
    bar[3] = min(bar[3], float(parts["low"][i]))
    last_ts = int(parts["last_ts"][i])
    if last_ts >= bar[4]:
        bar[4], bar[5] = last_ts, float(parts["close"][i])
    bar[6] += float(parts["volume"][i])
    bar[7] += int(parts["trades"][i])


ohlc_resample = OhlcResample
