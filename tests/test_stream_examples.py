"""The three streaming examples run as scripts, on both backends."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc
import pytest

from phasekit.backend import backend_module

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _run(script: str, backend: str, *args: str) -> str:
    env = {**os.environ, "PHASEKIT_BACKEND": backend}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_dag_simple(backend: str) -> None:
    out = _run("dag_simple.py", backend)
    assert "large orders:" in out and "rejected: 6" in out


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_dag_windowed(backend: str) -> None:
    out = _run("dag_windowed.py", backend)
    assert "ten-second windows" in out and "late events sent to the side output" in out
    # "a few arrive much later (1% delayed by 60 s) and go to the late side output"
    late, counted = map(int, re.findall(r"side output: (\d+) \(counted: (\d+)\)", out)[0])
    assert 0 < late == counted <= 600 * 0.03


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_dag_realtime_bars_writes_an_arrow_file(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "bars.arrow"
    out = _run("dag_realtime_bars.py", backend, "--out", str(path), "--minutes", "40")
    assert "metrics: http://127.0.0.1:" in out
    assert 'phasekit_stream_items_in_total{dag="realtime_bars",kind="sink",node="arrow"}' in out
    with pa.ipc.open_file(path) as reader:
        table = reader.read_all()
    assert table.num_rows == 4 * 40  # four symbols, one bar per minute
    frame = pl.read_ipc(path)
    assert frame.height == table.num_rows
    assert frame.group_by("symbol").len().sort("symbol")["len"].to_list() == [40] * 4
    con = duckdb.connect()
    con.register("bars", table)
    lows_ok = con.sql("SELECT bool_and(low <= open AND low <= close AND high >= open) FROM bars")
    assert lows_ok.fetchall() == [(True,)]
    assert backend_module("python").file_checksum(path) in out
    # the docstring's feed: ~5 ticks/s per symbol, 2% sent twice (dropped by dedupe), a
    # little disorder (within the bars' max_delay: no tick is late)
    sent, dropped, late = map(int, re.findall(
        r"ticks sent (\d+), duplicates dropped (\d+), late ticks (\d+)", out)[0])  # fmt: skip
    assert abs((sent - dropped) / (5 * 4 * 40 * 60) - 1) < 0.05
    assert 0.01 < dropped / (sent - dropped) < 0.03 and late == 0
    # SMA(5) vs SMA(20) of closes: +1 when fast crosses strictly above slow, -1 below
    for symbol in ("SYM0", "SYM1", "SYM2", "SYM3"):
        bars = table.filter(pc.equal(table["symbol"], symbol)).to_pydict()
        closes = np.array(bars["close"])
        diff = [
            closes[i - 4 : i + 1].mean() - closes[i - 19 : i + 1].mean() if i >= 19 else None
            for i in range(len(closes))
        ]
        want = [0] + [
            (1 if b < 0 < a else -1 if b > 0 > a else 0) if a is not None and b is not None else 0
            for b, a in pairwise(diff)
        ]
        assert bars["signal"] == want
