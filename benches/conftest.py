"""Benchmarks are collected from files named bench_*.py (see report.py).

A benchmark whose test fails (its result check after the timed rounds, or anything
else) is marked as failed, so its timings never reach the ``--benchmark-json`` file
that report.py prints from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("python_files", "bench_*.py")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.failed:
        fixture = getattr(item, "funcargs", {}).get("benchmark")
        if fixture is not None:
            fixture.has_error = True  # pytest-benchmark leaves it out of the JSON
    return report
