"""A tiny memory-mode workflow run through the CLI, for the hardening tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TINY = textwrap.dedent(
    """\
    workflow: tiny
    data_flow: {{mode: memory}}
    data: {{symbols: [SPY], start: "2023-01-02", n_bars: {n_bars}, frequency: 1h, seed: 7}}
    strategy: {{type: sma_crossover, mode: long_only}}
    portfolio: {{initial_capital: 100000}}
    objective_function: {{name: sharpe_ratio, direction: maximize}}
    phases:
      - name: optimization
        topology: backtest
        config:
          parameter_space: {{strategy.fast: [5, 10], strategy.slow: [20, 40]}}
      - name: analysis
        topology: analysis
        depends_on: [optimization]
        top_k: 2
    """
)


def run_tiny(folder: Path, results: Path, times: int = 2, n_bars: int = 300) -> None:
    """Run the tiny workflow ``times`` times into ``results`` (one worker)."""
    config = folder / "tiny.yaml"
    config.write_text(TINY.format(n_bars=n_bars))
    command = [sys.executable, "-m", "phasekit.cli", "run", str(config)]
    for _ in range(times):
        done = subprocess.run(
            [*command, "--results-dir", str(results), "--workers", "1"],
            capture_output=True,
            text=True,
            cwd=folder,
        )
        assert done.returncode == 0, done.stderr[-2000:]
