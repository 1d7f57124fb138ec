"""Benchmarks are collected from files named bench_*.py (see report.py)."""

from __future__ import annotations


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    config.addinivalue_line("python_files", "bench_*.py")
