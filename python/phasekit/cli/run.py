"""``phasekit run CONFIG``: run a workflow with progress bars and a closing summary."""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from phasekit.cli.tables import Layout, fit_table

SUMMARY_METRICS = {
    "sharpe_ratio": "sharpe",
    "total_return": "return",
    "max_drawdown": "max dd",
    "win_rate": "win rate",
    "trade_count": "trades",
}


SUMMARY_LAYOUT = Layout(  # a phase's rows differ by their sample: it goes last
    ids=("phase",),
    drop=("win rate", "max dd", "containers", "trades", "sample"),
    wrap=("best parameters",),
    numeric=("containers", *SUMMARY_METRICS.values()),
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run a workflow from a YAML config")
    p.add_argument("config", help="YAML config file")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a setting (repeatable), e.g. --set data_flow.mode=file",
    )
    p.add_argument("--backend", choices=("rust", "python"), help="primitive backend")
    p.add_argument(
        "--workers",
        type=int,
        help="parallel workers (default: the config's, else auto: the cores, or a cluster's "
        "worker threads): threads for block windows, processes for containers run one at a "
        "time; on a Dask or Ray executor, blocks in flight are at most 2 x WORKERS",
    )
    p.add_argument(
        "--executor",
        type=executor_arg,
        metavar="local|dask=ADDRESS|ray=ADDRESS",
        help="where batches run: local worker processes, the Dask scheduler at ADDRESS "
        "(e.g. dask=tcp://host:8786) or the Ray cluster whose GCS is at ADDRESS "
        "(e.g. ray=127.0.0.1:6379); replaces the config's executor",
    )
    p.add_argument(
        "--results-dir",
        help="where results and the catalog go (a folder, or s3://BUCKET/PREFIX, any fsspec "
        "URL such as gs://BUCKET/PREFIX, or pyarrow+SCHEME://BUCKET/PREFIX through pyarrow.fs, "
        "with --local-dir)",
    )
    p.add_argument(
        "--local-dir",
        help="with --results-dir s3://...: the local folder of the catalog (by default), "
        "spills and files before their upload",
    )
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (windows, containers, stores) and stop; nothing is run or recorded",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_run)


def executor_arg(text: str) -> str | dict[str, str]:
    """``--executor local`` -> ``"local"``; ``--executor dask=ADDR`` -> ``{"dask": ADDR}``
    (``ray=ADDR`` likewise; the configuration checks the names)."""
    kind, sep, address = text.partition("=")
    return {kind: address} if sep else text


class RateColumn(ProgressColumn):
    """Containers per second of a task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "", style="progress.data.speed")


class ProgressObserver:
    """Rich progress: one bar for phases, one per running phase's containers, and on a
    Dask or Ray cluster one per worker (its batches). Nothing is shown before the first phase
    starts (a config or data error prints alone)."""

    def __init__(self, progress: Progress, n_phases: int) -> None:
        self.progress = progress
        self.n_phases = n_phases
        self.phases: TaskID | None = None
        self.tasks: dict[str, TaskID] = {}
        self.workers: dict[str, TaskID] = {}
        self.worker_containers: dict[str, int] = {}

    def _phases(self) -> TaskID:
        if self.phases is None:
            self.progress.start()
            self.phases = self.progress.add_task("phases", total=self.n_phases)
        return self.phases

    def finish(self, n_phases: int) -> None:
        """Complete the phases bar (when shown) and stop the display (once)."""
        if self.phases is not None and n_phases:
            self.progress.update(self.phases, total=n_phases, completed=n_phases)
        if self.phases is not None:
            self.phases = None
            self.progress.stop()

    def phase_started(self, phase: str, windows: int, containers: int) -> None:
        self._phases()
        self.tasks[phase] = self.progress.add_task(
            f"{phase} ({windows} window{'s' if windows != 1 else ''})", total=containers
        )

    def containers_done(self, phase: str, count: int) -> None:
        self.progress.advance(self.tasks[phase], count)

    def worker_batch_done(self, worker: str, containers: int) -> None:
        """A bar per Dask worker: the batches it finished (and their containers)."""
        task = self.workers.get(worker)
        if task is None:
            task = self.workers[worker] = self.progress.add_task(f"worker {worker}", total=None)
        self.progress.advance(task, 1)
        self.worker_containers[worker] = self.worker_containers.get(worker, 0) + containers
        done = self.worker_containers[worker]
        self.progress.update(task, description=f"worker {worker} ({done:,} containers)")

    def window_done(self, phase: str, window_id: str, resumed: bool) -> None:
        if resumed:
            self.progress.console.log(f"{phase}: window {window_id} kept from the earlier attempt")

    def phase_done(self, phase: str, outcome: Any) -> None:
        task = self.tasks.get(phase)
        if task is not None:
            self.progress.update(task, completed=self.progress.tasks[task].total)
        self.progress.advance(self._phases(), 1)


PLAN_LAYOUT = Layout(
    ids=("phase",),
    drop=("tracing", "depends on", "sequence", "topology"),
    numeric=("containers",),
)


def _store(plan: Any) -> str:
    if plan.format is None:
        return plan.store
    parts = any(t.get("parts") for t in plan.tables.values())
    return f"{plan.store} ({plan.format}{' part sets, by the workers' if parts else ''})"


def _plan(args: argparse.Namespace, runtime: dict[str, Any], console: Console) -> int:
    """Print what the run would do (see :mod:`phasekit.workflow.plan`) and stop."""
    from phasekit.workflow.plan import plan_run
    from phasekit.workflow.run import resolve_target

    if args.executor is not None:
        runtime = {**runtime, "executor": args.executor}
    resolved = resolve_target(args.config, runtime, args.results_dir, args.local_dir)[0]
    plans = plan_run(resolved)
    if args.json:
        payload = {
            "results_dir": str(resolved.results_dir),
            "catalog": resolved.catalog.display(),
            "executor": resolved.executor.to_dict(),
            "phases": [p.to_dict() for p in plans],
        }
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        return 0
    names = ("phase", "sequence", "topology", "depends on", "windows", "containers", "engine",
             "store", "tracing")  # fmt: skip
    rows = [
        (
            p.name,
            p.sequence,
            p.topology,
            ", ".join(p.depends_on) or "-",
            ", ".join(f"{w.window_id} {w.containers}" for w in p.windows),
            str(p.containers),
            p.engine,
            _store(p),
            p.tracing,
        )
        for p in plans
    ]
    console.print(fit_table(f"plan of {args.config}", names, rows, PLAN_LAYOUT, console.width))
    console.print(
        f"results: {resolved.results_dir}   catalog: {resolved.catalog.display()}   "
        f"executor: {resolved.executor.display()}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from phasekit.config import parse_set_args
    from phasekit.workflow.run import RunInterrupted, resolve_target, run

    console = Console(stderr=args.json)
    runtime = parse_set_args(args.sets)
    if args.dry_run:
        return _plan(args, runtime, console)
    # the checks of `config show`, before any progress is drawn: a bad file gives one line
    resolved = resolve_target(args.config, runtime, args.results_dir, args.local_dir)[0]
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: the run is marked interrupted
    started = time.perf_counter()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    progress = Progress(
        *columns, console=console, transient=False, disable=not console.is_terminal and args.json
    )
    observer = ProgressObserver(progress, len(resolved.phases))
    overrides = {k.replace(".", "__"): v for k, v in runtime.items()}
    n_phases = 0
    try:
        result = run(
            args.config,
            workers=args.workers,
            executor=args.executor,
            results_dir=args.results_dir,
            backend=args.backend,
            resume=args.resume,
            observer=observer,
            local_dir=args.local_dir,
            **overrides,
        )
        n_phases = len(result.phases)
    except RunInterrupted as stop:
        observer.finish(n_phases)
        sys.stderr.write(
            f"phasekit: interrupted; run {stop.run_id} is recorded as interrupted, continue "
            f"it with: phasekit run {args.config} --resume {stop.run_id}\n"
        )
        return 130
    finally:
        observer.finish(n_phases)
    peak_mb = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )  # the largest process: this one or a worker
    seconds = time.perf_counter() - started
    summary = {
        "run_id": result.run_id,
        "status": result.status,
        "results": str(result.run_dir),
        "catalog": result.catalog_url,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_mb, 1),
        "phases": {
            name: {
                "containers": o.containers,
                "windows": o.windows,
                "best": o.best,
                "best_out_of_sample": o.best_out_of_sample,
                "rows": [r.to_dict() for r in o.rows],
                "seconds": round(o.seconds, 2),
            }
            for name, o in result.phases.items()
        },
    }
    result.close()
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return 0
    names = ("phase", "sample", "containers", "best parameters", *SUMMARY_METRICS.values())
    table_rows: list[tuple[str, ...]] = []
    for name, o in result.phases.items():
        # in: in-sample best; out: the in-sample selection out of sample; pN: percentiles
        for row in o.rows or []:
            params = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in row.parameters.items())
            cells = [_fmt(row.metrics.get(m)) for m in SUMMARY_METRICS]
            table_rows.append((name, row.sample, str(o.containers), params or "-", *cells))
        if not o.rows:
            table_rows.append((name, "-", str(o.containers), "-", *["-" for _ in SUMMARY_METRICS]))
    title = f"run {result.run_id}: {result.status} in {seconds:.1f} s"
    console.print(fit_table(title, names, table_rows, SUMMARY_LAYOUT, console.width))
    console.print(f"results: {result.run_dir}")
    console.print(f"catalog: {result.catalog_url}   peak memory: {peak_mb:.0f} MB")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
