"""The ``phasekit`` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``; :data:`COMMAND_MODULES` lists them. A module adds its
subcommands with ``subparsers.add_parser(...)`` and sets ``func`` (a callable
taking the parsed ``argparse.Namespace`` and returning an exit code) with
``parser.set_defaults(func=...)``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from phasekit import backend
from phasekit.errors import BackendUnavailable, PhasekitError

log = logging.getLogger("phasekit.cli")

# module name (in this package) -> registers its subcommands
COMMAND_MODULES: tuple[str, ...] = ("run", "catalog", "config", "serve", "report", "keys")


def version_report() -> tuple[list[str], int]:
    """``phasekit --version``: the package, the backend in use and the core's build.

    Returns the lines and the exit code (1 when a forced rust backend cannot load).
    """
    lines = [f"phasekit {backend.package_version()} ({Path(__file__).resolve().parent.parent})"]
    code = 0
    with warnings.catch_warnings():  # the core line below says why auto fell back
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            lines.append(f"backend: {backend.get_backend()}")
        except BackendUnavailable:
            lines.append("backend: rust (requested, not available)")
            code = 1
    try:
        lines.append(f"core: {backend.core_build().describe()}")
    except BackendUnavailable as exc:
        lines.append(f"core: not available: {exc}")
    return lines, code


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        lines, code = version_report()
        sys.stdout.write("\n".join(lines) + "\n")
        parser.exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phasekit",
        description="Multi-phase data workflows: run, inspect and clean up stored results.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version, the backend in use and the compiled core's build, then exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"phasekit.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except PhasekitError as exc:
        sys.stderr.write(f"phasekit: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("phasekit: interrupted\n")
        return 130


def run() -> None:
    """The ``phasekit`` command: :func:`main`, then the process exits with its status.
    What is left is frozen first (``gc.freeze``): every file and catalog is closed by
    then, and the interpreter's shutdown then skips its search for reference cycles among
    the objects of every module imported (0.1-0.2 s of each command)."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
