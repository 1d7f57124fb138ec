"""Strategies: each turns bars into a target position per bar (-1, 0 or +1).

``target[t]`` is decided on the close of bar ``t`` and filled at the open of bar
``t + 1`` by the portfolio. Built-ins are vectorised with numpy.

A user strategy is ``module:Class``; the class is constructed with the strategy's
parameters as keyword arguments and must define ``signals(bars) -> numpy array``
of length ``len(bars)`` with values in {-1, 0, 1}::

    class Breakout:
        def __init__(self, lookback: int = 20):
            self.lookback = lookback

        def signals(self, bars):
            ...

A user strategy may also compute the targets of a whole block of parameter sets in one
call (``signals_block``, see :mod:`phasekit.backtest.signals`).
"""

from __future__ import annotations

import importlib
import inspect
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from phasekit._pure.sim import check_sma, hold_states, sma, sma_crossover_targets
from phasekit.backtest.bars import Bars
from phasekit.backtest.setcolumns import SetColumns
from phasekit.errors import ConfigError


class Strategy(Protocol):
    def signals(self, bars: Bars) -> np.ndarray: ...


MODES = ("long_only", "long_short")
"""The strategies' modes; a mode's index is its ``long_short`` flag."""


def _check_mode(mode: str) -> bool:
    if mode not in MODES:
        raise ConfigError(f"strategy.mode: {mode!r} is not allowed; use {' or '.join(MODES)}")
    return mode == "long_short"


class SmaCrossover:
    """Long when the fast SMA crosses above the slow one; on the cross below, flat
    (``long_only``) or short (``long_short``). A cross needs the fast SMA strictly
    below the slow one on the previous bar and strictly above on this one."""

    def __init__(self, fast: int = 10, slow: int = 30, mode: str = "long_only") -> None:
        fast, slow = int(fast), int(slow)
        check_sma(fast, slow)
        self.fast, self.slow, self.short = fast, slow, _check_mode(mode)

    def signals(self, bars: Bars) -> np.ndarray:
        return sma_crossover_targets(bars.close, self.fast, self.slow, self.short)


class Momentum:
    """Long when the return over ``lookback`` bars exceeds ``threshold``; below
    ``-threshold`` short (``long_short``) or flat; otherwise flat."""

    def __init__(self, lookback: int = 20, threshold: float = 0.0, mode: str = "long_only") -> None:
        if int(lookback) < 1:
            raise ConfigError(f"strategy.lookback: {lookback} must be at least 1")
        self.lookback, self.threshold, self.short = (
            int(lookback),
            float(threshold),
            _check_mode(mode),
        )

    def signals(self, bars: Bars) -> np.ndarray:
        close = bars.close
        ret = np.zeros(len(bars))
        if self.lookback < len(bars):
            ret[self.lookback :] = close[self.lookback :] / close[: -self.lookback] - 1.0
        out = np.zeros(len(bars), dtype=np.int8)
        out[ret > self.threshold] = 1
        if self.short:
            out[ret < -self.threshold] = -1
        return out


class MeanReversion:
    """z = (close - SMA) / rolling std over ``window``: enter long below ``-entry_z``,
    short above ``entry_z`` (``long_short``), exit when ``|z| <= exit_z``; else hold."""

    def __init__(
        self, window: int = 20, entry_z: float = 1.0, exit_z: float = 0.0, mode: str = "long_only"
    ) -> None:
        if int(window) < 2:
            raise ConfigError(f"strategy.window: {window} must be at least 2")
        self.window, self.entry, self.exit = int(window), float(entry_z), float(exit_z)
        self.short = _check_mode(mode)

    def signals(self, bars: Bars) -> np.ndarray:
        close = bars.close
        mean = sma(close, self.window)
        sq = sma(close * close, self.window)
        std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(std > 0, (close - mean) / std, np.nan)
        decisions = np.full(len(bars), np.nan)
        decisions[np.abs(z) <= self.exit] = 0.0
        decisions[z < -self.entry] = 1.0
        if self.short:
            decisions[z > self.entry] = -1.0
        return hold_states(decisions)


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "sma_crossover": SmaCrossover,
    "momentum": Momentum,
    "mean_reversion": MeanReversion,
}


def _import(spec: str) -> Callable[..., Strategy]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"strategy.type: cannot import {spec!r}: {exc}") from exc


def strategy_factory(kind: str) -> Callable[..., Strategy]:
    """The class (or factory) of a strategy named ``sma_crossover``, ``momentum``,
    ``mean_reversion`` or ``module:Class``."""
    if ":" in kind:
        return _import(kind)
    if kind in STRATEGIES:
        return STRATEGIES[kind]
    import difflib

    close = difflib.get_close_matches(kind, STRATEGIES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"strategy.type: unknown strategy {kind!r}; allowed: "
        f"{', '.join(STRATEGIES)} or module:Class{hint}"
    )


def make_strategy(kind: str, params: dict[str, Any]) -> Strategy:
    """Build a strategy by name (``sma_crossover``, ``momentum``, ``mean_reversion``) or
    ``module:Class``, with keyword parameters."""
    return build_strategy(strategy_factory(kind), kind, params)


def build_strategy(factory: Callable[..., Strategy], name: str, params: dict[str, Any]) -> Strategy:
    """``factory(**params)``, its parameters checked against its signature and the
    result's ``signals`` method checked; ``name`` names the strategy in errors."""
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as exc:
        raise ConfigError(f"strategy {name!r}: bad parameters {params}: {exc}") from exc
    strategy = factory(**params)
    if not callable(getattr(strategy, "signals", None)):
        raise ConfigError(f"strategy {name!r} has no signals(bars) method")
    return strategy


# ---------------------------------------------------------------- indicators (features)

INDICATORS: dict[str, tuple[tuple[str, str, int], ...]] = {
    # strategy -> (parameter, indicator name, default): the indicators its sets compute
    "sma_crossover": (("fast", "sma", 10), ("slow", "sma", 30)),
    "momentum": (("lookback", "momentum", 20),),
    "mean_reversion": (("window", "sma", 20),),
}


def _indicator(close: np.ndarray, name: str, n: int) -> np.ndarray:
    if name == "sma":
        return sma(close, n)
    out = np.full(close.shape[0], np.nan)
    if n < close.shape[0]:
        out[n:] = close[n:] / close[:-n] - 1.0
    return out


def _values(param_sets: Sequence[Mapping[str, Any]], param: str, default: object) -> list[Any]:
    if isinstance(param_sets, SetColumns):
        return param_sets.values(param, default)
    return list(map(operator.methodcaller("get", param, default), param_sets))


def indicator_columns(
    kind: str, param_sets: Sequence[Mapping[str, Any]], close: np.ndarray
) -> dict[str, np.ndarray]:
    """Each distinct indicator the strategy ``kind`` computes over the parameter sets
    (``sma_20``, ``momentum_5``...), computed once over ``close``; empty for user
    strategies, whose indicators phasekit does not know. The sets' values are read as
    columns (:class:`~phasekit.backtest.setcolumns.SetColumns` as they are, a list of
    dicts by C-level ``map``) and converted once per distinct value."""
    wanted: dict[str, tuple[str, int]] = {}
    for param, name, default in INDICATORS.get(kind, ()):
        for n in map(int, dict.fromkeys(_values(param_sets, param, default))):
            wanted.setdefault(f"{name}_{n}", (name, n))
    return {col: _indicator(close, name, n) for col, (name, n) in sorted(wanted.items())}
