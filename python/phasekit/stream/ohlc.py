"""``ohlc_resample``: ticks or bars into OHLCV bars of a fixed interval, vectorised per batch.

Bars are aligned to the Unix epoch plus ``offset``, left-closed and labelled by their
start, as polars ``group_by_dynamic`` does by default (and pandas ``resample`` with
``origin="epoch"``; for intervals that divide a day, also with its default origin).
A bar holds open (first price), high, low, close (last price), volume (sum) and trades
(tick count, or the sum of the input bars' ``trades``); only bars with data are emitted.

Ticks arrive either one at a time (mappings or objects with the named fields) or in
batches (pyarrow RecordBatch/Table, polars DataFrame, or a mapping of column arrays);
a batch is aggregated with numpy in one pass, never tick by tick. A bar is emitted once
the watermark (largest timestamp seen minus ``max_delay``) reaches its end, and at
the end of the input. A tick for a bar already emitted is late: it goes to the
``late`` port and is counted. Lateness is judged against the watermark before each
incoming batch. Batches in produce a ``pyarrow.RecordBatch`` of bars; single ticks
produce one dict per bar.
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
    Watermark,
    non_negative_duration,
    positive_duration,
    to_ns,
)
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
    """OHLCV bars of ``interval`` (e.g. ``"1m"``) from ticks or bars (see the module doc).

    ``ts``/``price``/``volume``: input field names (``volume=None``: volume 0); ``by``:
    a key field (one bar series per key); ``max_delay``: out-of-orderness tolerated
    before a bar is emitted; ``offset``: shift of the bar boundaries from the epoch;
    ``bars``: force bar input (open/high/low/close/[trades]) or tick input (default:
    detected from the fields).
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
        max_delay: Any = 0,
        offset: Any = 0,
        bars: Optional[bool] = None,
    ) -> None:
        self.interval = positive_duration(interval, "interval")
        self.offset = non_negative_duration(offset, "offset") % self.interval
        self.ts_field = ts
        self.price_field = price
        self.volume_field = volume
        self.by = by
        self.bars_in = bars
        self.wm = Watermark(max_delay)
        self.counters = {"late": 0, "bars": 0, "ticks": 0}
        self._state: dict[tuple[int, int], list[Any]] = {}
        self._state_max_bucket = MIN_TIME
        self._key_ids: dict[Any, int] = {}
        self._key_values: list[Any] = []
        self._ts_type: Any = None
        self._columnar_out = False

    @property
    def watermark(self) -> int:
        return self.wm.value

    # -------------------------------------------------------------- input

    def process_batch(self, items: list[Any]) -> list[Any]:
        out: list[Any] = []
        singles: list[Any] = []
        for item in items:
            if self._is_columnar(item):
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
        import pyarrow as pa

        if isinstance(item, Mapping):
            table = pa.table(
                {k: np.asarray(v) if isinstance(v, list) else v for k, v in item.items()}
            )
        elif isinstance(item, (pa.RecordBatch, pa.Table)):
            table = item
        elif hasattr(item, "to_arrow") and type(item).__module__.startswith("polars"):
            table = item.to_arrow()
        else:
            table = pa.table(item)
        names = table.schema.names
        for name in (self.ts_field, self.price_field if not self._is_bars(names) else "open"):
            if name not in names:
                raise InvalidArgument(
                    f"ohlc_resample: input batch has no column {name!r} (columns: {names})"
                )
        ts_col = table.column(self.ts_field)
        ts_type = ts_col.type
        if pa.types.is_timestamp(ts_type):
            ts_col = ts_col.cast(pa.timestamp("ns", ts_type.tz)).cast(pa.int64())
        ts = _np(ts_col, np.int64)
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
        iv, off = self.interval, self.offset
        w_before = self.wm.value
        if w_before > MIN_TIME:
            # a tick is late when its bar has ended: bar end <= W, i.e. ts < start of W's bar
            cutoff = w_before - (w_before - off) % iv
            if int(chunk.ts.min()) < cutoff:
                late = chunk.ts < cutoff
                self._late(chunk, late, out)
                chunk = _select(chunk, ~late)
                if len(chunk.ts) == 0:
                    return
        w = self.wm.observe(int(chunk.ts.max()))
        parts = _partials(chunk, iv, off)
        finals = self._merge(parts, w)
        self._emit(finals, chunk, out)

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
        """Fold the batch's partial bars into the open bars; return the bars now final."""
        iv = self.interval
        state = self._state
        buckets, keys = parts["bucket"], parts["key"]
        final_mask = buckets + iv <= w
        candidates = (
            np.flatnonzero(buckets <= self._state_max_bucket) if state else np.empty(0, np.int64)
        )
        handled = np.zeros(len(buckets), dtype=bool)
        for i in candidates.tolist():
            slot = (int(keys[i]), int(buckets[i]))
            bar = state.get(slot)
            if bar is not None:
                _fold(bar, parts, i)
                handled[i] = True
        opening = np.flatnonzero(~handled & ~final_mask)
        for i in opening.tolist():
            b = int(buckets[i])
            state[(int(keys[i]), b)] = [parts[f][i].item() for f in _PART_FIELDS]
            if b > self._state_max_bucket:
                self._state_max_bucket = b
        direct = ~handled & final_mask
        finals = {f: parts[f][direct] for f in ("key", "bucket", *BAR_FIELDS)}
        closing = [slot for slot in state if slot[1] + iv <= w]
        if closing:
            rows = [(slot, state.pop(slot)) for slot in closing]
            extra = {
                "key": np.array([s[0] for s, _ in rows], dtype=np.int64),
                "bucket": np.array([s[1] for s, _ in rows], dtype=np.int64),
            }
            for f in BAR_FIELDS:
                idx = _PART_FIELDS.index(f)
                extra[f] = np.array([bar[idx] for _, bar in rows])
            finals = {f: np.concatenate([finals[f], extra[f]]) for f in finals}
            if not state:
                self._state_max_bucket = MIN_TIME
        if len(finals["bucket"]) > 1:
            order = np.lexsort((finals["key"], finals["bucket"]))
            finals = {f: v[order] for f, v in finals.items()}
        return finals

    # -------------------------------------------------------------- output

    def _emit(self, finals: dict[str, np.ndarray], chunk: Optional[_Chunk], out: list[Any]) -> None:
        n = len(finals["bucket"])
        if n == 0:
            return
        self.counters["bars"] += n
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
        return pa.RecordBatch.from_pydict(cols)

    def _dicts(self, finals: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        rows = []
        columns = {f: finals[f].tolist() for f in ("key", "bucket", *BAR_FIELDS)}
        for i in range(len(columns["bucket"])):
            row: dict[str, Any] = {}
            if self.by is not None:
                row[self.by] = self._key_values[columns["key"][i]]
            row[self.ts_field] = columns["bucket"][i]
            for f in BAR_FIELDS:
                row[f] = columns[f][i]
            row["trades"] = int(row["trades"])
            rows.append(row)
        return rows

    def close(self) -> list[Any]:
        """End of input: every open bar is emitted."""
        out: list[Any] = []
        if self._state:
            empty = _empty_parts()
            finals = self._merge_all(empty)
            self._emit(finals, None, out)
        return out

    def _merge_all(self, empty: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.wm.advance_to(2**63 - 1)
        return self._merge(empty, MAX_TIME)


_PART_FIELDS = ("first_ts", "open", "high", "low", "last_ts", "close", "volume", "trades")


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


def _empty_parts() -> dict[str, np.ndarray]:
    parts = {f: np.empty(0) for f in _PART_FIELDS}
    parts["key"] = np.empty(0, np.int64)
    parts["bucket"] = np.empty(0, np.int64)
    parts["first_ts"] = parts["last_ts"] = np.empty(0, np.int64)
    parts["trades"] = np.empty(0, np.int64)
    return parts


def _run_starts(ts: np.ndarray, iv: int, off: int) -> Optional[np.ndarray]:
    """Row indices where a new bar starts in time-sorted ``ts`` (None if the span is too
    sparse for a boundary search)."""
    first, last = int(ts[0]), int(ts[-1])
    b0 = first - (first - off) % iv
    nbars = (last - b0) // iv + 1
    if nbars > len(ts):
        return None
    bounds = np.arange(b0 + iv, b0 + nbars * iv, iv, dtype=np.int64)
    idx = np.searchsorted(ts, bounds, "left")
    starts = np.concatenate((np.zeros(1, np.int64), idx))
    keep = np.empty(len(starts), dtype=bool)
    keep[0] = True
    np.not_equal(starts[1:], starts[:-1], out=keep[1:])
    starts = starts[keep]
    return starts[starts < len(ts)]


def _partials(chunk: _Chunk, iv: int, off: int) -> dict[str, np.ndarray]:
    """One partial bar per (key, bar) of the chunk, in (key, time) order."""
    ts = chunk.ts
    keys = chunk.keys
    n = len(ts)
    ordered = bool(np.all(ts[1:] >= ts[:-1])) if n > 1 else True
    single_key = keys is None or bool(np.all(keys == keys[0]))
    starts: Optional[np.ndarray] = None
    order: Optional[np.ndarray] = None
    if ordered and single_key:
        starts = _run_starts(ts, iv, off)
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
        b = t - (t - off) % iv
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
        "bucket": first_ts - (first_ts - off) % iv,
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
