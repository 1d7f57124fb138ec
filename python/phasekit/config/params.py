"""Run parameters a workflow interprets: parameter space, objective, data, strategy,
portfolio and the settings of each sequence (train/test split, walk-forward, Monte Carlo).

Each may be set at the top level, in a phase (``phases[i]`` or its ``config``), in
``phase_overrides.<phase>`` or at run time; :mod:`phasekit.config.resolve` merges them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Optional, Union

from pydantic import PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from phasekit.backtest.bars import parse_frequency
from phasekit.backtest.metrics import METRIC_NAMES
from phasekit.backtest.strategies import STRATEGIES
from phasekit.config.fields import (
    AnyInt,
    AnyNumber,
    Bool,
    Date,
    Model,
    NonNegative,
    PositiveInt,
    PositiveNumber,
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
from phasekit.config.vocab import (
    CONSTRAINT_OPS,
    DATA_SOURCES,
    DIRECTIONS,
    MONTE_CARLO_METHODS,
    SAMPLINGS,
    WALK_FORWARD_MODES,
    show,
    suggest,
    unknown_key_message,
)
from phasekit.errors import ConfigError

_PARAM_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_CONSTRAINT = re.compile(r"^\s*(\S+)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")
_LENGTH = re.compile(r"^\s*([1-9][0-9]*)\s*([A-Za-z]+)\s*$")
_LENGTH_UNITS = {"min": "min", "h": "h", "D": "D", "d": "D", "W": "W", "w": "W", "M": "M"}
_LENGTH_UNITS.update({"Y": "Y", "y": "Y", "bars": "", "bar": ""})


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


# --- parameter space -------------------------------------------------------------------


class ParamSpec(Model):
    """One parameter: a list of ``values``, or a range ``min``..``max`` (inclusive) with an
    optional ``step`` (needed for a grid; without it the range is sampled)."""

    values: Optional[list[Any]] = None
    min: Optional[float] = None
    max: Optional[float] = None
    step: Optional[float] = None


class Constraint(Model):
    """``left op right``; each side is a full parameter name or a number."""

    left: Union[str, float]
    op: str
    right: Union[str, float]


class ParameterSpace(Model):
    """Normalised parameter space: every form of the source becomes this one."""

    parameters: dict[str, ParamSpec]
    sampling: str = "grid"
    n: Optional[int] = None
    seed: int = 0
    constraints: list[Constraint] = []


_SPACE_KEYS = ("parameters", "sampling", "n", "seed", "constraints")
_RANGE_KEYS = ("min", "max", "step")


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _param_spec(spec: Any) -> ParamSpec:
    if isinstance(spec, list):
        if not spec:
            fail("is an empty list; give at least one value")
        for i, item in enumerate(spec):
            if not _scalar(item):
                fail(f"expected a number, string or boolean, got {show(item)}", (i,))
        if len({repr(v) for v in spec}) != len(spec):
            fail(f"has duplicate values: {show(spec)}")
        return ParamSpec.model_construct(values=list(spec))
    if isinstance(spec, dict):
        unknown_keys(spec, _RANGE_KEYS)
        for key in ("min", "max"):
            if key not in spec:
                fail(f"a range needs {key!r} (give min, max and, for a grid, step)")
        low = within(("min",), number(), spec["min"])
        high = within(("max",), number(), spec["max"])
        step = within(("step",), number(gt=0), spec["step"]) if "step" in spec else None
        if low > high:
            fail(f"min {show(low)} is greater than max {show(high)}")
        return ParamSpec.model_construct(min=low, max=high, step=step)
    if _scalar(spec):
        return ParamSpec.model_construct(values=[spec])
    expected("a list of values, a value or a range {min, max, step}", spec)


def _param_name(name: Any) -> str:
    if not isinstance(name, str) or not _PARAM_NAME.match(name):
        fail(f"{show(name)} is not a parameter name; use dotted identifiers such as strategy.fast")
    return name


def _operand(text: str, names: list[str]) -> Union[str, float]:
    if text in names:
        return text
    short = [n for n in names if n.rsplit(".", 1)[-1] == text]
    if len(short) == 1:
        return short[0]
    if len(short) > 1:
        fail(f"{text!r} is ambiguous: it may mean {', '.join(short)}; use the full name")
    try:
        return float(text)
    except ValueError:
        pass
    shorts = [n.rsplit(".", 1)[-1] for n in names]
    near = suggest(text, [*names, *shorts])
    hint = f"; did you mean {near!r}?" if near else ""
    fail(f"{text!r} is not a parameter of this space (parameters: {', '.join(names)}){hint}")


def _constraint(text: Any, names: list[str]) -> Constraint:
    if not isinstance(text, str):
        expected("a constraint such as 'fast < slow'", text)
    match = _CONSTRAINT.match(text)
    if not match:
        fail(
            f"{show(text)} is not a constraint; write 'name op name' or 'name op number' "
            f"with op one of {' '.join(CONSTRAINT_OPS)}, e.g. 'fast < slow'"
        )
    left, op, right = match.groups()
    lhs, rhs = _operand(left, names), _operand(right, names)
    if not isinstance(lhs, str) and not isinstance(rhs, str):
        fail(f"{show(text)} compares no parameter")
    return Constraint.model_construct(left=lhs, op=op, right=rhs)


def parse_parameter_space(value: Any) -> ParameterSpace:
    """Validate and normalise a parameter space.

    Forms: ``{name: [values] | value | {min, max, step}}`` (a grid), or
    ``{parameters: {...}, sampling: grid|random, n: N, seed: S, constraints: [...]}``.
    """
    if isinstance(value, ParameterSpace):
        return value
    if not isinstance(value, dict):
        expected("a mapping of parameter name to values", value)
    if not value:
        fail("is empty; give at least one parameter")
    structured = "parameters" in value
    meta: dict[str, Any] = value if structured else {}
    raw: Any = value.get("parameters") if structured else value
    base: tuple[Any, ...] = ("parameters",) if structured else ()
    if structured:
        unknown_keys(value, _SPACE_KEYS)
        if not isinstance(raw, dict):
            fail(f"expected a mapping of parameter name to values, got {show(raw)}", base)
        if not raw:
            fail("is empty; give at least one parameter", base)
    params = {}
    for name, spec in raw.items():
        within((*base, name), _param_name, name)
        params[name] = within((*base, name), _param_spec, spec)
    sampling = within(("sampling",), choice(SAMPLINGS), meta.get("sampling", "grid"))
    n = within(("n",), integer(ge=1), meta["n"]) if "n" in meta else None
    seed = within(("seed",), integer(), meta.get("seed", 0))
    if sampling == "random" and n is None:
        fail("sampling: random needs n, the number of parameter sets to draw")
    if sampling == "grid":
        if n is not None:
            fail("n is only used with sampling: random", ("n",))
        for name, spec in params.items():
            if spec.values is None and spec.step is None:
                fail("a range in a grid needs step (or use sampling: random)", (*base, name))
    raw_constraints = meta.get("constraints", [])
    if not isinstance(raw_constraints, list):
        within(("constraints",), lambda v: expected("a list of constraints", v), raw_constraints)
    names = list(params)
    constraints = [
        within(("constraints", i), lambda t: _constraint(t, names), text)
        for i, text in enumerate(raw_constraints)
    ]
    return ParameterSpace.model_construct(
        parameters=params, sampling=sampling, n=n, seed=seed, constraints=constraints
    )


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
        parse_frequency(value)
    except ConfigError:
        fail(
            f"{show(value)} is not a frequency; use a number and one of s, min (or m), h, d, "
            "e.g. 1min, 15min, 1h, 1d"
        )
    return value


class DataConfig(Model):
    """Bars: synthetic (symbols, start, end or n_bars, frequency, seed, ...) or files."""

    source: Optional[Annotated[str, PlainValidator(choice(DATA_SOURCES))]] = None
    path: Optional[Annotated[list[str], PlainValidator(string_list(check_path))]] = None
    symbols: Optional[Annotated[list[str], PlainValidator(string_list(check_text))]] = None
    start: Optional[Date] = None
    end: Optional[Date] = None
    n_bars: Optional[Annotated[int, PlainValidator(integer(ge=2))]] = None
    frequency: Optional[Annotated[str, PlainValidator(_frequency)]] = None
    seed: Optional[AnyInt] = None
    initial_price: Optional[PositiveNumber] = None
    drift: Optional[AnyNumber] = None
    volatility: Optional[NonNegative] = None

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
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

    type: Optional[Annotated[str, PlainValidator(choice_or_import(STRATEGIES, "class"))]] = None

    @model_validator(mode="after")
    def _params(self) -> StrategyConfig:
        for key, value in (self.model_extra or {}).items():
            if not _PARAM_NAME.match(key) or "." in key:
                fail(f"{show(key)} is not a parameter name; use an identifier", (key,))
            if not (_scalar(value) or (isinstance(value, list) and all(map(_scalar, value)))):
                fail(f"expected a number, string, boolean or list, got {show(value)}", (key,))
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The strategy's keyword arguments (every key but ``type``)."""
        return dict(self.model_extra or {})


class PortfolioConfig(Model):
    initial_capital: Optional[PositiveNumber] = None
    fraction: Optional[Annotated[float, PlainValidator(number(gt=0, le=1))]] = None
    whole_units: Optional[Bool] = None
    commission_bps: Optional[NonNegative] = None
    slippage_bps: Optional[NonNegative] = None


# --- sequence settings -----------------------------------------------------------------


def _length(value: Any) -> Union[int, str]:
    """A window length: bars (an integer) or a duration such as 30D, 6M, 1Y, 12h, 90min."""
    if isinstance(value, int) and not isinstance(value, bool):
        return integer(ge=1)(value)
    if isinstance(value, str):
        match = _LENGTH.match(value)
        if match and match.group(2) in _LENGTH_UNITS:
            unit = _LENGTH_UNITS[match.group(2)]
            return int(match.group(1)) if unit == "" else f"{match.group(1)}{unit}"
        if match and match.group(2) == "m":
            fail(f"{show(value)} is ambiguous; write M for months or min for minutes")
    expected("a number of bars or a duration such as 30D, 6M, 1Y, 12h, 90min", value)


Length = Annotated[Union[int, str], PlainValidator(_length)]


class WalkForward(Model):
    """Train on ``train``, test on the following ``test``, advance by ``step`` (default:
    ``test``); ``rolling`` keeps the train length, ``expanding`` keeps its start."""

    train: Optional[Length] = None
    test: Optional[Length] = None
    step: Optional[Length] = None
    mode: Annotated[str, PlainValidator(choice(WALK_FORWARD_MODES))] = "rolling"

    @model_validator(mode="after")
    def _same_units(self) -> WalkForward:
        kinds = {type(v) for v in (self.train, self.test, self.step) if v is not None}
        if len(kinds) > 1:
            fail("mixes bars and durations; give train, test and step in the same unit kind")
        return self


class MonteCarlo(Model):
    """``n`` simulations in batches of ``batch_size``, seeded; bootstrap of returns or trades."""

    n: Optional[PositiveInt] = None
    batch_size: PositiveInt = 100
    seed: AnyInt = 0
    method: Annotated[str, PlainValidator(choice(MONTE_CARLO_METHODS))] = "returns"


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
    "Constraint",
    "DataConfig",
    "DataSplit",
    "MonteCarlo",
    "Objective",
    "ParamSpec",
    "ParameterSpace",
    "PortfolioConfig",
    "StrategyConfig",
    "WalkForward",
    "parse_objective",
    "parse_parameter_space",
]
