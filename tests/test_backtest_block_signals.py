"""User strategies through the block path: the vectorised protocol (``signals_block``)
and per-set ``signals`` give the per-container kernel's results, trades and curves,
and each other's; a built-in strategy written as a user strategy gives the built-in
block's numbers; bad targets and parameters fail the block naming the set."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from phasekit._pure.sim import sma
from phasekit.backtest.bars import Bars, synthetic_bars
from phasekit.backtest.block import (
    BlockRun,
    params_batch,
    run_block,
    run_block_signals,
    supports_block,
)
from phasekit.backtest.signals import SetColumns, as_targets, block_params, block_signals
from phasekit.errors import ConfigError, InvalidArgument
from test_backtest_block import COSTS, assert_metrics_close, per_set

MOD = "test_backtest_block_signals"
SETS: list[dict[str, Any]] = [
    {"fast": f, "slow": s, "mode": m}
    for f, s in [(2, 9), (5, 40), (9, 40), (13, 14), (1, 300), (20, 30)]
    for m in ("long_only", "long_short")
]
METRICS = (
    "bars",
    "total_return",
    "sharpe_ratio",
    "sortino_ratio",
    "max_drawdown",
    "exposure",
    "final_equity",
    "win_rate",
    "trade_count",
    "profit_factor",
)
TRADES = ("entry_price", "exit_price", "direction", "quantity", "pnl", "return", "bars_held")
KEEP = 2  # a bar without a cross keeps the previous target


def sma_rows(
    close: np.ndarray, fast: np.ndarray, slow: np.ndarray, short: np.ndarray
) -> np.ndarray:
    """SMA crossover targets of several sets at once (sets x bars), each SMA once."""
    smas = {int(n): sma(close, int(n)) for n in np.unique(np.concatenate([fast, slow]))}
    f = np.stack([smas[int(n)] for n in fast])
    s = np.stack([smas[int(n)] for n in slow])
    above = (f[:, :-1] < s[:, :-1]) & (f[:, 1:] > s[:, 1:])
    below = (f[:, :-1] > s[:, :-1]) & (f[:, 1:] < s[:, 1:])
    dec = np.full(f.shape, KEEP, dtype=np.int8)
    dec[:, 0] = 0
    dec[:, 1:][below] = np.broadcast_to(np.where(short, -1, 0)[:, None], below.shape)[below]
    dec[:, 1:][above] = 1
    idx = np.where(dec != KEEP, np.arange(dec.shape[1]), 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    return np.take_along_axis(dec, idx, axis=1)


class SmaPerSet:
    """An SMA crossover as a user strategy, per set only."""

    def __init__(self, fast: int = 10, slow: int = 30, mode: str = "long_only") -> None:
        if not 1 <= fast < slow:
            raise ConfigError(f"strategy: fast ({fast}) must be below slow ({slow})")
        self.fast, self.slow, self.mode = fast, slow, mode

    def signals(self, bars: Bars) -> np.ndarray:
        one = [self.fast], [self.slow], [self.mode == "long_short"]
        return sma_rows(bars.close, *(np.asarray(v) for v in one))[0]


class SmaBlock(SmaPerSet):
    """The same with the vectorised method: every set in one call."""

    @classmethod
    def signals_block(cls, bars: Bars, params: Mapping[str, np.ndarray]) -> np.ndarray:
        short = params["mode"] == "long_short"
        return sma_rows(bars.close, params["fast"], params["slow"], short)


@pytest.fixture(scope="module")
def bars() -> Bars:
    return synthetic_bars(["B"], n_bars=3000, seed=4, volatility=0.01, frequency="1h")["B"]


def ids(n: int) -> list[str]:
    return [f"c{i:03d}" for i in range(n)]


def rows_of(batch: pa.RecordBatch, cid: str) -> pa.RecordBatch:
    return batch.filter(pa.compute.equal(batch["container_id"], cid))


def assert_same_block(a: BlockRun, b: BlockRun) -> None:
    for name in METRICS:
        assert a.results[name].equals(b.results[name]), name
    assert a.trades.equals(b.trades)
    assert a.curves.equals(b.curves)


@pytest.mark.parametrize("span", [(0, 3000), (800, 2500)])
@pytest.mark.parametrize("cls", ["SmaBlock", "SmaPerSet"])
def test_user_block_equals_the_per_container_kernel(
    backend_name: str, bars: Bars, cls: str, span: tuple[int, int]
) -> None:
    start, stop = span
    kind = f"{MOD}:{cls}"
    traced = [i % 3 == 0 for i in range(len(SETS))]
    block = run_block_signals(bars, start, stop, kind, SETS, COSTS, ids(len(SETS)), "w", traced)
    results = block.results.to_pylist()
    assert [r["container_id"] for r in results] == ids(len(SETS))
    traded = 0
    for i, params in enumerate(SETS):
        run, want = per_set(bars, start, stop, kind, params)
        row = results[i]
        assert (row["fast"], row["slow"], row["mode"]) == (
            params["fast"],
            params["slow"],
            params["mode"],
        )
        assert row["bars"] == stop - start and row["window_id"] == "w"
        assert_metrics_close(row, want, f"set {i} {params}")
        mine = rows_of(block.trades, ids(len(SETS))[i])
        assert mine.num_rows == len(run.trades["pnl"]) == row["trade_count"]
        traded += mine.num_rows
        for name in TRADES:
            np.testing.assert_array_equal(mine[name].to_numpy(), run.trades[name], err_msg=name)
        entry = mine["entry_time"].cast(pa.int64()).to_numpy()
        np.testing.assert_array_equal(entry, run.trades["entry_ts"])
        curve = rows_of(block.curves, ids(len(SETS))[i])
        if traced[i]:
            np.testing.assert_array_equal(curve["equity"].to_numpy(), run.equity)
            np.testing.assert_array_equal(curve["position"].to_numpy(), run.position)
        else:
            assert curve.num_rows == 0
    assert traded > 0


def test_vectorised_and_per_set_give_the_same_block(backend_name: str, bars: Bars) -> None:
    traced = [i % 2 == 0 for i in range(len(SETS))]
    args = (bars, 300, 2700)
    rest = (SETS, COSTS, ids(len(SETS)), "w", traced)
    vec = run_block_signals(*args, f"{MOD}:SmaBlock", *rest)
    one = run_block_signals(*args, f"{MOD}:SmaPerSet", *rest)
    assert_same_block(vec, one)
    assert vec.results.equals(one.results)
    assert vec.trades.num_rows > 0 and vec.curves.num_rows == 6 * 2400


@pytest.mark.parametrize("span", [(0, 3000), (800, 2500)])
def test_a_built_in_written_as_a_user_strategy_gives_the_built_in_block(
    backend_name: str, bars: Bars, span: tuple[int, int]
) -> None:
    start, stop = span
    traced = [i % 4 == 0 for i in range(len(SETS))]
    rest = (SETS, COSTS, ids(len(SETS)), "w", traced)
    built_in = run_block(bars, start, stop, "sma_crossover", *rest)
    user = run_block_signals(bars, start, stop, f"{MOD}:SmaBlock", *rest)
    assert_same_block(user, built_in)
    assert user.indicators == 0 and built_in.indicators > 0
    # run_block takes a user strategy too, and goes the same way
    assert_same_block(run_block(bars, start, stop, f"{MOD}:SmaBlock", *rest), built_in)


@pytest.mark.parametrize(
    ("kind", "sets"),
    [
        (
            "momentum",
            [
                {"lookback": lb, "threshold": 0.002, "mode": m}
                for lb in (1, 20, 60)
                for m in ("long_only", "long_short")
            ],
        ),
        (
            "mean_reversion",
            [
                {"window": w, "entry_z": 1.0, "exit_z": 0.2, "mode": "long_short"}
                for w in (2, 20, 50)
            ],
        ),
    ],
)
def test_built_in_classes_per_set_give_the_built_in_block(
    backend_name: str, bars: Bars, kind: str, sets: list[dict[str, Any]]
) -> None:
    rest = (sets, COSTS, ids(len(sets)), "w", [True] * len(sets))
    via_signals = run_block_signals(bars, 200, 2900, kind, *rest)
    assert_same_block(via_signals, run_block(bars, 200, 2900, kind, *rest))
    assert via_signals.trades.num_rows > 0


def test_backends_fold_given_targets_alike(
    both_backends: tuple[ModuleType, ModuleType], bars: Bars
) -> None:
    rust, python = both_backends
    columns = pa.record_batch({"ts": bars.ts, "open": bars.open, "close": bars.close})
    short = np.array([m == "long_short" for m in (s["mode"] for s in SETS)])
    fast = np.array([s["fast"] for s in SETS])
    slow = np.array([s["slow"] for s in SETS])
    targets = sma_rows(bars.close[:2800], fast, slow, short)
    signals = pa.record_batch({"target": targets.reshape(-1)})
    traced = [True, False] * (len(SETS) // 2)
    kw = {"traced": traced, "commission_bps": 1.0, "slippage_bps": 2.0, "periods_per_year": 8760.0}
    r = rust.backtest_block_signals(columns, signals, len(SETS), 150, 2800, **kw)
    p = python.backtest_block_signals(columns, signals, len(SETS), 150, 2800, **kw)
    params = params_batch("sma_crossover", SETS)
    built = rust.backtest_block(columns, "sma_crossover", params, 150, 2800, **kw)
    assert r["results"].equals(built["results"])
    assert r["trades"].equals(built["trades"]) and r["curves"].equals(built["curves"])
    assert r["results"].schema == p["results"].schema
    for name in r["results"].schema.names:
        np.testing.assert_allclose(
            r["results"][name].to_numpy(zero_copy_only=False),
            p["results"][name].to_numpy(zero_copy_only=False),
            rtol=1e-9,
            err_msg=name,
        )
    assert r["trades"].equals(p["trades"]) and r["curves"].equals(p["curves"])
    assert r["indicators"] == p["indicators"] == 0


def test_threads_do_not_change_the_block(backend: ModuleType, bars: Bars) -> None:
    columns = pa.record_batch({"ts": bars.ts, "open": bars.open, "close": bars.close})
    k = 40
    fast = np.arange(1, k + 1)
    targets = sma_rows(bars.close, fast, np.full(k, 50), fast % 2 == 0)
    signals = pa.record_batch({"target": targets.reshape(-1)})
    one = backend.backtest_block_signals(columns, signals, k, threads=1)
    two = backend.backtest_block_signals(columns, signals, k, threads=2)
    assert one["threads"] == 1
    assert two["threads"] == (2 if backend.__name__ == "phasekit._core" else 1)
    assert one["results"].equals(two["results"]) and one["trades"].equals(two["trades"])


# ------------------------------------------------------------------ bad targets


class Vectorised:
    """``signals_block`` returns what ``how`` says for every set (``how`` is a column)."""

    def __init__(self, how: str = "ok") -> None:
        self.how = how

    def signals(self, bars: Bars) -> np.ndarray:
        return np.zeros(len(bars), dtype=np.int8)

    @staticmethod
    def signals_block(bars: Bars, params: Mapping[str, np.ndarray]) -> Any:
        k, n = params["how"].shape[0], len(bars)
        how = str(params["how"][-1])
        out = np.zeros((k, n))
        if how == "rows":
            return out[:-1]
        if how == "flat":
            return out.reshape(-1)
        if how == "text":
            return out.astype(str)
        if how == "nan":
            out[1, 7] = np.nan
        if how == "two":
            out[2, 11] = 2
        if how == "half":
            out[1, 3] = 0.5
        if how == "bool":
            return out == 0
        return out


class PerSet:
    """``signals`` returns what ``how`` says."""

    def __init__(self, how: str = "ok", level: int = 1) -> None:
        if level < 0:
            raise ConfigError(f"strategy.level: {level} must be at least 0")
        self.how, self.level = how, level

    def signals(self, bars: Bars) -> Any:
        n = len(bars)
        if self.how == "short":
            return np.zeros(n - 1)
        if self.how == "nan":
            out = np.zeros(n)
            out[4] = np.nan
            return out
        if self.how == "three":
            return np.full(n, 3)
        if self.how == "floats":
            return [0.0] * n
        if self.how == "boom":
            raise RuntimeError("the strategy broke")
        return np.full(n, self.level, dtype=np.int64)


class InstanceMethod:
    def signals(self, bars: Bars) -> np.ndarray:
        return np.zeros(len(bars), dtype=np.int8)

    def signals_block(self, bars: Bars, params: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.zeros((1, len(bars)), dtype=np.int8)


class Keywords:
    """Parameters through ``**kwargs``; records the columns ``signals_block`` got."""

    seen: dict[str, np.ndarray] = {}

    def __init__(self, window: int = 5, **extra: Any) -> None:
        self.window = window

    def signals(self, bars: Bars) -> np.ndarray:
        return np.zeros(len(bars), dtype=np.int8)

    @classmethod
    def signals_block(cls, bars: Bars, params: Mapping[str, np.ndarray]) -> np.ndarray:
        cls.seen = dict(params)
        return np.zeros((len(params["window"]), len(bars)), dtype=np.int8)


def user_block(bars: Bars, cls: str, sets: list[dict[str, Any]]) -> BlockRun:
    return run_block_signals(bars, 0, 400, f"{MOD}:{cls}", sets, COSTS, ids(len(sets)), "w")


VECTORISED = f"strategy '{MOD}:Vectorised' signals_block returned"


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("rows", rf"{VECTORISED} targets of shape \(2, 400\); expected \(3, 400\): a row of 400"),
        ("flat", rf"{VECTORISED} targets of shape \(1200,\); expected \(3, 400\)"),
        ("text", rf"{VECTORISED} targets of dtype <U32; allowed: integers, booleans or floats"),
        ("nan", rf"c001 .*parameter set 1: {VECTORISED} target nan at bar 7; allowed: -1, 0, 1"),
        ("two", rf"c002 .*parameter set 2: {VECTORISED} target 2.0 at bar 11; allowed: -1, 0, 1"),
        ("half", rf"c001 .*parameter set 1: {VECTORISED} target 0.5 at bar 3; allowed"),
    ],
)
def test_bad_block_targets_are_named(backend_name: str, bars: Bars, how: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        user_block(bars, "Vectorised", [{}, {}, {"how": how}])


def test_bool_and_float_targets_are_taken(backend_name: str, bars: Bars) -> None:
    long_all = user_block(bars, "Vectorised", [{}, {"how": "bool"}])
    assert long_all.results["exposure"].to_pylist() == [399 / 400] * 2
    flat = user_block(bars, "Vectorised", [{}, {"how": "ok"}])
    assert flat.results["trade_count"].to_pylist() == [0, 0]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            [{}, {"how": "short"}],
            rf"c001 .*parameter set 1: strategy '{MOD}:PerSet' returned \(399,\) signals for 400",
        ),
        ([{}, {}, {"how": "nan"}], r"c002 .*parameter set 2: .* target nan at bar 4; allowed"),
        ([{"how": "three"}], r"c000 .*parameter set 0: .* target 3 at bar 0; allowed: -1, 0, 1"),
        ([{}, {"level": -1}], r"c001 .*parameter set 1: strategy\.level: -1 must be at least 0"),
        ([{}, {"levels": 2}], r"c001 .*parameter set 1: strategy .*bad parameters \{'levels': 2\}"),
    ],
)
def test_bad_per_set_targets_and_parameters_are_named(
    backend_name: str, bars: Bars, sets: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        user_block(bars, "PerSet", sets)


def test_a_failing_set_keeps_its_error_and_is_named(backend_name: str, bars: Bars) -> None:
    with pytest.raises(RuntimeError, match="the strategy broke") as info:
        user_block(bars, "PerSet", [{}, {"how": "boom"}])
    notes = info.value.__notes__
    assert notes[0].startswith(f"parameter set 1: strategy '{MOD}:PerSet'")
    assert notes[1] == "container c001 {'how': 'boom'}"


def test_per_set_values_reach_the_fold(backend_name: str, bars: Bars) -> None:
    block = user_block(bars, "PerSet", [{"level": 0}, {"level": 1}])
    assert block.results["exposure"].to_pylist() == [0.0, 399 / 400]
    assert block.results["level"].to_pylist() == [0, 1]
    assert block.results["how"].to_pylist() == ["ok", "ok"]


def _columns(sets: list[dict[str, Any]]) -> SetColumns:
    """The sets as columns, the first key's value (set 0's) shared by all."""
    keys = tuple(sets[0])
    varying = {k: np.fromiter((p[k] for p in sets), dtype=object) for k in keys[1:]}
    return SetColumns(keys, {keys[0]: sets[0][keys[0]]}, varying, len(sets))


@pytest.mark.parametrize("cls", ["SmaPerSet", "SmaBlock"])
def test_set_columns_give_the_block_of_the_sets_as_dicts(
    backend_name: str, bars: Bars, cls: str
) -> None:
    sets = [{"mode": "long_short", "fast": f, "slow": s} for f, s in [(2, 9), (5, 40), (9, 40)]]
    columns = _columns(sets)
    assert list(columns) == sets
    by_columns = user_block(bars, cls, columns)  # type: ignore[arg-type]
    assert_same_block(by_columns, user_block(bars, cls, sets))
    assert by_columns.results["fast"].to_pylist() == [2, 5, 9]


def test_set_columns_are_checked_once_and_a_bad_name_names_set_0(bars: Bars) -> None:
    block = block_params(f"{MOD}:PerSet", _columns([{"how": "ok", "level": 0}, {"level": 1}]))
    assert block.size == 2 and block.columns["how"].tolist() == ["ok", "ok"]
    assert block.columns["level"].tolist() == [0, 1]
    block = block_params(f"{MOD}:PerSet", _columns([{"level": 3}, {"level": 4}]))
    assert block.columns["how"].tolist() == ["ok", "ok"]  # the default, as a column
    assert block.columns["level"].tolist() == [3, 3]  # shared by the sets
    with pytest.raises(ConfigError, match=r"parameter set 0: .*bad parameters \{'levels': 2\}"):
        block_params(f"{MOD}:PerSet", _columns([{"levels": 2}, {"levels": 3}]))


def test_the_first_set_the_constructor_cannot_take_is_named(bars: Bars) -> None:
    sets = [{}, {"level": 1}, {"level": 2}, {"levels": 2}, {"levels": 3}, {"level": 0}]
    with pytest.raises(ConfigError, match=r"parameter set 3: .*bad parameters \{'levels': 2\}"):
        block_params(f"{MOD}:PerSet", sets)
    with pytest.raises(ConfigError, match=r"parameter set 2: .*no value for 'tag'"):
        block_params(Keywords, [{"tag": "a"}, {"tag": "b", "window": 2}, {"window": 3}])


def test_per_set_targets_of_unlike_types_are_stacked(backend_name: str, bars: Bars) -> None:
    block = user_block(bars, "PerSet", [{"level": 1}, {"how": "floats"}])
    assert block.results["exposure"].to_pylist() == [399 / 400, 0.0]


def test_signals_block_must_be_called_on_the_class(bars: Bars) -> None:
    with pytest.raises(ConfigError, match="signals_block must be a classmethod or staticmethod"):
        block_signals(f"{MOD}:InstanceMethod", bars, [{}])


def test_signals_block_gets_columns_with_defaults(bars: Bars) -> None:
    got = block_signals(Keywords, bars, [{"window": 3, "tag": "a"}, {"tag": "b"}])
    assert got.shape == (2, len(bars)) and got.dtype == np.int8 and got.flags.c_contiguous
    assert list(Keywords.seen) == ["window", "tag"]
    assert Keywords.seen["window"].tolist() == [3, 5]
    assert Keywords.seen["tag"].tolist() == ["a", "b"]
    with pytest.raises(ConfigError, match=r"parameter set 1: .*no value for 'tag'"):
        block_signals(Keywords, bars, [{"tag": "a"}, {}])
    assert block_signals(Keywords, bars, []).shape == (0, len(bars))


def test_a_parameter_named_as_a_result_column_is_refused(bars: Bars) -> None:
    with pytest.raises(ConfigError, match="strategy parameter 'sharpe_ratio' has the name"):
        user_block(bars, "Keywords", [{"sharpe_ratio": 1}])


def test_as_targets_checks_one_set() -> None:
    np.testing.assert_array_equal(as_targets([1.0, -1.0, 0.0], (3,)), [1, -1, 0])
    with pytest.raises(ConfigError, match=r"strategy returned \(2,\) signals for 3 bars"):
        as_targets([1, 0], (3,))
    with pytest.raises(ConfigError, match="target -2 at bar 1; allowed: -1, 0, 1"):
        as_targets(np.array([0, -2, 0], dtype=np.int8), (3,))
    mine = np.zeros(4, dtype=np.int8)
    assert as_targets(mine, (4,)) is mine  # int8 is taken as it is


def test_user_strategies_are_supported_by_blocks() -> None:
    assert supports_block(f"{MOD}:SmaBlock") and supports_block("momentum")
    assert not supports_block("breakout")


def test_bad_kernel_calls(backend: ModuleType, bars: Bars) -> None:
    columns = pa.record_batch({"ts": bars.ts, "open": bars.open, "close": bars.close})
    n = len(bars)
    good = np.zeros((3, n), dtype=np.int8)
    signals = pa.record_batch({"target": good.reshape(-1)})
    call = backend.backtest_block_signals
    with pytest.raises(InvalidArgument, match=rf"signals: {3 * n} targets for 2 parameter sets"):
        call(columns, signals, 2)
    with pytest.raises(InvalidArgument, match=r"targets for 3 parameter sets of 100 bars"):
        call(columns, signals, 3, 0, 100)
    bad = good.copy()
    bad[1, 9] = -3
    with pytest.raises(
        ConfigError, match="parameter set 1: strategy returned target -3 at bar 9"
    ) as info:
        call(columns, pa.record_batch({"target": bad.reshape(-1)}), 3)
    assert info.value.set_index == 1  # type: ignore[attr-defined]
    wide = pa.record_batch({"target": good.reshape(-1).astype(np.int64)})
    with pytest.raises(
        InvalidArgument, match=r"signals: column 'target' is (?i:int64), expected int8"
    ):
        call(columns, wide, 3)
    with pytest.raises(InvalidArgument, match="signals: no column 'target'"):
        call(columns, pa.record_batch({"t": good.reshape(-1)}), 3)
    with pytest.raises(InvalidArgument, match="traced: 1 flags for 3 parameter sets"):
        call(columns, signals, 3, traced=[True])
    with pytest.raises(InvalidArgument, match="threads: 0 must be at least 1"):
        call(columns, signals, 3, threads=0)
    with pytest.raises(ConfigError, match=r"portfolio\.fraction: 1\.5 must be in"):
        call(columns, signals, 3, fraction=1.5)
    with pytest.raises(InvalidArgument, match=r"window 9\.\.9 is not inside"):
        call(columns, signals, 3, 9, 9)
    empty = call(columns, pa.record_batch({"target": pa.array([], pa.int8())}), 0)
    assert empty["results"].num_rows == 0 and empty["indicators"] == 0
