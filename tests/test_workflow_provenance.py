"""Rules the workflow reads from provenance (a level per resolved value), end to end:

* a parameter space makes containers hybrid unless a level above the package defaults
  chose the data-flow mode (design note 001);
* a container's data-flow mode is its pattern's, whether the pattern comes from YAML or
  from ``--set containers.<pattern>.data_flow.mode=...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from phasekit.config import Level, resolve
from phasekit.workflow import run
from phasekit.workflow.run import load_and_resolve

SPACE = {"strategy.fast": [3, 5, 8, 13], "strategy.slow": [20, 40, 60]}


def config(results: Path, space: bool = True, **extra: Any) -> dict[str, Any]:
    # the rules are those of each container's own results items: asked for explicitly
    phase: dict[str, Any] = {"name": "search", "output": {"container_items": True}}
    if space:
        phase["parameter_space"] = SPACE
    cfg: dict[str, Any] = {
        "run_name": "prov",
        "results_dir": str(results),
        "data": {"n_bars": 600, "frequency": "1h", "seed": 3, "volatility": 0.004},
        "strategy": {"type": "sma_crossover", "fast": 5, "slow": 20},
        "phases": [phase],
    }
    cfg.update(extra)
    return cfg


def _summary(res: Any, phase: str = "search") -> dict[str, Any]:
    return dict(json.loads((res.run_dir / phase / "phase_summary.json").read_text()))


def _container_files(res: Any, phase: str = "search") -> set[str]:
    folder = res.run_dir / phase / "containers"
    return {p.name.removesuffix("_results.arrow") for p in folder.glob("*_results.arrow")}


# --- the levels themselves -----------------------------------------------------------------


def test_levels_of_the_mode() -> None:
    settings = resolve({"phases": [{"name": "a"}]}).phase("a").settings
    assert settings.level_of("data_flow.mode") is Level.PACKAGE_DEFAULT
    assert not settings.chosen_by_user("data_flow.mode")
    wf = {"a": {"results_storage": "disk"}}
    settings = resolve({"phases": [{"name": "a"}]}, wf).phase("a").settings
    assert settings.level_of("data_flow.mode") is Level.WORKFLOW_DEFAULT
    assert not settings.chosen_by_user("data_flow.mode")
    settings = resolve({"phases": [{"name": "a"}], "results_storage": "memory"}).phase("a")
    assert settings.settings.level_of("data_flow.mode") is Level.USER_GLOBAL
    assert settings.settings.chosen_by_user("data_flow.mode")


def test_runtime_container_pattern_is_named_in_provenance() -> None:
    r = resolve(
        {"phases": [{"name": "a"}]},
        runtime={"containers.portfolio_0000*.data_flow.mode": "file"},
    )
    settings = r.container("a", "portfolio_00003").settings
    assert settings.level_of("data_flow.mode") is Level.RUNTIME
    assert settings.pattern_of("data_flow.mode") == "portfolio_0000*"
    assert r.container("a", "portfolio_00010").settings.pattern_of("data_flow.mode") is None


# --- rule: a parameter space makes containers hybrid unless someone chose --------------------


def test_parameter_space_defaults_to_hybrid(tmp_path: Path, backend_name: str) -> None:
    res = run(config(tmp_path), workers=1)
    try:
        summary = _summary(res)
        assert summary["data_flow"] == "hybrid"
        assert any(k.endswith("/hybrid") for k in summary["store_stats"])
    finally:
        res.close()


def test_a_chosen_mode_beats_the_parameter_space_default(tmp_path: Path) -> None:
    res = run(config(tmp_path, data_flow={"mode": "memory"}), workers=1)
    try:
        summary = _summary(res)
        assert summary["data_flow"] == "memory"
        assert not any(k.endswith("/hybrid") for k in summary["store_stats"])
    finally:
        res.close()


def test_one_parameter_set_keeps_the_package_default(tmp_path: Path) -> None:
    res = run(config(tmp_path, space=False), workers=1)
    try:
        assert _summary(res)["data_flow"] == "memory"
    finally:
        res.close()


# --- rule: a container's mode is its pattern's, from YAML or from --set ----------------------


@pytest.mark.parametrize("where", ["yaml", "runtime"])
def test_container_pattern_mode_writes_files(tmp_path: Path, backend_name: str, where: str) -> None:
    cfg = config(tmp_path, data_flow={"mode": "memory"})
    runtime: dict[str, Any] = {}
    if where == "yaml":
        cfg["containers"] = {"portfolio_0000*": {"data_flow": {"mode": "file"}}}
    else:
        runtime["containers__portfolio_0000*__data_flow__mode"] = "file"
    resolved = load_and_resolve(cfg, {k.replace("__", "."): v for k, v in runtime.items()})
    assert resolved.container("search", "portfolio_00001").data_flow.mode == "file"
    res = run(cfg, workers=1, **runtime)
    try:
        # 12 sets: portfolio_00000..00009 match the pattern, 00010 and 00011 do not
        assert _container_files(res) == {f"portfolio_{i:05d}" for i in range(10)}
    finally:
        res.close()
