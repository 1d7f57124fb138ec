"""The one place where the Rust (``phasekit._core``) or pure-Python backend is chosen.

``PHASEKIT_BACKEND`` (``auto`` | ``rust`` | ``python``) sets the starting choice;
``set_backend`` changes it at run time. ``auto`` uses Rust whenever the compiled
extension loads and otherwise falls back to Python with a warning; forcing
``rust`` without the extension raises :class:`~phasekit.errors.BackendUnavailable`.

The extension must be of the installed package's version: a core of another version
(an old ``_core`` left next to new Python files) is refused with
:class:`~phasekit.errors.CoreVersionMismatch`, a kind of ``BackendUnavailable``, so
``auto`` warns and falls back to Python and a forced ``rust`` raises it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

from phasekit.errors import BackendUnavailable, CoreVersionMismatch, InvalidArgument

log = logging.getLogger(__name__)

BACKENDS = ("auto", "rust", "python")
PRIMITIVES = ("EventRing", "Channel", "SpillLedger", "IpcWriter", "size_of")

_lock = threading.Lock()
_active: ModuleType | None = None
_active_name: str | None = None
_core_error: BaseException | None = None

DISTRIBUTION = "phasekit"
_PRERELEASE = {"alpha": "a", "beta": "b", "rc": "rc"}


@functools.lru_cache(maxsize=1)
def installed_version() -> Optional[str]:
    """The version of the installed distribution these Python files belong to.

    ``None`` when they were not installed from one (a source checkout on
    ``PYTHONPATH``, an editable install): then no installed version describes them
    and the core's version is not checked.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    listed = Path(str(dist.locate_file("phasekit/__init__.py")))
    here = Path(__file__).with_name("__init__.py")
    try:
        ours = listed.samefile(here)
    except OSError:  # the distribution has no such file (editable install)
        ours = False
    return dist.version if ours else None


def cargo_to_pep440(version: str) -> str:
    """A Cargo version as Python packaging writes it: ``1.0.0-rc.1`` -> ``1.0.0rc1``."""
    base, dash, pre = version.partition("-")
    label, _, number = pre.partition(".")
    if dash and label in _PRERELEASE and number.isdigit():
        return f"{base}{_PRERELEASE[label]}{number}"
    return version


def check_core_version(core: ModuleType) -> None:
    """Raise CoreVersionMismatch unless ``core`` is of the installed package's version."""
    expected = installed_version()
    found = str(getattr(core, "__version__", "unknown"))
    if expected is None or cargo_to_pep440(found) == expected:
        return
    raise CoreVersionMismatch(
        f"phasekit {expected} cannot use its compiled core: {getattr(core, '__file__', core)} "
        f"is version {found}; reinstall phasekit so both come from one build "
        f"(pip install --force-reinstall 'phasekit=={expected}') "
        "or choose the python backend (PHASEKIT_BACKEND=python)"
    )


def package_version() -> str:
    """The package version: the installed distribution's, else the core's (source checkout)."""
    installed = installed_version()
    if installed is not None:
        return installed
    try:
        from phasekit import _core
    except ImportError:
        return "unknown"
    return cargo_to_pep440(str(getattr(_core, "__version__", "unknown")))


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
    try:
        check_core_version(_core)
    except CoreVersionMismatch as exc:
        _core_error = exc
        raise
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


@dataclass(frozen=True)
class CoreBuild:
    """How the loaded ``phasekit._core`` was built (its module constants)."""

    version: str
    profile: str
    features: tuple[str, ...]
    target: str
    rustc: str
    path: str

    def describe(self) -> str:
        features = ", ".join(self.features) or "none"
        return (
            f"phasekit._core {self.version}, {self.profile} build, features: {features}, "
            f"target {self.target}, {self.rustc} ({self.path})"
        )


def core_build() -> CoreBuild:
    """The build of the compiled core; raises BackendUnavailable when it does not load."""
    core = _load_core()
    return CoreBuild(
        version=str(core.__version__),
        profile=str(getattr(core, "BUILD_PROFILE", "unknown")),
        features=tuple(getattr(core, "BUILD_FEATURES", ())),
        target=str(getattr(core, "BUILD_TARGET", "unknown")),
        rustc=str(getattr(core, "BUILD_RUSTC", "unknown")),
        path=str(getattr(core, "__file__", "?")),
    )


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
    "CoreBuild",
    "backend_module",
    "cargo_to_pep440",
    "check_core_version",
    "core_build",
    "get_backend",
    "installed_version",
    "package_version",
    "primitive",
    "rust_available",
    "set_backend",
]
