"""Hand-made mutants of the backtest, metrics, ring, catalog cleanup and resume code,
each applied alone, with only the tests that cover that code run against it.

    python benches/mutants.py              # every mutant, then the kill share
    python benches/mutants.py -k metrics   # mutants whose id contains "metrics"
    python benches/mutants.py --list       # the mutants, without running anything

A mutant is killed when its tests fail (pytest exit code 1) and survives when they
pass. Each group of tests first runs on the unmutated code and must pass, so a failure
that is not the mutant's cannot count as a kill. The source file is restored after each
mutant, also on Ctrl-C. Run it from a clean checkout (or a copy of one): it edits files
of the working tree in place, one at a time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "python/phasekit"
SIM = f"{PKG}/_pure/sim.py"  # the numpy reference the backtest modules re-export

BACKTEST_TESTS = (
    "tests/test_backtest.py",
    "tests/test_metrics_hand.py",
    "tests/test_backtest_kernel.py",
)
TESTS: dict[str, tuple[str, ...]] = {
    "metrics": BACKTEST_TESTS,
    "strategies": BACKTEST_TESTS,
    "portfolio": BACKTEST_TESTS,
    "ring": ("tests/test_ring.py",),
    "cleanup": ("tests/test_catalog_maintenance.py",),
    "resume": ("tests/test_workflow.py", "-k", "resume"),
}
FILES = {
    "metrics": f"{PKG}/backtest/metrics.py",
    "strategies": f"{PKG}/backtest/strategies.py",
    "portfolio": SIM,
    "ring": f"{PKG}/_pure/ring.py",
    "cleanup": f"{PKG}/catalog/cleanup.py",
    "resume": f"{PKG}/workflow/phase.py",
}


@dataclass(frozen=True)
class Mutant:
    module: str  # the group of tests (and, unless ``file`` is given, of FILES)
    name: str
    old: str
    new: str

    @property
    def path(self) -> str:
        return SIM if self.name in IN_SIM else FILES[self.module]

    @property
    def id(self) -> str:
        return f"{self.module}:{self.name}"


# the mutants of code that lives in the numpy reference (_pure/sim.py)
IN_SIM = {
    "summary_forgets_peak",
    "summary_first_return_zero",
    "cross_up_prev_le",
    "cross_up_cur_ge",
    "cross_down_prev_ge",
    "cross_down_cur_le",
    "short_means_long",
    "sma_window_plus_one",
    "hold_state_reset",
}
M = Mutant
MUTANTS = [
    # metrics: the reference, the streaming fold and the trade metrics
    M("metrics", "sharpe_ddof0", "rets.std(ddof=1)", "rets.std(ddof=0)"),
    M("metrics", "win_counts_zero", "(pnl > 0).sum() / count", "(pnl >= 0).sum() / count"),
    M("metrics", "profit_factor_inverted", "(wins / losses) if", "(losses / wins) if"),
    M(
        "metrics",
        "losses_include_wins",
        "losses = float(-pnl[pnl < 0].sum())",
        "losses = float(-pnl[pnl < 0].sum() + pnl[pnl > 0].sum())",
    ),
    M(
        "metrics",
        "no_loss_profit_factor_inf",
        "if losses > 0 else None",
        "if losses > 0 else float('inf')",
    ),
    M(
        "metrics",
        "sortino_upside",
        "np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2))",
        "np.sqrt(np.mean(np.maximum(rets, 0.0) ** 2))",
    ),
    M(
        "metrics",
        "sortino_over_losses_only",
        "np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2))",
        "np.sqrt(np.mean(rets[rets < 0] ** 2))",
    ),
    M("metrics", "drawdown_max", "(eq / peak - 1.0).min()", "(eq / peak - 1.0).max()"),
    M(
        "metrics",
        "running_trough",
        "peak = np.maximum.accumulate(eq)\n",
        "peak = np.minimum.accumulate(eq)\n",
    ),
    M(
        "metrics",
        "total_return_from_first_bar",
        "float(eq[-1] / initial_capital - 1.0)",
        "float(eq[-1] / eq[1] - 1.0)",
    ),
    M(
        "metrics",
        "annualise_without_sqrt",
        "ann = math.sqrt(periods_per_year)",
        "ann = periods_per_year ** 0.5 * 1.0001",
    ),
    M("metrics", "exposure_long_only", "np.mean(position != 0)", "np.mean(position > 0)"),
    M(
        "metrics",
        "stream_std_ddof0",
        "math.sqrt(self.m2 / (self.n - 1))",
        "math.sqrt(self.m2 / self.n)",
    ),
    M(
        "metrics",
        "stream_downside_ddof1",
        "math.sqrt(self.down_sq / self.n)",
        "math.sqrt(self.down_sq / (self.n - 1))",
    ),
    M(
        "metrics",
        "stream_m2_no_cross_term",
        "delta * delta * self.n * n_b / n",
        "delta * self.n * n_b / n",
    ),
    M("metrics", "stream_drawdown_max", "self.mdd = min(self.mdd,", "self.mdd = max(self.mdd,"),
    M(
        "metrics",
        "summary_forgets_peak",
        "np.maximum.accumulate(np.maximum(eq, peak))",
        "np.maximum.accumulate(eq)",
    ),
    M(
        "metrics",
        "summary_first_return_zero",
        "prev = np.concatenate(([last], eq[:-1]))",
        "prev = np.concatenate(([eq[0]], eq[:-1]))",
    ),
    M(
        "metrics",
        "stream_exposure_counts_nothing",
        'self.bars_in_market += int(summary["bars_in_market"])',
        "self.bars_in_market += 0",
    ),
    # strategies
    M(
        "strategies",
        "cross_up_prev_le",
        "(f[:-1] < s[:-1]) & (f[1:] > s[1:])",
        "(f[:-1] <= s[:-1]) & (f[1:] > s[1:])",
    ),
    M(
        "strategies",
        "cross_up_cur_ge",
        "(f[:-1] < s[:-1]) & (f[1:] > s[1:])",
        "(f[:-1] < s[:-1]) & (f[1:] >= s[1:])",
    ),
    M(
        "strategies",
        "cross_down_prev_ge",
        "(f[:-1] > s[:-1]) & (f[1:] < s[1:])",
        "(f[:-1] >= s[:-1]) & (f[1:] < s[1:])",
    ),
    M(
        "strategies",
        "cross_down_cur_le",
        "(f[:-1] > s[:-1]) & (f[1:] < s[1:])",
        "(f[:-1] > s[:-1]) & (f[1:] <= s[1:])",
    ),
    M(
        "strategies",
        "short_means_long",
        "decisions[below] = -1.0 if short else 0.0",
        "decisions[below] = 1.0 if short else 0.0",
    ),
    M(
        "strategies",
        "sma_window_plus_one",
        "(c[window:] - c[:-window]) / window",
        "(c[window:] - c[:-window]) / (window + 1)",
    ),
    M(
        "strategies",
        "momentum_ge",
        "out[ret > self.threshold] = 1",
        "out[ret >= self.threshold] = 1",
    ),
    M(
        "strategies",
        "mean_reversion_exit_strict",
        "decisions[np.abs(z) <= self.exit] = 0.0",
        "decisions[np.abs(z) < self.exit] = 0.0",
    ),
    M("strategies", "hold_state_reset", "np.maximum.accumulate(idx, out=idx)", "pass"),
    # portfolio
    M(
        "portfolio",
        "exit_slippage_for_trader",
        "px = open_px * (1 - side * slip)",
        "px = open_px * (1 + side * slip)",
    ),
    M(
        "portfolio",
        "short_exit_fee_negative",
        "fee = abs(qty) * px * comm",
        "fee = qty * px * comm",
    ),
    M("portfolio", "size_ignores_commission", "cash / (px * (1 + comm))", "cash / px"),
    M("portfolio", "whole_units_round_up", "size = math.floor(size)", "size = math.ceil(size)"),
    M("portfolio", "trade_return_signed_qty", "pnl / (abs(e_qty) * e_px)", "pnl / (e_qty * e_px)"),
    M("portfolio", "bars_held_off_by_one", "bar - e_bar,", "bar - e_bar + 1,"),
    M(
        "portfolio",
        "entry_fee_not_in_pnl",
        "pnl = e_qty * (px - e_px) - e_fee - fee",
        "pnl = e_qty * (px - e_px) - fee",
    ),
    # ring (pure backend)
    M(
        "ring",
        "close_keeps_events",
        "        for seq in pos.seqs:\n            del events[seq]\n",
        "        for seq in pos.seqs[1:]:\n            del events[seq]\n",
    ),
    M("ring", "n_events_without_close", "n_events = len(pos.seqs) + 1", "n_events = len(pos.seqs)"),
    M(
        "ring",
        "negative_keys_tracked",
        "        if key < 0:\n            return\n",
        "        if key < -1:\n            return\n",
    ),
    M(
        "ring",
        "entry_price_of_last_open",
        "if e[1] == POSITION_OPEN and pos.open_quantity is None:",
        "if e[1] == POSITION_OPEN:",
    ),
    M(
        "ring",
        "extend_tail_off_by_one",
        "start = max(0, n - (self._window.maxlen or 0))",
        "start = max(0, n - (self._window.maxlen or 0) - 1)",
    ),
    M(
        "ring",
        "evicted_counts_trades",
        '"evicted": self._seen - retained,',
        '"evicted": self._seen - retained - trades,',
    ),
    M(
        "ring",
        "minimal_keeps_trades",
        'self._keep_trades = self._policy == "trade_complete"',
        'self._keep_trades = self._policy != "sliding_window"',
    ),
    # catalog cleanup
    M(
        "cleanup",
        "no_mark_before_delete",
        '    catalog.mark_items([row.id for row in rows], "deleting")\n',
        "    pass\n",
    ),
    M(
        "cleanup",
        "deletes_live_references",
        "        if ref in live:\n            continue\n",
        "        if False:\n            continue\n",
    ),
    M(
        "cleanup",
        "failed_rows_deleted_too",
        "    done = [row for row in rows if row.id not in failed]\n",
        "    done = list(rows)\n",
    ),
    M("cleanup", "prune_up_to_the_root", "while current not in stops and any(", "while any("),
    M(
        "cleanup",
        "keep_latest_keeps_nothing",
        "                kept.append(proc.process_id)\n",
        "                pass\n",
    ),
    M(
        "cleanup",
        "running_runs_cleaned",
        'if proc.process_id in kept or proc.status == "running":',
        "if proc.process_id in kept:",
    ),
    M("cleanup", "persist_ignored", "if item.stage_name not in persist", "if True"),
    # resume
    M(
        "resume",
        "completed_windows_recomputed",
        "        done = self.completed(folder)\n        if done is not None:\n            self.observer.containers_done(self.name, len(indices))",
        "        done = None\n        if done is not None:\n            self.observer.containers_done(self.name, len(indices))",
    ),
    M(
        "resume",
        "resumed_ranking_reversed",
        'return list(done["ranking"])',
        'return list(done["ranking"])[::-1]',
    ),
]


def _pytest(module: str, timeout: float) -> tuple[int, str]:
    """(exit code, the output's tail) of the module's tests; -1 on a timeout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python"), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS[module]]
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    return proc.returncode, (proc.stdout + proc.stderr)[-1500:]


def run_mutant(mutant: Mutant, timeout: float) -> tuple[str, float]:
    """Apply the mutant, run its tests, restore the file; ('killed' | 'survived' |
    'error: ...', seconds)."""
    path = ROOT / mutant.path
    original = path.read_text()
    count = original.count(mutant.old)
    if count != 1:
        return f"error: the text to mutate occurs {count} times", 0.0
    start = time.perf_counter()
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        code, tail = _pytest(mutant.module, timeout)
    finally:
        path.write_text(original)
    seconds = time.perf_counter() - start
    if code == 0:
        return "survived", seconds
    if code == 1:
        return "killed", seconds
    return f"error: pytest exit code {code}: {tail}", seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutants whose id contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.k in m.id]
    if args.list:
        for m in chosen:
            sys.stdout.write(f"{m.id}\n")
        return 0
    for module in sorted({m.module for m in chosen}):
        code, tail = _pytest(module, args.timeout)
        if code != 0:
            sys.stdout.write(f"the {module} tests fail without a mutant:\n{tail}\n")
            return 2
    outcomes: dict[str, str] = {}
    for m in chosen:
        outcome, seconds = run_mutant(m, args.timeout)
        outcomes[m.id] = outcome
        sys.stdout.write(f"{outcome[:9]:9s} {seconds:6.1f} s  {m.id}\n")
        sys.stdout.flush()
    killed = sum(o == "killed" for o in outcomes.values())
    errors = [i for i, o in outcomes.items() if o.startswith("error")]
    sys.stdout.write(f"killed {killed} of {len(outcomes)} mutants")
    sys.stdout.write(f" ({100 * killed / max(1, len(outcomes)):.0f}%)\n")
    for i, o in outcomes.items():
        if o == "survived" or o.startswith("error"):
            sys.stdout.write(f"  {i}: {o}\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
