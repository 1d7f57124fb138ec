"""A parameter space's sets, made as columns (constraints compared over columns), equal
the sets of the grid filtered set by set: same sets, same order, same values and types;
the errors of a constraint are raised as set by set."""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
import pytest

from phasekit.backtest.block import SetColumns, params_batch
from phasekit.backtest.strategies import indicator_columns
from phasekit.errors import ConfigError
from phasekit.workflow.params import ParameterSets, ParameterSpace
from phasekit.workflow.topology import strategy_columns, strategy_params


def _operand(token: str, params: dict[str, Any]) -> Any:
    if token in params:
        return params[token]
    return float(token)


def one_by_one(space: ParameterSpace) -> list[dict[str, Any]]:
    """The sets as a grid filtered set by set (each constraint in order, stopping at
    the first that fails), then sampled by seed."""
    names = [name for name, _ in space.axes]
    kept = []
    for combo in itertools.product(*(values for _, values in space.axes)):
        params = dict(zip(names, combo))
        if all(
            c.compare(_operand(c.left, params), _operand(c.right, params))
            for c in space.constraints
        ):
            kept.append(params)
    if space.sample_n is not None and space.sample_n < len(kept):
        rng = random.Random(space.sample_seed)
        kept = [kept[i] for i in sorted(rng.sample(range(len(kept)), space.sample_n))]
    return kept


SPACES: list[dict[str, Any]] = [
    {"strategy.fast": {"range": [2, 40, 3]}, "strategy.slow": {"range": [10, 60, 4]}},
    {
        "strategy.fast": {"range": [2, 40, 3]},
        "strategy.slow": {"range": [10, 60, 4]},
        "constraints": ["strategy.fast < strategy.slow", "strategy.slow != 30"],
    },
    {
        "strategy.fast": [1, 2.5, True, 3, 7.0, float("nan")],
        "strategy.slow": [2, 2.5, 3.0, False, 9],
        "constraints": ["strategy.fast <= strategy.slow", "strategy.fast >= 1"],
    },
    {  # integers float64 cannot hold exactly: compared as Python compares them
        "a": [2**60, 2**60 + 1, 5],
        "b": [2**60 + 1, 2**60],
        "constraints": ["a < b"],
    },
    {  # text: compared once per distinct pair of values
        "strategy.mode": ["long_only", "long_short"],
        "strategy.other": ["long_only", "x"],
        "strategy.fast": [3, 5],
        "constraints": ["strategy.mode == strategy.other", "strategy.fast > 4"],
    },
    {
        "strategy.fast": {"range": [1, 30]},
        "strategy.slow": {"range": [5, 50]},
        "strategy.mode": "long_short",
        "constraints": ["strategy.fast < strategy.slow", "strategy.slow <= 40"],
        "sample": {"n": 37, "seed": 5},
    },
    {"strategy.fast": [5], "constraints": ["strategy.fast == 5.0"]},
    {"constraints": ["1 < 2"]},
    {},
]


@pytest.mark.parametrize("space", SPACES, ids=range(len(SPACES)))
def test_sets_equal_the_grid_filtered_set_by_set(space: dict[str, Any]) -> None:
    parsed = ParameterSpace.from_config(space)
    want = one_by_one(parsed)
    got = parsed.sets()
    assert len(got) == len(want) > 0
    for mine, theirs in zip(got, want):
        assert list(mine) == list(theirs)
        for key in theirs:
            a, b = mine[key], theirs[key]
            assert type(a) is type(b), key
            assert a == b or (a != a and b != b), key
    # the columns hold the same sets
    for key, column in got.columns.items():
        assert column.shape == (len(want),)
        assert [str(v) for v in column.tolist()] == [str(s[key]) for s in want]


def test_a_constraint_that_keeps_no_set_is_refused() -> None:
    space = ParameterSpace.from_config({"a": [1, 2], "constraints": ["a > 5"]})
    with pytest.raises(ConfigError, match="no parameter set is left after the constraints"):
        space.sets()


def test_an_unknown_operand_is_named_when_a_set_reaches_it() -> None:
    bad = ParameterSpace.from_config({"a": [1, 2], "constraints": ["a < nope"]})
    with pytest.raises(ConfigError, match=r"constraints: 'nope' is neither a parameter \(a\)"):
        bad.sets()
    # a constraint before it that keeps no set: no set reaches it
    unreached = ParameterSpace.from_config({"a": [1, 2], "constraints": ["a > 5", "a < nope"]})
    with pytest.raises(ConfigError, match="no parameter set is left"):
        unreached.sets()


def test_values_that_do_not_compare_raise_as_python_does() -> None:
    space = ParameterSpace.from_config({"a": ["x", 1], "b": [2], "constraints": ["a < b"]})
    with pytest.raises(TypeError):
        space.sets()


def test_a_large_grid_keeps_its_order() -> None:
    space = ParameterSpace.from_config(
        {
            "strategy.fast": {"range": [2, 202]},
            "strategy.slow": {"range": [100, 600]},
            "constraints": ["strategy.fast < strategy.slow"],
        }
    )
    sets = space.sets()
    fast = np.asarray(sets.columns["strategy.fast"], dtype=np.int64)
    slow = np.asarray(sets.columns["strategy.slow"], dtype=np.int64)
    assert len(sets) == sum(1 for f in range(2, 202) for s in range(100, 600) if f < s)
    order = np.lexsort((slow, fast))
    assert np.array_equal(order, np.arange(len(sets)))
    assert sets[-1] == {"strategy.fast": 201, "strategy.slow": 599}


def test_strategy_columns_equal_strategy_params_per_set() -> None:
    """The kernel's input from a space's columns: each set as strategy_params gives it
    (keys in its order, later paths winning, other paths left out), and the same params
    batch as from the dicts."""
    space = ParameterSpace.from_config(
        {
            "strategy.fast": [3, 5, 8],
            "strategy.slow": {"range": [20, 41, 7]},
            "strategy.mode": ["long_only", "long_short"],
            "fast": [4, 6],
            "other.x": [1],
        }
    )
    sets = space.sets()
    base = {"mode": "long_only", "slow": 99, "extra_unused": None}
    indices = [5, 0, 3, 7, 34, 35]
    cols = strategy_columns(base, sets, indices)
    assert isinstance(cols, SetColumns) and len(cols) == len(indices)
    rows = [strategy_params(base, sets[i]) for i in indices]
    for k, want in enumerate(rows):
        assert list(cols[k].items()) == list(want.items())
    assert cols[-1] == rows[-1] and cols[1:3] == rows[1:3]
    clean = {k: v for k, v in base.items() if k != "extra_unused"}
    ok_cols = strategy_columns(clean, sets, indices)
    ok_rows = [strategy_params(clean, sets[i]) for i in indices]
    assert params_batch("sma_crossover", ok_cols).equals(params_batch("sma_crossover", ok_rows))
    # what a set may not hold is refused alike
    for bad in (cols, rows):
        with pytest.raises(ConfigError, match="parameter set 0: strategy 'sma_crossover' has no"):
            params_batch("sma_crossover", bad)
    modes = ParameterSpace.from_config({"strategy.mode": ["long_only", "sideways"]}).sets()
    fixed = {"fast": 3, "slow": 9}
    for given in (
        strategy_columns(fixed, modes, [0, 1]),
        [strategy_params(fixed, s) for s in modes],
    ):
        with pytest.raises(ConfigError, match=r"parameter set 1: strategy\.mode: 'sideways'"):
            params_batch("sma_crossover", given)
    # a list of sets without columns (another phase's selection): a dict per set
    assert strategy_columns(base, list(sets), [2]) == (strategy_params(base, sets[2]),)


def test_a_selection_read_back_becomes_columns_when_its_sets_agree() -> None:
    """Another phase's ``selected_parameters`` (dicts read from JSON) reach the blocks
    as columns when every set gives the same paths, as dicts otherwise."""
    chosen = [
        {"strategy.fast": 5, "strategy.slow": 40, "strategy.mode": "long_short"},
        {"strategy.fast": 3, "strategy.slow": 20, "strategy.mode": "long_only"},
        {"strategy.fast": 8, "strategy.slow": 20, "strategy.mode": "long_short"},
    ]
    sets = ParameterSets.of_sets(chosen)
    assert sets == chosen and isinstance(sets, ParameterSets)
    assert sets.columns["strategy.fast"].tolist() == [5, 3, 8]
    base = {"mode": "long_only", "slow": 99}
    cols = strategy_columns(base, sets, [2, 0])
    assert isinstance(cols, SetColumns)
    assert list(cols) == [strategy_params(base, chosen[i]) for i in (2, 0)]
    assert params_batch("sma_crossover", cols).equals(
        params_batch("sma_crossover", [strategy_params(base, chosen[i]) for i in (2, 0)])
    )
    unlike = [chosen[0], {"strategy.fast": 4}]
    plain = ParameterSets.of_sets(unlike)
    assert plain == unlike and not hasattr(plain, "columns")
    assert strategy_columns(base, plain, [1]) == (strategy_params(base, unlike[1]),)
    reordered = [chosen[0], dict(reversed(list(chosen[1].items())))]
    assert not hasattr(ParameterSets.of_sets(reordered), "columns")


def test_a_features_container_reads_its_indicators_from_columns() -> None:
    sets = ParameterSpace.from_config({"strategy.fast": [3, 5], "strategy.slow": [20, 40]}).sets()
    base = {"mode": "long_only"}
    cols = strategy_columns(base, sets, range(len(sets)))
    close = np.linspace(1.0, 2.0, 100)
    got = indicator_columns("sma_crossover", cols, close)
    assert sorted(got) == ["sma_20", "sma_3", "sma_40", "sma_5"]
    want = indicator_columns("sma_crossover", [strategy_params(base, s) for s in sets], close)
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k], equal_nan=True) for k in got)
    np.testing.assert_allclose(got["sma_3"][2:], np.convolve(close, np.ones(3) / 3, "valid"))
    # the strategy's default stands in for a parameter no set gives
    one = ParameterSpace.from_config({"strategy.fast": [4]}).sets()
    assert sorted(indicator_columns("sma_crossover", strategy_columns({}, one, [0]), close)) == [
        "sma_30",
        "sma_4",
    ]
