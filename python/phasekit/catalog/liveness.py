"""Whether the process of a run still lives, the lock a run holds while it runs, and the
temporary files a dead process left behind.

A run records the pid and host of the process that runs it. On the host that recorded
it, a pid that no longer exists means the run was killed: the catalog marks such runs
``interrupted`` when it is opened. While a run is running (or resumed) it holds a lock
so that a second ``--resume`` of it is refused: a lock file ``.phasekit-run.lock`` with
the pid in the run's folder (``flock``, released by the kernel when the process dies)
for SQLite catalogs, a session advisory lock keyed on the run id for PostgreSQL.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Optional, Protocol

from phasekit.errors import CatalogError
from phasekit.names import TMP_SUFFIX
from phasekit.paths import make_private_dir

log = logging.getLogger("phasekit.catalog.liveness")

LOCK_NAME = ".phasekit-run.lock"
SPILL_PREFIX = "phasekit-spill-"


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (one of another user too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_alive(pid: Optional[int], host: Optional[str]) -> Optional[bool]:
    """True or False for a pid of this host; None when it cannot be told (no pid, or
    another host)."""
    if not isinstance(pid, int) or pid <= 0 or host != this_host():
        return None
    return pid_alive(pid)


class RunLock(Protocol):
    def release(self) -> None: ...


class FileRunLock:
    """An exclusive ``flock`` on ``<run folder>/.phasekit-run.lock`` holding the pid."""

    def __init__(self, run_id: str, folder: Path) -> None:
        import fcntl

        self.path = folder / LOCK_NAME
        make_private_dir(folder)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        self._fd: Optional[int] = os.open(self.path, flags, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = self._holder()
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CatalogError(
                    f"run {run_id!r} is already running ({holder}); wait for it to finish "
                    "or stop it before resuming it"
                ) from None
            raise CatalogError(f"cannot lock run {run_id!r} at {self.path}: {exc}") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()} {this_host()}\n".encode())

    def _holder(self) -> str:
        try:
            pid, _, host = self.path.read_text().strip().partition(" ")
        except OSError:
            return "by another process"
        return f"process {pid} on {host}" if pid else "by another process"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the flock goes with the descriptor
            self._fd = None


def advisory_key(run_id: str) -> int:
    """A signed 64-bit key for ``pg_try_advisory_lock`` derived from the run id."""
    digest = hashlib.blake2b(f"phasekit-run:{run_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryRunLock:
    """A PostgreSQL session advisory lock on the catalog's connection, keyed on the run."""

    def __init__(self, catalog: Any, run_id: str) -> None:
        self.catalog = catalog
        self.key = advisory_key(run_id)
        got = catalog._read("SELECT pg_try_advisory_lock(?)", (self.key,))[0][0]
        if not got:
            raise CatalogError(
                f"run {run_id!r} is already running (another session of catalog "
                f"{catalog.url} holds its lock); wait for it to finish or stop it before "
                "resuming it"
            )
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            try:
                self.catalog._read("SELECT pg_advisory_unlock(?)", (self.key,))
            except CatalogError as exc:  # the connection is gone: so is the lock
                log.debug("advisory unlock: %s", exc)


def sweep_dead_files(folder: Path) -> list[Path]:
    """Remove what dead processes left in a run folder: ``*.phasekit-tmp`` files and
    folders, and private hybrid spill folders (``.spill/phasekit-spill-*``). Call it only
    while holding the run's lock: no live process writes there then. Returns what went."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for base, dirs, files in os.walk(folder):
        here = Path(base)
        doomed = [d for d in dirs if d.endswith(TMP_SUFFIX)]
        if here.name == ".spill":
            doomed += [d for d in dirs if d.startswith(SPILL_PREFIX)]
        for name in doomed:
            shutil.rmtree(here / name, ignore_errors=True)
            removed.append(here / name)
        dirs[:] = [d for d in dirs if d not in doomed]
        for name in files:
            if name.endswith(TMP_SUFFIX):
                try:
                    (here / name).unlink()
                    removed.append(here / name)
                except FileNotFoundError:
                    pass
    if removed:
        log.info("removed %d temporary files of an earlier attempt in %s", len(removed), folder)
    return removed
