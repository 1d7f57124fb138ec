"""The one place where the Rust (``phasekit._core``) or pure-Python backend is chosen.

``PHASEKIT_BACKEND`` (``auto`` | ``rust`` | ``python``) sets the starting choice;
``set_backend`` changes it at run time. ``auto`` uses Rust whenever the compiled
extension loads and otherwise falls back to Python with a warning; forcing
``rust`` without the extension raises :class:`~phasekit.errors.BackendUnavailable`.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from types import ModuleType
from typing import Any

from phasekit.errors import BackendUnavailable, InvalidArgument

log = logging.getLogger(__name__)

BACKENDS = ("auto", "rust", "python")
PRIMITIVES = ("EventRing", "Channel", "SpillLedger", "IpcWriter", "size_of")

_lock = threading.Lock()
_active: ModuleType | None = None
_active_name: str | None = None
_core_error: BaseException | None = None


def _load_core() -> ModuleType:
    global _core_error
    try:
        from phasekit import _core
    except ImportError as exc:  # the extension was not built or cannot load
        _core_error = exc
        raise BackendUnavailable(
            "the rust backend is not available: phasekit._core failed to import "
            f"({exc}); reinstall phasekit with a Rust toolchain (`pip install .`) "
            "or choose the python backend (PHASEKIT_BACKEND=python)"
        ) from exc
    return _core


def _load_pure() -> ModuleType:
    from phasekit import _pure

    return _pure


def _resolve(name: str) -> tuple[str, ModuleType]:
    if name not in BACKENDS:
        raise InvalidArgument(f"unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")
    if name == "python":
        return "python", _load_pure()
    if name == "rust":
        return "rust", _load_core()
    try:
        return "rust", _load_core()
    except BackendUnavailable as exc:
        warnings.warn(
            f"phasekit falls back to the pure-Python backend: {exc}",
            RuntimeWarning,
            stacklevel=3,
        )
        return "python", _load_pure()


def set_backend(name: str) -> str:
    """Choose the backend: ``"rust"``, ``"python"`` or ``"auto"``; returns the one in use."""
    global _active, _active_name
    resolved, module = _resolve(str(name).lower())
    with _lock:
        _active, _active_name = module, resolved
    log.debug("phasekit backend set to %s", resolved)
    return resolved


def _ensure() -> ModuleType:
    if _active is None:
        set_backend(os.environ.get("PHASEKIT_BACKEND", "auto").strip().lower() or "auto")
    assert _active is not None
    return _active


def get_backend() -> str:
    """The name of the backend in use: ``"rust"`` or ``"python"``."""
    _ensure()
    assert _active_name is not None
    return _active_name


def backend_module(name: str | None = None) -> ModuleType:
    """The module of the backend in use (or of ``name``, without changing the choice)."""
    if name is None:
        return _ensure()
    return _resolve(str(name).lower())[1]


def primitive(name: str, backend: str | None = None) -> Any:
    """One of :data:`PRIMITIVES` from the backend in use (or from ``backend``)."""
    if name not in PRIMITIVES:
        raise InvalidArgument(f"unknown primitive {name!r}; allowed: {', '.join(PRIMITIVES)}")
    return getattr(backend_module(backend), name)


def rust_available() -> bool:
    """True when the compiled extension imports."""
    try:
        _load_core()
    except BackendUnavailable:
        return False
    return True


__all__ = [
    "BACKENDS",
    "PRIMITIVES",
    "backend_module",
    "get_backend",
    "primitive",
    "rust_available",
    "set_backend",
]
