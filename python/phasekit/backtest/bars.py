"""OHLCV bars: a deterministic synthetic generator and loaders for CSV, Parquet and Arrow files."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from phasekit.errors import ConfigError
from phasekit.registry import DATA_CALENDARS, parse_frequency

_DAY_NS = 86_400_000_000_000
_MIN_NS = 60_000_000_000
SESSION_OPEN_NS = (9 * 60 + 30) * _MIN_NS
SESSION_CLOSE_NS = 16 * 60 * _MIN_NS
TRADING_DAYS = 252.0
CALENDAR_DAYS = 365.0
ANNUAL_VOLATILITY = 0.20
_WEEKEND_SHARE = 0.1


def infer_periods_per_year(ts: np.ndarray) -> float:
    """Bars per year from the bars' calendar: sessions per year (252 when the bars
    skip weekends, 365 when they trade every day) times the median number of bars of a
    day. Minute bars of a 6.5-hour weekday session give 252 x 390, daily bars of
    weekdays 252, minute bars around the clock 365 x 1440, weekly bars 365 / 7."""
    if len(ts) < 2:
        return TRADING_DAYS
    step = int(np.median(np.diff(ts)))
    days = np.asarray(ts, dtype=np.int64) // _DAY_NS
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    trades_weekends = float(np.mean(weekday >= 5)) > _WEEKEND_SHARE
    sessions = CALENDAR_DAYS if trades_weekends else TRADING_DAYS
    if step >= 2 * _DAY_NS:
        return CALENDAR_DAYS * _DAY_NS / step
    if step >= _DAY_NS // 2:
        return sessions
    _, per_day = np.unique(days, return_counts=True)
    return sessions * float(np.median(per_day))


@dataclass(frozen=True)
class Bars:
    """OHLCV bars of one symbol; ``ts`` is int64 nanoseconds since the epoch (UTC).

    ``ppy`` is the number of bars per year when it is given (``data.periods_per_year``)
    or inherited from the bars sliced; otherwise it is inferred from the calendar."""

    symbol: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    ppy: float | None = None

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def slice(self, start: int, stop: int) -> Bars:
        """Bars ``[start, stop)`` by position (views, no copy)."""
        s = slice(start, stop)
        return Bars(
            self.symbol,
            self.ts[s],
            self.open[s],
            self.high[s],
            self.low[s],
            self.close[s],
            self.volume[s],
            self.periods_per_year,
        )

    def index_of(self, when: Any) -> int:
        """Position of the first bar at or after ``when`` (a date string, datetime or ns)."""
        return int(np.searchsorted(self.ts, to_ns(when), side="left"))

    @property
    def bar_ns(self) -> int:
        """The median spacing of bars in nanoseconds (one day when fewer than two bars)."""
        if len(self) < 2:
            return _DAY_NS
        return int(np.median(np.diff(self.ts)))

    @cached_property
    def periods_per_year(self) -> float:
        """Bars per year for annualising: ``ppy`` or :func:`infer_periods_per_year`."""
        return float(self.ppy) if self.ppy is not None else infer_periods_per_year(self.ts)

    def with_periods_per_year(self, ppy: float | None) -> Bars:
        """These bars annualised with ``ppy`` bars per year (None: inferred)."""
        return replace(self, ppy=ppy)

    def to_arrow(self) -> pa.Table:
        """The bars as an Arrow table (``ts`` as UTC nanosecond timestamps); the price
        columns share the arrays' memory."""
        return pa.table(
            {
                "ts": pa.array(self.ts, pa.timestamp("ns", tz="UTC")),
                "open": self.open,
                "high": self.high,
                "low": self.low,
                "close": self.close,
                "volume": self.volume,
            }
        )


def to_ns(when: Any) -> int:
    """Nanoseconds since the epoch of a date string, datetime, numpy datetime64 or int."""
    if isinstance(when, (int, np.integer)):
        return int(when)
    try:
        return int(np.datetime64(when, "ns").astype("int64"))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{when!r} is not a date or time (use e.g. 2020-01-31)") from exc


def calendar_ts(
    start: Any, step: int, n_bars: int | None, end: Any = None, calendar: str = "session"
) -> np.ndarray:
    """Bar times from ``start``: every ``step`` around the clock (``24/7``), or on
    weekdays only, intraday bars within the 09:30-16:00 session (``session``)."""
    if calendar not in DATA_CALENDARS:
        raise ConfigError(
            f"data.calendar: {calendar!r} is not a calendar; allowed: {', '.join(DATA_CALENDARS)}"
        )
    t0 = to_ns(start)
    stop = to_ns(end) if end is not None else None
    if calendar == "24/7":
        count = n_bars if n_bars is not None else (int(stop or t0) - t0) // step + 1
        return t0 + step * np.arange(max(count, 0), dtype=np.int64)
    if step >= _DAY_NS // 2:
        offsets = np.array([t0 % _DAY_NS], dtype=np.int64)
    else:
        per_day = max(1, math.ceil((SESSION_CLOSE_NS - SESSION_OPEN_NS) / step))
        offsets = SESSION_OPEN_NS + step * np.arange(per_day, dtype=np.int64)
    first_day = t0 // _DAY_NS
    if n_bars is not None:
        n_days = (n_bars // len(offsets) + 2) * 7 // 5 + 7
    else:
        n_days = int(stop or t0) // _DAY_NS - first_day + 1
    days = first_day + np.arange(max(n_days, 0), dtype=np.int64)
    days = days[(days + 3) % 7 < 5]
    ts = (days[:, None] * _DAY_NS + offsets[None, :]).ravel()
    ts = ts[ts >= t0]
    if stop is not None:
        ts = ts[ts <= stop]
    return ts[:n_bars] if n_bars is not None else ts


def synthetic_bars(
    symbols: list[str] | tuple[str, ...] = ("SYN",),
    start: Any = "2020-01-01",
    end: Any = None,
    n_bars: int | None = None,
    frequency: str = "1d",
    seed: int = 0,
    initial_price: float = 100.0,
    drift: float = 0.0,
    volatility: float | None = None,
    calendar: str = "session",
) -> dict[str, Bars]:
    """Deterministic random-walk bars per symbol (geometric Brownian motion per bar).

    Give ``end`` or ``n_bars``. ``calendar`` ``session`` (the default) puts bars on
    weekdays, intraday bars within 09:30-16:00; ``24/7`` every ``frequency``.
    ``volatility`` is per bar; by default 20% a year at the calendar's bars per year.
    The same arguments always give the same bars.
    """
    step = parse_frequency(frequency)
    if n_bars is None and end is None:
        raise ConfigError("data: give `end` or `n_bars` for synthetic data")
    ts = calendar_ts(start, step, n_bars, end, calendar)
    n_bars = len(ts)
    if n_bars < 2:
        raise ConfigError(f"data: {n_bars} bars is too few; at least 2 are needed")
    if volatility is None:
        volatility = ANNUAL_VOLATILITY / math.sqrt(infer_periods_per_year(ts))
    out: dict[str, Bars] = {}
    for i, symbol in enumerate(symbols):
        rng = np.random.default_rng([int(seed), i])
        rets = rng.normal(drift, volatility, n_bars)
        close = initial_price * np.exp(np.cumsum(rets))
        gap = rng.normal(0.0, volatility * 0.25, n_bars)
        open_ = np.empty(n_bars)
        open_[0] = initial_price
        open_[1:] = close[:-1] * np.exp(gap[1:])
        wick = np.abs(rng.normal(0.0, volatility * 0.5, (2, n_bars)))
        high = np.maximum(open_, close) * np.exp(wick[0])
        low = np.minimum(open_, close) * np.exp(-wick[1])
        volume = np.round(rng.lognormal(10.0, 0.5, n_bars))
        out[str(symbol)] = Bars(str(symbol), ts.copy(), open_, high, low, close, volume)
    return out


_TIME_NAMES = ("timestamp", "datetime", "date", "time", "ts", "index", "__index_level_0__", "")
_DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M%z",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
    "%Y%m%d",
)


def _temporal_ns(column: pa.ChunkedArray) -> np.ndarray | None:
    """Int64 ns since the epoch (UTC) of a timestamp or date column, None for others."""
    typ = column.type
    if pa.types.is_timestamp(typ):
        column = column.cast(pa.timestamp("ns", tz=typ.tz))
    elif pa.types.is_date(typ):
        column = column.cast(pa.timestamp("ns"))
    else:
        return None
    if column.null_count:
        return None
    return np.asarray(column.cast(pa.int64()).to_numpy(), dtype=np.int64)


def _parsed_ns(column: pa.ChunkedArray) -> np.ndarray | None:
    """A string column parsed as dates or times (ISO 8601 with or without a zone
    offset, or one of ``_DATE_FORMATS``), None when its values are not dates."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None
    import pyarrow.compute as pc

    try:
        return _temporal_ns(column.cast(pa.timestamp("ns")))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    for fmt in _DATE_FORMATS:
        try:
            return _temporal_ns(pc.strptime(column, format=fmt, unit="ns"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return None


def _time_column(table: pa.Table, path: str) -> np.ndarray:
    """The bars' times: the column of timestamps or dates (a known name such as
    ``timestamp`` or ``date``, a saved index, or the only one), else a column of text
    that parses as dates."""
    names = table.column_names
    by_name = sorted(range(len(names)), key=lambda i: _name_rank(names[i]))
    for parse in (_temporal_ns, _parsed_ns):
        for i in by_name:
            ns = parse(table.column(i))
            if ns is not None:
                return ns
    raise ConfigError(
        f"data.path: {path!r} has no column of dates or times; found columns "
        f"{', '.join(repr(n) for n in names)} (give one column of dates such as 2024-01-31 "
        "or 2024-01-31 09:30:00, of any name)"
    )


def _name_rank(name: str) -> int:
    low = name.lower()
    return _TIME_NAMES.index(low) if low in _TIME_NAMES else len(_TIME_NAMES)


def _read_table(path: str) -> pa.Table:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        from pyarrow import csv

        return csv.read_csv(path)
    if ext in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if ext in (".arrow", ".feather", ".ipc"):
        import pyarrow.feather as feather

        return feather.read_table(path)
    raise ConfigError(f"data.path: {path!r} has an unknown extension; use .csv, .parquet or .arrow")


def load_bars(path: str, symbol: str | None = None) -> Bars:
    """Bars from a CSV, Parquet or Arrow file with Open/High/Low/Close (and optionally
    Volume) columns in any case and a column of dates or times of any name: a pandas
    index written by ``to_csv``/``to_parquet`` (named or not), polars and DuckDB
    timestamps with or without a time zone (kept as the UTC instant)."""
    if not os.path.exists(path):
        raise ConfigError(f"data.path: file {path!r} does not exist")
    table = _read_table(path)
    by_lower = {name.lower(): name for name in table.column_names}
    missing = [c for c in ("open", "high", "low", "close") if c not in by_lower]
    if missing:
        raise ConfigError(
            f"data.path: {path!r} lacks column(s) {', '.join(missing)}; "
            f"found columns {', '.join(repr(n) for n in table.column_names)}"
        )
    ts = _time_column(table, path)

    def col(name: str) -> np.ndarray:
        if name not in by_lower:
            return np.zeros(len(ts))
        values = table.column(by_lower[name]).cast(pa.float64())
        return np.asarray(values.to_numpy(), dtype=np.float64)

    order = np.argsort(ts, kind="stable")
    name = symbol or os.path.splitext(os.path.basename(path))[0]
    return Bars(
        name,
        ts[order],
        col("open")[order],
        col("high")[order],
        col("low")[order],
        col("close")[order],
        col("volume")[order],
    )
