"""A throwaway PostgreSQL server for tests and benchmarks.

It uses initdb and pg_ctl from the Debian ``postgresql`` package (found under
``/usr/lib/postgresql/*/bin``, or in ``$PHASEKIT_PG_BIN``), keeps its data in a fresh
temporary folder, listens on 127.0.0.1 on a free port and on a unix socket in that
folder, and runs as the ``postgres`` (else ``nobody``) user when started by root.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

NO_POSTGRES_ENV = "PHASEKIT_ALLOW_NO_POSTGRES"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def find_bindir() -> Path:
    """The folder holding initdb and pg_ctl (newest installed version)."""
    env = os.environ.get("PHASEKIT_PG_BIN")
    candidates = [env] if env else []

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin "
        "or on PATH; install them with `apt-get install postgresql` (set "
        f"{NO_POSTGRES_ENV}=1 to skip the PostgreSQL tests instead)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> str | None:
    """The unprivileged user to run the server as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PgServer:
    """start() / stop() a private PostgreSQL cluster; ``url`` connects as its superuser."""

    user = "phasekit"

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.run_as = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="phasekit-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.url = ""

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as is None:
            return list(args)
        return ["runuser", "-u", self.run_as, "--", *args]

    def _run(self, *args: str) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}"
            )

    def start(self) -> PgServer:
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
            "-E", "UTF8", "--no-sync", "--locale=C",
        )  # fmt: skip
        last: Exception | None = None
        for _ in range(5):
            self.port = _free_port()
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {self.root} -F "
                "-c max_connections=60 -c shared_buffers=32MB"
            )
            try:
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                    "-o", options, "-w", "-t", "60", "start",
                )  # fmt: skip
                break
            except RuntimeError as exc:  # the port was taken in between: try another
                last = exc
        else:
            raise RuntimeError(f"PostgreSQL did not start: {last}")
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"
        return self

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def new_schema(self) -> tuple[str, str]:
        """Create an empty schema; returns (its name, a URL whose search_path is that schema)."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return name, f"{self.url}?options={quote(f'-csearch_path={name}')}"

    def drop_schema(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
