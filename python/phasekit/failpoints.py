"""Failpoints: named places where a test makes the process crash on purpose.

Inert unless the environment variable ``PHASEKIT_FAILPOINT`` is set. Its value is a
failpoint name, optionally ``@N``: the process is killed (SIGKILL, so no cleanup and no
``atexit``, as in a power cut or an out-of-memory kill) the ``N``-th time (default the
first) it reaches that failpoint. Crash tests use them to stop a process at a chosen
step instead of after a guessed sleep.

Failpoints (see :mod:`phasekit.catalog.cleanup` for the steps of a removal):

* ``cleanup.after_mark``: the rows are marked ``deleting``, no file deleted yet;
* ``cleanup.after_rename``: a folder item was renamed to its temporary name, not removed;
* ``cleanup.mid_delete``: reached after each file or folder deleted (``@N``: the N-th);
* ``cleanup.before_commit``: the files are deleted, the rows still marked ``deleting``;
* ``cleanup.after_commit``: the rows are deleted, empty folders not yet pruned;
* ``rotate.before_drop_versions``: ``keys rotate`` on a bucket that keeps versions wrote
  and confirmed every key object's new wrapping, old versions not yet deleted;
* ``blocks.after_block``: a block of a window is stored (its batches kept, its catalog
  rows and marker committed); ``@N``: the N-th block of the run.
"""

from __future__ import annotations

import logging
import os
import signal

from phasekit.errors import InvalidArgument

log = logging.getLogger("phasekit.failpoints")

ENV = "PHASEKIT_FAILPOINT"
FAILPOINTS = (
    "cleanup.after_mark",
    "cleanup.after_rename",
    "cleanup.mid_delete",
    "cleanup.before_commit",
    "cleanup.after_commit",
    "blocks.after_block",
    "rotate.before_drop_versions",
)
_reached: dict[str, int] = {}


def _parse(spec: str) -> tuple[str, int]:
    name, _, nth = spec.partition("@")
    if name not in FAILPOINTS:
        raise InvalidArgument(
            f"{ENV}={spec!r}: unknown failpoint {name!r}; allowed: {', '.join(FAILPOINTS)}"
        )
    if nth and not (nth.isdigit() and int(nth) >= 1):
        raise InvalidArgument(f"{ENV}={spec!r}: the count after '@' must be an integer >= 1")
    return name, int(nth or 1)


def reach(name: str) -> None:
    """Kill this process if ``PHASEKIT_FAILPOINT`` chooses this visit of ``name``."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, nth = _parse(spec)
    if target != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == nth:
        log.warning("failpoint %s reached (visit %d): killing the process", name, nth)
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
