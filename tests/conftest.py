"""Shared fixtures: every primitive test runs against both backends."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import phasekit
from phasekit.backend import backend_module

pytest.register_assert_rewrite("s3_util")  # its checks are imported by the test modules

BACKEND_NAMES = ("rust", "python")


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> ModuleType:
    """The module of one backend (``phasekit._core`` or ``phasekit._pure``).

    The rust backend must load: a missing extension fails the test, it is not skipped.
    """
    return backend_module(request.param)


@pytest.fixture(params=BACKEND_NAMES)
def backend_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """Selects one backend for the whole package (``phasekit.set_backend``) for the test,
    for tests that run workflows rather than a primitive."""
    before = phasekit.get_backend()
    phasekit.set_backend(request.param)
    yield request.param
    phasekit.set_backend(before)


@pytest.fixture
def both_backends() -> tuple[ModuleType, ModuleType]:
    """(rust, python) backend modules, for tests that compare them side by side."""
    return backend_module("rust"), backend_module("python")


def pytest_report_header(config: pytest.Config) -> str:
    deselect = os.environ.get(DESELECT_BOTH_ENV, "0")
    return (
        f"phasekit backend env: PHASEKIT_BACKEND={os.environ.get('PHASEKIT_BACKEND', 'auto')}, "
        f"{DESELECT_BOTH_ENV}={deselect}"
    )


REPO_ROOT = Path(__file__).resolve().parent.parent


def _repository_state() -> str | None:
    """``git status`` of the repository (tracked changes and untracked files, ignored
    files left out), or None outside a git checkout."""
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


@pytest.fixture(scope="session", autouse=True)
def repository_unchanged() -> Iterator[None]:
    """Tests write only under their temporary folders: the repository tree (tracked files
    and untracked, not ignored, files) is the same after the session as before it."""
    before = _repository_state()
    yield
    if before is None:
        return
    after = _repository_state()
    if after is None:
        return
    changed = sorted(set(after.splitlines()) ^ set(before.splitlines()))
    assert not changed, (
        "the test session changed the repository tree (tests must write only under "
        "their temporary folders): " + "; ".join(changed)
    )


# CI runs the suite a second time with PHASEKIT_BACKEND=python; a test that already
# runs on both backends (parametrised over them, or comparing them side by side) is
# deselected there, so it runs once per backend, not twice.
DESELECT_BOTH_ENV = "PHASEKIT_TEST_DESELECT_BOTH_BACKENDS"


def runs_on_both_backends(item: pytest.Item) -> bool:
    """True for a test parametrised over the backend names or using ``both_backends``,
    and for a test marked ``one_pass`` (its subject, such as a cluster, does not depend
    on the backend: it runs in the first pass only)."""
    if "both_backends" in getattr(item, "fixturenames", ()):
        return True
    if item.get_closest_marker("one_pass") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False
    return any(isinstance(v, str) and v in BACKEND_NAMES for v in callspec.params.values())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(DESELECT_BOTH_ENV) != "1":
        return
    deselected = [item for item in items if runs_on_both_backends(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not runs_on_both_backends(item)]
