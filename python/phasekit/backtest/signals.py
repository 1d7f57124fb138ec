"""Targets of a block of parameter sets of one strategy, as one sets x bars array.

A user strategy (``module:Class``) gives its targets in one of two ways:

* per set, as always: the class is built with one set's parameters as keyword
  arguments and ``signals(bars)`` returns that set's targets, one per bar;
* for a whole block at once, vectorised over the sets: a ``classmethod`` (or
  ``staticmethod``) ``signals_block(bars, params)``::

      class Breakout:
          def __init__(self, lookback: int = 20) -> None:
              self.lookback = lookback

          def signals(self, bars):
              ...

          @classmethod
          def signals_block(cls, bars, params):
              lookback = params["lookback"]  # numpy array, one entry per set
              ...
              return targets  # shape (len(lookback), len(bars))

  ``params`` is a dict of columns: each parameter of the constructor maps to a numpy
  array with one entry per set, in the order of the sets (the constructor's defaults
  fill what a set leaves out; a parameter the constructor does not take fails its set).
  The class is not built per set, so ``signals_block`` checks the values it reads
  (raising :class:`~phasekit.errors.ConfigError` naming the set's index).

The constructor's signature is checked once per block (once per distinct set of names
the sets give, so a set it cannot take is still named) and the columns come from the
sets' columns (:class:`SetColumns`) as they are. With ``signals`` per set, the class is
built and ``signals`` called once per set: that is the strategy's own code; phasekit
checks the targets of all sets at once.

Either way the targets are -1, 0 or 1 (decided on each bar's close, filled at the next
open): a row per set and a column per bar of ``bars``, of an integer or bool dtype, or
floats holding those values (int8 rows are used as they are, others are converted).
:func:`block_signals` calls ``signals_block`` when the class has one and stacks the
per-set ``signals`` otherwise; the block kernel folds both the same way.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from phasekit.backtest.bars import Bars
from phasekit.backtest.setcolumns import SetColumns
from phasekit.backtest.strategies import Strategy, strategy_factory
from phasekit.errors import ConfigError

StrategyRef = Union[str, Callable[..., Strategy]]
"""A strategy by name (``module:Class`` or a built-in's) or its class."""

VECTORISED = "signals_block"
"""The name of the vectorised method of the protocol."""


def set_error(index: int, why: str) -> ConfigError:
    """A ``ConfigError`` of parameter set ``index`` (``set_index``, as the block kernels
    raise, so the block's caller can name the set's container). Other exceptions a
    strategy raises for one set keep their type and get ``set_index`` and a note."""
    err = ConfigError(f"parameter set {index}: {why}")
    err.set_index = index  # type: ignore[attr-defined]
    return err


def _first_bad(arr: np.ndarray, bad: np.ndarray, what: str) -> ConfigError:
    at = np.unravel_index(int(np.flatnonzero(bad)[0]), arr.shape)
    value = arr[at].item()
    why = f"{what} returned target {value} at bar {int(at[-1])}; allowed: -1, 0, 1"
    return set_error(int(at[0]), why) if arr.ndim == 2 else ConfigError(why)


def _shape_error(got: tuple[int, ...], want: tuple[int, ...], what: str) -> ConfigError:
    if len(want) == 1:
        return ConfigError(f"{what} returned {got} signals for {want[0]} bars")
    return ConfigError(
        f"{what} returned targets of shape {got}; expected {want}: a row of {want[1]} "
        f"targets (one per bar) for each of the {want[0]} parameter sets"
    )


def as_targets(values: object, shape: tuple[int, ...], what: str = "strategy") -> np.ndarray:
    """``values`` as C-contiguous int8 targets of ``shape`` (bars, or sets x bars); a
    ``ConfigError`` names the shape, the dtype, or the first value (and its set) that is
    not -1, 0 or 1, NaN included."""
    arr = np.asarray(values)
    if arr.shape != shape:
        raise _shape_error(arr.shape, shape, what)
    kind = arr.dtype.kind
    if kind not in "biuf":
        raise ConfigError(
            f"{what} returned targets of dtype {arr.dtype}; allowed: integers, booleans "
            "or floats, each -1, 0 or 1"
        )
    if kind == "b" or arr.size == 0:
        return np.ascontiguousarray(arr, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        if not (arr.min() >= -1 and arr.max() <= 1):  # false for NaN too
            raise _first_bad(arr, ~((arr >= -1) & (arr <= 1)), what)
    out = np.ascontiguousarray(arr, dtype=np.int8)  # in -1..1: no wrap-around
    if kind == "f":
        inexact = out != arr
        if inexact.any():
            raise _first_bad(arr, inexact, what)
    return out


@dataclass(frozen=True)
class BlockParams:
    """The parameter sets of one strategy for a block: as given (``given``, a dict per
    set or :class:`SetColumns`), their number and, as columns, each set's keyword
    arguments with the constructor's defaults filled in."""

    factory: Callable[..., Strategy]
    name: str
    given: Sequence[Mapping[str, object]]
    size: int
    columns: dict[str, np.ndarray]

    @property
    def vectorised(self) -> bool:
        """The strategy has ``signals_block``."""
        return _vectorised(self.factory, self.name) is not None


def _name(strategy: StrategyRef) -> str:
    if isinstance(strategy, str):
        return strategy
    return f"{strategy.__module__}:{getattr(strategy, '__qualname__', repr(strategy))}"


def _bind(sig: inspect.Signature, name: str, i: int, params: Mapping[str, object]) -> dict:
    try:
        bound = sig.bind(**params)
    except TypeError as exc:
        raise set_error(i, f"strategy {name!r}: bad parameters {dict(params)}: {exc}") from exc
    bound.apply_defaults()
    args: dict[str, object] = {}
    for key, value in bound.arguments.items():
        kind = sig.parameters[key].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            args.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            args[key] = value
    return args


def _column(values: list[object]) -> np.ndarray:
    col = np.asarray(values) if values else np.empty(0)
    if col.ndim != 1:  # values that are sequences themselves: one object per set
        col = np.fromiter(values, dtype=object, count=len(values))
    return col


def _key_sets(param_sets: Sequence[Mapping[str, object]]) -> list[int]:
    """The index of the first set of each distinct set of keys, in the order of the sets
    (the sets of :class:`SetColumns` share theirs). Which keys a set gives decides
    whether the constructor takes it, so binding these sets checks every set."""
    if isinstance(param_sets, SetColumns):
        return [0] if len(param_sets) else []
    keys = list(map(frozenset, param_sets))
    return list(map(keys.index, dict.fromkeys(keys)))


def _default(sig: inspect.Signature, key: str) -> object:
    param = sig.parameters.get(key)
    return None if param is None else param.default


def _values(param_sets: Sequence[Mapping[str, object]], key: str, default: object) -> list[object]:
    """Each set's value of ``key``, ``default`` where a set leaves it out."""
    if isinstance(param_sets, SetColumns):
        return param_sets.values(key, default)
    return list(map(operator.methodcaller("get", key, default), param_sets))


def block_params(strategy: StrategyRef, param_sets: Sequence[Mapping[str, object]]) -> BlockParams:
    """The sets checked against the strategy's constructor, once per distinct set of keys
    the sets give, and taken as columns (defaults filled in); a set it cannot take fails,
    named (the first such set)."""
    factory = strategy_factory(strategy) if isinstance(strategy, str) else strategy
    name = _name(strategy)
    sig = inspect.signature(factory)
    firsts = _key_sets(param_sets)
    bound = [(i, _bind(sig, name, i, param_sets[i])) for i in firsts]
    names = list(dict.fromkeys(key for _, args in bound for key in args))
    for i, args in bound:
        missing = [key for key in names if key not in args]
        if missing:
            raise set_error(
                i, f"strategy {name!r}: no value for {missing[0]!r}, which other sets give"
            )
    columns = {key: _column(_values(param_sets, key, _default(sig, key))) for key in names}
    return BlockParams(factory, name, param_sets, len(param_sets), columns)


def _vectorised(factory: Callable[..., Strategy], name: str) -> Callable[..., object] | None:
    try:
        raw = inspect.getattr_static(factory, VECTORISED)
    except AttributeError:
        return None
    if not isinstance(raw, (classmethod, staticmethod)):
        raise ConfigError(
            f"strategy {name!r}: {VECTORISED} must be a classmethod or staticmethod (it is "
            "called once for a block of parameter sets, on the class)"
        )
    method: Callable[..., object] = getattr(factory, VECTORISED)
    return method


def _per_set(block: BlockParams, bars: Bars) -> np.ndarray:
    """Each set's ``signals`` (the class built with the set's parameters, which
    :func:`block_params` checked), the targets of all sets checked at once."""
    what = f"strategy {block.name!r}"
    if not callable(getattr(block.factory, "signals", None)):
        raise set_error(0, f"{what} has no signals(bars) method")
    raw: list[object] = []
    try:
        for params in block.given:  # the strategy's own code, once per set
            raw.append(block.factory(**params).signals(bars))
    except ConfigError as exc:
        raise set_error(len(raw), str(exc)) from exc
    except Exception as exc:  # the strategy's own failure keeps its type
        i = len(raw)
        exc.add_note(f"parameter set {i}: {what} {dict(block.given[i])}")
        exc.set_index = i  # type: ignore[attr-defined]
        raise
    return _stacked(raw, len(bars), what)


def _stacked(raw: list[object], n_bars: int, what: str) -> np.ndarray:
    """The sets' targets as one array, a ``ConfigError`` naming the first set whose
    targets are not ``n_bars`` of -1, 0 or 1."""
    shape = (len(raw), n_bars)
    try:
        arr = np.asarray(raw)
    except ValueError:  # rows of different lengths
        arr = np.empty(0)
    if arr.shape == shape and arr.dtype.kind in "biuf":
        return as_targets(arr, shape, what)
    rows = []
    for i, values in enumerate(raw):  # sets of unlike rows: each checked on its own
        try:
            rows.append(as_targets(values, (n_bars,), what))
        except ConfigError as exc:
            raise set_error(i, str(exc)) from exc
    return np.stack(rows)


def signals_of(block: BlockParams, bars: Bars) -> np.ndarray:
    """The int8 targets (sets x bars) of the block's sets over ``bars``."""
    shape = (block.size, len(bars))
    if not block.size:
        return np.empty(shape, dtype=np.int8)
    method = _vectorised(block.factory, block.name)
    if method is None:
        return _per_set(block, bars)
    what = f"strategy {block.name!r} {VECTORISED}"
    return as_targets(method(bars, dict(block.columns)), shape, what)


def block_signals(
    strategy: StrategyRef, bars: Bars, param_sets: Sequence[Mapping[str, object]]
) -> np.ndarray:
    """The targets of every set of ``param_sets`` over ``bars`` as a C-contiguous int8
    array of sets x bars: the strategy's ``signals_block`` when it has one, its
    per-set ``signals`` stacked otherwise. A ``ConfigError`` names the set (its index)
    and what is allowed when a set's parameters or targets are wrong."""
    return signals_of(block_params(strategy, param_sets), bars)
