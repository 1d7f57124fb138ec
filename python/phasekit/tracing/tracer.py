"""The per-container tracer: retention through an EventRing, metrics while events stream.

Closed trades come from the ring's position book (FILL events, docs/primitives.md):
the traced ring's own when it traces FILL and keeps trade summaries, else a second
ring under ``minimal`` fed only FILL and POSITION_CLOSE events (its memory is bounded
by the open positions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

import phasekit
from phasekit.backtest.metrics import StreamingMetrics
from phasekit.events import EventType, event_kind

DEFAULT_TRACED = ("POSITION_OPEN", "POSITION_CLOSE", "FILL")
#: The kinds the position book reads, traced or not.
BOOK_KINDS = frozenset({int(EventType.FILL), int(EventType.POSITION_CLOSE)})


@dataclass(frozen=True)
class TracerSettings:
    event_tracing: tuple[str, ...] = DEFAULT_TRACED
    retention_policy: str = "trade_complete"
    sliding_window_size: int = 1000
    max_events: int = 10_000
    initial_capital: float = 100_000.0
    periods_per_year: float = 252.0

    @property
    def kinds(self) -> frozenset[int]:
        return frozenset(event_kind(k) for k in self.event_tracing)

    @property
    def subscribed(self) -> frozenset[int]:
        """The kinds a container delivers to its tracer: the traced ones and the book's."""
        return self.kinds | BOOK_KINDS

    @property
    def keeps_equity(self) -> bool:
        """The equity curve is kept only when PORTFOLIO_UPDATE is traced (seed 002)."""
        return int(EventType.PORTFOLIO_UPDATE) in self.kinds


class ContainerTracer:
    """Feeds traced event kinds into an EventRing and folds equity and closed trades
    into :class:`StreamingMetrics`; keeps the equity curve only when asked to."""

    def __init__(self, settings: TracerSettings) -> None:
        self.settings = settings
        self._kinds = np.array(sorted(settings.kinds), dtype=np.uint16)
        self.ring = phasekit.EventRing(
            settings.retention_policy,
            capacity=max(1, settings.sliding_window_size),
            max_events=max(1, settings.max_events),
        )
        self.metrics = StreamingMetrics(settings.initial_capital, settings.periods_per_year)
        own_book = int(EventType.FILL) in settings.kinds and self.ring.keep_trades
        self.book = self.ring if own_book else phasekit.EventRing("minimal", keep_trades=True)
        self._folded = 0
        self._equity_ts: list[np.ndarray] = []
        self._equity: list[np.ndarray] = []

    def trace(self, events: Mapping[str, np.ndarray]) -> int:
        """Trace a batch of event columns: the traced kinds reach the ring, FILL and
        POSITION_CLOSE the position book; the book's new trades reach the metrics.
        Returns the events the ring read."""
        kind = np.asarray(events["kind"])
        read = 0
        keep = np.isin(kind, self._kinds)
        if keep.any():
            read = int(self.ring.extend(_rows(events, keep)))
        if self.book is not self.ring:
            to_book = np.isin(kind, np.array(sorted(BOOK_KINDS), dtype=np.uint16))
            if to_book.any():
                self.book.extend(_rows(events, to_book))
        self._fold_trades()
        return read

    def _fold_trades(self) -> None:
        trades = self.book.trades(self._folded)
        for value in trades.column("pnl").to_pylist():
            self.metrics.on_trade(value)
        self._folded += trades.num_rows

    def on_equity(
        self,
        ts: np.ndarray,
        equity: np.ndarray,
        position: np.ndarray,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Fold equity in (through ``summary``, its ``equity_summary``, when the caller
        has one already) and keep the curve when PORTFOLIO_UPDATE is traced."""
        if summary is not None:
            self.metrics.fold(summary)
        else:
            self.metrics.update_equity(equity, position)
        if self.settings.keeps_equity:
            self._equity_ts.append(np.asarray(ts))
            self._equity.append(np.asarray(equity))

    def equity_curve(self) -> pa.Table | None:
        if not self.settings.keeps_equity:
            return None
        ts = np.concatenate(self._equity_ts) if self._equity_ts else np.empty(0, np.int64)
        eq = np.concatenate(self._equity) if self._equity else np.empty(0)
        return pa.table({"ts": pa.array(ts, pa.timestamp("ns", tz="UTC")), "equity": eq})

    def result(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics.result(),
            "events": self.ring.stats(),
        }


def _rows(events: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.asarray(col)[mask] for name, col in events.items()}
