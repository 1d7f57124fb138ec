"""Helpers for the store tests: the backend fixture, one sample value of each kind, equality."""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import phasekit
from phasekit.backend import PRIMITIVES, rust_available

STORE_PRIMITIVES = ("Channel", "SpillLedger", "IpcWriter", "size_of")


def _rust_has_primitives() -> bool:
    if not rust_available():
        return False
    from phasekit import _core

    return all(hasattr(_core, name) for name in STORE_PRIMITIVES if name in PRIMITIVES)


# The stores run on whichever backend is in use; both are exercised once the Rust
# module has every primitive the stores build on (CI runs the suite on both).
STORE_BACKENDS = ("rust", "python") if _rust_has_primitives() else ("python",)


@pytest.fixture(params=STORE_BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Switch phasekit to one backend for the test, then back."""
    previous = phasekit.get_backend()
    phasekit.set_backend(request.param)
    try:
        yield request.param
    finally:
        phasekit.set_backend(previous)


def sample_values() -> dict[str, Any]:
    """One value of every kind a store accepts (tables with several column types)."""
    n = 50
    return {
        "table": pa.table(
            {
                "i": pa.array(range(n), pa.int64()),
                "x": pa.array([k * 0.25 for k in range(n)]),
                "s": pa.array([f"r{k}" if k % 7 else None for k in range(n)]),
                "ts": pa.array(
                    [
                        datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=k)
                        for k in range(n)
                    ],
                    pa.timestamp("ns"),
                ),
            }
        ),
        "batch": pa.record_batch(
            {"a": pa.array(range(n), pa.int32()), "b": [k % 2 == 0 for k in range(n)]}
        ),
        "polars": pl.DataFrame(
            {"sym": ["AAPL", "MSFT"] * (n // 2), "px": [float(k) for k in range(n)]}
        ),
        "pandas": pd.DataFrame(
            {"qty": np.arange(n, dtype=np.int64), "side": ["buy", "sell"] * (n // 2)},
            index=pd.Index(np.arange(100, 100 + n), name="order"),
        ),
        "numpy": np.arange(60, dtype=np.float32).reshape(3, 4, 5),
        "json": {
            "sharpe": 1.25,
            "trades": [1, 2, 3],
            "ok": True,
            "note": None,
            "nested": {"a": "b"},
        },
    }


def assert_same(expected: Any, actual: Any) -> None:
    """Same type and same content (for every kind of :func:`sample_values`)."""
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, (pa.Table, pa.RecordBatch)):
        assert actual.equals(expected), (actual.schema, expected.schema)
    elif isinstance(expected, pl.DataFrame):
        assert actual.equals(expected)
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(actual, expected)
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_array_equal(actual, expected)
    else:
        assert actual == expected


def mount_tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``1m``, ``4m``; needs root and mount); skipped where the machine
    cannot mount one (the injected ENOSPC tests cover the same paths everywhere)."""
    mount_point = tmp_path / f"disk-{size}"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (see :func:`mount_tmpfs`)."""
    yield from mount_tmpfs(tmp_path, "1m")
