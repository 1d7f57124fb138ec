"""The block kernel: 1,000 SMA crossover sets (20 fast x 50 slow windows, the sets of
``examples/optimization_1000_containers.yaml``) over 100,000 minute bars with costs
(1 bp commission, 1 bp slippage), every metric and the closed trades computed.

Group ``kernel:block`` (``items`` = parameter sets):

* ``rust``: ``phasekit.backtest.block.run_block`` on the rust backend, 2 threads (the
  machine's cores); ``rust-1-thread``: the same on one thread;
* ``python``: the same call on the pure-Python backend (numpy, vectorised over sets);
* ``vectorbt``: ``MA.run`` + ``Portfolio.from_signals`` with the same fees and slippage
  (next-open fills: the signals shifted by one bar, the open as the price), then Sharpe,
  total return, max drawdown and trade count; run over chunks of 250 sets, since all
  1,000 at once needs about 10 GB.

* ``rust-user-numpy``: the same sets as a user strategy (``SmaUser``) whose vectorised
  ``signals_block`` computes the crossover targets with numpy (each SMA once, sets in
  chunks), folded by ``run_block_signals`` on the rust backend, 2 threads;
* ``rust-user-given``: ``run_block_signals`` with targets computed before (``Given``
  hands back the same int8 array): the block path's own cost, the targets' check, their
  hand-over to Rust and the fold, without the strategy's numpy work.

Both user rows check their results and trades equal to the built-in block's.

``extra_info`` of the rust rows: ``ns_per_bar_step_core`` (wall time x threads / (sets x
bars)) and ``bar_steps_per_s_per_core``, against the 1-2 ns per bar per set of an SMA
crossover with running sums. Before timing, one pair's closed trades (entry and exit bar,
prices, quantity, pnl), total return and max drawdown are checked equal between
phasekit and vectorbt.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest
from numpy.typing import NDArray

import phasekit
from phasekit._pure.sim import sma
from phasekit.backtest.bars import Bars, synthetic_bars
from phasekit.backtest.block import BlockRun, run_block, run_block_signals
from phasekit.backtest.portfolio import PortfolioSettings

N_BARS = 100_000
FAST = list(range(5, 105, 5))
SLOW = list(range(110, 610, 10))
PAIRS = [(f, s) for f in FAST for s in SLOW]
CHECK_PAIR = (10, 200)
COSTS = PortfolioSettings(commission_bps=1.0, slippage_bps=1.0)
VBT_CHUNK = 250
IDS = [f"portfolio_{i:04d}" for i in range(len(PAIRS))]
SETS = [{"fast": f, "slow": s} for f, s in PAIRS]
USER_CHUNK = 50  # sets whose averages are stacked at once (50 x 100,000 float64: 40 MB)


def _crossover_rows(
    smas: dict[int, NDArray[np.float64]], fast: NDArray[np.int64], slow: NDArray[np.int64]
) -> NDArray[np.int8]:
    """Long-only crossover targets of a few sets from their averages."""
    f = np.stack([smas[int(n)] for n in fast])
    s = np.stack([smas[int(n)] for n in slow])
    up, down = f > s, f < s
    crossed = np.zeros(f.shape, dtype=bool)
    crossed[:, 1:] = (down[:, :-1] & up[:, 1:]) | (up[:, :-1] & down[:, 1:])
    idx = np.where(crossed, np.arange(f.shape[1], dtype=np.int32), np.int32(0))
    np.maximum.accumulate(idx, axis=1, out=idx)
    held = np.take_along_axis(up & crossed, idx, axis=1)
    return held.view(np.int8)


class SmaUser:
    """The SMA crossover (long only) as a user strategy with a vectorised block method."""

    def __init__(self, fast: int = 10, slow: int = 30) -> None:
        self.fast, self.slow = fast, slow

    def signals(self, bars: Bars) -> NDArray[np.int8]:
        smas = {n: sma(bars.close, n) for n in (self.fast, self.slow)}
        return _crossover_rows(smas, np.array([self.fast]), np.array([self.slow]))[0]

    @classmethod
    def signals_block(cls, bars: Bars, params: dict[str, NDArray[Any]]) -> NDArray[np.int8]:
        fast, slow = params["fast"], params["slow"]
        smas = {int(n): sma(bars.close, int(n)) for n in np.unique(np.r_[fast, slow])}
        out = np.empty((fast.shape[0], len(bars)), dtype=np.int8)
        for lo in range(0, fast.shape[0], USER_CHUNK):
            hi = lo + USER_CHUNK
            out[lo:hi] = _crossover_rows(smas, fast[lo:hi], slow[lo:hi])
        return out


class Given:
    """A user strategy whose block targets were computed before (``targets``)."""

    targets: NDArray[np.int8] = np.empty((0, 0), dtype=np.int8)

    def __init__(self, fast: int = 10, slow: int = 30) -> None:
        self.fast, self.slow = fast, slow

    def signals(self, bars: Bars) -> NDArray[np.int8]:
        raise NotImplementedError("Given runs as a block only")

    @classmethod
    def signals_block(cls, bars: Bars, params: dict[str, NDArray[Any]]) -> NDArray[np.int8]:
        return cls.targets


@pytest.fixture(scope="module")
def bars() -> Bars:
    return synthetic_bars(["SPY"], n_bars=N_BARS, frequency="1min", seed=1, volatility=0.001)["SPY"]


def _block(bars: Bars, backend: str, threads: int | None) -> Callable[[], BlockRun]:
    def once() -> BlockRun:
        before = phasekit.get_backend()
        phasekit.set_backend(backend)
        try:
            return run_block(
                bars, 0, N_BARS, "sma_crossover", SETS, COSTS, IDS, "w0", threads=threads
            )
        finally:
            phasekit.set_backend(before)

    return once


def _user_block(bars: Bars, strategy: type) -> Callable[[], BlockRun]:
    def once() -> BlockRun:
        before = phasekit.get_backend()
        phasekit.set_backend("rust")
        try:
            return run_block_signals(bars, 0, N_BARS, strategy, SETS, COSTS, IDS, "w0", threads=2)
        finally:
            phasekit.set_backend(before)

    return once


def _vectorbt(bars: Bars, pairs: list[tuple[int, int]]) -> tuple[Any, dict[str, np.ndarray]]:
    import pandas as pd
    import vectorbt as vbt

    index = pd.to_datetime(bars.ts)
    close = pd.Series(bars.close, index=index)
    fast = vbt.MA.run(close, window=[f for f, _ in pairs], short_name="fast")
    slow = vbt.MA.run(close, window=[s for _, s in pairs], short_name="slow")
    entries = fast.ma_crossed_above(slow).vbt.fshift(1)  # decided on the close,
    exits = fast.ma_crossed_below(slow).vbt.fshift(1)  # filled at the next open
    pf = vbt.Portfolio.from_signals(
        close,
        entries,
        exits,
        price=pd.Series(bars.open, index=index),
        init_cash=COSTS.initial_capital,
        fees=COSTS.commission_bps / 1e4,
        slippage=COSTS.slippage_bps / 1e4,
        freq="1min",
    )
    stats = {
        "sharpe_ratio": np.atleast_1d(pf.sharpe_ratio()),
        "total_return": np.atleast_1d(pf.total_return()),
        "max_drawdown": np.atleast_1d(pf.max_drawdown()),
        "trade_count": np.atleast_1d(pf.trades.count()),
    }
    return pf, stats


def _vectorbt_all(bars: Bars) -> dict[str, np.ndarray]:
    parts = [_vectorbt(bars, PAIRS[i : i + VBT_CHUNK])[1] for i in range(0, len(PAIRS), VBT_CHUNK)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def check_pair_trades(bars: Bars) -> int:
    """The closed trades, total return and max drawdown of CHECK_PAIR in phasekit (rust
    block) and vectorbt."""
    pytest.importorskip("vectorbt")
    block = _block(bars, "rust", None)()
    cid = IDS[PAIRS.index(CHECK_PAIR)]
    ours = block.trades.filter(pc.equal(block.trades["container_id"], cid))
    index = {int(ts): i for i, ts in enumerate(bars.ts)}
    entry = [index[int(t)] for t in ours["entry_time"].cast("int64").to_numpy()]
    exit_ = [index[int(t)] for t in ours["exit_time"].cast("int64").to_numpy()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pf, stats = _vectorbt(bars, [CHECK_PAIR])
    rec = pf.trades.records
    rec = rec[rec["status"] == 1]  # closed
    assert entry == list(rec["entry_idx"]) and exit_ == list(rec["exit_idx"])
    for mine, theirs in [
        ("entry_price", "entry_price"),
        ("exit_price", "exit_price"),
        ("quantity", "size"),
        ("pnl", "pnl"),
    ]:
        np.testing.assert_allclose(ours[mine].to_numpy(), rec[theirs], rtol=1e-9, err_msg=mine)
    row = block.results.filter(pc.equal(block.results["container_id"], cid)).to_pylist()[0]
    np.testing.assert_allclose(row["total_return"], stats["total_return"][0], rtol=1e-9)
    np.testing.assert_allclose(row["max_drawdown"], stats["max_drawdown"][0], rtol=1e-9)
    return len(entry)


@pytest.fixture(scope="module")
def same_trades(bars: Bars) -> int:
    return check_pair_trades(bars)


@pytest.mark.parametrize("impl", ["rust", "rust-1-thread", "python", "vectorbt"])
def test_block_1000_sets(benchmark: Any, impl: str, bars: Bars, same_trades: int) -> None:
    benchmark.group = "kernel:block"
    if impl == "vectorbt":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _vectorbt(bars, PAIRS[:2])  # warm: numba compilation
            stats = benchmark.pedantic(
                lambda: _vectorbt_all(bars), rounds=1, iterations=1, warmup_rounds=0
            )
        assert stats["trade_count"].shape == (len(PAIRS),)
    else:
        backend = "python" if impl == "python" else "rust"
        threads = 1 if impl == "rust-1-thread" else 2
        fn = _block(bars, backend, threads)
        rounds = 1 if impl == "python" else 3
        block = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
        assert block.results.num_rows == len(PAIRS)
        assert pc.sum(block.results["trade_count"]).as_py() == block.trades.num_rows > 0
        if impl != "python":
            used = block.threads
            seconds = benchmark.stats.stats.median
            ns = seconds * used / (len(PAIRS) * N_BARS) * 1e9
            benchmark.extra_info.update(
                threads=used, ns_per_bar_step_core=ns, bar_steps_per_s_per_core=1e9 / ns
            )
    benchmark.extra_info.update(
        impl=impl, items=len(PAIRS), unit="containers", bars=N_BARS, checked_trades=same_trades
    )


@pytest.mark.parametrize("impl", ["rust-user-numpy", "rust-user-given"])
def test_user_block_1000_sets(benchmark: Any, impl: str, bars: Bars) -> None:
    """A user strategy's block against the built-in block (one run each)."""
    benchmark.group = "kernel:block"
    built_in = _block(bars, "rust", 2)()
    if impl == "rust-user-given":
        Given.targets = SmaUser.signals_block(
            bars, {"fast": np.array([f for f, _ in PAIRS]), "slow": np.array([s for _, s in PAIRS])}
        )
    strategy = SmaUser if impl == "rust-user-numpy" else Given
    block = benchmark.pedantic(_user_block(bars, strategy), rounds=1, iterations=1)
    Given.targets = np.empty((0, 0), dtype=np.int8)
    for name in ("total_return", "sharpe_ratio", "max_drawdown", "trade_count"):
        assert block.results[name].equals(built_in.results[name]), name
    assert block.trades.equals(built_in.trades)
    seconds = benchmark.stats.stats.median
    ns = seconds * block.threads / (len(PAIRS) * N_BARS) * 1e9
    benchmark.extra_info.update(
        impl=impl,
        items=len(PAIRS),
        unit="containers",
        bars=N_BARS,
        threads=block.threads,
        ns_per_bar_step_core=ns,
        bar_steps_per_s_per_core=1e9 / ns,
    )
