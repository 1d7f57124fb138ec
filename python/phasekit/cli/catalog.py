"""Catalog commands: runs, ls, show, compare, export, cleanup, du, doctor.

Every command takes ``--catalog URL_OR_PATH`` (else ``$PHASEKIT_CATALOG``) or
``--results-dir DIR`` (else ``$PHASEKIT_RESULTS_DIR``, else ``./results``) to find the
catalog, and ``--json`` to print JSON instead of tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from phasekit.catalog import (
    CLEANUP_POLICIES,
    EXPORT_FORMATS,
    ITEM_STATES,
    PROCESS_STATUSES,
    Catalog,
    ItemRow,
    default_location,
    open_catalog,
)
from phasekit.catalog.base import is_stored
from phasekit.catalog.blockrows import container_row
from phasekit.catalog.doctor import GRACE_SECONDS, OBJECT_GRACE_SECONDS
from phasekit.catalog.encode import parse_meta
from phasekit.cli.tables import Layout, console, fit_table, shown_columns
from phasekit.errors import InvalidArgument, UnknownKey

# identifiers are never split; columns go, first listed first, when the width is short
LAYOUT = Layout(
    ids=(
        *("run", "entity", "item", "container", "window", "stage", "phase", "name"),
        *("workflow", "kind", "field", "path", "metric", "file", "status", "state"),
    ),
    drop=(
        *("created", "finished", "started", "format", "phase", "window", "files", "name"),
        *("workflow", "how", "rel", "diff", "action", "severity", "state", "stage"),
    ),
    numeric=("items", "size", "files", "id", "a", "b", "diff", "rel"),
)


COMPARE_LAYOUT = replace(LAYOUT, ids=tuple(i for i in LAYOUT.ids if i != "item"), wrap=("item",))
"""compare's: its ``item`` is a path of names (stage/window/container), which wraps
rather than pushing the numbers past the terminal's edge."""


def _console() -> Any:
    return console()


def _table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], layout: Layout = LAYOUT
) -> Any:
    """A table under a bold title, fitted to the terminal's width (see :mod:`.tables`)."""
    return fit_table(title, columns, rows, layout, _console().width)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _emit_json(payload: Any) -> int:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


def _open(args: argparse.Namespace) -> Catalog:
    location = args.catalog or default_location(args.results_dir)
    return open_catalog(location, results_dir=args.results_dir, create=False)


# ------------------------------------------------------------------ commands
def cmd_runs(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        procs = catalog.list_processes(args.workflow, args.status, args.limit, run_name=args.name)
        usage: dict[str, list[int]] = {}
        for row in catalog.usage():
            total = usage.setdefault(row.process_id, [0, 0])
            total[0] += row.items
            total[1] += row.size_bytes
    if args.json:
        return _emit_json(
            [
                {
                    **p.to_dict(),
                    "items": usage.get(p.process_id, [0, 0])[0],
                    "size_bytes": usage.get(p.process_id, [0, 0])[1],
                }
                for p in procs
            ]
        )
    rows = [
        (
            p.process_id,
            p.run_name,
            p.workflow,
            p.status,
            _when(p.started_at),
            _when(p.finished_at),
            usage.get(p.process_id, [0, 0])[0],
            human_bytes(usage.get(p.process_id, [0, 0])[1]),
        )
        for p in procs
    ]
    columns = ("run", "name", "workflow", "status", "started", "finished", "items", "size")
    _console().print(_table(f"{len(rows)} runs in {catalog.url}", columns, rows))
    return 0


def _item_rows(items: Sequence[ItemRow]) -> list[tuple[Any, ...]]:
    return [
        (
            i.id,
            i.stage_name,
            i.entity_name,
            i.phase,
            i.window_id,
            i.container_id,
            i.format or i.storage_type,
            human_bytes(i.size_bytes),
            _when(i.created_at),
            i.state,
        )
        for i in items
    ]


def cmd_ls(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        run = catalog.resolve_run(args.run)
        items = catalog.list_items(
            run.process_id,
            stage=args.stage,
            entity=args.entity,
            since=args.since,
            meta=parse_meta(args.meta),
            phase=args.phase,
            container=args.container,
            window=args.window,
            states=args.state,
            limit=args.limit,
        )
    if args.json:
        return _emit_json([i.to_dict() for i in items])
    columns = (
        "id",
        "stage",
        "entity",
        "phase",
        "window",
        "container",
        "format",
        "size",
        "created",
        "state",
    )
    _console().print(
        _table(f"{len(items)} items of run {run.process_id}", columns, _item_rows(items))
    )
    return 0


def _find_item(catalog: Catalog, ref: str) -> ItemRow:
    if ref.isdigit():
        return catalog.get_item(int(ref))
    rows = catalog.items_by_reference(ref)
    if not rows:
        raise UnknownKey(f"no item with id or data reference {ref!r} in catalog {catalog.url}")
    return rows[-1]


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        item = _find_item(catalog, args.item)
        if args.container is not None:
            item = container_row(item, args.container)
        verified = None
        if args.verify:
            catalog.verify_item(item)
            stored = item.path is not None or catalog.item_object(item) is not None
            verified = "ok" if stored else "nothing on disk to verify"
    if args.json:
        return _emit_json({**item.to_dict(), "verified": verified})
    fields = item.to_dict()
    fields["size_bytes"] = f"{item.size_bytes} ({human_bytes(item.size_bytes)})"
    for key in ("metadata", "inline_data"):
        fields[key] = (
            json.dumps(fields[key], indent=1, default=str) if fields[key] is not None else None
        )
    if verified:
        fields["verified"] = verified
    _console().print(_table(item.label, ("field", "value"), fields.items()))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        result = catalog.compare(args.run_a, args.run_b)
    if args.json:
        return _emit_json(result.to_dict())
    shown = [m for m in result.metrics if args.all or m.diff != 0]
    rows = [
        (
            "" if i and m.item == shown[i - 1].item else m.item,  # an item on its first row
            m.metric,
            _num(m.a),
            _num(m.b),
            _num(m.diff),
            "" if m.rel_diff is None else f"{m.rel_diff:+.2%}",
        )
        for i, m in enumerate(shown)
    ]
    console = _console()
    title = f"metrics: a = {result.run_a.process_id}, b = {result.run_b.process_id}"
    console.print(_table(title, ("item", "metric", "a", "b", "diff", "rel"), rows, COMPARE_LAYOUT))
    if not args.all and len(rows) < len(result.metrics):
        console.print(f"{len(result.metrics) - len(rows)} equal metrics hidden (--all shows them)")
    if result.config:
        config_rows = [
            (c.path, json.dumps(c.a, default=str), json.dumps(c.b, default=str))
            for c in result.config
        ]
        console.print(_table("config differences", ("path", "a", "b"), config_rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        report = catalog.export(args.run, args.to, args.format)
    if args.json:
        return _emit_json(report.to_dict())
    rows = [
        (
            e.item_id,
            e.target,
            e.format,
            "converted" if e.converted else "copied",
            human_bytes(e.size_bytes),
        )
        for e in report.exported
    ]
    rows += [(item_id, "", "", f"skipped: {reason}", "") for item_id, reason in report.skipped]
    title = f"run {report.run} exported to {report.to_dir}"
    _console().print(_table(title, ("id", "file", "format", "how", "size"), rows))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        report = catalog.cleanup(
            args.policy,
            args.stages,
            dry_run=args.dry_run,
            workflow=args.workflow,
            run_name=args.name,
        )
    if args.json:
        return _emit_json(report.to_dict())
    groups: dict[tuple[str, str], list[int]] = {}
    for item in report.selected:  # the bytes freed: in-memory items hold none any more
        group = groups.setdefault((item.process_id, item.stage_name), [0, 0])
        group[0] += 1
        group[1] += item.size_bytes if is_stored(item) else 0
    verb = "would delete" if report.dry_run else "deleted"
    rows = [
        (run, stage, n, human_bytes(size)) for (run, stage), (n, size) in sorted(groups.items())
    ]
    console = _console()
    console.print(
        _table(f"cleanup {report.policy}: {verb}", ("run", "stage", "items", "size"), rows)
    )
    if report.kept_runs:
        console.print("kept (latest completed of their name): " + ", ".join(report.kept_runs))
    if report.running_runs:
        console.print("not touched (running): " + ", ".join(report.running_runs))
    if report.removal and report.removal.failed:
        for item_id, reason in report.removal.failed:
            console.print(f"item {item_id} kept: {reason}")
        return 1
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        rows = catalog.usage(catalog.resolve_run(args.run).process_id if args.run else None)
    total = sum(r.size_bytes for r in rows)
    if args.json:
        return _emit_json({"usage": [r.to_dict() for r in rows], "total_bytes": total})
    table_rows: list[tuple[Any, ...]] = []
    for run in sorted({r.process_id for r in rows}):
        mine = [r for r in rows if r.process_id == run]
        table_rows += [
            (run, r.stage_name, r.items, r.files, human_bytes(r.size_bytes)) for r in mine
        ]
        run_total = sum(r.size_bytes for r in mine)
        table_rows.append(
            (
                run,
                "(total)",
                sum(r.items for r in mine),
                sum(r.files for r in mine),
                human_bytes(run_total),
            )
        )
    columns: tuple[str, ...] = ("run", "stage", "items", "files", "size")
    title = f"space used: {human_bytes(total)}"
    cells = [[str(v) for v in row] for row in table_rows]
    if "stage" not in shown_columns(columns, cells, LAYOUT, _console().width):
        # without their stage, a run's stage rows would read as copies of its total
        columns = ("run", "items", "files", "size")
        table_rows = [(r[0], *r[2:]) for r in table_rows if r[1] == "(total)"]
        title += ", a row per run (by stage: a wider terminal or --json)"
    _console().print(_table(title, columns, table_rows))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from phasekit.catalog.doctor import doctor_location
    from phasekit.crypt import open_encryption

    if args.key is not None and not args.repair:
        raise InvalidArgument(
            "--key is used only with --repair (a rebuild reads encrypted manifests with it)"
        )
    report = doctor_location(
        args.catalog or default_location(args.results_dir),
        results_dir=args.results_dir,
        repair=args.repair,
        verify=not args.quick,
        grace_seconds=args.grace,
        object_grace_seconds=args.object_grace,
        encryption=open_encryption(args.key, "--key") if args.key is not None else None,
    )
    if args.json:
        _emit_json(report.to_dict())
        return 0 if report.ok else 1
    rows = [
        (
            f.severity,
            f.kind,
            f.item_id,
            f.detail,
            f.action or ("" if f.severity == "info" else "not repaired"),
        )
        for f in report.findings
    ]
    console = _console()
    title = f"doctor: {report.items_checked} items checked, {report.files_scanned} files scanned"
    console.print(_table(title, ("severity", "kind", "id", "detail", "action"), rows))
    console.print("healthy" if report.ok else f"{len(report.problems)} problems remain")
    return 0 if report.ok else 1


# ------------------------------------------------------------------ parsers
def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("catalog")
    where.add_argument(
        "--catalog", metavar="URL_OR_PATH", help="catalog file, results folder or postgresql:// URL"
    )
    where.add_argument(
        "--results-dir", metavar="DIR", help="results folder (its catalog.sqlite unless --catalog)"
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return common


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = _common()

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, parents=[common], help=help_text, description=help_text
        )
        parser.set_defaults(func=func)
        return parser

    p = add("runs", cmd_runs, "list the runs in the catalog, newest first")
    p.add_argument(
        "--workflow", help="only runs of this workflow type (train_test_optimization...)"
    )
    p.add_argument("--name", help="only runs of this run name (run_name of the config)")
    p.add_argument("--status", choices=PROCESS_STATUSES)
    p.add_argument("--limit", type=int)

    p = add("ls", cmd_ls, "list the stored items of a run ('latest' for the newest run)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--stage")
    p.add_argument("--entity")
    p.add_argument("--since", metavar="T", help="ISO time or age (30m, 2h, 7d)")
    p.add_argument(
        "--meta",
        action="append",
        metavar="KEY=VALUE",
        help="metadata equals (dotted keys); repeatable",
    )
    p.add_argument("--phase")
    p.add_argument("--container")
    p.add_argument("--window")
    p.add_argument(
        "--state",
        action="append",
        choices=ITEM_STATES,
        help="item states (default: all but deleting)",
    )
    p.add_argument("--limit", type=int)

    p = add("show", cmd_show, "show one item (by id or data reference)")
    p.add_argument("item", metavar="ITEM")
    p.add_argument(
        "--container",
        help="the row of this container within ITEM (a block row: ls --container gives its id)",
    )
    p.add_argument("--verify", action="store_true", help="check the file's size and checksum")

    p = add("compare", cmd_compare, "compare the metrics and configs of two runs")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--all", action="store_true", help="also list metrics that are equal")

    p = add("export", cmd_export, "copy or convert a run's stored files into a folder")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--to", required=True, metavar="DIR")
    p.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        help="convert tables to this format (default: copy as is)",
    )

    p = add("cleanup", cmd_cleanup, "delete stored items by policy (never those of running runs)")
    p.add_argument("--policy", required=True, choices=CLEANUP_POLICIES)
    p.add_argument(
        "--stages", nargs="+", metavar="STAGE", help="stages to persist: their items are kept"
    )
    p.add_argument("--workflow", help="only runs of this workflow type")
    p.add_argument("--name", help="only runs of this run name")
    p.add_argument("--dry-run", action="store_true", help="only show what would be deleted")

    p = add("du", cmd_du, "space used by run and stage")
    p.add_argument("run", metavar="RUN", nargs="?")

    p = add("doctor", cmd_doctor, "find (and repair) temp files, missing and corrupt files")
    p.add_argument("--repair", action="store_true", help="repair what is safe")
    p.add_argument("--quick", action="store_true", help="check sizes only, not checksums")
    p.add_argument(
        "--key",
        metavar="SPEC",
        help="with --repair: master key (env:NAME or file:PATH) a rebuild reads encrypted "
        "manifests with",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=GRACE_SECONDS,
        metavar="SECONDS",
        help=f"keep temp files of running runs younger than this (default {GRACE_SECONDS:.0f})",
    )
    p.add_argument(
        "--object-grace",
        type=float,
        default=OBJECT_GRACE_SECONDS,
        metavar="SECONDS",
        help="with --repair, delete objects no row records only when older than this "
        f"(default {OBJECT_GRACE_SECONDS:.0f})",
    )
