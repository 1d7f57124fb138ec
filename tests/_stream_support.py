"""Shared fixtures of the stream tests: every runtime test runs on both Channel backends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import phasekit

STREAM_BACKENDS = ("rust", "python")


@pytest.fixture(params=STREAM_BACKENDS)
def stream_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Select the backend whose Channel the Dag runtime uses; restores the previous one."""
    previous = phasekit.get_backend()
    name = phasekit.set_backend(request.param)
    try:
        yield name
    finally:
        phasekit.set_backend(previous)


def double(x: int) -> int:
    """A module-level callable that specs reference as ``_stream_support:double``."""
    return 2 * x


def numbers(n: int) -> range:
    """A source factory for specs: ``type: _stream_support:numbers`` with ``args: {n: 5}``."""
    return range(n)


class Total:
    """A sink class for specs: its result is the sum of the items."""

    def open(self) -> None:
        self.total = 0

    def process(self, item: int) -> None:
        self.total += item

    def close(self) -> int:
        return self.total


def polars_ohlc_aggs() -> list[Any]:
    """The polars aggregations of an OHLCV bar (as ``ohlc_resample`` computes it)."""
    import polars as pl

    return [
        pl.col("price").first().alias("open"),
        pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"),
        pl.col("price").last().alias("close"),
        pl.col("volume").sum(),
        pl.len().cast(pl.Int64).alias("trades"),
    ]
