"""Names the configuration validates and lower layers implement: the built-in strategies,
the metrics, the data calendars, the bar frequencies, the sequences with the modes,
methods and defaults of their settings.

This module imports nothing of phasekit but ``errors``, so :mod:`phasekit.config` checks
names without importing :mod:`phasekit.backtest`; ``backtest`` takes its lists from here
(and ``tests/test_owners.py`` checks that every name here has an implementation there);
``workflow.sequences`` and its runners take the sequences and their defaults from here.
"""

from __future__ import annotations

from phasekit.errors import ConfigError

#: The strategies ``strategy.type`` names (``backtest.strategies.STRATEGIES`` maps each
#: to its class); ``module:Class`` names a user strategy.
STRATEGY_NAMES = ("sma_crossover", "momentum", "mean_reversion")

#: The metrics every container reports (``backtest.metrics.compute_metrics``), which an
#: objective may rank by.
METRIC_NAMES = (
    "total_return",
    "sharpe_ratio",
    "sortino_ratio",
    "max_drawdown",
    "win_rate",
    "trade_count",
    "profit_factor",
    "exposure",
    "final_equity",
)

#: ``data.calendar``: weekday sessions (09:30-16:00 for intraday bars) or around the clock.
DATA_CALENDARS = ("session", "24/7")

#: The sequences a phase may run (``workflow.sequences`` cuts each into windows) and
#: the modes and methods of their settings.
SEQUENCES = ("single_pass", "train_test", "walk_forward", "monte_carlo")
WALK_FORWARD_MODES = ("rolling", "expanding")
MONTE_CARLO_METHODS = ("returns", "trades")

#: ``executor``: where a run's batches of containers execute: ``local`` (worker processes
#: of this machine, ``workers`` of them), ``{dask: ADDRESS}`` (the workers of a
#: ``distributed`` scheduler) or ``{ray: ADDRESS}`` (the workers of a Ray cluster);
#: ``workflow.executors`` implements each.
EXECUTORS = ("local", "dask", "ray")
#: The address each cluster executor takes, as messages show it: a Dask scheduler's
#: address, a Ray cluster's GCS address (``host:port``).
EXECUTOR_ADDRESSES = {"dask": "tcp://host:8786", "ray": "host:6379"}

#: ``engine``: how a backtest phase's windows run their portfolio containers. ``block``:
#: blocks of parameter sets, each in one call of the block kernel
#: (``workflow.blocks``); ``container``: one container at a time (``workflow.topology``);
#: ``auto``: blocks where the phase is eligible (``workflow.blocks.phase_engine``).
ENGINES = ("auto", "block", "container")
DEFAULT_ENGINE = ENGINES[0]

#: ``results.layout``: where a run's files go. ``phasekit``: ``<results_dir>/<run id>/
#: <phase>/[<window>/]...``; ``admf``: the design notes' source project's folders and JSON
#: files, ``<results_dir>/<run name>/<phase>/`` (``phasekit.workflow.results``).
RESULTS_LAYOUTS = ("phasekit", "admf")
DEFAULT_RESULTS_LAYOUT = RESULTS_LAYOUTS[0]

# The defaults of each sequence's settings (config shows them, the runners apply them).
#: ``data_split`` of ``train_test``: the train fraction.
DEFAULT_DATA_SPLIT = 0.8
#: ``walk_forward.mode``; ``train``/``test`` default by the data
#: (``workflow.sequences.default_lengths``) and ``step`` to ``test``.
DEFAULT_WALK_FORWARD_MODE = WALK_FORWARD_MODES[0]
#: ``monte_carlo``: ``n`` simulations in batches of ``batch``, ``seed``, ``method``.
DEFAULT_SIMULATIONS = 100
DEFAULT_BATCH = 25
DEFAULT_SEED = 0
DEFAULT_MONTE_CARLO_METHOD = MONTE_CARLO_METHODS[0]

_NS_PER = {
    "s": 1_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_FREQ_ALIASES = {"m": "min", "t": "min", "minute": "min", "hour": "h", "day": "d", "sec": "s"}


def parse_frequency(freq: str) -> int:
    """Nanoseconds of a frequency such as ``1min``, ``5m``, ``1h``, ``1d``, ``30s``."""
    text = str(freq).strip().lower()
    digits = ""
    while text and text[0].isdigit():
        digits, text = digits + text[0], text[1:]
    unit = _FREQ_ALIASES.get(text, text)
    if unit not in _NS_PER:
        raise ConfigError(
            f"data.frequency: {freq!r} is not a frequency; use a number and one of "
            "s, min (or m), h, d, e.g. 1min, 15min, 1h, 1d"
        )
    return int(digits or 1) * _NS_PER[unit]


__all__ = [
    "DATA_CALENDARS",
    "DEFAULT_BATCH",
    "DEFAULT_DATA_SPLIT",
    "DEFAULT_MONTE_CARLO_METHOD",
    "DEFAULT_SEED",
    "DEFAULT_SIMULATIONS",
    "DEFAULT_WALK_FORWARD_MODE",
    "METRIC_NAMES",
    "MONTE_CARLO_METHODS",
    "SEQUENCES",
    "STRATEGY_NAMES",
    "WALK_FORWARD_MODES",
    "parse_frequency",
]
