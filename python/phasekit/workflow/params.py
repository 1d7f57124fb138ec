"""Parameter spaces: grids (lists and ranges, cartesian product), random samples and constraints.

A parameter space maps dotted paths (``strategy.fast``) to values::

    parameter_space:
      strategy.fast: [5, 10, 20]                       # a list
      strategy.slow: {range: [20, 101, 20]}            # start, stop (exclusive), step
      strategy.mode: long_only                         # a single value
      constraints: ["strategy.fast < strategy.slow"]
      sample: {n: 50, seed: 1}                         # optional: a seeded random subset

Constraints compare two paths or a path and a number with ``< <= > >= == !=``.
Sets come out in a deterministic order (grid order, then sampled by seed).
"""

from __future__ import annotations

import itertools
import math
import operator
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from phasekit.errors import ConfigError
from phasekit.space import SPACE_RESERVED, Constraint, is_number, range_values
from phasekit.space import parse_constraint as parse


def parse_constraint(text: Any) -> Constraint:
    try:
        return parse(text)
    except ConfigError as exc:
        raise ConfigError(f"parameter_space.constraints: {exc}") from None


def _values(path: str, spec: Any) -> list[Any]:
    if isinstance(spec, Mapping):
        if set(spec) != {"range"}:
            raise ConfigError(
                f"parameter_space.{path}: {dict(spec)!r} is not allowed; use a list, "
                "a single value or {range: [start, stop, step]}"
            )
        try:
            return range_values(spec["range"])
        except ConfigError as exc:
            raise ConfigError(f"parameter_space.{path}.range: {exc}") from None
    if isinstance(spec, (list, tuple)):
        return list(spec)
    return [spec]


@dataclass(frozen=True)
class ParameterSpace:
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    constraints: tuple[Constraint, ...] = ()
    sample_n: int | None = None
    sample_seed: int = 0

    @classmethod
    def from_config(cls, space: Mapping[str, Any] | None) -> ParameterSpace:
        space = dict(space or {})
        reserved = {key: space.pop(key, None) for key in SPACE_RESERVED}
        constraints = tuple(parse_constraint(c) for c in reserved["constraints"] or [])
        sample = reserved["sample"] or {}
        if not isinstance(sample, Mapping) or set(sample) - {"n", "seed"}:
            raise ConfigError(f"parameter_space.sample: {sample!r} must be {{n: int, seed: int}}")
        axes = tuple((str(path), tuple(_values(str(path), spec))) for path, spec in space.items())
        for path, values in axes:
            if not values:
                raise ConfigError(f"parameter_space.{path}: the list of values is empty")
        return cls(axes, constraints, sample.get("n"), int(sample.get("seed", 0)))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._select())

    def _select(self) -> ParameterSets:
        """The grid's sets the constraints keep (each constraint compared over columns,
        only on the sets the constraints before it kept), sampled by seed."""
        names = [name for name, _ in self.axes]
        sizes = [len(values) for _, values in self.axes]
        codes = list(np.unravel_index(np.arange(math.prod(sizes)), sizes)) if names else []
        rows = np.arange(math.prod(sizes))  # the grid's order: the last axis varies fastest
        for constraint in self.constraints:
            if not rows.shape[0]:
                break
            picked = {name: (values, c[rows]) for (name, values), c in zip(self.axes, codes)}
            rows = rows[_holds(constraint, picked, rows.shape[0])]
        if self.sample_n is not None and self.sample_n < rows.shape[0]:
            rng = random.Random(self.sample_seed)
            rows = rows[sorted(rng.sample(range(rows.shape[0]), self.sample_n))]
        columns = {
            name: np.asarray(values, dtype=object)[c[rows]]
            for (name, values), c in zip(self.axes, codes)
        }
        return ParameterSets.of_columns(columns, int(rows.shape[0]))

    def sets(self) -> ParameterSets:
        """All parameter sets; ``ConfigError`` when constraints leave none."""
        out = self._select()
        if not out:
            raise ConfigError(
                "parameter_space: no parameter set is left"
                + (" after the constraints" if self.constraints else "")
            )
        return out


class ParameterSets(list[dict[str, Any]]):
    """A space's parameter sets, a dict each, and the same sets as :attr:`columns`
    (per parameter path, an object array of its values, one per set)."""

    columns: dict[str, np.ndarray]

    @classmethod
    def of_columns(cls, columns: dict[str, np.ndarray], n: int) -> ParameterSets:
        names = list(columns)
        values = [col.tolist() for col in columns.values()]
        out = cls(map(dict, map(zip, itertools.repeat(names), zip(*values)))) if names else cls()
        if not names:
            out.extend({} for _ in range(n))
        out.columns = columns
        return out

    @classmethod
    def of_sets(cls, sets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Sets as another phase selected them (read from its ``selected_parameters``):
        with :attr:`columns` (taken by C-level ``map``, no Python step per set) when
        every set gives the same paths in the same order, else a plain list (a dict per
        set reaches the blocks)."""
        rows: list[dict[str, Any]] = list(map(dict, sets))
        paths = dict.fromkeys(map(tuple, rows))
        if len(paths) != 1:
            return rows
        n = len(rows)
        columns = {
            path: np.fromiter(map(operator.itemgetter(path), rows), dtype=object, count=n)
            for path in next(iter(paths))
        }
        out = cls(rows)
        out.columns = columns
        return out


def _holds(
    constraint: Constraint, picked: Mapping[str, tuple[tuple[Any, ...], np.ndarray]], n: int
) -> np.ndarray:
    """Per set, whether ``constraint`` holds: its two sides compared as float64 columns
    when every value either side can take is a number float64 holds exactly (as Python
    compares them), else once per distinct pair of values the sets hold."""
    sides = [_side(token, picked, n) for token in (constraint.left, constraint.right)]
    (lv, lc), (rv, rc) = sides
    left, right = _exact_floats(lv), _exact_floats(rv)
    if left is not None and right is not None:
        return np.asarray(constraint.compare(left[lc], right[rc]), dtype=bool)
    pairs, inverse = np.unique(np.stack([lc, rc]), axis=1, return_inverse=True)
    truth = np.fromiter(
        (constraint.compare(lv[a], rv[b]) for a, b in pairs.T.tolist()),
        dtype=bool,
        count=pairs.shape[1],
    )
    return truth[inverse.reshape(-1)]


def _side(
    token: str, picked: Mapping[str, tuple[tuple[Any, ...], np.ndarray]], n: int
) -> tuple[tuple[Any, ...], np.ndarray]:
    """A side of a constraint as (its distinct values, the index of each set's value)."""
    if token in picked:
        return picked[token]
    if is_number(token):
        return (float(token),), np.zeros(n, dtype=np.intp)
    raise ConfigError(
        f"parameter_space.constraints: {token!r} is neither a parameter "
        f"({', '.join(picked)}) nor a number"
    )


def _exact_floats(values: tuple[Any, ...]) -> Optional[np.ndarray]:
    """``values`` as float64 when each is a bool, an int float64 holds exactly or a
    float (None otherwise)."""
    for v in values:
        if isinstance(v, float) or isinstance(v, bool):
            continue
        if not isinstance(v, int) or abs(v) > 2**53:
            return None
    return np.asarray(values, dtype=np.float64)


def apply_params(base: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with each dotted path of ``params`` set."""
    import copy

    out = copy.deepcopy(dict(base))
    for path, value in params.items():
        node = out
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out
