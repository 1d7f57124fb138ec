"""The grammar of a parameter space, one parser for config (which validates a space) and
workflow (which expands it into parameter sets).

::

    strategy.fast: [5, 10, 20]                   # a list
    strategy.slow: {range: [20, 101, 20]}        # start, stop (exclusive), step
    constraints: ["strategy.fast < strategy.slow"]
    sample: {n: 50, seed: 1}

A constraint compares two parameter paths, or a path and a number, with one of
:data:`CONSTRAINT_OPS`. Errors are :class:`~phasekit.errors.ConfigError` without a path
prefix; callers add where the text came from.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from phasekit.errors import ConfigError

#: Keys of a parameter space that are not parameters.
SPACE_RESERVED = ("constraints", "sample")

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
#: The comparison operators of a constraint.
CONSTRAINT_OPS = tuple(_OPS)
_CONSTRAINT = re.compile(
    r"^\s*([\w.]+)\s*(" + "|".join(map(re.escape, CONSTRAINT_OPS)) + r")\s*([\w.+-]+)\s*$"
)


def is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Constraint:
    """``left op right``; each side a parameter path or a number."""

    left: str
    op: str
    right: str

    @property
    def paths(self) -> tuple[str, ...]:
        """The sides that are not numbers (the parameters the constraint names)."""
        return tuple(side for side in (self.left, self.right) if not is_number(side))

    def compare(self, left: Any, right: Any) -> Any:
        """``left op right`` (values, or numpy arrays compared element by element)."""
        return _OPS[self.op](left, right)


def parse_constraint(text: Any) -> Constraint:
    """The constraint ``text`` (``'strategy.fast < strategy.slow'``)."""
    match = _CONSTRAINT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(
            f"{text!r} is not a constraint; write 'path op path' or 'path op number' "
            f"with op one of {' '.join(CONSTRAINT_OPS)}, e.g. 'strategy.fast < strategy.slow'"
        )
    return Constraint(*match.groups())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def range_size(args: Any) -> int:
    """How many values ``{range: args}`` holds, counted without listing them (a range of
    10^12 values costs nothing to refuse): ``[stop]``, ``[start, stop]`` or ``[start,
    stop, step]`` of finite numbers, stop exclusive, step > 0."""
    if not isinstance(args, Sequence) or isinstance(args, str) or not 1 <= len(args) <= 3:
        raise ConfigError(
            f"expected [start, stop, step] (1 to 3 numbers, stop exclusive), got {args!r}"
        )
    if not all(map(_is_number, args)):
        raise ConfigError(
            f"expected [start, stop, step] (1 to 3 numbers, stop exclusive), got {args!r}"
        )
    if not all(math.isfinite(a) for a in args):
        raise ConfigError(f"expected [start, stop, step] of finite numbers, got {list(args)!r}")
    start, stop, step = ([0, *args] if len(args) == 1 else [*args, 1])[:3]
    if not step > 0:
        raise ConfigError(f"step must be > 0, got {step!r}")
    if not start < stop:
        raise ConfigError(
            f"{list(args)!r} holds no value: start {start!r} is not below stop {stop!r}"
        )
    if all(isinstance(a, int) for a in args):
        return len(range(start, stop, step))
    count = math.ceil((stop - start) / step - 1e-9)
    # the last candidate may round up to stop (range_values drops it)
    last = round(start + (count - 1) * step, 12)
    return count if last < stop else count - 1


def range_values(args: Any) -> list[Any]:
    """The values of ``{range: args}`` (checked by :func:`range_size`); integers when
    every bound is an integer."""
    range_size(args)
    start, stop, step = ([0, *args] if len(args) == 1 else [*args, 1])[:3]
    if all(isinstance(a, int) for a in args):
        return list(range(start, stop, step))
    count = math.ceil((stop - start) / step - 1e-9)
    return [v for v in (round(start + i * step, 12) for i in range(count)) if v < stop]


__all__ = [
    "CONSTRAINT_OPS",
    "SPACE_RESERVED",
    "Constraint",
    "is_number",
    "parse_constraint",
    "range_size",
    "range_values",
]
