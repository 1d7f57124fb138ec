"""EventRing: retention of traced events under a policy (the pure-Python reference).

The behaviour is specified in docs/primitives.md; ``phasekit._core.EventRing`` is the
drop-in fast version. Events are kept as 7-tuples: a ``deque(maxlen=N)`` for
``sliding_window``/``keep_all``; for ``trade_complete``/``minimal`` an insertion-ordered
dict (arrival order) plus, per open position, the sequence numbers of its events.

Every policy keeps a position book from FILL events (signed quantity: buy > 0, sell < 0):
per symbol a lot with its quantity and average entry price; a fill that reduces a lot
closes a trade at the average entry price (see :class:`_Lot`).
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat
from typing import TYPE_CHECKING, Any, Optional, Union

from phasekit.errors import InvalidArgument
from phasekit.events import MAX_KIND, RETENTION_POLICIES, EventType

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

EVENT_FIELDS = ("ts", "kind", "key", "symbol", "price", "quantity", "value")
EVENT_BYTES = 46
TRADE_FIELDS = (
    "key",
    "symbol",
    "open_ts",
    "close_ts",
    "entry_price",
    "exit_price",
    "quantity",
    "pnl",
    "n_events",
)
TRADE_BYTES = 68
POLICIES = RETENTION_POLICIES

POSITION_OPEN = int(EventType.POSITION_OPEN)
POSITION_CLOSE = int(EventType.POSITION_CLOSE)
FILL = int(EventType.FILL)
#: A fill whose size is within this fraction of the lot's closes it exactly.
FLAT_TOLERANCE = 1e-9
#: Keys of ``EventRing.positions()`` rows, and of ``EventRing.realized()``.
POSITION_FIELDS = ("symbol", "quantity", "avg_price", "open_ts", "n_events")
REALIZED_FIELDS = ("trades", "winning", "losing", "pnl", "gross_profit", "gross_loss")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
KIND_MAX = MAX_KIND

Event = tuple[int, int, int, int, float, float, float]
Trade = tuple[int, int, int, int, float, float, float, float, int]

# integer event fields: (lowest, highest, name of the range for messages)
_INT_RANGES: dict[str, tuple[int, int, str]] = {
    "ts": (INT64_MIN, INT64_MAX, "int64 range"),
    "kind": (0, KIND_MAX, "0..65535"),
    "key": (INT64_MIN, INT64_MAX, "int64 range"),
    "symbol": (INT32_MIN, INT32_MAX, "int32 range"),
}
_DEFAULTS: dict[str, Union[int, float]] = {"key": -1, "symbol": 0}
_EVENT_TYPES = ("int64", "uint16", "int64", "int32", "float64", "float64", "float64")
_TRADE_TYPES = (
    "int64",
    "int32",
    "int64",
    "int64",
    "float64",
    "float64",
    "float64",
    "float64",
    "int64",
)


# ---------------------------------------------------------------- argument checks


def _as_int(name: str, x: Any) -> int:
    try:
        return int(operator.index(x))
    except TypeError:
        raise InvalidArgument(f"{name} must be an int, got {type(x).__name__}") from None


def _int_arg(name: str, x: Any, lo: int, hi: int, allowed: str) -> int:
    if type(x) is int and lo <= x <= hi:
        return x
    v = _as_int(name, x)
    if not lo <= v <= hi:
        raise InvalidArgument(f"{name} must be in {allowed}, got {v}")
    return v


def _float_arg(name: str, x: Any) -> float:
    if type(x) is float:
        return x
    t = type(x)
    if not (hasattr(t, "__float__") or hasattr(t, "__index__")):
        raise InvalidArgument(f"{name} must be a float, got {t.__name__}")
    try:
        return float(x)
    except OverflowError:
        raise InvalidArgument(f"{name} must be in float64 range, got {x}") from None


def _count_arg(name: str, x: Any) -> int:
    v = _as_int(name, x)
    if not INT64_MIN <= v <= INT64_MAX:
        raise InvalidArgument(f"{name} must be in 1..{INT64_MAX}, got {v}")
    if v < 1:
        raise InvalidArgument(f"{name} must be >= 1, got {v}")
    return v


def _keep_trades_arg(keep_trades: Any, policy: str) -> bool:
    if keep_trades is None:
        return policy == "trade_complete"
    if not isinstance(keep_trades, bool):
        raise InvalidArgument(
            f"keep_trades must be True, False or None, got {type(keep_trades).__name__}"
        )
    return keep_trades


def _moves(quantity: float) -> bool:
    """Whether a FILL of this quantity moves the book (non-zero and finite)."""
    return quantity != 0.0 and quantity - quantity == 0.0


def _policy_arg(policy: Any) -> str:
    allowed = ", ".join(POLICIES)
    if not isinstance(policy, str):
        raise InvalidArgument(f"policy must be one of {allowed}; got {type(policy).__name__}")
    if policy not in POLICIES:
        raise InvalidArgument(f"policy must be one of {allowed}; got '{policy}'")
    return policy


# ---------------------------------------------------------------- batch import


def _pyarrow() -> Any:
    import pyarrow

    return pyarrow


def _mapping_to_batch(mapping: Mapping[Any, Any]) -> pa.RecordBatch:
    """The EVENT_FIELDS columns of a mapping as a record batch (other keys ignored)."""
    columns: dict[str, Any] = {}
    first: Optional[tuple[str, int]] = None
    for name in EVENT_FIELDS:
        if name not in mapping:
            continue
        column = mapping[name]
        try:
            n = len(column)
        except TypeError:
            n = None
        if n is not None:
            if first is None:
                first = (name, n)
            elif first[1] != n:
                raise InvalidArgument(
                    f"columns have unequal lengths: {first[0]} has {first[1]} rows, {name} has {n}"
                )
        columns[name] = column
    try:
        return _pyarrow().record_batch(columns)
    except Exception as e:
        raise InvalidArgument(f"cannot convert the mapping to Arrow columns: {e}") from None


def _to_table(batch: Any) -> pa.Table:
    """Any Arrow record batch/table (PyCapsule producer) or mapping, as a table."""
    pa = _pyarrow()
    try:
        if hasattr(batch, "__arrow_c_stream__"):
            return pa.RecordBatchReader.from_stream(batch).read_all()
        if hasattr(batch, "__arrow_c_array__"):
            return pa.Table.from_batches([pa.record_batch(batch)])
    except InvalidArgument:
        raise
    except Exception as e:
        raise InvalidArgument(f"cannot read the Arrow data: {e}") from None
    if isinstance(batch, Mapping):
        return pa.Table.from_batches([_mapping_to_batch(batch)])
    raise InvalidArgument(
        "batch must be an Arrow record batch or table (an object with "
        "__arrow_c_stream__ or __arrow_c_array__) or a mapping of column name to "
        f"array, got {type(batch).__name__}"
    )


def _column(table: pa.Table, name: str) -> Optional[np.ndarray]:
    """Column ``name`` as a numpy array of its stored type, checked; None if absent."""
    pa = _pyarrow()
    if name not in table.column_names:
        if name in ("ts", "kind"):
            raise InvalidArgument(
                f"batch has no '{name}' column; ts and kind are required "
                f"(columns: {', '.join(table.column_names)})"
            )
        return None
    col = table.column(table.column_names.index(name))
    if col.null_count > 0:
        raise InvalidArgument(
            f"column '{name}' has {col.null_count} null value(s); nulls are not allowed"
        )
    t = col.type
    if name in _INT_RANGES:
        if not pa.types.is_integer(t):
            raise InvalidArgument(
                f"column '{name}' has type {t}; allowed: integer types (int8..int64, uint8..uint64)"
            )
        values = col.to_numpy()
        _check_range(name, values)
        return values
    if not (pa.types.is_integer(t) or t in (pa.float32(), pa.float64())):
        raise InvalidArgument(
            f"column '{name}' has type {t}; allowed: float32, float64 or integer types"
        )
    return col.to_numpy().astype("float64", copy=False)


def _check_range(name: str, values: np.ndarray) -> None:
    lo, hi, allowed = _INT_RANGES[name]
    if len(values) == 0:
        return
    if int(values.min()) >= lo and int(values.max()) <= hi:
        return
    for row, v in enumerate(values.tolist()):
        if not lo <= v <= hi:
            raise InvalidArgument(f"column '{name}' row {row}: value {v} is out of range {allowed}")


def _read_events(batch: Any) -> tuple[int, list[Iterable[Any]]]:
    """(rows, one iterable per EVENT_FIELDS column) of a validated batch."""
    table = _to_table(batch)
    n = table.num_rows
    columns: list[Iterable[Any]] = []
    for name in EVENT_FIELDS:
        values = _column(table, name)
        if values is None:
            columns.append(repeat(_DEFAULTS.get(name, 0.0), n))
        else:
            columns.append(values.tolist())
    return n, columns


def _rows_of_kinds(columns: list[Iterable[Any]], kinds: tuple[int, ...]) -> Iterator[Event]:
    """The events of a batch whose kind is one of ``kinds``, in row order."""
    kind_column = columns[1]
    if not isinstance(kind_column, list):
        return
    rows = [i for i, kind in enumerate(kind_column) if kind in kinds]
    if not rows:
        return
    # a column not given is a repeat() of its default
    lists = [c if isinstance(c, list) else None for c in columns]
    defaults = [_DEFAULTS.get(name, 0.0) for name in EVENT_FIELDS]
    for i in rows:
        yield tuple(c[i] if c is not None else d for c, d in zip(lists, defaults))  # type: ignore[misc]


def _tail(column: Iterable[Any], start: int) -> Iterable[Any]:
    if isinstance(column, list):
        return column[start:]
    return column  # a repeat() of a default: the length is set by the other columns


# ---------------------------------------------------------------- the ring


class _Position:
    """An open keyed position: when it started, its POSITION_OPEN values, its event
    numbers, whether a fill linked it to a lot of the book."""

    __slots__ = ("entry_price", "linked", "open_quantity", "open_ts", "seqs")

    def __init__(self, open_ts: int) -> None:
        self.open_ts = open_ts
        self.entry_price = float("nan")
        self.open_quantity: Optional[float] = None
        self.seqs: list[int] = []
        self.linked = False


class _Lot:
    """The book's position in one symbol: signed quantity, average entry price, when it
    opened, the cash of its opening fills (``value``, e.g. -commission) not yet assigned
    to a trade, its event count and (trade_complete/minimal) its retained events and the
    keyed positions its fills touched."""

    __slots__ = ("avg", "cost", "keys", "n_events", "open_ts", "qty", "seqs")

    def __init__(self) -> None:
        self.qty = 0.0
        self.avg = 0.0
        self.open_ts = 0
        self.cost = 0.0
        self.n_events = 0
        self.seqs: list[int] = []
        self.keys: list[tuple[int, _Position]] = []

    def open(self, ts: int, q: float, p: float, v: float) -> None:
        self.qty = q
        self.avg = p
        self.open_ts = ts
        self.cost = v
        self.n_events = 0


class _Realized:
    """Counters of closed trades (every policy)."""

    __slots__ = ("gross_loss", "gross_profit", "losing", "pnl", "trades", "winning")

    def __init__(self) -> None:
        self.trades = 0
        self.winning = 0
        self.losing = 0
        self.pnl = 0.0
        self.gross_profit = 0.0
        self.gross_loss = 0.0

    def record(self, pnl: float) -> None:
        self.trades += 1
        self.pnl += pnl
        if pnl > 0.0:
            self.winning += 1
            self.gross_profit += pnl
        elif pnl < 0.0:
            self.losing += 1
            self.gross_loss -= pnl

    def as_dict(self) -> dict[str, Union[int, float]]:
        return {name: getattr(self, name) for name in REALIZED_FIELDS}


class EventRing:
    """Columnar retention of traced events under a policy (see docs/primitives.md)."""

    def __init__(
        self,
        policy: str = "sliding_window",
        capacity: int = 1000,
        max_events: int = 1_000_000,
        keep_trades: Optional[bool] = None,
    ) -> None:
        self._policy = _policy_arg(policy)
        self._capacity = _count_arg("capacity", capacity)
        self._max_events = _count_arg("max_events", max_events)
        self._window: Optional[deque[Event]] = None
        self._events: dict[int, Event] = {}
        self._positions: dict[int, _Position] = {}
        self._lots: dict[int, _Lot] = {}
        self._realized = _Realized()
        self._trades: list[Trade] = []
        self._keep_trades = _keep_trades_arg(keep_trades, self._policy)
        self._seq = 0
        self._seen = 0
        self._reset()

    def _reset(self) -> None:
        if self._policy == "sliding_window":
            self._window = deque(maxlen=self._capacity)
        elif self._policy == "keep_all":
            self._window = deque(maxlen=self._max_events)
        self._events = {}
        self._positions = {}
        self._lots = {}
        self._realized = _Realized()
        self._trades = []
        self._seq = 0
        self._seen = 0

    @property
    def keep_trades(self) -> bool:
        return self._keep_trades

    @property
    def policy(self) -> str:
        return self._policy

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_events(self) -> int:
        return self._max_events

    def append(
        self,
        ts: int,
        kind: int,
        key: int = -1,
        symbol: int = 0,
        price: float = 0.0,
        quantity: float = 0.0,
        value: float = 0.0,
    ) -> None:
        event = (
            _int_arg("ts", ts, INT64_MIN, INT64_MAX, "int64 range"),
            _int_arg("kind", kind, 0, KIND_MAX, "0..65535"),
            _int_arg("key", key, INT64_MIN, INT64_MAX, "int64 range"),
            _int_arg("symbol", symbol, INT32_MIN, INT32_MAX, "int32 range"),
            _float_arg("price", price),
            _float_arg("quantity", quantity),
            _float_arg("value", value),
        )
        self._seen += 1
        if self._window is not None:
            self._window.append(event)
            self._book_only(event)
        else:
            self._track(event)

    def _book_only(self, e: Event) -> None:
        """The book's part of an event under sliding_window/keep_all."""
        kind = e[1]
        if kind == FILL and _moves(e[5]):
            self._fill(e, retain=False)
        elif kind == POSITION_CLOSE and e[2] >= 0 and e[3] not in self._lots:
            self._record_close(e, (e[0], float("nan"), None), 1)

    def _track(self, e: Event) -> None:
        """Applies one event under trade_complete/minimal (``seen`` already counted)."""
        if e[1] == FILL and _moves(e[5]):
            self._fill(e, retain=True)
            return
        key = e[2]
        if key < 0:
            return
        if e[1] != POSITION_CLOSE:
            pos = self._positions.get(key)
            if pos is None:
                pos = self._positions[key] = _Position(e[0])
            if e[1] == POSITION_OPEN and pos.open_quantity is None:
                pos.entry_price = e[4]
                pos.open_quantity = e[5]
            seq = self._seq
            self._seq = seq + 1
            self._events[seq] = e
            pos.seqs.append(seq)
            return
        pos = self._positions.pop(key, None)
        if pos is None:
            pos = _Position(e[0])
        events = self._events
        for seq in pos.seqs:
            del events[seq]
        if e[3] not in self._lots:  # a symbol the book trades counts its trades from fills
            self._record_close(
                e, (pos.open_ts, pos.entry_price, pos.open_quantity), len(pos.seqs) + 1
            )

    def _record_close(
        self, e: Event, opened: tuple[int, float, Optional[float]], n_events: int
    ) -> None:
        """The trade of a POSITION_CLOSE (pnl in ``value``)."""
        self._realized.record(e[6])
        if self._keep_trades:
            open_ts, entry_price, open_quantity = opened
            quantity = e[5] if open_quantity is None else open_quantity
            trade = (e[2], e[3], open_ts, e[0], entry_price, e[4], quantity, e[6], n_events)
            self._trades.append(trade)

    # ------------------------------------------------------------ the position book

    def _retain(self, e: Event, seqs: list[int]) -> None:
        seq = self._seq
        self._seq = seq + 1
        self._events[seq] = e
        seqs.append(seq)

    def _drop_lot_events(self, lot: _Lot) -> None:
        events = self._events
        for seq in lot.seqs:
            del events[seq]
        lot.seqs = []
        positions = self._positions
        for key, pos in lot.keys:
            if positions.get(key) is pos:
                del positions[key]
                for seq in pos.seqs:
                    del events[seq]
        lot.keys = []

    def _fill(self, e: Event, retain: bool) -> None:
        """Applies a FILL of non-zero quantity to the symbol's lot."""
        ts, _, key, symbol, p, q, v = e
        lot = self._lots.get(symbol)
        if lot is None:
            lot = self._lots[symbol] = _Lot()
        if retain and key >= 0:
            pos = self._positions.get(key)
            if pos is not None and not pos.linked:
                pos.linked = True
                lot.keys.append((key, pos))
        qty = lot.qty
        if qty == 0.0:
            lot.open(ts, q, p, v)
        elif (q > 0.0) == (qty > 0.0):
            a = abs(qty)
            b = abs(q)
            lot.avg = (a * lot.avg + b * p) / (a + b)
            lot.qty = qty + q
            lot.cost = lot.cost + v
        else:
            self._reduce(lot, e, retain)
            return
        lot.n_events += 1
        if retain:
            self._retain(e, lot.seqs)

    def _reduce(self, lot: _Lot, e: Event, retain: bool) -> None:
        """A fill against the lot: a partial close, a full close or a reversal."""
        ts, _, key, symbol, p, q, v = e
        a = abs(lot.qty)
        b = abs(q)
        side = 1.0 if lot.qty > 0.0 else -1.0
        if abs(b - a) <= FLAT_TOLERANCE * a:
            closed, pos_share, fill_share, step = a, 1.0, 1.0, 0
        elif b < a:
            closed, pos_share, fill_share, step = b, b / a, 1.0, -1
        else:
            closed, pos_share, fill_share, step = a, 1.0, a / b, 1
        pnl = side * (p - lot.avg) * closed + lot.cost * pos_share + v * fill_share
        self._realized.record(pnl)
        n_events = lot.n_events + 1
        if self._keep_trades:
            trade = (key, symbol, lot.open_ts, ts, lot.avg, p, side * closed, pnl, n_events)
            self._trades.append(trade)
        if step < 0:  # partial close: the rest keeps its average entry
            lot.qty = lot.qty + q
            lot.cost = lot.cost - lot.cost * pos_share
            lot.n_events = n_events
            if retain:
                self._retain(e, lot.seqs)
            return
        if retain:
            self._drop_lot_events(lot)
        if step == 0:
            lot.qty = 0.0
            lot.avg = 0.0
            lot.cost = 0.0
            lot.n_events = 0
            return
        rest = b - a
        lot.open(ts, rest if q > 0.0 else -rest, p, v - v * fill_share)
        lot.n_events = 1
        if retain:
            self._retain(e, lot.seqs)

    def positions(self) -> list[dict[str, Union[int, float]]]:
        """The book's open positions, by symbol: symbol, signed quantity, average entry
        price, open_ts (first fill of the position) and n_events (its fills)."""
        return [
            {
                "symbol": symbol,
                "quantity": lot.qty,
                "avg_price": lot.avg,
                "open_ts": lot.open_ts,
                "n_events": lot.n_events,
            }
            for symbol, lot in sorted(self._lots.items())
            if lot.qty != 0.0
        ]

    def realized(self) -> dict[str, Union[int, float]]:
        """Counters of every closed trade (fills and POSITION_CLOSE): trades, winning,
        losing, pnl, gross_profit, gross_loss (kept under every policy)."""
        return self._realized.as_dict()

    def extend(self, batch: Any) -> int:
        """Appends every row of an Arrow batch/table or a mapping of columns; returns the
        rows read. Nothing is applied when the batch is invalid."""
        n, columns = _read_events(batch)
        self._seen += n
        if self._window is not None:
            start = max(0, n - (self._window.maxlen or 0))
            self._window.extend(zip(*(_tail(c, start) for c in columns)))
            book = self._book_only
            for e in _rows_of_kinds(columns, (FILL, POSITION_CLOSE)):
                book(e)
        else:
            track = self._track
            for e in zip(*columns):
                track(e)
        return n

    def __len__(self) -> int:
        if self._window is not None:
            return len(self._window)
        return len(self._events)

    def clear(self) -> None:
        self._reset()

    def stats(self) -> dict[str, int]:
        retained = len(self)
        trades = len(self._trades)
        return {
            "seen": self._seen,
            "retained": retained,
            "evicted": self._seen - retained,
            "retained_bytes": EVENT_BYTES * retained + TRADE_BYTES * trades,
            "open_positions": len(self._positions),
            "trades": trades,
        }

    def _retained(self) -> Iterator[Event]:
        if self._window is not None:
            return iter(self._window)
        return iter(self._events.values())

    def to_arrow(self) -> pa.RecordBatch:
        """The retained events as a ``pyarrow.RecordBatch`` (schema of EVENT_FIELDS)."""
        return _record_batch(list(self._retained()), EVENT_FIELDS, _EVENT_TYPES)

    def trades(self, start: int = 0) -> pa.RecordBatch:
        """Closed-trade summaries from row ``start`` on (when ``keep_trades``; by default
        under ``trade_complete`` only) as a ``pyarrow.RecordBatch``."""
        first = _as_int("start", start)
        if first < 0:
            raise InvalidArgument(f"start must be >= 0, got {first}")
        return _record_batch(self._trades[first:], TRADE_FIELDS, _TRADE_TYPES)

    def __arrow_c_schema__(self) -> object:
        return _schema(EVENT_FIELDS, _EVENT_TYPES).__arrow_c_schema__()

    def __arrow_c_array__(self, requested_schema: Optional[object] = None) -> tuple[object, object]:
        return self.to_arrow().__arrow_c_array__()

    def __arrow_c_stream__(self, requested_schema: Optional[object] = None) -> object:
        return _pyarrow().Table.from_batches([self.to_arrow()]).__arrow_c_stream__()

    def __repr__(self) -> str:
        return (
            f"EventRing(policy='{self._policy}', capacity={self._capacity}, "
            f"max_events={self._max_events}, len={len(self)})"
        )


def _schema(names: tuple[str, ...], types: tuple[str, ...]) -> pa.Schema:
    pa = _pyarrow()
    return pa.schema(
        [pa.field(n, pa.type_for_alias(t), nullable=False) for n, t in zip(names, types)]
    )


def _record_batch(
    rows: list[Any], names: tuple[str, ...], types: tuple[str, ...]
) -> pa.RecordBatch:
    pa = _pyarrow()
    schema = _schema(names, types)
    columns = list(zip(*rows)) if rows else [() for _ in names]
    arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


__all__ = [
    "EVENT_BYTES",
    "EVENT_FIELDS",
    "FLAT_TOLERANCE",
    "POLICIES",
    "POSITION_FIELDS",
    "REALIZED_FIELDS",
    "TRADE_BYTES",
    "TRADE_FIELDS",
    "EventRing",
]
