"""``phasekit report RUN [-o FILE]``: a run's report as one self-contained HTML file
(:mod:`phasekit.report`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from phasekit.catalog import default_location, open_catalog
from phasekit.names import check_name

DEFAULT_OUTPUT = "report-{run}.html"
"""The file written without ``-o``: in the current folder, named after the run's id."""


def register(sub: Any) -> None:
    help_text = "write a run's report: one HTML file that works offline"
    parser = sub.add_parser("report", help=help_text, description=help_text)
    parser.add_argument("run", metavar="RUN", help="a run id ('latest' for the newest run)")
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help=f"the HTML file to write (default: {DEFAULT_OUTPUT.format(run='<run id>')})",
    )
    where = parser.add_argument_group("catalog")
    where.add_argument(
        "--catalog", metavar="URL_OR_PATH", help="catalog file, results folder or postgresql:// URL"
    )
    where.add_argument(
        "--results-dir", metavar="DIR", help="results folder (its catalog.sqlite unless --catalog)"
    )
    parser.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from phasekit.report import write_report  # the workflow layer, loaded only here

    location = args.catalog or default_location(args.results_dir)
    with open_catalog(location, results_dir=args.results_dir, create=False) as catalog:
        run_id = catalog.resolve_run(args.run).process_id if args.run == "latest" else args.run
        # the default file is named after the run: a name that stays in the current folder
        out = args.output or DEFAULT_OUTPUT.format(run=check_name("run id", run_id))
        write_report(catalog, run_id, out)  # mode 0600
    sys.stdout.write(f"report of run {run_id} written to {out}\n")
    return 0
