"""``phasekit keys``: master keys of encryption at rest (see docs/security.md).

* ``keys generate`` prints a new random master key (base64 of 32 bytes);
* ``keys rotate --results-dir DIR --old SPEC --new SPEC`` re-wraps every data key under
  the folder with the new master key (the data files are not rewritten) and records the
  new key id in the catalog. ``DIR`` may be ``s3://BUCKET/PREFIX``: the key objects under
  the prefix are re-wrapped, and ``--catalog`` (required then) names the catalog (by
  default in the runs' local folder, ``--local-dir``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from phasekit.errors import InvalidArgument


def cmd_generate(args: argparse.Namespace) -> int:
    from phasekit.crypt import generate_key

    sys.stdout.write(generate_key() + "\n")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from phasekit.catalog import open_catalog
    from phasekit.catalog.uris import CATALOG_FILENAME
    from phasekit.crypt import load_master_key, rewrap_tree
    from phasekit.crypt.objects import rewrap_objects
    from phasekit.objstore import ObjectRoot, is_object_url

    on_objects = is_object_url(args.results_dir)
    folder = Path(args.results_dir)
    if not on_objects and not folder.is_dir():
        raise InvalidArgument(
            f"--results-dir {folder} is not a folder; allowed: a results folder or "
            "s3://BUCKET/PREFIX (results on object storage)"
        )
    if on_objects and not args.catalog:
        raise InvalidArgument(
            f"--results-dir {args.results_dir} is on object storage: give --catalog (the "
            "catalog of its runs, e.g. LOCAL_DIR/catalog.sqlite) so that their key ids are "
            "updated with the keys"
        )
    old = [load_master_key(spec, "--old") for spec in args.old]
    new = load_master_key(args.new, "--new")
    if on_objects:
        report = rewrap_objects(ObjectRoot.from_url(args.results_dir), old, new)
    else:
        report = rewrap_tree(folder, old, new)
    rows = 0
    location = args.catalog or str(folder / CATALOG_FILENAME)
    if args.catalog or Path(location).exists():
        catalog_dir = None if on_objects else args.results_dir
        with open_catalog(location, results_dir=catalog_dir, create=False) as catalog:
            rows = catalog.set_key_id([k.key_id for k in old], new.key_id)
    payload: dict[str, Any] = {**report.to_dict(), "new_key_id": new.key_id, "catalog_rows": rows}
    if args.json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        sys.stdout.write(
            f"re-wrapped {payload['rewrapped']} data keys with {new.key_id} "
            f"({payload['already_current']} already current); catalog rows updated: {rows}\n"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="master keys of encryption at rest")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = keys_sub.add_parser("generate", help="print a new random master key (base64)")
    p.set_defaults(func=cmd_generate)
    p = keys_sub.add_parser(
        "rotate", help="re-wrap the data keys under a results folder with a new master key"
    )
    p.add_argument(
        "--results-dir",
        required=True,
        metavar="DIR",
        help="the results folder, or s3://BUCKET/PREFIX (results on object storage)",
    )
    p.add_argument(
        "--catalog",
        metavar="URL_OR_PATH",
        help="catalog (default: DIR/catalog.sqlite if any; required with s3:// results)",
    )
    p.add_argument(
        "--old",
        required=True,
        action="append",
        metavar="SPEC",
        help="the current master key, env:NAME or file:PATH (repeat for several)",
    )
    p.add_argument("--new", required=True, metavar="SPEC", help="the new master key")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_rotate)
