"""The cluster executors' shared loop (:class:`RemoteExecutor`) over a scripted engine:
every unit sent is either taken back or cancelled, never both. A unit that was taken
(it raised, or its bars were lost) has ended and is not cancelled (on Ray cancelling a
task that has failed could abort the client); the units still in flight are, when the
loop gives up or ships the bars again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import pytest

from phasekit.errors import WorkflowError
from phasekit.workflow.executor import DataSpec
from phasekit.workflow.executors.remote import RESHIPS, RemoteExecutor, Unit

SPEC = DataSpec.from_config({"n_bars": 300, "seed": 1, "frequency": "1h"})

Fate = Callable[[int, int], str]
"""What becomes of work ``w`` over copy ``c`` of the bars: ``ok``, ``lost`` or ``raise``."""


class Scripted(RemoteExecutor[int, int]):
    """Units are numbers (in sending order); the bars' copies are numbered from 1."""

    engine = "scripted"
    title = "Scripted"

    def __init__(self, fate: Fate) -> None:
        super().__init__("nowhere", workers=1)
        self.fate = fate
        self.sent: list[tuple[int, int]] = []
        """(copy, work) of each unit sent."""
        self.taken: list[int] = []
        self.cancelled: list[int] = []

    def threads(self) -> int:
        return 1

    def _put(self, spec: DataSpec) -> tuple[int, str]:
        return self.shipped + 1, f"copy {self.shipped + 1}"

    def _drop(self, shared: int) -> None:
        del shared

    def _send(self, kind: str, shared: int, work: object) -> int:
        assert isinstance(work, int)
        self.sent.append((shared, work))
        return len(self.sent) - 1

    def _take(self, task: int, shared: int) -> Optional[Unit]:
        self.taken.append(task)
        copy, work = self.sent[task]
        fate = self.fate(work, copy)
        if fate == "raise":
            raise RuntimeError(f"work {work} failed")
        return None if fate == "lost" else ("w", work)

    def _cancel(self, task: int) -> None:
        self.cancelled.append(task)

    def _disconnect(self) -> None:
        pass

    def run(self, works: int) -> list[object]:
        todo = iter(range(works))
        return [done for _, done in self._in_order(SPEC, "batch", lambda: next(todo, None), None)]

    def check_ended(self) -> None:
        """Each unit sent was taken or cancelled, none both."""
        assert not set(self.taken) & set(self.cancelled), (self.taken, self.cancelled)
        assert sorted(self.taken + self.cancelled) == list(range(len(self.sent)))


def test_a_unit_that_raised_is_not_cancelled_and_the_ones_in_flight_are() -> None:
    executor = Scripted(lambda work, copy: "raise" if work == 0 else "ok")
    with pytest.raises(RuntimeError, match="work 0 failed"):
        executor.run(5)
    assert executor.taken == [0]
    assert executor.cancelled == [1]  # 2 x 1 slot in flight: work 1 was still running
    executor.check_ended()


def test_lost_bars_are_shipped_again_and_only_the_units_in_flight_cancelled() -> None:
    executor = Scripted(lambda work, copy: "lost" if copy == 1 else "ok")
    assert executor.run(5) == [0, 1, 2, 3, 4]
    assert executor.shipped == 2
    assert executor.sent[:4] == [(1, 0), (1, 1), (2, 0), (2, 1)]  # sent again, in order
    assert executor.cancelled == [1]  # work 0's unit was taken (lost): not cancelled
    executor.check_ended()


def test_bars_lost_too_often_fail_the_run_without_cancelling_what_was_taken() -> None:
    executor = Scripted(lambda work, copy: "lost")
    with pytest.raises(WorkflowError, match=f"lost with every Scripted worker {RESHIPS + 1} times"):
        executor.run(5)
    assert len(executor.taken) == RESHIPS + 1
    executor.check_ended()
