"""Run the benchmark suites once and print one table of medians and ratios.

    python benches/report.py                 # run every suite in benches/, then print
    python benches/report.py -k ring         # only matching benchmarks (pytest -k)
    python benches/report.py --json FILE     # print a table from an earlier --benchmark-json run
    python benches/report.py PATH ...        # only these bench files or folders

Every ratio comes from the same run: within a benchmark group, each implementation's
median is divided by the median of the ``rust`` implementation, so ``4.0x`` means the
row is four times slower than the Rust backend (``0.5x``: twice as fast). The rate
column counts each group's ``unit`` (``extra_info["unit"]``: events, bytes, entries, ...)
per second. A benchmark names its implementation in ``extra_info["impl"]`` when its
parameters hold more than that (else the parameter id is the name).

A benchmark that times its work itself (paired rounds, a cluster's task stream) and
records a pytest-benchmark round of nothing says what it measured in
``extra_info["headline"]``: its row shows that text instead of a median and a rate.

A benchmark that failed (its result check, or an error) has no row: benches/conftest.py
keeps it out of the results, and the report then exits with status 1 and names it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Row:
    group: str
    impl: str
    median_s: float
    items: float | None
    unit: str = "items"
    headline: str | None = None

    @property
    def rate(self) -> float | None:
        if not self.items or self.median_s <= 0:
            return None
        return self.items / self.median_s


def _impl_name(bench: dict) -> str:
    param = bench.get("param")
    if param:
        return str(param)
    name = str(bench.get("name", "?"))
    return name.split("[", 1)[1].rstrip("]") if "[" in name else name


def load_rows(path: Path) -> list[Row]:
    data = json.loads(path.read_text())
    rows = []
    for bench in data.get("benchmarks", []):
        extra = bench.get("extra_info") or {}
        rows.append(
            Row(
                group=str(bench.get("group") or bench.get("name")),
                impl=str(extra.get("impl") or _impl_name(bench)),
                median_s=float(bench["stats"]["median"]),
                items=float(extra["items"]) if "items" in extra else None,
                unit=str(extra.get("unit", "items")),
                headline=str(extra["headline"]) if "headline" in extra else None,
            )
        )
    return rows


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _fmt_rate(rate: float | None, unit: str) -> str:
    if rate is None:
        return ""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.3g} {prefix} {unit}/s"
    return f"{rate:.3g} {unit}/s"


def render(rows: list[Row]) -> str:
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row.group].append(row)
    lines = [
        "| group | implementation | median | rate | vs rust |",
        "|---|---|---:|---:|---:|",
    ]
    for group in sorted(groups):
        members = sorted(groups[group], key=lambda r: r.median_s)
        base = next((r for r in members if r.impl == "rust"), None)
        base = base or next((r for r in members if r.impl.startswith("rust")), None)
        for row in members:
            if row.headline is not None:
                lines.append(f"| {group} | {row.impl} | - | {row.headline} |  |")
                continue
            ratio = f"{row.median_s / base.median_s:.2f}x" if base else ""
            lines.append(
                f"| {group} | {row.impl} | {_fmt_time(row.median_s)} | "
                f"{_fmt_rate(row.rate, row.unit)} | {ratio} |"
            )
    return "\n".join(lines)


def run_benchmarks(paths: list[str], extra: list[str]) -> tuple[Path, int]:
    """Run the benchmarks (pytest's output goes to stderr); (JSON file, pytest status)."""
    out = Path(tempfile.mkdtemp(prefix="phasekit-bench-")) / "bench.json"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *(paths or [str(HERE)]),
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        f"--benchmark-json={out}",
        "-o",
        "python_files=bench_*.py",
        *extra,
    ]
    # its own session, never an xdist worker's (pytest-benchmark reads PYTEST_XDIST_WORKER
    # and disables itself): report.py run from a test under xdist inherits it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    proc = subprocess.run(cmd, check=False, stdout=sys.stderr, env=env)
    if not out.exists():
        raise SystemExit("the benchmark run produced no results")
    sys.stderr.write(f"results (with each benchmark's extra_info): {out}\n")
    return out, proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="read results from this file instead")
    parser.add_argument("-k", help="only benchmarks matching this pytest -k expression")
    parser.add_argument("paths", nargs="*", help="bench files or folders (default: benches/)")
    args, rest = parser.parse_known_args(argv)
    if args.k:
        rest += ["-k", args.k]
    status = 0
    if args.json:
        path = args.json
    else:
        path, status = run_benchmarks(args.paths, rest)
    sys.stdout.write(render(load_rows(path)) + "\n")
    if status != 0:
        sys.stderr.write(
            f"the benchmark run failed (pytest exit status {status}; see FAILED/ERROR above): "
            "the failed benchmarks have no row\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
