"""``phasekit serve`` (the HTTP API) and ``phasekit token create|list|revoke``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from phasekit.catalog.tokens import SCOPES, create_token, list_tokens, revoke_token
from phasekit.cli.catalog import _common, _console, _emit_json, _open, _table, _when
from phasekit.crypt import open_encryption
from phasekit.serve import DEFAULT_HOST, DEFAULT_PORT, open_served_catalog, serve


def cmd_serve(args: argparse.Namespace) -> int:
    encryption = open_encryption(args.key, "--key") if args.key is not None else None
    with open_served_catalog(args.results_dir, args.catalog) as catalog:
        serve(catalog, host=args.host, port=args.port, encryption=encryption)
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        secret, row = create_token(
            catalog,
            args.scope,
            name=args.name,
            runs=args.runs,
            stages=args.stages,
            expires=args.expires,
        )
    if args.json:
        return _emit_json({**row.to_dict(), "token": secret})
    sys.stdout.write(secret + "\n")
    sys.stderr.write(
        f"token {row.token_id} (scope {row.scope}) created; it is shown only now, "
        "the catalog keeps only its hash\n"
    )
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        rows = list_tokens(catalog)
    if args.json:
        return _emit_json([r.to_dict() for r in rows])
    table = [
        (
            r.token_id,
            r.name or "",
            r.scope,
            r.runs or "*",
            r.stages or "*",
            _when(r.expires_at),
            r.status(),
        )
        for r in rows
    ]
    columns = ("id", "name", "scope", "runs", "stages", "expires", "status")
    _console().print(_table(f"{len(rows)} API tokens", columns, table))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        row = revoke_token(catalog, args.token_id)
    if args.json:
        return _emit_json(row.to_dict())
    sys.stdout.write(f"token {row.token_id} revoked\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p: Any = sub.add_parser(
        "serve",
        help="serve the runs and data of a catalog over HTTP",
        description="Serve a results folder or catalog over HTTP (FastAPI on uvicorn). "
        "Binds to a loopback address unless the catalog holds an active API token.",
    )
    p.add_argument("results_dir", nargs="?", metavar="RESULTS_DIR", help="results folder")
    p.add_argument(
        "--catalog",
        metavar="URL",
        help="catalog file or postgresql:// URL (RESULTS_DIR: the folder its files lie under)",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)"
    )
    p.add_argument(
        "--key",
        metavar="SPEC",
        help="master key that decrypts encrypted items: env:NAME or file:PATH",
    )
    p.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="create, list and revoke API tokens of phasekit serve")
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    common = _common()
    c = tsub.add_parser("create", parents=[common], help="create a token (printed once)")
    c.add_argument("--scope", choices=SCOPES, default=SCOPES[0], help="read < write < admin")
    c.add_argument("--name", help="a label for the token")
    c.add_argument("--runs", metavar="PATTERN", help="only runs whose id matches (fnmatch)")
    c.add_argument("--stages", metavar="PATTERN", help="only items of matching stages (fnmatch)")
    c.add_argument("--expires", metavar="WHEN", help="an age (30m, 12h, 7d, 4w) or an ISO time")
    c.set_defaults(func=cmd_token_create)
    ls = tsub.add_parser("list", parents=[common], help="list tokens (never their secrets)")
    ls.set_defaults(func=cmd_token_list)
    r = tsub.add_parser("revoke", parents=[common], help="revoke a token")
    r.add_argument("token_id", metavar="TOKEN_ID")
    r.set_defaults(func=cmd_token_revoke)
