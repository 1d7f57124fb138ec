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
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from phasekit.errors import ConfigError
from phasekit.space import SPACE_RESERVED, Constraint, range_values
from phasekit.space import parse_constraint as parse


def parse_constraint(text: Any) -> Constraint:
    try:
        return parse(text)
    except ConfigError as exc:
        raise ConfigError(f"parameter_space.constraints: {exc}") from None


def _holds(constraint: Constraint, params: Mapping[str, Any]) -> bool:
    try:
        return constraint.holds(params)
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
        names = [name for name, _ in self.axes]
        sets = (
            dict(zip(names, combo))
            for combo in itertools.product(*(values for _, values in self.axes))
        )
        kept = [s for s in sets if all(_holds(c, s) for c in self.constraints)]
        if self.sample_n is not None and self.sample_n < len(kept):
            rng = random.Random(self.sample_seed)
            picked = sorted(rng.sample(range(len(kept)), self.sample_n))
            kept = [kept[i] for i in picked]
        return iter(kept)

    def sets(self) -> list[dict[str, Any]]:
        """All parameter sets; ``ConfigError`` when constraints leave none."""
        out = list(self)
        if not out:
            raise ConfigError(
                "parameter_space: no parameter set is left"
                + (" after the constraints" if self.constraints else "")
            )
        return out


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
