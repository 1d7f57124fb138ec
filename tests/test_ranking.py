"""A window's summaries as columns: ranked with numpy, written as the same ranking JSON
the summaries as dicts give, averaged as the dicts are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from phasekit.backtest.metrics import average_metrics
from phasekit.stores.durable import write_json
from phasekit.workflow.ranking import PIECE_ROWS, SummaryColumns
from phasekit.workflow.topology import Objective, rank
from phasekit.workflow.windowagg import aggregate


def _columns(n: int, seed: int, odd_params: bool = False) -> SummaryColumns:
    rng = np.random.default_rng(seed)
    sharpe = rng.normal(size=n) * 10.0 ** rng.integers(-8, 8, size=n)
    sharpe[rng.random(n) < 0.1] = np.nan
    sharpe[rng.random(n) < 0.05] = np.inf
    metrics = pa.table(
        {
            "sharpe_ratio": pa.array(sharpe, pa.float64()),
            "total_return": pa.array(rng.normal(size=n), pa.float64()),
            "trade_count": pa.array(rng.integers(0, 500, size=n), pa.int64()),
            "win_rate": pa.array(rng.random(n), pa.float64()),
        }
    )
    params: list[dict[str, Any]] = [
        {"strategy.fast": int(f), "strategy.slow": float(s), "strategy.mode": "long_only"}
        for f, s in zip(rng.integers(1, 50, size=n), rng.random(n) * 100)
    ]
    if odd_params:  # keys that differ, text to escape, nested values
        params[1] = {"b": [1, 2.5, None], "a": 'say "hi"'}
        params[2] = {"strategy.fast": True, "x": {"z": 1, "y": 2}}
    ids = np.array([f"portfolio_{i:05d}" for i in rng.permutation(n)])
    return SummaryColumns(ids, params, metrics)


@pytest.mark.parametrize(
    ("n", "odd"), [(0, False), (1, False), (7, False), (7, True), (PIECE_ROWS + 13, True)]
)
@pytest.mark.parametrize("keep_order", [False, True])
def test_the_ranking_text_is_json_dumps_of_the_summaries(
    n: int, keep_order: bool, odd: bool, backend_name: str
) -> None:
    ranked = rank(_columns(n, n, odd), Objective("sharpe_ratio"), keep_order=keep_order)
    assert isinstance(ranked, SummaryColumns)
    dicts = list(ranked)
    rows = ranked.ranking()
    assert "".join(rows.json_pieces()) == json.dumps(dicts, sort_keys=True)
    assert rows.json_value() == dicts
    # the summaries as dicts rank the same
    plain = [{k: v for k, v in d.items() if k != "objective"} for d in dicts]
    assert rank(plain, Objective("sharpe_ratio"), keep_order=keep_order) == (
        dicts if keep_order else sorted(dicts, key=lambda d: _key(d))
    )


def _key(d: dict[str, Any]) -> tuple[bool, float, str]:
    value = d["objective"]
    return (value is None, 0.0 if value is None else -value, d["container_id"])


def test_an_id_that_needs_escaping_is_escaped() -> None:
    metrics = pa.table({"sharpe_ratio": pa.array([1.0, 2.0])})
    columns = SummaryColumns(np.array(['a"b', "c\u00e9"]), [{}, {}], metrics)
    ranked = rank(columns, Objective("sharpe_ratio"))
    assert "".join(ranked.ranking().json_pieces()) == json.dumps(list(ranked), sort_keys=True)


@pytest.mark.parametrize("n", [5, 3000])
def test_an_aggregate_file_is_the_same_from_columns_or_dicts(tmp_path: Path, n: int) -> None:
    """Small (indented) or large (compact, in pieces): the same bytes either way, the same
    averages (summed in the ranking's order)."""
    objective = Objective("total_return", "minimize")
    ranked = rank(_columns(n, 3), objective)
    dicts = list(ranked)
    from_columns = aggregate("train", ranked, objective)
    from_dicts = aggregate("train", dicts, objective)
    assert from_columns["aggregate_metrics"] == from_dicts["aggregate_metrics"]
    assert from_columns["aggregate_metrics"] == {
        **average_metrics([d["metrics"] for d in dicts]),
        "best_sharpe_ratio": dicts[0]["metrics"]["sharpe_ratio"],
        "best_total_return": dicts[0]["metrics"]["total_return"],
    }
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert write_json(a, from_columns, "a") == write_json(b, from_dicts, "b")
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(a.read_text())["ranking"] == dicts


@pytest.mark.parametrize(
    "values",
    [
        ["a, b", "c"],  # text holding the separator
        ["{x}", 'q"uote', "\u00e9"],  # braces, escapes, non-ASCII
        [1, 2.5, None, True],  # numbers, None and booleans mixed
        [[1, 2], {"b": 1, "a": 2}, float("nan")],  # nested values, NaN
    ],
)
def test_parameter_sets_sharing_keys_are_written_as_json_dumps(values: list[Any]) -> None:
    n = len(values)
    params = [{"{k}": v, "strategy.fast": i} for i, v in enumerate(values)]
    metrics = pa.table({"sharpe_ratio": pa.array(np.arange(n, dtype=np.float64))})
    columns = SummaryColumns(np.array([f"c_{i}" for i in range(n)]), params, metrics)
    ranked = rank(columns, Objective("sharpe_ratio"))
    assert "".join(ranked.ranking().json_pieces()) == json.dumps(list(ranked), sort_keys=True)


@pytest.mark.parametrize(
    ("sharpe", "shared"),
    [([1.0, 2.0, 2.0, 0.5], 2), ([0.0, 0.0, 0.0], 3), ([np.nan, np.nan], 2), ([3.0], 1)],
)
def test_best_shared_by_counts_the_sets_tied_at_the_top(sharpe: list[float], shared: int) -> None:
    """Columns and dicts agree: the sets sharing the best score (all when none has one)."""
    from phasekit.workflow.topology import best_shared_by

    n = len(sharpe)
    metrics = pa.table({"sharpe_ratio": pa.array(sharpe, pa.float64())})
    ids = np.array([f"c_{i:03d}" for i in range(n)])
    columns = SummaryColumns(ids, [{"p": i} for i in range(n)], metrics)
    objective = Objective("sharpe_ratio", "maximize")
    dicts = [dict(s) for s in columns]
    assert best_shared_by(rank(columns, objective)) == shared
    assert best_shared_by(rank(dicts, objective)) == shared


@pytest.mark.parametrize("engine", ["block", "container"])
def test_a_window_whose_sets_all_tie_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, engine: str
) -> None:
    """Bars fewer than the slow average's window: no set trades, each scores the same; the
    window's aggregate records it and the run warns that its best is the first of equals."""
    from phasekit.workflow import run

    def window_of(n_bars: int, where: Path) -> tuple[dict[str, Any], list[str]]:
        caplog.clear()
        cfg = {
            "workflow": "optimization",
            "run_name": "ties",
            "results_dir": str(where),
            "engine": engine,
            "data": {"n_bars": n_bars, "frequency": "1h", "seed": 4, "volatility": 0.004},
            "strategy": {"type": "sma_crossover"},
            "parameter_space": {"strategy.fast": [3, 5], "strategy.slow": [40, 60]},
        }
        res = run(cfg, workers=1)
        res.close()
        agg = json.loads((res.run_dir / "parameter_search" / "aggregate_results.json").read_text())
        return agg, [r.getMessage() for r in caplog.records if "share the best" in r.getMessage()]

    agg, warned = window_of(30, tmp_path / "short")
    assert agg["best_shared_by"] == 4
    assert len(warned) == 1 and "4 of 4 parameter sets" in warned[0]
    agg, warned = window_of(2000, tmp_path / "long")
    assert agg["best_shared_by"] == 1 and warned == []
