"""The limits of a configuration and of the settings in it (one owner for every bound).

A configuration larger, deeper or more aliased than these is refused before it is
built; a setting outside its range is refused before the run starts, so every
accepted value is one the run can honour. docs/config.md lists them.
"""

from __future__ import annotations

#: Bytes of a configuration file or YAML text.
MAX_CONFIG_BYTES = 1 << 20
#: Nesting of mappings and lists (aliases expanded).
MAX_DEPTH = 64
#: Alias uses (``*name``) in one document.
MAX_ALIASES = 1_000
#: Values (scalars, mappings, lists) of the document with every alias expanded.
MAX_NODES = 50_000
#: Characters of a value quoted in an error message.
MAX_QUOTED_CHARS = 200
#: Problems described one by one in an error; the rest are counted.
MAX_PROBLEMS = 20
#: Unknown keys named in an error when a mapping has more than MAX_PROBLEMS of them.
MAX_UNKNOWN_SHOWN = 10

#: Bars of one data series (given as ``n_bars`` or spanned by start, end and frequency).
MAX_BARS = 5_000_000
#: Parameter sets of a grid: the product of the sizes of its axes, before constraints.
MAX_GRID = 1_000_000
#: Seeds are integers in [0, MAX_SEED].
MAX_SEED = 2**63 - 1
#: Longest bar frequency, in seconds (366 days).
MAX_FREQUENCY_SECONDS = 366 * 86_400
#: Bars a year (``data.periods_per_year``): one a second in a leap year at most.
MAX_PERIODS_PER_YEAR = 366 * 86_400
#: Memory budgets (``memory_limit_mb``, ``max_size_mb``), in MB (1 PiB).
MAX_MEMORY_MB = float(1 << 30)
#: Money amounts (``initial_capital``) and prices (``initial_price``).
MAX_AMOUNT = 1e15
#: Basis points of commission or slippage.
MAX_BPS = 10_000.0
#: Absolute drift and volatility of synthetic bars, per bar.
MAX_RATE = 1.0
#: Counts of things held at once: buffer_size, sliding_window_size, top_k, sample n,
#: Monte Carlo n and batch.
MAX_COUNT = 10_000_000
#: Seconds of a flush interval (one day).
MAX_SECONDS = 86_400.0
#: Worker processes.
MAX_WORKERS = 1_024


def clip(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """``text`` cut to ``limit`` characters, with how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"
