"""phasekit: multi-phase data workflows with a Rust core.

The hot-path primitives (``EventRing``, ``Channel``, ``SpillLedger``,
``IpcWriter``, ``size_of``) resolve to the backend chosen by
:func:`phasekit.set_backend` or ``PHASEKIT_BACKEND`` each time they are looked
up on this module. ``phasekit.run`` (see :mod:`phasekit.workflow.run`) is imported
on first use, so ``import phasekit`` stays light.
``phasekit.__version__`` is the installed distribution's version (Cargo.toml's,
through maturin), or the compiled core's in a source checkout.
"""

from __future__ import annotations

from typing import Any

from phasekit import errors
from phasekit.backend import PRIMITIVES, get_backend, package_version, set_backend
from phasekit.events import EventType, event_kind, event_kind_name, register_event_kind


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return package_version()
    if name == "run":
        from phasekit.workflow.run import run

        return run
    if name in PRIMITIVES:
        from phasekit.backend import primitive

        return primitive(name)
    raise AttributeError(f"module 'phasekit' has no attribute {name!r}")


__all__ = [
    "Channel",
    "EventRing",
    "EventType",
    "IpcWriter",
    "SpillLedger",
    "__version__",
    "errors",
    "event_kind",
    "event_kind_name",
    "get_backend",
    "register_event_kind",
    "run",
    "set_backend",
    "size_of",
]
