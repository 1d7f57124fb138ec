"""benches/report.py prints no row for a benchmark that failed and exits 1 naming it;
the rate column counts each group's unit; extra_info["impl"] names a row."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

BENCHES = Path(__file__).resolve().parent.parent / "benches"

DEMO = """
import pytest


@pytest.mark.parametrize("impl", ["rust", "good_peer", "wrong_peer"])
def test_demo(benchmark, impl):
    benchmark.group = "demo:sum"
    benchmark.extra_info["items"] = 1000
    benchmark.extra_info["unit"] = "entries"
    result = benchmark.pedantic(lambda: sum(range(1000)), rounds=2, iterations=1)
    expected = 499500 if impl != "wrong_peer" else 0  # wrong_peer fails its check
    assert result == expected
"""


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", BENCHES / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_failed_benchmark_has_no_row_and_fails_the_report(tmp_path: Path) -> None:
    shutil.copy(BENCHES / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "bench_demo.py").write_text(DEMO)
    proc = subprocess.run(
        [sys.executable, str(BENCHES / "report.py"), str(tmp_path), "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTEST_XDIST_WORKER": "gw0"},  # as when run under pytest -n
    )
    assert proc.returncode == 1, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| demo:sum")]
    assert sorted(row.split("|")[2].strip() for row in rows) == ["good_peer", "rust"]
    assert all(" entries/s" in row for row in rows)
    assert "wrong_peer" not in proc.stdout
    assert "FAILED" in proc.stderr and "wrong_peer" in proc.stderr
    assert "the benchmark run failed" in proc.stderr


def test_rates_carry_the_groups_unit(tmp_path: Path) -> None:
    report = _report()
    stats = {"median": 0.002}
    data = {
        "benchmarks": [
            {
                "group": "g",
                "param": "rust",
                "stats": stats,
                "extra_info": {"items": 4e6, "unit": "bytes"},
            },
            {"group": "h", "param": "rust", "stats": stats, "extra_info": {"items": 10}},
            {
                "group": "h",
                "param": "python-1M",
                "stats": {"median": 0.004},
                "extra_info": {"items": 10, "impl": "python"},
            },
        ]
    }
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    table = report.render(report.load_rows(path))
    assert "| g | rust | 2 ms | 2 G bytes/s | 1.00x |" in table
    assert "| h | rust | 2 ms | 5 k items/s | 1.00x |" in table
    assert "| h | python | 4 ms | 2.5 k items/s | 2.00x |" in table  # named by extra_info


def test_a_headline_replaces_median_and_rate(tmp_path: Path) -> None:
    """A benchmark timed by itself (a pytest-benchmark round of nothing) shows its headline,
    not the nanoseconds of that round as a rate."""
    report = _report()
    data = {
        "benchmarks": [
            {
                "group": "d",
                "name": "test_paired",
                "stats": {"median": 7e-7},
                "extra_info": {"items": 1000, "unit": "containers", "headline": "b/a 1.20x"},
            },
            {"group": "d", "param": "rust", "stats": {"median": 0.5}, "extra_info": {"items": 1}},
        ]
    }
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    table = report.render(report.load_rows(path))
    assert "| d | test_paired | - | b/a 1.20x |  |" in table
    assert "G containers/s" not in table
    assert "| d | rust | 500 ms | 2 items/s | 1.00x |" in table
