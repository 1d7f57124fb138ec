"""Strategies for the cluster executor tests (the clusters' workers import them by name)."""

from __future__ import annotations

import os
import time

import numpy as np

from phasekit.backtest.bars import Bars
from phasekit.backtest.strategies import SmaCrossover


class FailsOnce(SmaCrossover):
    """An SMA crossover that raises the first time any process runs it (``marker``, a
    file, records that it did)."""

    def __init__(self, marker: str, fast: int = 10, slow: int = 30) -> None:
        super().__init__(fast, slow)
        self.marker = marker

    def signals(self, bars: Bars) -> np.ndarray:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().signals(bars)
        os.close(fd)
        raise RuntimeError("FailsOnce: the first run fails")


class Sleeps(SmaCrossover):
    """An SMA crossover that first sleeps ``seconds`` (a unit that keeps its worker busy)."""

    def __init__(self, seconds: float, fast: int = 10, slow: int = 30) -> None:
        super().__init__(fast, slow)
        self.seconds = seconds

    def signals(self, bars: Bars) -> np.ndarray:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:  # short sleeps: an interrupt (a cancel) lands
            time.sleep(0.05)
        return super().signals(bars)
