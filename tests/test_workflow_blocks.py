"""Blocks: a window's containers in one block-kernel call per block reproduce what the
container path produces (metrics, events statistics, trades, equity curves) on both
backends and every sequence; the window tables, catalog rows and settings of block
windows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

import phasekit
from phasekit.backtest.metrics import segment_trade_metrics, trade_metrics
from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.catalog import open_catalog
from phasekit.catalog.blockrows import container_rows
from phasekit.config.vocab import OUTPUT_KINDS
from phasekit.errors import ConfigError
from phasekit.tracing import TracerSettings
from phasekit.workflow import run
from phasekit.workflow.blocks import (
    BLOCK_BYTES,
    EVENT_STATS,
    LANE_BLOCK,
    BlockJob,
    block_sizes,
    open_at_end,
    read_stream,
    run_block_job,
)
from phasekit.workflow.executor import DataSpec, Executor, bars_for, run_batch
from phasekit.workflow.sequences import Span
from phasekit.workflow.topology import PortfolioJob, run_portfolio

SPEC = DataSpec.from_config(
    {"source": "synthetic", "n_bars": 2500, "frequency": "1min", "seed": 3, "volatility": 0.002}
)
SETS = [
    {"fast": f, "slow": s, "mode": m}
    for f in (3, 5, 8)
    for s in (20, 45)
    for m in ("long_only", "long_short")
]
PORTFOLIO = PortfolioSettings(commission_bps=2, slippage_bps=1)
SPAN = Span(400, 2500)
TRACERS = {
    "default": {},
    "sliding": {"retention_policy": "sliding_window", "sliding_window_size": 40, "max_events": 40},
    "keep_all": {"retention_policy": "keep_all", "max_events": 90},
    "minimal": {"retention_policy": "minimal"},
    "fills_only": {"event_tracing": ("FILL",)},
    "close_and_updates": {
        "event_tracing": ("POSITION_CLOSE", "PORTFOLIO_UPDATE"),
        "retention_policy": "sliding_window",
        "sliding_window_size": 3000,
        "max_events": 3000,
    },
    "nothing": {"event_tracing": ()},
}


def _tracer(name: str) -> TracerSettings:
    ppy = bars_for(SPEC).periods_per_year
    return TracerSettings(periods_per_year=ppy, **TRACERS[name])  # type: ignore[arg-type]


def _sets_job(ids: tuple[str, ...], tracers: tuple[TracerSettings, ...]) -> BlockJob:
    """A block of :data:`SETS` over :data:`SPAN` (container ``ids[i]`` traced by
    ``tracers[i]``)."""
    return BlockJob("w", SPAN, "sma_crossover", tuple(SETS), PORTFOLIO, ids, tracers, "SYN")


@pytest.mark.parametrize("tracer", sorted(TRACERS))
def test_a_block_equals_its_containers(backend_name: str, tracer: str) -> None:
    """Every container's metrics and ring statistics, its trades (those of the ring's
    position book too) and its equity curve where traced."""
    settings = _tracer(tracer)
    ids = tuple(f"portfolio_{i:05d}" for i in range(len(SETS)))
    job = BlockJob(
        "w", SPAN, "sma_crossover", tuple(SETS), PORTFOLIO, ids, (settings,) * len(ids), "SYN"
    )
    outcome = run_block_job(SPEC, job)
    results, trades, curves = outcome.tables()
    bars = bars_for(SPEC)
    books: dict[str, pa.RecordBatch] = {}
    outs = []
    for cid, params in zip(ids, SETS):
        pjob = PortfolioJob(
            cid, "w", SPAN, "sma_crossover", params, params, PORTFOLIO, settings, "SYN"
        )

        def sink(container: Any, res: dict[str, Any], cid: str = cid) -> None:
            assert container.tracer is not None
            books[cid] = container.tracer.book.trades()

        run_portfolio(bars, pjob, sink)
        outs.extend(run_batch(SPEC, [pjob]))
    opened: set[int] = set()
    for out, row in zip(outs, results.to_pylist()):
        cid = out.job.container_id
        assert {k: row[f"events.{k}"] for k in EVENT_STATS} == out.results["events"], cid
        for name, value in out.results["metrics"].items():
            mine = row[name]
            assert (
                mine == value
                or (mine is None and value is None)
                or (np.isnan(mine) and np.isnan(value))
            ), (cid, name, mine, value)
        opened.add(out.results["events"]["open_positions"])
        # the trades, column by column
        own = trades.filter(pa.compute.equal(trades.column("container_id"), cid))
        for name in own.schema.names:
            assert own.column(name).to_pylist() == out.trades.column(name).to_pylist(), name
        # the ring's position book closed the same trades
        book = books[cid]
        assert book.column("open_ts").to_pylist() == [
            int(t.value) for t in own.column("entry_time").to_pylist()
        ]
        assert book.column("close_ts").to_numpy().tolist() == (
            own.column("exit_time").cast(pa.int64()).to_pylist()
        )
        assert book.column("entry_price").to_pylist() == own.column("entry_price").to_pylist()
        assert book.column("exit_price").to_pylist() == own.column("exit_price").to_pylist()
        signed = own.column("quantity").to_numpy() * own.column("direction").to_numpy()
        assert np.array_equal(book.column("quantity").to_numpy(), signed)
        np.testing.assert_allclose(
            book.column("pnl").to_numpy(), own.column("pnl").to_numpy(), rtol=1e-9, atol=1e-9
        )
        # the equity curve where PORTFOLIO_UPDATE is traced
        curve = curves.filter(pa.compute.equal(curves.column("container_id"), cid))
        if settings.keeps_equity:
            assert out.equity is not None
            assert curve.column("equity").to_pylist() == out.equity.column("equity").to_pylist()
        else:
            assert out.equity is None and curve.num_rows == 0
    # the block has sets with and without a position open at its end
    ends = open_at_end(results.to_batches()[0], trades.combine_chunks().to_batches()[0])
    assert set(ends.tolist()) == {True, False}
    if tracer == "default":
        assert opened == {0, 1}


def test_open_at_end_counts_the_bars_held(backend_name: str) -> None:
    ids = tuple(f"p_{i}" for i in range(len(SETS)))
    job = _sets_job(ids, (_tracer("default"),) * len(ids))
    results, trades, _ = run_block_job(SPEC, job).tables()
    is_open = open_at_end(results.to_batches()[0], trades.combine_chunks().to_batches()[0])
    outs = run_batch(
        SPEC,
        [
            PortfolioJob(
                cid, "w", SPAN, "sma_crossover", p, p, PORTFOLIO, _tracer("default"), "SYN"
            )
            for cid, p in zip(ids, SETS)
        ],
    )
    assert is_open.tolist() == [bool(o.results["events"]["open_positions"]) for o in outs]


def test_a_block_of_mixed_tracers_equals_blocks_of_one_tracer(backend_name: str) -> None:
    """Sets of one block under different tracers (grouped per tracer, some by a line
    and some by a ring each) get the statistics and trade metrics each gets in a block
    of its tracer alone (which :func:`test_a_block_equals_its_containers` checks against
    the containers)."""
    names = sorted(TRACERS)
    settings = {name: _tracer(name) for name in names}
    ids = tuple(f"portfolio_{i:05d}" for i in range(len(SETS)))
    mixed = tuple(settings[names[i % len(names)]] for i in range(len(SETS)))
    job = _sets_job(ids, mixed)
    rows = run_block_job(SPEC, job).tables()[0].to_pylist()
    columns = [*(f"events.{k}" for k in EVENT_STATS), "win_rate", "trade_count", "profit_factor"]
    for name in names:
        alone = _sets_job(ids, (settings[name],) * len(ids))
        want = run_block_job(SPEC, alone).tables()[0].to_pylist()
        for i in range(len(SETS)):
            if mixed[i] is settings[name]:
                assert {c: rows[i][c] for c in columns} == {c: want[i][c] for c in columns}
    assert job.traced == tuple(t.keeps_equity for t in mixed)
    assert set(job.traced) == {True, False}


def test_segment_trade_metrics_equal_trade_metrics_per_set() -> None:
    """Ragged sets of closed trades (none, one, fewer and more than numpy's 8-way
    unrolled sum, pnl of 0 and exactly cancelling losses): each set's metrics equal
    :func:`trade_metrics` of its own pnl, bit for bit."""
    rng = np.random.default_rng(7)
    counts = np.array([0, 1, 3, 8, 9, 0, 17, 130, 2, 300, 5], dtype=np.int64)
    pnl = rng.standard_normal(int(counts.sum())) * rng.uniform(1, 1e5, int(counts.sum()))
    pnl[::7] = 0.0
    pnl[1:4] = [1.5, 1.5, 2.0]  # a set (3 trades) without a loss
    got = segment_trade_metrics(pnl, counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    for i, (lo, k) in enumerate(zip(starts, counts)):
        want = trade_metrics(pnl[lo : lo + k])
        assert got["win_rate"][i] == want["win_rate"], i
        assert got["trade_count"][i] == want["trade_count"], i
        if want["profit_factor"] is None:
            assert not got["_profit_factor_defined"][i], i
        else:
            assert got["profit_factor"][i] == want["profit_factor"], i


def test_block_outcomes_are_arrow_streams_in_order() -> None:
    ids = tuple(f"p_{i}" for i in range(len(SETS)))
    tracers = (_tracer("default"),) * len(SETS)
    blocks = [
        BlockJob(
            "w",
            SPAN,
            "sma_crossover",
            tuple(SETS[k : k + 4]),
            PORTFOLIO,
            ids[k : k + 4],
            tracers[k : k + 4],
            "SYN",
            index=k // 4,
        )
        for k in range(0, len(SETS), 4)
    ]
    seen: list[int] = []
    executor = Executor(workers=2)
    try:
        outcomes = list(executor.map_blocks(SPEC, blocks, lambda o: seen.append(o.job.index)))
    finally:
        executor.close()
    assert seen == [0, 1, 2]
    assert [o.job.index for o in outcomes] == [0, 1, 2]
    for outcome, block in zip(outcomes, blocks):
        assert isinstance(outcome.results, pa.Buffer)  # as written, not copied
        table = read_stream(outcome.results)
        assert table.column("container_id").to_pylist() == list(block.container_ids)
        alone = run_block_job(SPEC, block).tables()[0]
        assert table.equals(alone)


@pytest.mark.parametrize("workers", [1, 2])
def test_local_blocks_run_in_this_process_on_workers_threads(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import threading

    import phasekit.workflow.blocks as blocks_module

    ran: list[tuple[int, str]] = []
    both = threading.Barrier(2, timeout=10) if workers == 2 else None
    real = blocks_module.run_block_bars

    def spy(bars: Any, job: BlockJob, backend: Any = None) -> Any:
        ran.append((os.getpid(), threading.current_thread().name))
        if both is not None and job.index < 2:
            both.wait()  # the first two blocks run at once, or this times out
        return real(bars, job, backend)

    monkeypatch.setattr(blocks_module, "run_block_bars", spy)
    ids = tuple(f"p_{i}" for i in range(len(SETS)))
    tracers = (_tracer("default"),) * len(SETS)
    blocks = [
        BlockJob(
            "w",
            SPAN,
            "sma_crossover",
            (SETS[k],),
            PORTFOLIO,
            (ids[k],),
            (tracers[k],),
            "SYN",
            index=k,
        )
        for k in range(4)
    ]
    executor = Executor(workers=workers)
    try:
        executor.start(containers=False)
        outcomes = list(executor.map_blocks(SPEC, blocks))
        assert executor._pool is None  # no worker process for blocks
    finally:
        executor.close()
    assert [o.job.index for o in outcomes] == [0, 1, 2, 3]
    assert {pid for pid, _ in ran} == {os.getpid()}
    names = {name for _, name in ran}
    if workers == 1:
        assert names == {threading.current_thread().name}
    else:
        assert len(names) == 2 and all(n.startswith("phasekit-block") for n in names)
        containers = Executor(workers=workers)
        try:
            containers.start()  # a run that may run containers starts its processes
            assert containers._pool is not None
        finally:
            containers.close()


def test_block_sizes() -> None:
    assert block_sizes(10, 2) == 10  # fewer sets than a block holds
    assert block_sizes(1000, 2) == 250  # at least 2 blocks per worker
    assert block_sizes(100_000, 2) == 2000  # at most MAX_BLOCK
    assert block_sizes(300, 8) == 64  # at least MIN_BLOCK
    # sets keeping 240 kB of equity curve each: at most BLOCK_BYTES of them in a block,
    # under a memory budget at most its share per slot, never fewer than LANE_BLOCK
    assert block_sizes(10_000, 2, 240_000) == BLOCK_BYTES // 240_000 == 139
    assert block_sizes(10_000, 2, 240_000, 256 << 20) == (256 << 20) // 32 // 240_000 == 34
    assert block_sizes(10_000, 2, 10 << 20) == LANE_BLOCK
    assert block_sizes(10, 2, 240_000) == 10
    assert block_sizes(10_000, 2, 0, 1 << 20) == 2000  # no curves: the budget does not cut


@pytest.mark.parametrize("traced", [True, False])
def test_blocks_keeping_curves_are_cut_by_their_bytes(tmp_path: Path, traced: bool) -> None:
    """A window whose containers keep equity curves (1,500 bars: 72 kB each, estimated)
    under a 1 MB hybrid budget runs in blocks of LANE_BLOCK sets; without curves one block
    holds the window's 12 sets."""
    extra: dict[str, Any] = {"data_flow": {"mode": "hybrid", "memory_limit_mb": 1}}
    if traced:
        extra.update(TRACED)
    res = run(_config(tmp_path, "single_pass", **extra), workers=1)
    res.close()
    assert res.phases["search"].containers == 12
    assert len(_block_rows(res)) == (2 if traced else 1)


# ---------------------------------------------------------------- workflows


def _config(results: Path, sequence: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "run_name": f"b-{sequence}",
        "results_dir": str(results),
        "data_flow": {"mode": "file"},
        "data": {"n_bars": 1500, "frequency": "1h", "seed": 5, "volatility": 0.004},
        "strategy": {"type": "sma_crossover"},
        "parameter_space": {
            "strategy.fast": [3, 5, 8],
            "strategy.slow": [20, 40],
            "strategy.mode": ["long_only", "long_short"],
        },
        "portfolio": {"commission_bps": 2, "slippage_bps": 1},
        "top_k": 2,
        "phases": [{"name": "search", "sequence": sequence}],
    }
    if sequence == "walk_forward":
        cfg["walk_forward"] = {"train": 600, "test": 300}
    if sequence == "monte_carlo":
        cfg["monte_carlo"] = {"n": 20, "batch": 10}
    cfg.update(extra)
    return cfg


ITEMS = list(OUTPUT_KINDS)  # every output, each container's own items too
TRACED = {"event_tracing": ["FILL", "POSITION_OPEN", "POSITION_CLOSE", "PORTFOLIO_UPDATE"]}


def _files(run_dir: Path, pattern: str) -> dict[str, Any]:
    """The files matching ``pattern`` by path under the run's folder (URIs in JSON
    files relative to it)."""
    out = {}
    for path in sorted(run_dir.rglob(pattern)):
        if ".phasekit" in path.parts:
            continue
        rel = str(path.relative_to(run_dir))
        if path.suffix == ".json":
            out[rel] = json.loads(path.read_text().replace(run_dir.resolve().as_uri(), "RUN"))
        else:
            out[rel] = feather.read_table(path)
    return out


def _same_tables(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        if isinstance(a[name], pa.Table):
            assert a[name].to_pylist() == b[name].to_pylist(), name
        else:
            assert a[name] == b[name], name


def _sorted_trades(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: (r["container_id"], r["exit_time"]))


@pytest.mark.parametrize("sequence", ["single_pass", "train_test", "walk_forward", "monte_carlo"])
def test_block_and_container_engines_agree(
    tmp_path: Path, backend_name: str, sequence: str
) -> None:
    """Per-container items written from block rows equal the container path's, and so
    do the rankings, the window tables and the trades."""
    runs = {}
    for engine in ("block", "container"):
        # the even sets trace PORTFOLIO_UPDATE (their equity curves are kept)
        pattern = "*_0*[02468]"
        cfg = _config(tmp_path / engine, sequence, engine=engine, containers={pattern: TRACED})
        cfg["phases"][0]["output"] = ITEMS
        res = run(cfg, workers=1)
        assert res.status == "completed"
        runs[engine] = res
        res.close()
    block, container = runs["block"].run_dir, runs["container"].run_dir
    for pattern in (
        "*_results.arrow",
        "*_equity.arrow",
        "aggregate_results.json",
        "selected_parameters.json",
        "oos_equity.arrow",
    ):
        _same_tables(_files(block, pattern), _files(container, pattern))
    if sequence == "monte_carlo":
        _monte_carlo_engines_agree(runs["block"], runs["container"])
        return
    assert _files(block, "*_results.arrow")  # the items were written
    # the window tables hold the same rows as the container path's files
    for window_dir in sorted(p.parent for p in container.rglob("all_trades.arrow")):
        rel = window_dir.relative_to(container)
        mine = block / rel
        if not (mine / "trades.arrow").exists():  # a walk-forward test part: one container
            continue
        assert _sorted_trades(feather.read_table(mine / "trades.arrow")) == _sorted_trades(
            feather.read_table(window_dir / "all_trades.arrow")
        )
        table = feather.read_table(mine / "containers.arrow")
        for row in table.to_pylist():
            item = feather.read_table(
                container / rel / "containers" / f"{row['container_id']}_results.arrow"
            ).to_pylist()[0]
            for name in ("total_return", "sharpe_ratio", "trade_count", "profit_factor"):
                assert row[name] == item[name] or (row[name] != row[name] and item[name] is None)
            assert {k: row[f"events.{k}"] for k in EVENT_STATS} == json.loads(item["events"])
        if not (mine / "equity.arrow").exists():
            assert not list((window_dir / "containers").glob("*_equity.arrow"))
            continue
        equity = feather.read_table(mine / "equity.arrow")
        for cid in set(equity.column("container_id").to_pylist()):
            own = equity.filter(pa.compute.equal(equity.column("container_id"), cid))
            item = feather.read_table(container / rel / "containers" / f"{cid}_equity.arrow")
            assert own.column("equity").to_pylist() == item.column("equity").to_pylist()
            assert own.column("ts").to_pylist() == item.column("ts").to_pylist()


def _monte_carlo_engines_agree(block: Any, container: Any) -> None:
    """A block window's ``containers`` table holds each simulation's metrics as the
    container path's item has them; the phases' distributions and report rows are
    equal; simulations write no trades or equity tables."""
    for name in ("distribution", "method", "report"):
        assert block.phases["search"].summary.get(name) == (
            container.phases["search"].summary.get(name)
        ), name
    assert [r.to_dict() for r in block.phases["search"].rows] == [
        r.to_dict() for r in container.phases["search"].rows
    ]
    for window in ("mc0000", "mc0001"):
        mine = block.run_dir / "search" / window
        assert not (mine / "trades.arrow").exists() and not (mine / "equity.arrow").exists()
        table = feather.read_table(mine / "containers.arrow")
        assert table.column("container_id").to_pylist() == [
            f"simulation_{i:05d}" for i in range(int(window[2:]) * 10, int(window[2:]) * 10 + 10)
        ]
        for row in table.to_pylist():
            item = feather.read_table(
                container.run_dir
                / "search"
                / window
                / "containers"
                / f"{row['container_id']}_results.arrow"
            ).to_pylist()[0]
            assert row["simulation"] == item["simulation"]
            metrics = [
                k for k in item if k not in ("container_id", "window_id", "role", "simulation")
            ]
            assert metrics and {k: row[k] for k in metrics} == {k: item[k] for k in metrics}


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_window_tables_read_by_pyarrow_polars_duckdb(tmp_path: Path, fmt: str) -> None:
    import duckdb
    import polars
    import pyarrow.parquet as pq

    cfg = _config(tmp_path, "single_pass")
    cfg["data_flow"]["file_settings"] = {"format": fmt}
    res = run(cfg, workers=1)
    res.close()
    folder = res.run_dir / "search"
    read = feather.read_table if fmt == "arrow" else pq.read_table
    for name in ("containers", "trades"):
        path = folder / f"{name}.{fmt}"
        table = read(path)
        frame = polars.read_ipc(path) if fmt == "arrow" else polars.read_parquet(path)
        assert frame.height == table.num_rows > 0
        assert frame.columns == table.schema.names
        con = duckdb.connect()
        if fmt == "parquet":
            count = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()
        else:
            con.register("t", table)
            count = con.execute("SELECT count(*) FROM t").fetchone()
        assert count is not None and count[0] == table.num_rows
    containers = read(folder / f"containers.{fmt}")
    assert containers.num_rows == 12
    names = set(containers.schema.names)
    assert {"container_id", "window_id", "fast", "slow", "mode", "sharpe_ratio"} <= names
    assert {f"events.{k}" for k in EVENT_STATS} <= names
    assert not (folder / "containers").exists()  # no per-container items by default


# ---------------------------------------------------------------- settings


def _layout(res: Any) -> set[str]:
    folder = res.run_dir / "search"
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


@pytest.mark.parametrize("where", ["config", "runtime"])
def test_engine_chooses_blocks_or_containers(tmp_path: Path, where: str) -> None:
    seen = {}
    for engine in ("auto", "block", "container"):
        cfg = _config(tmp_path / engine, "single_pass")
        if where == "config":
            cfg["engine"] = engine
            res = run(cfg, workers=1)
        else:
            res = run(cfg, workers=1, engine=engine)
        res.close()
        seen[engine] = _layout(res)
    assert {"containers.arrow", "trades.arrow"} <= seen["block"]
    assert seen["auto"] == seen["block"]  # a built-in strategy: blocks
    assert "containers.arrow" not in seen["container"]
    assert {"all_trades.arrow", "containers"} <= seen["container"]


def test_engine_block_refuses_a_phase_without_a_block_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every strategy phasekit runs has a block path today: a strategy without one is
    # made here by saying so
    from phasekit.workflow import blocks

    monkeypatch.setattr(blocks, "supports_block", lambda kind: False)
    res = run(_config(tmp_path / "auto", "single_pass"), workers=1)  # auto: containers
    res.close()
    assert "containers.arrow" not in _layout(res) and "all_trades.arrow" in _layout(res)
    with pytest.raises(ConfigError, match="engine: block: phase 'search' cannot run as blocks"):
        run(_config(tmp_path / "block", "single_pass"), workers=1, engine="block")


@pytest.mark.parametrize("engine", ["auto", "block"])
def test_monte_carlo_simulations_are_blocks_without_a_block_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """Simulations bootstrap one run and run no strategy: a phase whose strategy has no
    block path still runs its Monte Carlo windows as blocks (and the plan says so)."""
    from phasekit.workflow import blocks
    from phasekit.workflow.plan import plan_run
    from phasekit.workflow.run import load_and_resolve

    monkeypatch.setattr(blocks, "supports_block", lambda kind: False)
    cfg = _config(tmp_path, "monte_carlo", engine=engine)
    res = run(cfg, workers=1)
    res.close()
    assert (res.run_dir / "search" / "mc0000" / "containers.arrow").exists()
    assert not list(res.run_dir.rglob("simulation_*_results.*"))
    (plan,) = plan_run(load_and_resolve(cfg))
    assert plan.engine == "block" and set(plan.tables) == {"containers"}


def test_a_user_strategy_runs_as_blocks_equal_to_containers(tmp_path: Path) -> None:
    user = {"type": "phasekit.backtest.strategies:SmaCrossover"}
    runs = {}
    for engine in ("block", "container"):
        cfg = _config(tmp_path / engine, "train_test", engine=engine, strategy=user)
        cfg["phases"][0]["output"] = ITEMS
        res = run(cfg, workers=1)
        res.close()
        runs[engine] = res.run_dir
    assert (runs["block"] / "search" / "train" / "containers.arrow").exists()
    for pattern in ("*_results.arrow", "aggregate_results.json"):
        _same_tables(_files(runs["block"], pattern), _files(runs["container"], pattern))


def test_container_items_are_written_only_when_asked(tmp_path: Path) -> None:
    found = {}
    for asked in (False, True):
        cfg = _config(tmp_path / str(asked), "single_pass")
        cfg["phases"][0]["output"] = {"container_items": asked}
        res = run(cfg, workers=1)
        res.close()
        folder = res.run_dir / "search" / "containers"
        found[asked] = sorted(p.name for p in folder.glob("*_results.arrow"))
        assert (res.run_dir / "search" / "containers.arrow").exists()
    assert found[False] == []
    assert found[True] == [f"portfolio_{i:05d}_results.arrow" for i in range(12)]


def _monte_carlo(results: Path, **extra: Any) -> dict[str, Any]:
    cfg = _config(results, "monte_carlo", **extra)
    cfg["monte_carlo"] = {"n": 30, "batch": 12, "seed": 4}
    return cfg


@pytest.mark.parametrize("method", ["returns", "trades"])
def test_monte_carlo_windows_are_blocks(tmp_path: Path, backend_name: str, method: str) -> None:
    """A Monte Carlo window is one block: its simulations' rows (id, number, the set's
    parameters, bars, the metrics) in its ``containers`` table and one catalog row for
    the block (its simulations as columns); per-simulation items only when asked."""
    found = {}
    for asked in (False, True):
        cfg = _monte_carlo(tmp_path / str(asked))
        cfg["monte_carlo"]["method"] = method
        cfg["phases"][0]["output"] = {"container_items": asked}
        res = run(cfg, workers=1)
        res.close()
        assert res.phases["search"].windows == ["mc0000", "mc0001", "mc0002"]
        folder = res.run_dir / "search" / "mc0002"
        table = feather.read_table(folder / "containers.arrow")
        assert table.column("simulation").to_pylist() == list(range(24, 30))
        assert table.schema.names[:4] == ["container_id", "window_id", "simulation", "fast"]
        # the phase's first set
        params = {tuple(r.values()) for r in table.select(["fast", "slow", "mode"]).to_pylist()}
        assert params == {(3, 20, "long_only")}
        assert set(table.column("bars").to_pylist()) == {1500}
        assert table.column("trade_count").to_pylist()[0] > 0
        found[asked] = sorted(p.name for p in folder.glob("containers/*_results.arrow"))
        ids = [f"simulation_{i:05d}" for i in range(24, 30)]
        with open_catalog(res.catalog_url) as catalog:
            rows = catalog.list_items(res.run_id, stage="search", window="mc0002")
            one = catalog.list_items(res.run_id, container="simulation_00026", window="mc0002")
        (block,) = [r for r in rows if r.entity_name.startswith("block_")]
        assert block.entity_name == "block_00000"
        if asked:  # each simulation's own item
            assert sorted(r.container_id for r in rows if r.container_id) == ids
        else:  # one row for the block, its simulations as columns
            assert not [r for r in rows if r.container_id]
            assert list(block.metadata["columns"]["container_id"]) == ids
            assert [(r.entity_name, r.inline_data["row"]) for r in one] == [
                ("simulation_00026_results", 2)
            ]
    assert found[False] == []
    assert found[True] == [f"simulation_{i:05d}_results.arrow" for i in range(24, 30)]


def test_monte_carlo_resume_reads_back_completed_windows_and_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed after its second window's block (the first window complete), a resumed Monte
    Carlo phase reads the first window back, reuses the second's block and runs the rest:
    its tables, distribution and catalog rows equal an uninterrupted run's."""
    import logging
    import os
    import signal
    import subprocess
    import sys

    cfg = _monte_carlo(tmp_path / "killed")
    env = {**os.environ, "PHASEKIT_FAILPOINT": "blocks.after_block@2"}
    proc = subprocess.run(
        [sys.executable, "-c", KILL, json.dumps(cfg)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with open_catalog(str(tmp_path / "killed")) as catalog:
        (killed,) = catalog.list_processes()
    with caplog.at_level(logging.INFO, logger="phasekit.workflow"):
        resumed = run(cfg, workers=1, resume=killed.process_id)
    assert "phase search: window mc0000 resumed" in caplog.text
    assert "window mc0001: 1 block(s) reused" in caplog.text
    assert "window mc0002: 1 block(s) reused" not in caplog.text
    whole = run(_monte_carlo(tmp_path / "whole"), workers=1)
    try:
        assert (
            resumed.phases["search"].summary["distribution"]
            == (whole.phases["search"].summary["distribution"])
        )
        for window in ("mc0000", "mc0001", "mc0002"):
            got = feather.read_table(resumed.run_dir / "search" / window / "containers.arrow")
            want = feather.read_table(whole.run_dir / "search" / window / "containers.arrow")
            assert got.equals(want), window
            assert not (resumed.run_dir / "search" / window / ".blocks").exists()
    finally:
        resumed.close()
        whole.close()
    with open_catalog(str(tmp_path / "killed")) as catalog:
        rows = catalog.list_items(killed.process_id, stage="search")
    blocks = sorted(
        (r for r in rows if r.entity_name.startswith("block_")), key=lambda r: str(r.window_id)
    )
    assert [(r.window_id, r.entity_name) for r in blocks] == [
        (w, "block_00000") for w in ("mc0000", "mc0001", "mc0002")
    ]
    ids = [cid for r in blocks for cid in r.metadata["columns"]["container_id"]]
    assert ids == [f"simulation_{i:05d}" for i in range(30)]  # once each


def test_block_windows_record_a_row_per_block(tmp_path: Path, backend_name: str) -> None:
    """A block window's catalog rows are one per block (with its containers as
    columns) and the window's table items; a container is found in its block's row."""
    cfg = _big_config(tmp_path)  # train: 200 sets, two blocks of 100 with one worker
    res = run(cfg, workers=1)
    reference = run({**_big_config(tmp_path / "containers"), "engine": "container"}, workers=1)
    res.close()
    reference.close()
    with open_catalog(res.catalog_url) as catalog:
        window = catalog.list_items(res.run_id, stage="search", window="train")
        rows = catalog.list_items(res.run_id, container="portfolio_00103", window="train")
        tables = catalog.list_items(res.run_id, entity="containers", window="train")
    with open_catalog(reference.catalog_url) as catalog:
        (theirs,) = catalog.list_items(
            reference.run_id, container="portfolio_00103", window="train"
        )
    names = sorted(r.entity_name for r in window)
    blocks = ["block_00000", "block_00001"]
    assert names == ["aggregate_results", *blocks, "containers", "trades", "window_complete"]
    assert not [r for r in window if r.container_id]  # no row per container
    block = next(r for r in window if r.entity_name == "block_00001")
    assert block.metadata["columns"]["container_id"][3] == "portfolio_00103"
    assert len(block.metadata["columns"]["sharpe_ratio"]) == 100
    # the container as its own row would be: in block_00001, row 103 of the table
    assert [(r.entity_name, r.window_id, r.storage_type, r.id) for r in rows] == [
        ("portfolio_00103_results", "train", "inline", block.id)
    ]
    assert len(tables) == 1 and tables[0].path is not None
    assert rows[0].inline_data == {
        "table": "containers",
        "row": 103,
        "uri": tables[0].data_reference,
    }
    # its metrics equal the container engine's
    assert rows[0].metadata["metrics"] == pytest.approx(theirs.metadata["metrics"], nan_ok=True)
    # the other filters apply to the container's row
    count = rows[0].metadata["metrics"]["trade_count"]
    with open_catalog(res.catalog_url) as catalog:

        def found(**filters: Any) -> int:
            return len(catalog.list_items(res.run_id, container="portfolio_00103", **filters))

        assert found(entity="portfolio_00103_results", meta={"metrics.trade_count": count}) == 1
        assert found(entity="block_00001") == 0
        assert found(meta={"metrics.trade_count": count + 1}) == 0
        assert found(text=["sharpe_ratio"]) == 1 and found(text=["no_such_word"]) == 0
        assert found(window="test") == 0 and found(stage="search") == 1
    table = feather.read_table(tables[0].path)
    assert table.column("container_id")[103].as_py() == "portfolio_00103"
    assert table.column("sharpe_ratio")[103].as_py() == rows[0].metadata["metrics"]["sharpe_ratio"]


def _big_config(results: Path, mode: str = "file") -> dict[str, Any]:
    """200 sets: two blocks of 100 with one worker."""
    cfg = _config(results, "train_test", data_flow={"mode": mode})
    cfg["data"] = {"n_bars": 600, "frequency": "1h", "seed": 5, "volatility": 0.004}
    cfg["parameter_space"] = {
        "strategy.fast": list(range(2, 22)),
        "strategy.slow": list(range(30, 130, 10)),
    }
    return cfg


KILL = """
import json, sys
from phasekit.workflow import run
run(json.loads(sys.argv[1]), workers=1)
"""


@pytest.mark.parametrize("mode", ["file", "memory"])
def test_resume_skips_the_blocks_a_killed_run_completed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    import logging
    import os
    import signal
    import subprocess
    import sys

    cfg = _big_config(tmp_path / "killed", mode)
    env = {**os.environ, "PHASEKIT_FAILPOINT": "blocks.after_block@1"}
    proc = subprocess.run(
        [sys.executable, "-c", KILL, json.dumps(cfg)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # killed after the first block
    with open_catalog(str(tmp_path / "killed")) as catalog:
        (killed,) = catalog.list_processes()
        rows = catalog.list_items(killed.process_id, stage="search", window="train")
    (first,) = [r for r in rows if r.entity_name.startswith("block_")]  # the first block's
    assert len(first.metadata["columns"]["container_id"]) == 100
    assert not [r for r in rows if r.container_id]
    with caplog.at_level(logging.INFO, logger="phasekit.workflow.blockparts"):
        resumed = run(cfg, workers=1, resume=killed.process_id)
    reference = run(_big_config(tmp_path / "whole", mode), workers=1)
    try:
        assert resumed.metrics("search", "train").equals(reference.metrics("search", "train"))
    finally:
        resumed.close()
        reference.close()
    assert "window train: 1 block(s) reused" in caplog.text
    if mode == "memory":  # the tables were items of the run's memory: their rows
        with open_catalog(str(tmp_path / "killed")) as catalog:
            items = catalog.list_items(killed.process_id, stage="search", entity="containers")
        rows_of = {i.window_id: i.metadata["rows"] for i in items}
        assert rows_of == {"train": 200, "test": 2}  # the reused block's rows too
        assert all(i.data_reference.startswith("memory://") for i in items)
        assert not list(resumed.run_dir.rglob("containers.arrow"))
    for window in ("train", "test") if mode == "file" else ():
        got = feather.read_table(resumed.run_dir / "search" / window / "containers.arrow")
        want = feather.read_table(reference.run_dir / "search" / window / "containers.arrow")
        assert got.equals(want), window
        got = feather.read_table(resumed.run_dir / "search" / window / "trades.arrow")
        want = feather.read_table(reference.run_dir / "search" / window / "trades.arrow")
        assert got.equals(want), window
        assert not (resumed.run_dir / "search" / window / ".blocks").exists()
    with open_catalog(str(tmp_path / "killed")) as catalog:
        rows = catalog.list_items(killed.process_id, stage="search", window="train")
        found = catalog.list_items(killed.process_id, container="portfolio_00150", window="train")
    ids = [c for r in rows for c in r.metadata.get("columns", {}).get("container_id", [])]
    assert sorted(ids) == [f"portfolio_{i:05d}" for i in range(200)]  # once each
    assert [r.inline_data["row"] for r in found] == [150]
    assert sorted(r.entity_name for r in rows if r.entity_name.startswith("block_")) == [
        "block_00000",
        "block_00001",
    ]


def test_cli_ls_show_compare_find_a_block_runs_containers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phasekit.cli import main

    def cli_json(*args: str) -> Any:
        assert main([*args, "--json", "--results-dir", str(tmp_path)]) == 0
        return json.loads(capsys.readouterr().out)

    block = run(_config(tmp_path, "single_pass", engine="block"), workers=1)
    container = run(_config(tmp_path, "single_pass", engine="container"), workers=1)
    costly = _config(tmp_path, "single_pass", engine="block")
    costly["portfolio"] = {"commission_bps": 20, "slippage_bps": 1}
    other = run(costly, workers=1)
    for res in (block, container, other):
        res.close()
    (row,) = cli_json("ls", block.run_id, "--container", "portfolio_00003")
    assert row["entity_name"] == "portfolio_00003_results" and row["storage_type"] == "inline"
    shown = cli_json("show", str(row["id"]), "--container", "portfolio_00003")
    table = (block.run_dir / "search" / "containers.arrow").resolve().as_uri()
    assert shown["inline_data"] == {"table": "containers", "row": 3, "uri": table}
    (theirs,) = cli_json("ls", container.run_id, "--container", "portfolio_00003")
    assert shown["metadata"]["metrics"] == pytest.approx(theirs["metadata"]["metrics"])
    # the id alone is the block's row: its containers as columns
    whole = cli_json("show", str(row["id"]))
    assert whole["entity_name"] == "block_00000"
    assert whole["metadata"]["columns"]["container_id"][3] == "portfolio_00003"
    assert (
        main(
            [
                "show",
                str(row["id"]),
                "--container",
                "portfolio_09999",
                "--results-dir",
                str(tmp_path),
            ]
        )
        != 0
    )
    capsys.readouterr()
    # the same containers through either engine: every container metric is equal
    same = cli_json("compare", block.run_id, container.run_id)
    mine = [m for m in same["metrics"] if m["container_id"] == "portfolio_00003"]
    assert {m["metric"] for m in mine} >= {"sharpe_ratio", "total_return", "trade_count"}
    assert all(m["diff"] == 0 for m in mine if m["a"] is not None)
    # higher costs: the container's metrics differ
    changed = cli_json("compare", block.run_id, other.run_id)
    mine = {m["metric"]: m for m in changed["metrics"] if m["container_id"] == "portfolio_00003"}
    assert mine["total_return"]["diff"] < 0


def test_config_show_names_the_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from phasekit.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({**_config(tmp_path, "single_pass"), "engine": "container"}))
    assert main(["config", "show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "container"
    assert main(["config", "show", str(path), "--set", "engine=block"]) == 0
    assert re.search(r"engine\W+block", capsys.readouterr().out)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("keep_order", [False, True])
def test_ranking_by_columns_equals_ranking_by_dicts(direction: str, keep_order: bool) -> None:
    from phasekit.workflow.ranking import SummaryColumns
    from phasekit.workflow.topology import Objective, rank

    values = [0.5, float("nan"), -1.0, 0.5, 2.0, float("nan"), 0.0, -0.0]
    ids = ["c_3", "c_1", "c_0", "c_2", "c_7", "c_4", "c_6", "c_5"]

    def summaries() -> list[dict[str, Any]]:
        return [
            {
                "container_id": i,
                "parameters": {},
                "metrics": {"sharpe_ratio": None if v != v else v},
            }
            for i, v in zip(ids, values)
        ]

    def columns() -> SummaryColumns:
        metrics = pa.table({"sharpe_ratio": pa.array(values, pa.float64())})
        return SummaryColumns(np.array(ids), [{}] * len(ids), metrics)

    objective = Objective("sharpe_ratio", direction)
    by_dicts = rank(summaries(), objective, keep_order=keep_order)
    by_columns = rank(columns(), objective, keep_order=keep_order)
    assert isinstance(by_columns, SummaryColumns)  # no dicts made
    assert list(by_columns) == by_dicts
    assert by_columns[:3] == by_dicts[:3] and by_columns[-1] == by_dicts[-1]
    # a module:function objective ranks the dicts
    custom = Objective("test_workflow_blocks:negated_sharpe", direction)
    by_dicts = rank(summaries(), custom, keep_order=keep_order)
    assert rank(columns(), custom, keep_order=keep_order) == by_dicts


def negated_sharpe(metrics: dict[str, Any]) -> float:
    """An objective as ``module:function`` (for the ranking test)."""
    value = metrics["sharpe_ratio"]
    return float("nan") if value is None else -float(value)


def _tables_and_rows(res: Any) -> tuple[dict[str, Any], list[Any]]:
    """The catalog rows of the run's window tables (by ``<window>/<table>``) and its
    containers' rows."""
    with open_catalog(res.catalog_url) as catalog:
        items = catalog.list_items(res.run_id, states=("present", "released"))
    tables = {
        f"{i.window_id}/{i.entity_name}": i
        for i in items
        if i.entity_name in ("containers", "trades", "equity")
    }
    rows = [r for i in items for r in container_rows(i)]  # the containers of block rows
    return tables, [i for i in items if i.container_id] + rows


@pytest.mark.parametrize("mode", ["file", "memory", "hybrid", "streaming"])
def test_the_data_flow_decides_where_a_block_windows_tables_go(tmp_path: Path, mode: str) -> None:
    cfg = _config(tmp_path, "train_test", data_flow={"mode": mode})
    cfg["containers"] = {"portfolio_00001": TRACED}  # one traced curve: an equity table
    res = run(cfg, workers=1)
    res.close()
    tables, rows = _tables_and_rows(res)
    window = res.run_dir / "search" / "train"
    files = {p.name for p in window.iterdir()}
    assert "trades.arrow" in files  # trades are a phase file in every mode
    assert tables["train/trades"].data_reference.startswith("file://")
    if mode in ("file", "streaming"):
        assert {"containers.arrow", "equity.arrow"} <= files
        for name in ("containers", "equity"):
            assert tables[f"train/{name}"].data_reference == (window / f"{name}.arrow").as_uri()
    else:
        assert not {"containers.arrow", "equity.arrow"} & files  # no files for them
        for name in ("containers", "equity"):
            item = tables[f"train/{name}"]
            assert item.data_reference == f"memory://{res.run_id}/search/train/{name}"
            assert item.format == mode  # memory, hybrid
    if mode == "streaming":  # the stream store takes each container's results
        assert {r.storage_type for r in rows} == {"reference"}
        assert list((res.run_dir / "search" / "train" / "containers" / ".stream").rglob("*"))
        return
    # a row per block, its containers pointing at the containers item of their window
    assert {r.storage_type for r in rows} == {"inline"}
    assert len(rows) == 12 + 2  # train's 12 sets, test's top 2
    for r in rows:
        assert r.inline_data["uri"] == tables[f"{r.window_id}/containers"].data_reference


def test_a_block_with_some_streaming_containers_points_the_others_at_their_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Containers a pattern makes ``streaming`` get their own items, each block's others
    keep their rows of the window's table (which holds every container's row)."""
    from phasekit.workflow import phase as phase_module

    monkeypatch.setattr(phase_module, "block_sizes", lambda *args: 4)  # 3 blocks
    cfg = _config(tmp_path, "single_pass")
    cfg["containers"] = {"portfolio_0000[16]": {"data_flow": {"mode": "streaming"}}}
    res = run(cfg, workers=1)
    res.close()
    _, rows = _tables_and_rows(res)
    table = feather.read_table(res.run_dir / "search" / "containers.arrow")
    ids = table.column("container_id").to_pylist()
    assert len(ids) == 12  # every container's row
    inline = {r.container_id: r.inline_data["row"] for r in rows if r.storage_type == "inline"}
    assert set(inline) == set(ids) - {"portfolio_00001", "portfolio_00006"}
    assert all(ids[row] == cid for cid, row in inline.items())
    blocks = [r for r in _block_rows(res) if "rows" in r.metadata]
    assert [b.metadata["rows"] for b in blocks] == [[0, 2, 3], [4, 5, 7]]  # not 00001, 00006


def _block_rows(res: Any) -> list[Any]:
    with open_catalog(res.catalog_url) as catalog:
        items = catalog.list_items(res.run_id, states=("present",))
    return sorted(
        (i for i in items if i.metadata.get("output_type") == "block"),
        key=lambda i: i.entity_name,
    )


@pytest.mark.parametrize("engine", ["block", "container"])
def test_each_windows_stream_is_named_after_it(tmp_path: Path, engine: str) -> None:
    """A streaming phase's windows each have their own stream (train's is not replaced
    by test's in the catalog), holding that window's containers."""
    from phasekit.stores import StreamStore

    cfg = _config(tmp_path, "train_test", data_flow={"mode": "streaming"}, engine=engine)
    res = run(cfg, workers=1)
    res.close()
    with open_catalog(res.catalog_url) as catalog:
        items = catalog.list_items(res.run_id, states=("present",), entity="container_results")
    streams = {i.window_id: i for i in items if i.format == "stream"}
    assert set(streams) == {"train", "test"}
    for window, item in streams.items():
        assert item.data_reference == f"stream://{res.run_id}/search/{window}/container_results"
        stream = StreamStore(Path(item.metadata["path"]).parent)
        held = [r["container_id"] for r in stream.items("container_results")]
        stream.close()
        assert len(held) == len(set(held)) == (12 if window == "train" else 2), window


@pytest.mark.parametrize(("limit_mb", "spilled"), [(0.001, True), (100, False)])
def test_a_hybrid_block_window_keeps_its_tables_under_the_phase_budget(
    tmp_path: Path, limit_mb: float, spilled: bool
) -> None:
    cfg = _config(
        tmp_path, "single_pass", data_flow={"mode": "hybrid", "memory_limit_mb": limit_mb}
    )
    res = run(cfg, workers=1)
    res.close()
    summary = json.loads((res.run_dir / "search" / "phase_summary.json").read_text())
    stats = summary["store_stats"]["-/hybrid"]
    assert stats["items"] == 1  # the containers table (no equity traced, no items asked)
    assert (stats["items_on_disk"] == 1) is spilled
    assert not list((res.run_dir / "search").glob("containers.*"))


def test_a_hybrid_window_table_several_times_the_budget_is_held_block_by_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each block's part of the window's ``containers`` table goes into the phase's
    hybrid store as it comes (spilled past the budget), and the table is joined on disk
    at the window's end: memory never held more than the budget and one part."""
    from phasekit.stores import HybridStore
    from phasekit.workflow import phase as phase_module
    from phasekit.workflow.blocktables import BlockTables

    monkeypatch.setattr(phase_module, "block_sizes", lambda *args: 3)  # 8 blocks
    space = {"strategy.fast": [3, 5, 8, 10], "strategy.slow": [20, 30, 40]}
    parts: list[int] = []
    tables: dict[str, pa.Table] = {}
    put_part, finish = BlockTables._put_part, BlockTables.finish

    def spy_part(self: BlockTables, window_id: Any, name: str, table: pa.Table) -> None:
        parts.append(int(phasekit.size_of(table)))
        put_part(self, window_id, name, table)

    def spy_finish(self: BlockTables, window_id: Any) -> dict[str, str]:
        uris = finish(self, window_id)
        store = self.out.store(window_id)
        if isinstance(store, HybridStore):  # read back before the run closes its stores
            tables.update({n: store.get(n) for n in uris if n != "trades"})
        return uris

    monkeypatch.setattr(BlockTables, "_put_part", spy_part)
    monkeypatch.setattr(BlockTables, "finish", spy_finish)
    limit_mb = 0.001
    hybrid = {"mode": "hybrid", "memory_limit_mb": limit_mb}
    cfg = _config(tmp_path / "h", "single_pass", data_flow=hybrid)
    cfg["parameter_space"].update(space)
    res = run(cfg, workers=1)
    res.close()
    stats = json.loads((res.run_dir / "search" / "phase_summary.json").read_text())
    stats = stats["store_stats"]["-/hybrid"]
    assert len(parts) == 8
    assert sum(parts) > 4 * stats["budget_bytes"]  # the table is several times the budget
    assert stats["items"] == stats["items_on_disk"] == 1 and stats["bytes_in_memory"] == 0
    assert stats["peak_bytes_in_memory"] <= stats["budget_bytes"] + max(parts)
    assert stats["spills"] >= 6  # the parts spilled as they came
    cfg = _config(tmp_path / "f", "single_pass")
    cfg["parameter_space"].update(space)
    f_res = run(cfg, workers=1)
    f_res.close()
    expected = feather.read_table(f_res.run_dir / "search" / "containers.arrow")
    assert tables["containers"].equals(expected)


def test_containers_the_same_patterns_match_resolve_alike(tmp_path: Path) -> None:
    """A block's containers are resolved once per group of containers the same patterns
    match: each gets the settings and store plan it resolves to on its own."""
    from phasekit.workflow.plans import Planner, pattern_groups
    from phasekit.workflow.run import load_and_resolve

    cfg = _config(tmp_path, "single_pass")
    cfg["containers"] = {
        "portfolio_*": {"retention_policy": "minimal"},
        "portfolio_0000[1-3]": TRACED,
        "portfolio_00002": {"data_flow": {"mode": "memory"}},
        "portfolio_001*": {"data_flow": {"memory_limit_mb": 3}},
    }
    phase = load_and_resolve(cfg).phase("search")
    ids = [f"portfolio_{i:05d}" for i in range(150)]
    first, group = pattern_groups(phase, ids)
    assert len(first) == 4  # 0 and 4..99; 1 and 3; 2; 100..149
    alike = [phase.container(ids[first[g]]).settings for g in group.tolist()]
    assert alike == [phase.container(c).settings for c in ids]
    assert Planner(phase, 150).containers(ids) == [Planner(phase, 150).container(c) for c in ids]
    assert len({id(p) for p in Planner(phase, 150).containers(ids)}) == 4


def test_a_memory_runs_block_container_shows_its_metrics_after_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend_name: str
) -> None:
    """The tables of a memory run are gone once it ends; its block rows still carry the
    containers' metrics: ls --container, show --container and compare answer with those
    of the container engine."""
    from phasekit.cli import main

    def cli_json(*args: str) -> Any:
        assert main([*args, "--json", "--results-dir", str(tmp_path)]) == 0
        return json.loads(capsys.readouterr().out)

    memory = {"mode": "memory"}
    block = run(_config(tmp_path, "single_pass", data_flow=memory), workers=1)
    theirs = run(_config(tmp_path, "single_pass", data_flow=memory, engine="container"))
    block.close()
    theirs.close()
    assert not list(block.run_dir.rglob("containers.*"))  # no table file
    (row,) = cli_json("ls", block.run_id, "--container", "portfolio_00007")
    assert row["inline_data"]["uri"].startswith("memory://")
    shown = cli_json("show", str(row["id"]), "--container", "portfolio_00007")
    (other,) = cli_json("ls", theirs.run_id, "--container", "portfolio_00007")
    assert shown["metadata"]["metrics"] == pytest.approx(other["metadata"]["metrics"])
    compared = cli_json("compare", block.run_id, theirs.run_id)
    mine = [m for m in compared["metrics"] if m["container_id"] == "portfolio_00007"]
    assert len(mine) == len(other["metadata"]["metrics"])
    assert all(m["diff"] == pytest.approx(0, abs=1e-12) for m in mine if m["a"] is not None)


def test_a_phase_on_another_phases_selection_runs_its_sets_as_columns(
    tmp_path: Path, backend_name: str
) -> None:
    """The sets a phase takes from its dependency's ``selected_parameters`` reach the
    blocks as columns; the block and container engines rank them alike."""
    runs = {}
    for engine in ("block", "container"):
        cfg = _config(tmp_path / engine, "single_pass", engine=engine, top_k=5)
        cfg["phases"].append({"name": "again", "sequence": "single_pass", "depends_on": ["search"]})
        res = run(cfg, workers=1)
        assert res.status == "completed"
        runs[engine] = res
        res.close()
    block, container = runs["block"].run_dir, runs["container"].run_dir
    for pattern in ("aggregate_results.json", "selected_parameters.json"):
        _same_tables(_files(block, pattern), _files(container, pattern))
    chosen = _files(block, "selected_parameters.json")
    again, search = (chosen[k]["sets"] for k in sorted(chosen))  # "again" < "search"
    assert len(search) == 5 and sorted(map(json.dumps, again)) == sorted(map(json.dumps, search))
    table = feather.read_table(next(block.rglob("again*/**/containers.arrow")))
    got = sorted(
        zip(table["fast"].to_pylist(), table["slow"].to_pylist(), table["mode"].to_pylist())
    )
    want = sorted((s["strategy.fast"], s["strategy.slow"], s["strategy.mode"]) for s in search)
    assert got == want


def test_a_bad_set_of_a_later_block_is_named_by_its_container(
    tmp_path: Path, backend_name: str
) -> None:
    # 200 sets in blocks of 100 (workers=1): the last set, which cannot run, is set 99 of
    # the second block and container 199 of the window
    config = {
        "run_name": "bad-set",
        "results_dir": str(tmp_path),
        "data": {"n_bars": 400, "seed": 3, "frequency": "1h"},
        "strategy": {"type": "sma_crossover"},
        "parameter_space": {
            "strategy.fast": list(range(2, 22)),
            "strategy.slow": [*range(30, 39), 21],
        },
        "phases": [{"name": "search", "sequence": "single_pass"}],
    }
    with pytest.raises(ConfigError) as caught:
        run(config, workers=1)
    text = str(caught.value)
    assert "container portfolio_00199 " in text, text
    assert "'strategy.fast': 21, 'strategy.slow': 21" in text, text
    assert "must be smaller than slow" in text and "parameter set" not in text, text


def test_a_window_equity_table_keeps_no_view_of_the_block_s_stream() -> None:
    """The window table copies the curve columns it keeps out of the IPC buffer the
    block's curves arrived in (which holds their ``bar`` column too), so that buffer is
    freed and a store counts what the table holds."""
    from phasekit.workflow.blocks import read_stream, stream_bytes
    from phasekit.workflow.blocktables import equity_table

    curves = pa.table(
        {
            "container_id": ["a", "a", "b", "b"],
            "bar": pa.array([0, 1, 0, 1], pa.int64()),
            "equity": [100.0, 101.0, 100.0, 99.0],
            "position": [0.0, 1.0, 0.0, -1.0],
        }
    )
    data = stream_bytes(curves)
    ts = np.array(["2024-01-01T00:00", "2024-01-01T00:01"], dtype="datetime64[ns]")
    table = equity_table(read_stream(data), ts, ["a", "b"], np.ones(2, dtype=np.int64))
    assert table.column("equity").to_pylist() == [100.0, 101.0, 100.0, 99.0]
    assert table.column("container_id").to_pylist() == ["a", "a", "b", "b"]
    assert table.column("ts").cast(pa.int64()).to_pylist() == [
        int(t) for t in ts[[0, 1, 0, 1]].astype(np.int64)
    ]
    inside = range(data.address, data.address + data.size)
    held = [
        b.address
        for column in table.columns
        for chunk in column.chunks
        for b in chunk.buffers()
        if b
    ]
    assert held and not any(address in inside for address in held)


@pytest.mark.parametrize("traced", [True, False])
def test_a_hybrid_window_s_blocks_in_flight_count_against_the_phase_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, traced: bool
) -> None:
    """Where a window's blocks keep equity curves, the view its tables are held in gets
    the phase's budget less what the blocks hold outside it (2 per slot in flight and the
    one being stored: in_flight_bytes); without curves, the whole budget."""
    from phasekit.stores import HybridStore
    from phasekit.workflow.blocks import CURVE_ROW_BYTES, in_flight_bytes
    from phasekit.workflow.blocktables import BLOCK_PART_VIEW

    budgets: list[int] = []
    container = HybridStore.container

    def recorded(self: HybridStore, name: str, budget_bytes: int) -> HybridStore:
        if name == BLOCK_PART_VIEW:
            budgets.append(budget_bytes)
        return container(self, name, budget_bytes)

    monkeypatch.setattr(HybridStore, "container", recorded)
    limit = 8 << 20
    extra: dict[str, Any] = {"data_flow": {"mode": "hybrid", "memory_limit_mb": 8}}
    if traced:
        extra.update(TRACED)
    res = run(_config(tmp_path, "single_pass", **extra), workers=2)
    res.close()
    set_bytes = 1500 * CURVE_ROW_BYTES  # the window's bars, a curve row each
    size = block_sizes(12, 2, set_bytes, limit)
    held = in_flight_bytes(size, 2, set_bytes) if traced else 0
    assert budgets == [limit - held]
    assert 0 < limit - held < limit if traced else held == 0


@pytest.mark.parametrize(("mode", "releases"), [("memory", 4), ("file", 0)])
def test_a_budgeted_phase_hands_freed_memory_back_after_each_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, releases: int
) -> None:
    """With a memory budget, the parent releases free memory (the C heap's and pyarrow's
    pool's, :func:`phasekit.stores.trim.release`) once each block is stored; without
    one, it leaves the allocators alone."""
    from phasekit.stores import trim
    from phasekit.workflow import phase as phase_module

    monkeypatch.setattr(phase_module, "block_sizes", lambda *args: 3)  # 12 sets: 4 blocks
    calls: list[int] = []
    monkeypatch.setattr(trim, "release", lambda: calls.append(1))
    flow: dict[str, Any] = {"mode": mode}
    if mode == "memory":
        flow["memory_limit_mb"] = 100  # nothing spilled: every release is a block's
    res = run(_config(tmp_path, "single_pass", data_flow=flow), workers=1)
    res.close()
    assert len(_block_rows(res)) == 4
    assert len(calls) == releases
