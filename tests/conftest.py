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
    return f"phasekit backend env: PHASEKIT_BACKEND={os.environ.get('PHASEKIT_BACKEND', 'auto')}"


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
