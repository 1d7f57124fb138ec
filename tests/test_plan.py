"""``phasekit run --dry-run`` plans what the run does: a real run's catalog holds, per
phase and window, the containers the plan announced, in the stores it announced."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from phasekit.catalog import open_catalog
from phasekit.catalog.blockrows import container_rows
from phasekit.cli import main
from phasekit.stores import StreamStore

ROOT = Path(__file__).resolve().parents[1]

SEARCH = {"strategy.fast": [3, 5, 8], "strategy.slow": [20, 40]}

CONFIGS: dict[str, dict[str, Any]] = {
    "train_test": {
        "workflow": "train_test_optimization",
        "data": {"n_bars": 1500, "frequency": "1h", "seed": 3},
        "parameter_space": SEARCH,
        "top_k": 4,
    },
    "train_test_split_by_date": {
        "workflow": "train_test_optimization",
        "data": {"n_bars": 1500, "frequency": "1h", "seed": 3, "start": "2020-01-01"},
        "data_split": "2020-08-03",
        "data_flow": {"mode": "memory"},
        "parameter_space": SEARCH,
        "top_k": 2,
    },
    "walk_forward_hybrid": {
        "phases": [
            {
                "name": "search",
                "sequence": "single_pass",
                "data_flow": {"mode": "hybrid"},
                "config": {"parameter_space": SEARCH, "top_k": 3},
            },
            {
                "name": "wf",
                "sequence": "walk_forward",
                "depends_on": ["search"],
                "data_flow": {"mode": "file"},
                "config": {"walk_forward": {"train": 600, "test": 200, "step": 200}},
            },
        ],
        "data": {"n_bars": 2000, "frequency": "1h", "seed": 4},
    },
    "monte_carlo": {
        "phases": [
            {"name": "search", "sequence": "single_pass", "config": {"parameter_space": SEARCH}},
            {
                "name": "mc",
                "sequence": "monte_carlo",
                "depends_on": ["search"],
                "config": {"monte_carlo": {"n": 30, "batch": 8}},
            },
            {"name": "report", "topology": "analysis", "depends_on": ["search"]},
        ],
        "data": {"n_bars": 1200, "frequency": "1h", "seed": 5},
    },
}


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _recorded(results: Path, run_id: str) -> dict[str, Any]:
    """Per phase: containers per window, the (scheme, format) of the items their rows
    are (or, for a container of a block row, of the table item its ``uri`` points at),
    how the rows are kept (``table``: block rows pointing at a table; ``items``), and per window
    table the (scheme, format) of its items."""
    windows: dict[str, dict[str | None, set[str]]] = defaultdict(lambda: defaultdict(set))
    stores: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
    rows: dict[str, set[str]] = defaultdict(set)
    tables: dict[str, dict[str, set[tuple[str, str | None]]]] = defaultdict(
        lambda: defaultdict(set)
    )
    with open_catalog(results) as catalog:
        items = catalog.list_items(run_id, states=("present", "released"))
    by_uri = {i.data_reference: i for i in items if i.data_reference}
    # a block row's containers as their own rows would be
    items = [*items, *(r for i in items for r in container_rows(i))]
    for item in items:
        if item.phase and item.entity_name in ("containers", "equity", "trades"):
            scheme = (item.data_reference or "inline").split(":")[0]
            tables[item.phase][item.entity_name].add((scheme, item.format))
        if not (item.container_id and item.phase):
            continue
        windows[item.phase][item.window_id].add(item.container_id)
        ref = item.data_reference
        if item.storage_type == "inline":
            ref = item.inline_data["uri"]
            table = by_uri[ref]  # the row points at a recorded table item
            assert table.entity_name == item.inline_data["table"] == "containers"
            assert table.window_id == item.window_id
            stores[item.phase].add((ref.split(":")[0], table.format))
            rows[item.phase].add("table")
        else:
            stores[item.phase].add((ref.split(":")[0], item.format))
            rows[item.phase].add("items")
    return {"windows": windows, "stores": stores, "rows": rows, "tables": tables}


def _allowed(store: str, fmt: str | None) -> set[tuple[str, str | None]]:
    """The (scheme, format) of items a store keeps (a hybrid store's spill as files)."""
    return {
        "memory": {("memory", "memory")},
        "file": {("file", fmt)},
        "hybrid": {("memory", "hybrid"), ("file", fmt)},
    }[store]


@pytest.mark.parametrize("engine", ["auto", "container"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_plan_is_what_the_run_does(
    name: str, engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = {
        **CONFIGS[name],
        "engine": engine,
        "run_name": name,
        "results_dir": str(tmp_path / "results"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(cfg))
    plan = cli_json(capsys, "run", str(path), "--dry-run")
    assert not (tmp_path / "results").exists(), "a dry run records nothing"
    summary = cli_json(capsys, "run", str(path), "--workers", "1")
    recorded = _recorded(tmp_path / "results", summary["run_id"])
    for phase in plan["phases"]:
        ran = summary["phases"][phase["phase"]]
        assert ran["containers"] == phase["containers"], phase["phase"]
        assert ran["windows"] == [w["window"] for w in phase["windows"]], phase["phase"]
        if phase["topology"] != "backtest":
            continue
        # built-in strategies have a block path and Monte Carlo simulations run as
        # blocks under any strategy: auto runs blocks
        assert phase["engine"] == ("block" if engine == "auto" else "container"), phase
        if phase["engine"] == "block" and phase["sequence"] == "monte_carlo":
            # simulations make no trades and keep no curves
            assert set(phase["tables"]) == {"containers"}, phase
        by_window = recorded["windows"][phase["phase"]]
        planned = {w["window"]: w["containers"] for w in phase["windows"]}
        if list(by_window) == [None]:  # one window, recorded without its id
            assert len(planned) == 1
            by_window = {next(iter(planned)): by_window[None]}
        assert {w: len(ids) for w, ids in by_window.items()} == planned, phase["phase"]
        assert recorded["rows"][phase["phase"]] == {phase["rows"]}, phase
        allowed = _allowed(phase["store"], phase["format"])
        assert recorded["stores"][phase["phase"]] <= allowed, (phase, recorded["stores"])
        tables = recorded["tables"][phase["phase"]]
        # equity only where a container traces it
        assert set(phase["tables"]) - {"equity"} <= set(tables) <= set(phase["tables"]), phase
        for table, where in phase["tables"].items():
            allowed = _allowed(where["store"], where["format"])
            assert tables[table] <= allowed, (phase, table, tables)


@pytest.mark.parametrize("engine", ["auto", "container"])
def test_the_plan_names_the_containers_a_streaming_pattern_gives_their_own_items(
    engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``containers:`` pattern that makes some containers ``streaming`` gives exactly
    those their own items in a block window (their block's others keep their rows of
    the window's table, whatever the blocks are); the plan names them per window."""
    cfg = {
        "phases": [{"name": "search", "sequence": "train_test", "config": {"top_k": 4}}],
        "data": {"n_bars": 1500, "frequency": "1h", "seed": 3},
        "parameter_space": SEARCH,
        "data_flow": {"mode": "memory"},
        "containers": {"portfolio_0000[14]": {"data_flow": {"mode": "streaming"}}},
        "engine": engine,
        "run_name": "some_streaming",
        "results_dir": str(tmp_path / "results"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(cfg))
    (phase,) = cli_json(capsys, "run", str(path), "--dry-run")["phases"]
    summary = cli_json(capsys, "run", str(path), "--workers", "1")
    with open_catalog(tmp_path / "results") as catalog:
        items = catalog.list_items(summary["run_id"], states=("present", "released"))
    own: dict[str, set[str]] = defaultdict(set)  # containers with their own items
    streamed: dict[str, set[str]] = defaultdict(set)  # those in the window's stream
    table: dict[str, set[str]] = defaultdict(set)  # containers with a row of a table
    for item in items:
        if item.format == "stream":  # the window's stream: a row per container
            stream = StreamStore(Path(item.metadata["path"]).parent)
            streamed[item.window_id] |= {r["container_id"] for r in stream.items(item.entity_name)}
            stream.close()
        elif item.container_id and item.entity_name.endswith("_results"):
            own[item.window_id].add(item.container_id)
        table[item.window_id] |= {r.container_id for r in container_rows(item)}
    streaming = {"portfolio_00001", "portfolio_00004"}
    for window in ("train", "test"):  # the stream holds the streaming containers
        assert streamed[window] == streaming & (streamed[window] | own[window] | table[window])
        own[window] |= streamed[window]
    ran = {w: own[w] | table[w] for w in ("train", "test")}
    assert len(ran["train"]) == 6 and len(ran["test"]) == 4
    if engine == "container":
        assert phase["rows"] == "items" and phase["items"] == {}
        assert not table["train"] and not table["test"]
        return
    assert phase["engine"] == "block" and phase["rows"] == "table+items"
    assert phase["items"] == {w: sorted(streaming) for w in ("train", "test")}
    for window in ("train", "test"):  # exactly the planned ones that ran there
        assert own[window] == set(phase["items"][window]) & ran[window], window
        assert table[window] == ran[window] - own[window], window
    assert own["train"] == streaming
