"""Shared fixtures: every primitive test runs against both backends."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
