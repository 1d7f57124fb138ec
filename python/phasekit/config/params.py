"""Run parameters a workflow interprets: parameter space, objective, data, strategy,
portfolio and the settings of each sequence (train/test split, walk-forward, Monte Carlo).

Each may be set at the top level, in a phase (``phases[i]`` or its ``config``), in
``phase_overrides.<phase>`` or at run time; :mod:`phasekit.config.resolve` merges them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Optional, Union

from pydantic import PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from phasekit.config.fields import (
    Amount,
    Bool,
    Date,
    Model,
    PositiveInt,
    Seed,
    check_path,
    check_text,
    choice,
    choice_or_import,
    expected,
    fail,
    integer,
    iso_date,
    number,
    string_list,
)
from phasekit.config.limits import (
    MAX_BARS,
    MAX_BPS,
    MAX_FREQUENCY_SECONDS,
    MAX_GRID,
    MAX_PERIODS_PER_YEAR,
    MAX_RATE,
    MAX_SEED,
)
from phasekit.config.vocab import (
    DATA_SOURCES,
    DIRECTIONS,
    show,
    suggest,
    unknown_key_message,
)
from phasekit.errors import ConfigError
from phasekit.registry import (
    DATA_CALENDARS,
    DEFAULT_BATCH,
    DEFAULT_MONTE_CARLO_METHOD,
    DEFAULT_SEED,
    DEFAULT_SIMULATIONS,
    DEFAULT_WALK_FORWARD_MODE,
    METRIC_NAMES,
    MONTE_CARLO_METHODS,
    STRATEGY_NAMES,
    WALK_FORWARD_MODES,
    parse_frequency,
)
from phasekit.space import SPACE_RESERVED, is_number, parse_constraint, range_size

_PARAM_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def within(sub: tuple[Any, ...], check: Callable[[Any], Any], value: Any) -> Any:
    """Run ``check(value)``, prefixing the path of any error it raises with ``sub``."""
    try:
        return check(value)
    except PydanticCustomError as exc:
        ctx = exc.context or {}
        fail(str(ctx.get("message", exc.message())), (*sub, *ctx.get("sub", ())))


def unknown_keys(value: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in value:
        if key not in allowed:
            fail(unknown_key_message(key, allowed), (key,))


Bars = Annotated[int, PlainValidator(integer(ge=1, le=MAX_BARS))]
Bps = Annotated[float, PlainValidator(number(ge=0, le=MAX_BPS))]


# --- parameter space -------------------------------------------------------------------


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _range(args: Any) -> int:
    """``[stop]``, ``[start, stop]`` or ``[start, stop, step]``: stop exclusive, step > 0,
    at most MAX_GRID values (counted, not listed); returns how many it holds."""
    try:
        size = range_size(args)
    except ConfigError as exc:
        fail(str(exc))
    if size > MAX_GRID:
        fail(f"{show(args)} holds {size:,} values; a grid may hold at most {MAX_GRID:,}")
    return size


def _param_values(spec: Any) -> int:
    """Check one axis of a parameter space; returns how many values it holds."""
    if isinstance(spec, list):
        if not spec:
            fail("is an empty list; give at least one value")
        if len(spec) > MAX_GRID:
            fail(f"holds {len(spec):,} values; a grid may hold at most {MAX_GRID:,}")
        for i, item in enumerate(spec):
            if not _scalar(item) or not _finite(item):
                fail(f"expected a finite number, string or boolean, got {show(item)}", (i,))
        if len({repr(v) for v in spec}) != len(spec):
            fail(f"has duplicate values: {show(spec)}")
        return len(spec)
    if isinstance(spec, dict):
        unknown_keys(spec, ("range",))
        if "range" not in spec:
            fail("expected a list, a single value or {range: [start, stop, step]}")
        return int(within(("range",), _range, spec["range"]))
    if not _scalar(spec) or not _finite(spec):
        expected("a list of values, a value or {range: [start, stop, step]}", spec)
    return 1


def grid_size(space: dict[str, Any]) -> int:
    """Parameter sets of a checked space before constraints: the product of its axes' sizes."""
    total = 1
    for name, spec in space.items():
        if name not in SPACE_RESERVED:
            total *= _param_values(spec)
    return total


def check_grid(space: dict[str, Any]) -> None:
    """Refuse a space whose grid holds more than MAX_GRID sets, before listing any."""
    total = grid_size(space)
    if total > MAX_GRID:
        fail(
            f"the grid holds {total:,} parameter sets (the product of its axes' sizes); "
            f"a grid may hold at most {MAX_GRID:,}"
        )


def _param_name(name: Any) -> str:
    if not isinstance(name, str) or not _PARAM_NAME.match(name):
        fail(
            f"{show(name)} is not a parameter name; use dotted paths such as strategy.fast"
            f" (reserved keys: {', '.join(SPACE_RESERVED)})"
        )
    return name


def _operand(text: str, names: list[str]) -> None:
    if text in names or is_number(text):
        return
    full = [n for n in names if n.rsplit(".", 1)[-1] == text]
    near = full[0] if len(full) == 1 else suggest(text, names)
    hint = f"; did you mean {near!r}?" if near else ""
    fail(
        f"{text!r} is neither a parameter of this space nor a number{hint} "
        f"(parameters: {', '.join(names)})"
    )


def _constraint(text: Any, names: list[str]) -> None:
    if not isinstance(text, str):
        expected("a constraint such as 'strategy.fast < strategy.slow'", text)
    try:
        constraint = parse_constraint(text)
    except ConfigError as exc:
        fail(str(exc))
    _operand(constraint.left, names)
    _operand(constraint.right, names)


def _sample(value: Any) -> None:
    if not isinstance(value, dict):
        expected("a mapping {n, seed}", value)
    unknown_keys(value, ("n", "seed"))
    if "n" not in value:
        fail("needs n, the number of parameter sets to draw")
    within(("n",), integer(ge=1, le=MAX_GRID), value["n"])
    if "seed" in value:
        within(("seed",), integer(ge=0, le=MAX_SEED), value["seed"])


def check_parameter_space(value: Any) -> dict[str, Any]:
    """Validate a parameter space and return it as given (a new dict).

    ``{path: [values] | value | {range: [start, stop, step]}, constraints: [...],
    sample: {n, seed}}``; ranges exclude stop; constraints compare two parameter paths
    or a path and a number with ``< <= > >= == !=``; ``sample`` draws ``n`` sets (seeded)
    from the grid left by the constraints.
    """
    if not isinstance(value, dict):
        expected("a mapping of parameter path to values", value)
    names = [name for name in value if name not in SPACE_RESERVED]
    if not names:
        fail("holds no parameter; give at least one, e.g. strategy.fast: [5, 10]")
    for name in names:
        within((name,), _param_name, name)
        within((name,), _param_values, value[name])
    check_grid(value)
    if "sample" in value:
        within(("sample",), _sample, value["sample"])
    constraints = value.get("constraints", [])
    if not isinstance(constraints, list):
        within(("constraints",), lambda v: expected("a list of constraints", v), constraints)
    for i, text in enumerate(constraints):
        within(("constraints", i), lambda t: _constraint(t, names), text)
    return dict(value)


# --- objective -------------------------------------------------------------------------


class Objective(Model):
    """What a parameter search ranks by: a metric name or ``module:function``."""

    name: str
    direction: str = "maximize"


_check_metric = choice_or_import(METRIC_NAMES, "function")


def parse_objective(value: Any) -> Objective:
    """``sharpe_ratio``, ``module:function`` or ``{name, direction}``."""
    if isinstance(value, Objective):
        return value
    if isinstance(value, str):
        return Objective.model_construct(name=_check_metric(value), direction="maximize")
    if not isinstance(value, dict):
        expected("a metric name or a mapping {name, direction}", value)
    unknown_keys(value, ("name", "direction"))
    if "name" not in value:
        fail("needs 'name' (a metric such as sharpe_ratio, or module:function)")
    name = within(("name",), _check_metric, value["name"])
    direction = within(("direction",), choice(DIRECTIONS), value.get("direction", "maximize"))
    return Objective.model_construct(name=name, direction=direction)


# --- data, strategy, portfolio ---------------------------------------------------------


def _frequency(value: Any) -> str:
    if not isinstance(value, str):
        expected("a frequency such as 1min, 1h or 1d", value)
    try:
        nanoseconds = parse_frequency(value)
    except (ConfigError, ValueError):
        fail(
            f"{show(value)} is not a frequency; use a number and one of s, min (or m), h, d, "
            "e.g. 1min, 15min, 1h, 1d"
        )
    if not 0 < nanoseconds <= MAX_FREQUENCY_SECONDS * 10**9:
        fail(
            f"{show(value)} must be longer than 0 and at most {MAX_FREQUENCY_SECONDS // 86_400} "
            "days, e.g. 1min, 15min, 1h, 1d"
        )
    return value


def _symbols(value: Any) -> list[str]:
    symbols = string_list(check_text)(value)
    if not symbols:
        fail("is an empty list; give at least one symbol")
    return symbols


class DataConfig(Model):
    """Bars: synthetic (symbols, start, end or n_bars, frequency, seed, ...) or files."""

    source: Optional[Annotated[str, PlainValidator(choice(DATA_SOURCES))]] = None
    path: Optional[Annotated[list[str], PlainValidator(string_list(check_path))]] = None
    symbols: Optional[Annotated[list[str], PlainValidator(_symbols)]] = None
    start: Optional[Date] = None
    end: Optional[Date] = None
    n_bars: Optional[Annotated[int, PlainValidator(integer(ge=2, le=MAX_BARS))]] = None
    frequency: Optional[Annotated[str, PlainValidator(_frequency)]] = None
    seed: Optional[Seed] = None
    initial_price: Optional[Amount] = None
    drift: Optional[Annotated[float, PlainValidator(number(ge=-MAX_RATE, le=MAX_RATE))]] = None
    volatility: Optional[Annotated[float, PlainValidator(number(ge=0, le=MAX_RATE))]] = None
    calendar: Optional[Annotated[str, PlainValidator(choice(DATA_CALENDARS))]] = None
    periods_per_year: Optional[
        Annotated[float, PlainValidator(number(gt=0, le=MAX_PERIODS_PER_YEAR))]
    ] = None

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        if self.calendar is not None and self.path is not None:
            fail(
                "calendar shapes synthetic bars; a file's bars keep their own times", ("calendar",)
            )
        if self.start is not None and self.end is not None:
            if datetime.fromisoformat(self.start) >= datetime.fromisoformat(self.end):
                fail(f"start {self.start} is not before end {self.end}", ("end",))
        if self.source == "synthetic" and self.path is not None:
            fail("a synthetic source takes no path; drop path or set source: file", ("path",))
        if self.source == "file" and self.path is None:
            fail("source: file needs path (one file or a list)", ("path",))
        if self.end is not None and self.n_bars is not None and self.path is None:
            fail("give end or n_bars, not both", ("n_bars",))
        return self


class StrategyConfig(Model, extra="allow"):
    """``type`` (a built-in strategy or ``module:Class``) and its parameters as the other keys."""

    type: Optional[Annotated[str, PlainValidator(choice_or_import(STRATEGY_NAMES, "class"))]] = None

    @model_validator(mode="after")
    def _params(self) -> StrategyConfig:
        for key, value in (self.model_extra or {}).items():
            if not _PARAM_NAME.match(key) or "." in key:
                fail(f"{show(key)} is not a parameter name; use an identifier", (key,))
            values = value if isinstance(value, list) else [value]
            if not all(_scalar(v) and _finite(v) for v in values):
                fail(
                    f"expected a finite number, string, boolean or list, got {show(value)}", (key,)
                )
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The strategy's keyword arguments (every key but ``type``)."""
        return dict(self.model_extra or {})


class PortfolioConfig(Model):
    initial_capital: Optional[Amount] = None
    fraction: Optional[Annotated[float, PlainValidator(number(gt=0, le=1))]] = None
    whole_units: Optional[Bool] = None
    commission_bps: Optional[Bps] = None
    slippage_bps: Optional[Bps] = None


# --- sequence settings -----------------------------------------------------------------


class WalkForward(Model):
    """Train on ``train`` bars, test on the following ``test`` bars, advance by ``step``
    (default: ``test``); ``rolling`` keeps the train length, ``expanding`` its start."""

    train: Optional[Bars] = None
    test: Optional[Bars] = None
    step: Optional[Bars] = None
    mode: Annotated[str, PlainValidator(choice(WALK_FORWARD_MODES))] = DEFAULT_WALK_FORWARD_MODE


class MonteCarlo(Model):
    """``n`` simulations in batches of ``batch``, seeded; bootstrap of returns or trades."""

    n: PositiveInt = DEFAULT_SIMULATIONS
    batch: PositiveInt = DEFAULT_BATCH
    seed: Seed = DEFAULT_SEED
    method: Annotated[str, PlainValidator(choice(MONTE_CARLO_METHODS))] = DEFAULT_MONTE_CARLO_METHOD


def _data_split(value: Any) -> Union[float, str]:
    """A train fraction strictly between 0 and 1, or a split date."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 < value < 1:
            fail(f"a fraction must be strictly between 0 and 1, got {show(value)}")
        return float(value)
    try:
        return iso_date(value)
    except PydanticCustomError:
        expected("a train fraction between 0 and 1 (e.g. 0.8) or a split date", value)


DataSplit = Annotated[Union[float, str], PlainValidator(_data_split)]

__all__ = [
    "DataConfig",
    "DataSplit",
    "MonteCarlo",
    "Objective",
    "PortfolioConfig",
    "StrategyConfig",
    "WalkForward",
    "check_parameter_space",
    "parse_objective",
]
