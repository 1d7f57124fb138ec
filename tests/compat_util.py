"""Shared by the compat tests: run every test on both backends, restoring the previous one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import phasekit

CONFIGS = Path(__file__).parent / "data" / "configs"


@pytest.fixture(params=("rust", "python"))
def pk_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """``phasekit.set_backend`` to each backend for the test; the previous one afterwards."""
    previous = phasekit.get_backend()
    phasekit.set_backend(request.param)
    try:
        yield request.param
    finally:
        phasekit.set_backend(previous)
