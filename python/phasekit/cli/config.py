"""``phasekit config show FILE``: the resolved settings of every phase and container pattern.

One table per phase: a row per setting, a column for the phase and one per container
pattern (values that differ from the phase's in bold), and where the phase's value came
from. ``--phase`` and ``--container`` (a pattern or a container id) narrow it; ``--set
path=value`` applies runtime arguments; ``--json`` prints the same as JSON.

A built-in workflow's per-phase defaults (``phasekit.workflow.builtin``) are the
workflow level of precedence, as in ``phasekit run``, and the configuration is checked as
``run`` checks it, with two differences (:func:`phasekit.workflow.run.resolve_shown`):
what phasekit does not support (the design notes' source project's sections, keys and
values, :func:`phasekit.config.load.load_config_shown`) is listed in its own block (in
``--json`` under ``unsupported``) instead of refused, and a configuration that defines no
workflow (a fragment) shows its run-wide settings and says so (``no_workflow``). ``run``
refuses both.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any, Optional

from phasekit.cli.tables import Layout, fit_table
from phasekit.config import ResolvedConfig, ResolvedSettings, parse_set_args
from phasekit.config.patterns import is_pattern
from phasekit.errors import ConfigError


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="inspect configurations")
    commands = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    show = commands.add_parser("show", help="print the resolved settings of a config file")
    show.add_argument("file", help="a YAML configuration file")
    show.add_argument("--phase", help="only this phase")
    show.add_argument("--container", help="only this container pattern or container id")
    show.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="a runtime argument, e.g. data_flow.mode=file (repeatable)",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of tables")
    show.set_defaults(func=run_show)
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)


def run_show(args: argparse.Namespace) -> int:
    """Validate as ``phasekit run`` does, listing what phasekit does not support instead
    of refusing it (:func:`phasekit.workflow.run.resolve_shown`), then print."""
    from phasekit.workflow.run import resolve_shown

    shown = resolve_shown(args.file, parse_set_args(args.sets))
    view = select(shown.resolved, args.phase, args.container)
    view["no_workflow"] = shown.no_workflow
    view["unsupported"] = [item.to_dict() for item in shown.unsupported]
    if args.json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
        return 0
    print_tables(view)
    return 0


def _container_view(
    resolved: ResolvedConfig,
    phase: Optional[str],
    patterns: Mapping[str, ResolvedSettings],
    wanted: str,
) -> dict[str, Any]:
    if wanted in patterns or is_pattern(wanted):
        if wanted not in patterns:
            known = ", ".join(patterns) or "none"
            raise ConfigError(f"--container: no container pattern {wanted!r} (patterns: {known})")
        return {wanted: patterns[wanted].to_dict()}
    container = resolved.container(phase, wanted)
    body = container.settings.to_dict()
    body["pattern"] = container.pattern
    return {wanted: body}


def select(
    resolved: ResolvedConfig, phase: Optional[str], container: Optional[str]
) -> dict[str, Any]:
    """The JSON view, narrowed to one phase and/or one container pattern or id."""
    view = resolved.to_dict()
    if phase is not None:
        resolved.phase(phase)  # unknown phase: ConfigError with a did-you-mean
        view["phases"] = {phase: view["phases"][phase]}
    if container is not None:
        view["base_containers"] = _container_view(resolved, None, resolved.base_patterns, container)
        for name, body in view["phases"].items():
            patterns = resolved.phase(name).pattern_settings
            body["containers"] = _container_view(resolved, name, patterns, container)
    return view


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and key != "sources":
            out.update(flatten(value, path + ".") if value else {path: "{}"})
        elif key != "sources":
            out[path] = value
    return out


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "[]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _origin(source: Optional[Mapping[str, str]]) -> str:
    """``phases[0].data_flow.mode (phase)``: the path that set a value and its level."""
    if not source:
        return ""
    path, level = source["path"], source["level"]
    return path if path == "default" else f"{path} ({level})"


SETTINGS_LAYOUT = Layout(ids=("container", "setting"), drop=("from",))


def settings_table(title: str, settings: Mapping[str, Any], width: int = 200) -> Any:
    """A row per setting: value and where it came from (fitted to ``width``)."""
    rows = [
        (key.removeprefix("data_flow."), _text(value), _origin(settings["sources"].get(key)))
        for key, value in flatten(settings).items()
    ]
    return fit_table(title, ("setting", "value", "from"), rows, SETTINGS_LAYOUT, width)


def containers_table(
    title: str, main: Mapping[str, Any], containers: Mapping[str, Any], width: int = 200
) -> Any:
    """A row per container pattern (or id) and setting that differs from ``main``."""
    base = flatten(main)
    table_rows: list[tuple[str, str, str, str]] = []
    for name, body in containers.items():
        rows = [(k, v) for k, v in flatten(body).items() if base.get(k, object()) != v]
        if not rows:
            rows = [("", "same as above")]
        for key, value in rows:
            source = _origin(body.get("sources", {}).get(key))
            table_rows.append((name, key.removeprefix("data_flow."), _text(value), source))
    columns = ("container", "setting", "value", "from")
    return fit_table(title, columns, table_rows, SETTINGS_LAYOUT, width)


def _source(source: Mapping[str, Any]) -> str:
    """Where a setting came from: its level, and the key path unless it is the default."""
    path = source.get("path")
    return source["level"] if path in (None, "", "default") else f"{source['level']}: {path}"


def print_tables(view: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    run = Table(title="run", title_justify="left", show_header=False)
    run.add_column("key", style="cyan")
    run.add_column("value")
    for key in ("workflow", "run_name", "results_dir", "allow_pickle"):
        run.add_row(key, escape(_text(view[key])))
    workers = view["workers"]
    run.add_row("workers", "auto (one per core)" if workers is None else escape(_text(workers)))
    catalog = view["catalog"]
    run.add_row("catalog", escape(f"{catalog['backend']}: {catalog['location']}"))
    encryption = view["encryption"]
    state = f"on, key {encryption['key']}" if encryption["enabled"] else "off"
    run.add_row("encryption", escape(f"{state} ({_source(encryption['source'])})"))
    executor = view["executor"]
    target = executor["kind"] + (f" {executor['address']}" if executor["address"] else "")
    run.add_row("executor", escape(f"{target} ({_source(executor['source'])})"))
    run.add_row("engine", view["engine"])
    run.add_row("cleanup_policy", view["cleanup_policy"])
    stages = view["stages_to_persist"]
    run.add_row("stages_to_persist", escape(_text(stages)) if stages else "all")
    run.add_row("results_layout", view["results_layout"])
    console.print(run)
    sections = [("run-wide settings", view["base"], view["base_containers"])]
    if view["phases"]:
        sections = []
    for name, phase in view["phases"].items():
        deps = ", ".join(phase["depends_on"]) or "none"
        title = (
            f"phase {name}: sequence {phase['sequence']}, topology {phase['topology']}, "
            f"depends on {deps}, persist {_text(phase['persist'])}"
        )
        sections.append((title, phase["settings"], phase["containers"]))
    if view["no_workflow"]:
        console.print(
            escape(f"no workflow is defined: {view['no_workflow']}; run-wide settings only"),
            style="yellow",
        )
    for title, settings, containers in sections:
        console.print(settings_table(title, settings, console.width))
        if containers:
            head = title.split(":", 1)[0]
            console.print(
                containers_table(
                    f"{head}: containers (settings that differ)",
                    settings,
                    containers,
                    console.width,
                )
            )
    if view["unsupported"]:
        console.print(unsupported_table(view["unsupported"], console.width))


def unsupported_table(items: list[Mapping[str, Any]], width: int = 200) -> Any:
    """The sections phasekit does not support: path, line and what phasekit offers."""
    rows = [
        (item["path"], "" if item["line"] is None else str(item["line"]), item["reason"])
        for item in items
    ]
    title = f"not supported by phasekit ({len(rows)}; phasekit run refuses this file)"
    return fit_table(title, ("section", "line", "instead"), rows, UNSUPPORTED_LAYOUT, width)


UNSUPPORTED_LAYOUT = Layout(ids=("section",), drop=("line",))
