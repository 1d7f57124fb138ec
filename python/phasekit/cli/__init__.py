"""The ``phasekit`` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``; :data:`COMMAND_MODULES` lists them. A module adds its
subcommands with ``subparsers.add_parser(...)`` and sets ``func`` (a callable
taking the parsed ``argparse.Namespace`` and returning an exit code) with
``parser.set_defaults(func=...)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from phasekit.errors import PhasekitError

log = logging.getLogger("phasekit.cli")

# module name (in this package) -> registers its subcommands
COMMAND_MODULES: tuple[str, ...] = ("run", "catalog", "config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phasekit",
        description="Multi-phase data workflows: run, inspect and clean up stored results.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
