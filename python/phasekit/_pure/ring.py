"""EventRing (being written)."""

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
POLICIES = ("sliding_window", "trade_complete", "minimal", "keep_all")


class EventRing:
    pass
