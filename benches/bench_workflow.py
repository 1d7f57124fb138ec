"""Workflow benchmarks: a parameter search end to end, its containers, its memory bound,
and the same SMA grid in backtesting.py and vectorbt.

Groups (``items`` = containers, i.e. parameter sets run):

* ``workflow:engines``: ``phasekit run`` of 1,000 SMA sets over 100,000 minute bars,
  single pass, file mode, 2 workers, rust: ``engine: block`` (blocks of sets, one block
  kernel call each, per-window tables) vs ``engine: container`` (one container at a
  time).

* ``workflow:sweep``: the same sweep through ``phasekit.run`` in this process (imports
  warm), rust and python backends, against vectorbt doing the same (the goal of issue
  11: at most 1.0 s, at least 50x vectorbt, rust at least 5x python).

* ``workflow:grid`` (2 workers) and ``workflow:grid-1-worker``: ``phasekit run
  examples/optimization_1000_containers.yaml``, 1,000 SMA sets over 100,000 minute bars,
  in a subprocess, ``--backend rust`` vs ``python``; ``extra_info`` has the peak RSS of
  the run's largest process (``RUSAGE_CHILDREN`` of a small launcher, see
  ``cli_run``). With 2 workers the parent, which stores every container's results and
  catalog row, is the bottleneck of the rust run.
* ``workflow:container``: the worker side alone, in this process: 100 portfolio
  containers over 100,000 bars (kernel, events, tracing, trades), nothing stored.
* ``workflow:memory``: 10,000 containers over 5,000 bars with PORTFOLIO_UPDATE traced
  (an 80 KB equity curve each, 800 MB in all) under a 256 MB hybrid budget, in a
  subprocess; the goal is a peak RSS within the budget plus the RSS of the same run with
  20 containers plus 64 MB (``extra_info["within_goal"]``, ``excess_mb``). Outside the
  budget the parent keeps a few KB per container (its summary, the ranking, the
  aggregate), which is what exceeds the margin at 10,000 containers.
* ``workflow:peers``: 105 SMA pairs (fast < slow from 15 windows) over 20,000 minute
  bars, long only, next-open fills, no costs: phasekit (``rust``, in process, results
  and catalog written, 2 workers), backtesting.py ``Backtest.optimize`` (its own process
  pool) and vectorbt (``MA.run_combs`` + ``Portfolio.from_signals``, one vectorised
  call). Before timing, one pair's closed trades are checked equal across the three.
  The grid is smaller than ``workflow:grid`` because backtesting.py needs about 0.2 s
  per set at 20,000 bars here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import phasekit
from phasekit.backend import backend_module
from phasekit.backtest.bars import Bars, synthetic_bars
from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.backtest.strategies import sma
from phasekit.tracing import TracerSettings
from phasekit.workflow.executor import DataSpec, bars_for, run_batch
from phasekit.workflow.sequences import Span
from phasekit.workflow.topology import PortfolioJob

ROOT = Path(__file__).resolve().parent.parent
GRID_EXAMPLE = ROOT / "examples" / "optimization_1000_containers.yaml"
CLI = (sys.executable, "-m", "phasekit.cli", "run")
MB = 1024 * 1024
BUDGET_MB = 256
MARGIN_MB = 64


# ---------------------------------------------------------------- subprocess runs


# A small launcher: a forked child starts with its parent's peak RSS (kept across exec),
# so the CLI is started from this ~10 MB interpreter, not from the benchmark process,
# and its RUSAGE_CHILDREN then covers exactly the CLI and the workers it reaped.
LAUNCHER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "open(sys.argv[1], 'w').write(str(peak))\n"
    "sys.exit(rc)\n"
)


def cli_run(config: Path, results: Path, *args: str) -> tuple[dict[str, Any], float]:
    """``phasekit run CONFIG --json``; returns its summary and the peak RSS (MB) of its
    largest process (the CLI or one of its workers)."""
    with tempfile.NamedTemporaryFile(suffix=".rss") as rss:
        command = [*CLI, str(config), "--json", "--results-dir", str(results), *args]
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCHER, rss.name, *command],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        peak_kb = int(Path(rss.name).read_text())
    return json.loads(proc.stdout), peak_kb / 1024


def _rounds(benchmark: Any, fn: Callable[[], Any], rounds: int) -> Any:
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


def grid(benchmark: Any, backend: str, workers: int, tmp_path: Path) -> None:
    rss: list[float] = []

    def once() -> dict[str, Any]:
        results = Path(tempfile.mkdtemp(dir=tmp_path))
        args = ("--backend", backend, "--workers", str(workers))
        summary, peak = cli_run(GRID_EXAMPLE, results, *args)
        rss.append(peak)
        return summary

    summary = _rounds(benchmark, once, 3 if backend == "rust" else 1 + (workers == 2))
    phase = summary["phases"]["parameter_search"]
    assert summary["status"] == "completed" and phase["containers"] == 1000
    benchmark.extra_info.update(
        items=1000,
        unit="containers",
        bars=100_000,
        workers=workers,
        peak_rss_mb=round(max(rss), 1),
        best=phase["best"]["parameters"],
        best_sharpe=phase["best"]["metrics"]["sharpe_ratio"],
    )


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_grid_end_to_end(benchmark: Any, backend: str, tmp_path: Path) -> None:
    benchmark.group = "workflow:grid"
    grid(benchmark, backend, 2, tmp_path)


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_grid_one_worker(benchmark: Any, backend: str, tmp_path: Path) -> None:
    benchmark.group = "workflow:grid-1-worker"
    grid(benchmark, backend, 1, tmp_path)


SWEEP: dict[str, Any] = {
    "workflow": "optimization",
    "run_name": "sweep",
    "data_flow": {"mode": "file"},
    "data": {
        "symbols": ["SPY"],
        "start": "2020-01-02",
        "n_bars": 100_000,
        "frequency": "1min",
        "seed": 1,
        "volatility": 0.001,
    },
    "strategy": {"type": "sma_crossover", "mode": "long_only"},
    "portfolio": {"initial_capital": 100_000, "commission_bps": 1, "slippage_bps": 1},
    "parameter_space": {
        "strategy.fast": {"range": [5, 105, 5]},
        "strategy.slow": {"range": [110, 610, 10]},
        "constraints": ["strategy.fast < strategy.slow"],
    },
    "objective_function": {"name": "sharpe_ratio", "direction": "maximize"},
    "top_k": 25,
}
"""The sweep of ``workflow:engines``: the grid example's 1,000 sets over 100,000 minute
bars, single pass, results in files (the phase's tables and catalog rows written)."""


@pytest.mark.parametrize("engine", ["block", "container"])
def test_sweep_engines(benchmark: Any, engine: str, tmp_path: Path) -> None:
    """``workflow:engines``: ``phasekit run`` (CLI, rust, 2 workers) of :data:`SWEEP`
    with ``engine: block`` (blocks of sets, one kernel call each, window tables) and
    ``engine: container`` (one container at a time, its own files)."""
    benchmark.group = "workflow:engines"
    config = tmp_path / "sweep.yaml"
    config.write_text(json.dumps({**SWEEP, "engine": engine}))
    rss: list[float] = []

    def once() -> dict[str, Any]:
        results = Path(tempfile.mkdtemp(dir=tmp_path))
        summary, peak = cli_run(config, results, "--backend", "rust", "--workers", "2")
        rss.append(peak)
        return summary

    summary = _rounds(benchmark, once, 3 if engine == "block" else 1)
    phase = summary["phases"]["parameter_search"]
    assert summary["status"] == "completed" and phase["containers"] == 1000
    benchmark.extra_info.update(
        items=1000,
        unit="containers",
        bars=100_000,
        workers=2,
        engine=engine,
        peak_rss_mb=round(max(rss), 1),
        best_sharpe=phase["best"]["metrics"]["sharpe_ratio"],
    )


@pytest.mark.parametrize("impl", ["rust", "python", "vectorbt"])
def test_sweep_in_process(benchmark: Any, impl: str, tmp_path: Path) -> None:
    """``workflow:sweep``: :data:`SWEEP` through ``phasekit.run`` in this process (2
    workers, block engine, results and catalog written; imports warm, as for vectorbt)
    on each backend, against vectorbt computing the same grid's signals, portfolio with
    fees and slippage, Sharpe, total return, drawdown and trade count
    (``bench_kernel._vectorbt_all``, in chunks of 250 sets; ``kernel:block`` checks one
    pair's trades equal)."""
    benchmark.group = "workflow:sweep"
    if impl == "vectorbt":
        pytest.importorskip("vectorbt")
        from bench_kernel import PAIRS, _vectorbt, _vectorbt_all

        bars = bars_for(DataSpec.from_config(SWEEP["data"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _vectorbt(bars, PAIRS[:2])  # warm: numba compilation
            stats = _rounds(benchmark, lambda: _vectorbt_all(bars), 1)
        assert stats["trade_count"].shape == (1000,)
    else:
        from phasekit.workflow import run

        def once() -> Any:
            res = run(SWEEP, workers=2, results_dir=tempfile.mkdtemp(dir=tmp_path), backend=impl)
            phase = res.phases["parameter_search"]
            assert res.status == "completed" and phase.containers == 1000
            res.close()
            return res

        if impl == "rust":
            once()  # warm: imports, the bars' cache
        _rounds(benchmark, once, 5 if impl == "rust" else 1)
    benchmark.extra_info.update(items=1000, unit="containers", bars=100_000, impl=impl)


# ---------------------------------------------------------------- the worker side


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_containers_in_process(benchmark: Any, backend: str) -> None:
    benchmark.group = "workflow:container"
    before = phasekit.get_backend()
    phasekit.set_backend(backend)
    try:
        spec = DataSpec.from_config(
            {"n_bars": 100_000, "frequency": "1min", "seed": 1, "volatility": 0.001}
        )
        bars = bars_for(spec)
        tracer = TracerSettings(periods_per_year=bars.periods_per_year)
        pairs = [(f, s) for f in range(5, 55, 5) for s in range(110, 210, 10)]
        jobs = [
            PortfolioJob(
                f"portfolio_{i:05d}",
                "full",
                Span(0, len(bars)),
                "sma_crossover",
                {"fast": f, "slow": s},
                {"strategy.fast": f, "strategy.slow": s},
                PortfolioSettings(commission_bps=1, slippage_bps=1),
                tracer,
                bars.symbol,
            )
            for i, (f, s) in enumerate(pairs)
        ]
        run_batch(spec, jobs[:5])  # warm: imports, first kernel call
        outcomes = _rounds(benchmark, lambda: run_batch(spec, jobs), 3)
    finally:
        phasekit.set_backend(before)
    assert len(outcomes) == len(jobs)
    benchmark.extra_info.update(
        items=len(jobs),
        unit="containers",
        bars=100_000,
        trades=int(sum(o.trades.num_rows for o in outcomes)),
    )


# ---------------------------------------------------------------- memory bound


MEMORY_CONFIG = """\
workflow: optimization
run_name: memory_bound
data: {{n_bars: {bars}, frequency: 1min, seed: 3, volatility: 0.001}}
strategy: {{type: sma_crossover}}
data_flow: {{mode: hybrid, memory_limit_mb: {budget}}}
event_tracing: [POSITION_OPEN, POSITION_CLOSE, FILL, PORTFOLIO_UPDATE]
retention_policy: sliding_window
sliding_window_size: 1000
parameter_space:
  strategy.fast: {{range: [2, {fast_stop}, 1]}}
  strategy.slow: {{range: [200, {slow_stop}, 1]}}
"""


def memory_config(path: Path, fast: int, slow: int) -> Path:
    """``fast`` x ``slow`` parameter sets."""
    text = MEMORY_CONFIG.format(
        bars=5000, budget=BUDGET_MB, fast_stop=2 + fast, slow_stop=200 + slow
    )
    path.write_text(text)
    return path


def test_memory_10k_containers(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "workflow:memory"
    small = memory_config(tmp_path / "small.yaml", 2, 10)
    _, baseline = cli_run(small, tmp_path / "baseline", "--workers", "2")
    big = memory_config(tmp_path / "big.yaml", 100, 100)
    rss: list[float] = []
    stats: dict[str, Any] = {}

    def once() -> dict[str, Any]:
        summary, peak = cli_run(big, Path(tempfile.mkdtemp(dir=tmp_path)), "--workers", "2")
        rss.append(peak)
        phase = Path(summary["results"]) / "parameter_search" / "phase_summary.json"
        stores = json.loads(phase.read_text())["store_stats"]  # "<window>/<mode>": stats
        hybrid = [v for k, v in stores.items() if k.endswith("/hybrid")]
        assert len(hybrid) == 1, f"expected one hybrid store, got {sorted(stores)}"
        stats.update(hybrid[0])
        return summary

    summary = _rounds(benchmark, once, 1)
    assert summary["phases"]["parameter_search"]["containers"] == 10_000
    limit = BUDGET_MB + baseline + MARGIN_MB
    benchmark.extra_info.update(
        items=10_000,
        unit="containers",
        impl="rust",  # phasekit run's default backend
        bars=5000,
        budget_mb=BUDGET_MB,
        baseline_rss_mb=round(baseline, 1),
        margin_mb=MARGIN_MB,
        limit_mb=round(limit, 1),
        peak_rss_mb=round(max(rss), 1),
        within_goal=max(rss) <= limit,
        excess_mb=round(max(0.0, max(rss) - limit), 1),
        store_peak_mb=round(stats.get("peak_bytes_in_memory", 0) / MB, 1),
        spilled_mb=round(stats.get("spilled_bytes", 0) / MB, 1),
    )


# ---------------------------------------------------------------- peers

PEER_BARS = 20_000
PEER_WINDOWS = list(range(5, 80, 5))  # 15 windows: 105 pairs fast < slow
PEER_PAIRS = [(f, s) for i, f in enumerate(PEER_WINDOWS) for s in PEER_WINDOWS[i + 1 :]]
CHECK_PAIR = (10, 40)


@pytest.fixture(scope="module")
def peer_bars() -> Bars:
    return synthetic_bars(["SYN"], n_bars=PEER_BARS, frequency="1min", seed=1, volatility=0.001)[
        "SYN"
    ]


def _frame(bars: Bars) -> Any:
    import pandas as pd

    return pd.DataFrame(
        {
            "Open": bars.open,
            "High": bars.high,
            "Low": bars.low,
            "Close": bars.close,
            "Volume": bars.volume,
        },
        index=pd.to_datetime(bars.ts),
    )


def _phasekit_trades(bars: Bars) -> list[tuple[int, int, float]]:
    out = backend_module("rust").backtest(
        pa.record_batch({"ts": bars.ts, "open": bars.open, "close": bars.close}),
        sma=(*CHECK_PAIR, False),
    )
    t = out["trades"].to_pydict()
    index = {int(ts): i for i, ts in enumerate(bars.ts)}
    return [
        (index[e], index[x], p) for e, x, p in zip(t["entry_ts"], t["exit_ts"], t["entry_price"])
    ]


try:  # a peer, from the bench extra; its optimize pickles the strategy class
    from backtesting import Strategy
    from backtesting.lib import crossover

    class SmaCross(Strategy):  # type: ignore[misc]
        fast = 10
        slow = 40

        def init(self) -> None:
            # phasekit's SMA (numpy cumsum differences), so both see the same averages
            self.f = self.I(sma, self.data.Close, self.fast)
            self.s = self.I(sma, self.data.Close, self.slow)

        def next(self) -> None:
            if crossover(self.f, self.s):
                if not self.position:
                    self.buy()
            elif crossover(self.s, self.f):
                self.position.close()

except ImportError:  # pragma: no cover - the peer is not installed
    SmaCross = None  # type: ignore[misc,assignment]


def _backtest(bars: Bars) -> Any:
    from backtesting import Backtest

    return Backtest(_frame(bars), SmaCross, cash=100_000, commission=0.0, finalize_trades=False)


def _vectorbt(bars: Bars) -> Any:
    import pandas as pd
    import vectorbt as vbt

    index = pd.to_datetime(bars.ts)
    close = pd.Series(bars.close, index=index)
    fast, slow = vbt.MA.run_combs(close, window=PEER_WINDOWS, r=2, short_names=["fast", "slow"])
    entries = fast.ma_crossed_above(slow).vbt.fshift(1)  # decided on the close,
    exits = fast.ma_crossed_below(slow).vbt.fshift(1)  # filled at the next open
    return vbt.Portfolio.from_signals(
        close,
        entries,
        exits,
        price=pd.Series(bars.open, index=index),
        init_cash=100_000,
        freq="1min",
    )


def check_same_trades(bars: Bars) -> int:
    """One pair's closed trades (entry bar, exit bar, entry price) in the three."""
    pytest.importorskip("backtesting")
    pytest.importorskip("vectorbt")
    ours = _phasekit_trades(bars)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = _backtest(bars).run(fast=CHECK_PAIR[0], slow=CHECK_PAIR[1])
    bt = stats["_trades"]
    theirs = list(zip(bt["EntryBar"], bt["ExitBar"], bt["EntryPrice"]))
    assert [(e, x) for e, x, _ in ours] == [(int(e), int(x)) for e, x, _ in theirs]
    np.testing.assert_allclose([p for *_, p in ours], [p for *_, p in theirs], rtol=1e-12)
    records = _vectorbt(bars).trades.records
    col = PEER_PAIRS.index(CHECK_PAIR)
    mine = records[(records["col"] == col) & (records["status"] == 1)]
    assert [(e, x) for e, x, _ in ours] == list(zip(mine["entry_idx"], mine["exit_idx"]))
    np.testing.assert_allclose([p for *_, p in ours], mine["entry_price"], rtol=1e-12)
    return len(ours)


@pytest.fixture(scope="module")
def same_trades(peer_bars: Bars) -> int:
    return check_same_trades(peer_bars)


def _phasekit_grid(bars: Bars, tmp: Path) -> Callable[[], Any]:
    cfg = {
        "workflow": "optimization",
        "run_name": "peers",
        "data": {"n_bars": PEER_BARS, "frequency": "1min", "seed": 1, "volatility": 0.001},
        "strategy": {"type": "sma_crossover"},
        "parameter_space": {
            "strategy.fast": PEER_WINDOWS,
            "strategy.slow": PEER_WINDOWS,
            "constraints": ["strategy.fast < strategy.slow"],
        },
        "data_flow": {"mode": "hybrid", "memory_limit_mb": 256},
    }

    def once() -> Any:
        from phasekit.workflow import run

        res = run(cfg, workers=2, results_dir=tempfile.mkdtemp(dir=tmp), backend="rust")
        assert res.phases["parameter_search"].containers == len(PEER_PAIRS)
        res.close()
        return res

    return once


@pytest.mark.parametrize("peer", ["rust", "backtesting.py", "vectorbt"])
def test_peers_sma_grid(
    benchmark: Any, peer: str, peer_bars: Bars, same_trades: int, tmp_path: Path
) -> None:
    benchmark.group = "workflow:peers"
    if peer == "rust":
        _phasekit_grid(peer_bars, tmp_path)()  # warm: imports
        _rounds(benchmark, _phasekit_grid(peer_bars, tmp_path), 3)
    elif peer == "backtesting.py":
        bt = _backtest(peer_bars)

        def optimize() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return bt.optimize(
                    fast=PEER_WINDOWS,
                    slow=PEER_WINDOWS,
                    constraint=lambda p: p.fast < p.slow,
                    maximize="Sharpe Ratio",
                )

        _rounds(benchmark, optimize, 1)
    else:
        _vectorbt(peer_bars)  # warm: numba compilation
        pf = _rounds(benchmark, lambda: _vectorbt(peer_bars), 3)
        assert len(pf.wrapper.columns) == len(PEER_PAIRS)
    benchmark.extra_info.update(
        items=len(PEER_PAIRS), unit="containers", bars=PEER_BARS, checked_trades=same_trades
    )


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TQDM_DISABLE", "1")  # backtesting.py's progress bars
    yield
