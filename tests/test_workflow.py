"""Workflows end to end: results layout, catalog rows, metrics against an independent
computation, workers=1 equals workers=2, resume after SIGKILL, bad workflows."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from phasekit.catalog import open_catalog, uri_to_path
from phasekit.errors import ConfigError, PhasekitError
from phasekit.workflow import run


def small_config(folder: Path, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "workflow": "train_test_optimization",
        "run_name": "t",
        "results_dir": str(folder),
        "data": {"n_bars": 3000, "frequency": "1h", "seed": 5, "volatility": 0.004},
        "strategy": {"type": "sma_crossover"},
        "parameter_space": {
            "strategy.fast": [3, 5, 8, 13],
            "strategy.slow": [20, 40, 60],
            "constraints": ["strategy.fast < strategy.slow"],
        },
        "portfolio": {"commission_bps": 2, "slippage_bps": 1},
        "top_k": 3,
    }
    cfg.update(extra)
    return cfg


ITEMS = {"collection": {"store_container_items": True}}
"""``results``: each container's own results item too (besides the window tables)."""


def test_train_test_layout_and_catalog(tmp_path: Path, backend_name: str) -> None:
    res = run(small_config(tmp_path, results=ITEMS), workers=1)
    try:
        assert res.status == "completed"
        ps = res.run_dir / "parameter_search"
        assert (ps / "phase_summary.json").exists()
        for window in ("train", "test"):
            assert (ps / window / "aggregate_results.json").exists()
            assert (ps / window / "trades.arrow").exists()
            assert (ps / window / "containers.arrow").exists()
        # file mode in the default format (Arrow): one row per container's results
        containers = sorted((ps / "train" / "containers").glob("*_results.arrow"))
        assert len(containers) == 12
        row = feather.read_table(containers[0]).to_pylist()[0]
        assert set(row) >= {"sharpe_ratio", "total_return", "max_drawdown", "win_rate"}
        assert row["container_id"] == "portfolio_00000" and row["window_id"] == "train"
        # trade_complete retention of FILL, POSITION_OPEN and POSITION_CLOSE: a closed
        # trade's 4 events are dropped for its summary; an open position keeps its 2
        open_seen = set()
        for path in containers:
            result = feather.read_table(path).to_pylist()[0]
            events = json.loads(result["events"])
            open_now = events["open_positions"]
            assert open_now in (0, 1), path.name
            trades = result["trade_count"]
            assert events["trades"] == trades, path.name
            assert events["retained"] == 2 * open_now, path.name
            assert events["seen"] == 4 * trades + 2 * open_now, path.name
            assert events["evicted"] == events["seen"] - events["retained"], path.name
            assert events["retained_bytes"] == 46 * events["retained"] + 68 * trades
            open_seen.add(open_now)
        assert open_seen == {0, 1}  # the run has containers with and without an open position
        # validation ran the 3 selected sets once, on the test window only
        assert res.phases["validation"].containers == 3
        assert res.phases["validation"].windows == ["test"]
        assert [p for p in res.phases["validation"].selected] == res.phases[
            "parameter_search"
        ].selected
        # every catalog row's file exists and verifies
        catalog = open_catalog(res.catalog_url)
        items = catalog.list_items(res.run_id)
        assert items
        for item in items:
            if item.data_reference and item.data_reference.startswith("file://"):
                catalog.verify_item(item)
        windows = {i.window_id for i in items if i.stage_name == "parameter_search"}
        assert {"train", "test"} <= windows
        catalog.close()
        trades = feather.read_table(ps / "train" / "trades.arrow")
        assert trades.num_rows > 0
        assert set(trades.column("container_id").to_pylist()) <= {
            f"portfolio_{i:05d}" for i in range(12)
        }
    finally:
        res.close()


def test_metrics_match_written_equity_and_trades(tmp_path: Path, backend_name: str) -> None:
    cfg = small_config(
        tmp_path,
        workflow="optimization",
        event_tracing=["POSITION_OPEN", "POSITION_CLOSE", "FILL", "PORTFOLIO_UPDATE"],
        results_storage="disk",
        results=ITEMS,
    )
    res = run(cfg, workers=1)
    try:
        phase = res.run_dir / "parameter_search"
        trades = feather.read_table(phase / "trades.arrow").to_pandas()
        for path in sorted((phase / "containers").glob("*_results.arrow"))[:4]:
            cid = path.name.replace("_results.arrow", "")
            m = feather.read_table(path).to_pylist()[0]  # one row: the metrics as columns
            eq = feather.read_table(phase / "containers" / f"{cid}_equity.arrow")
            equity = eq.column("equity").to_numpy()
            # independent computation from the written equity curve and trades
            full = np.concatenate(([100_000.0], equity))
            rets = full[1:] / full[:-1] - 1
            ppy = 252 * 7  # hourly bars of a 09:30-16:00 weekday session: 7 a day
            sharpe = rets.mean() / rets.std(ddof=1) * math.sqrt(ppy)
            peak = np.maximum.accumulate(full)
            mine = trades[trades.container_id == cid]
            assert m["sharpe_ratio"] == pytest.approx(sharpe, rel=1e-9)
            assert m["max_drawdown"] == pytest.approx((full / peak - 1).min(), rel=1e-9)
            assert m["total_return"] == pytest.approx(full[-1] / 100_000 - 1, rel=1e-9)
            downside = np.sqrt((np.minimum(rets, 0.0) ** 2).mean())
            assert m["sortino_ratio"] == pytest.approx(
                rets.mean() / downside * math.sqrt(ppy), rel=1e-9
            )
            assert m["trade_count"] == len(mine) > 0
            pnl = mine.pnl.to_numpy()
            assert m["win_rate"] == pytest.approx((pnl > 0).sum() / len(pnl))
            assert m["profit_factor"] == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl < 0].sum())
    finally:
        res.close()


def _ranking(res: Any, phase: str, window: str | None) -> list[tuple[str, Any]]:
    table = res.metrics(phase, window)
    return list(
        zip(table.column("container_id").to_pylist(), table.column("sharpe_ratio").to_pylist())
    )


def test_workers_one_equals_two(tmp_path: Path) -> None:
    a = run(small_config(tmp_path / "a"), workers=1)
    b = run(small_config(tmp_path / "b"), workers=2)
    try:
        for phase, window in (
            ("parameter_search", "train"),
            ("parameter_search", "test"),
            ("validation", "test"),
        ):
            assert _ranking(a, phase, window) == _ranking(b, phase, window)
        for name in ("trades", "containers"):
            ta = feather.read_table(a.run_dir / "parameter_search" / "train" / f"{name}.arrow")
            tb = feather.read_table(b.run_dir / "parameter_search" / "train" / f"{name}.arrow")
            assert ta.equals(tb)
    finally:
        a.close()
        b.close()


def test_walk_forward_stitches_out_of_sample(tmp_path: Path) -> None:
    cfg = small_config(
        tmp_path, workflow="walk_forward_optimization", walk_forward={"train": 1000, "test": 500}
    )
    res = run(cfg, workers=1)
    try:
        outcome = res.phases["walk_forward"]
        assert outcome.windows == ["w0000", "w0001", "w0002", "w0003"]
        oos = feather.read_table(res.run_dir / "walk_forward" / "oos_equity.arrow")
        assert oos.num_rows == 4 * 500
        ts = oos.column("ts").cast(pa.int64()).to_numpy()
        assert np.all(np.diff(ts) > 0)
        assert "out_of_sample" in outcome.summary
    finally:
        res.close()


def test_monte_carlo_is_seeded(tmp_path: Path) -> None:
    phases = [
        {"name": "search", "sequence": "single_pass", "topology": "backtest"},
        {
            "name": "mc",
            "sequence": "monte_carlo",
            "topology": "backtest",
            "depends_on": ["search"],
            "monte_carlo": {"n": 10, "batch": 4, "seed": 3},
        },
    ]
    cfg = small_config(tmp_path / "a", workflow=None, phases=phases)
    a = run(cfg, workers=1)
    b = run(small_config(tmp_path / "b", workflow=None, phases=phases), workers=1)
    try:
        assert a.phases["mc"].windows == ["mc0000", "mc0001", "mc0002"]
        assert a.phases["mc"].summary["distribution"] == b.phases["mc"].summary["distribution"]
    finally:
        a.close()
        b.close()


RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from phasekit.workflow import run

    cfg, pause_at, resume = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] or None

    class Progress:
        def say(self, *parts):
            line = " ".join(str(p) for p in parts)
            print(line, flush=True)
            if line == pause_at:
                time.sleep(600)  # wait here, mid-run, for the kill

        def phase_started(self, phase, windows, containers):
            self.say("started", phase)

        def containers_done(self, phase, count):
            self.say("containers", phase, count)

        def window_done(self, phase, window_id, resumed):
            self.say("window", phase, window_id, "resumed" if resumed else "done")

        def phase_done(self, phase, outcome):
            self.say("finished", phase)

    res = run(cfg, workers=1, resume=resume, observer=Progress())
    print("run", res.run_id, flush=True)
    """
)


def _spawn(cfg: dict[str, Any], pause_at: str = "", resume: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RESUME_SCRIPT, json.dumps(cfg), pause_at, resume],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _resume_config(results: Path) -> dict[str, Any]:
    """A run long enough that a kill after its first batch of 64 containers (of 143)
    lands while it still works (one container at a time: the block engine's resume is
    tested in test_workflow_blocks.py)."""
    return small_config(
        results,
        engine="container",
        data={"n_bars": 20_000, "frequency": "1h", "seed": 5, "volatility": 0.004},
        parameter_space={
            "strategy.fast": list(range(2, 22)),
            "strategy.slow": [30, 40, 50, 60, 80, 100, 120],
            "constraints": ["strategy.fast < strategy.slow"],
        },
    )


# (progress line to kill at, whether the child pauses there, windows the resume skips)
KILL_POINTS = [
    ("containers parameter_search 64", False, set()),  # mid-window, while working
    ("window parameter_search train done", True, {"parameter_search train"}),
    ("started validation", True, {"parameter_search train", "parameter_search test"}),
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    """The rankings of the resume config run without interruption."""
    reference = run(_resume_config(tmp_path_factory.mktemp("ref")), workers=1)
    try:
        return {
            (p, w): _ranking(reference, p, w)
            for p, w in (
                ("parameter_search", "train"),
                ("parameter_search", "test"),
                ("validation", "test"),
            )
        }
    finally:
        reference.close()


@pytest.mark.parametrize(("marker", "pause", "skipped"), KILL_POINTS)
def test_resume_after_sigkill_equals_uninterrupted(
    tmp_path: Path,
    uninterrupted: dict[tuple[str, str], Any],
    marker: str,
    pause: bool,
    skipped: set[str],
) -> None:
    cfg = _resume_config(tmp_path / "killed")
    proc = _spawn(cfg, marker if pause else "")
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line.strip())
        if seen[-1] == marker:
            break
    assert seen[-1] == marker, f"the run ended before {marker!r}: {seen}"
    assert proc.poll() is None  # still running: the kill lands mid-run
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL  # killed, not exited by itself
    catalog = open_catalog(str(tmp_path / "killed"))
    runs = catalog.list_processes()
    catalog.close()
    assert [r.status for r in runs] == ["interrupted"]  # its process is gone
    done = _spawn(cfg, resume=runs[0].process_id)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    lines = out.splitlines()
    resumed = {" ".join(line.split()[1:3]) for line in lines if line.endswith(" resumed")}
    assert resumed == skipped
    assert f"run {runs[0].process_id}" in lines
    result = run(cfg, workers=1, resume=runs[0].process_id)
    try:
        for (phase, window), ranking in uninterrupted.items():
            assert _ranking(result, phase, window) == ranking, (phase, window)
    finally:
        result.close()


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {
                "workflow": None,
                "phases": [{"name": "a", "depends_on": ["b"]}, {"name": "b", "depends_on": ["a"]}],
            },
            "cycle",
        ),
        ({"workflow": None, "phases": [{"name": "a", "depends_on": ["nope"]}]}, "nope"),
        ({"strategy": {"type": "sma_crosover"}}, "did you mean 'sma_crossover'"),
        (
            {
                "parameter_space": {
                    "strategy.fast": [50],
                    "strategy.slow": [20],
                    "constraints": ["strategy.fast < strategy.slow"],
                }
            },
            "no parameter set is left",
        ),
        ({"data_split": "2100-01-01"}, "outside the data"),
        ({"workflow": "train_test_optimisation"}, "did you mean 'train_test_optimization'"),
    ],
)
def test_bad_workflows(tmp_path: Path, patch: dict[str, Any], message: str) -> None:
    cfg = small_config(tmp_path)
    cfg.update(patch)
    with pytest.raises(PhasekitError) as info:
        run(cfg, workers=1)
    assert message in str(info.value)
    assert isinstance(info.value, ConfigError) or "selected no" in str(info.value)


def test_cli_run_json_and_dry_run(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    path = tmp_path / "cfg.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "phasekit.cli", "run", str(path), "--json", "--workers", "1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "completed"
    assert summary["phases"]["parameter_search"]["containers"] == 15
    dry = subprocess.run(
        [sys.executable, "-m", "phasekit.cli", "run", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert dry.returncode == 0, dry.stderr
    assert "parameter_search" in dry.stdout and "train_test" in dry.stdout
    assert len(list(tmp_path.glob("t-*"))) == 1  # the dry run wrote nothing
    bad = subprocess.run(
        [sys.executable, "-m", "phasekit.cli", "run", str(path), "--set", "data_flow.mode=fiel"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "did you mean 'file'" in bad.stderr
    assert uri_to_path  # the catalog helper used above is importable from phasekit.catalog


def test_stream_topology_phase(tmp_path: Path) -> None:
    import yaml

    cfg = yaml.safe_load(
        Path(__file__).parent.joinpath("../examples/stream_phase.yaml").read_text()
    )
    cfg["results_dir"] = str(tmp_path)
    res = run(cfg, workers=1)
    try:
        summary = res.phases["numbers"].summary
        assert summary["nodes"]["out"]["items_in"] == 10_000
        assert (res.run_dir / "numbers" / "phase_summary.json").exists()
    finally:
        res.close()
    bad = dict(cfg, phases=[{"name": "numbers", "topology": "stream", "dag": {"name": "x"}}])
    with pytest.raises(ConfigError, match="a mapping with `nodes`"):
        run(bad, workers=1)


def test_container_patterns_choose_the_store(tmp_path: Path) -> None:
    cfg = small_config(
        tmp_path,
        workflow="optimization",
        results_storage="memory",
        containers={"portfolio_0000[0-4]": {"data_flow": {"mode": "file"}}},
        results=ITEMS,
    )
    res = run(cfg, workers=1)
    try:
        folder = res.run_dir / "parameter_search" / "containers"
        on_disk = sorted(p.name for p in folder.glob("*_results.arrow"))
        assert on_disk == [f"portfolio_{i:05d}_results.arrow" for i in range(5)]
        refs = {r.entity: r.uri for r in res.outputs("parameter_search")}
        assert refs["portfolio_00000_results"].startswith("file://")
        assert refs["portfolio_00007_results"].startswith("memory://")
    finally:
        res.close()
