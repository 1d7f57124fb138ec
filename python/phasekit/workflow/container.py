"""Containers: one unit of work per execution window, with a role, a lifecycle,
an event bus and (for portfolios) a tracer. Results are handed to a sink when the
container is destroyed, so memory stays bounded however long the sequence."""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from phasekit.errors import WorkflowError
from phasekit.events import event_kind
from phasekit.tracing import ContainerTracer, TracerSettings

log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, np.ndarray]], object]
"""A subscriber; what it returns is ignored."""


class Role(enum.StrEnum):
    DATA = "data"
    STRATEGY = "strategy"
    PORTFOLIO = "portfolio"
    EXECUTION = "execution"
    ANALYSIS = "analysis"


class State(enum.StrEnum):
    CREATED = "created"
    STARTED = "started"
    RUNNING = "running"
    DESTROYED = "destroyed"


_NEXT = {
    State.CREATED: (State.STARTED, State.DESTROYED),
    State.STARTED: (State.RUNNING, State.DESTROYED),
    State.RUNNING: (State.DESTROYED,),
    State.DESTROYED: (),
}


class EventBus:
    """Publishes batches of event columns to the handlers subscribed to their kind."""

    def __init__(self) -> None:
        self._handlers: dict[int, list[Handler]] = defaultdict(list)

    def subscribe(self, kind: int | str, handler: Handler) -> None:
        self._handlers[event_kind(kind)].append(handler)

    def publish(self, events: Mapping[str, np.ndarray]) -> None:
        kinds = np.asarray(events["kind"])
        for kind in np.unique(kinds):
            handlers = self._handlers.get(int(kind))
            if not handlers:
                continue
            mask = kinds == kind
            part = {name: np.asarray(col)[mask] for name, col in events.items()}
            for handler in handlers:
                handler(part)


ResultSink = Callable[["Container", dict[str, Any]], None]


class Container:
    """A container of one role. Portfolio containers trace events through a
    :class:`ContainerTracer`; ``destroy()`` collects the results and passes them to
    ``on_destroy`` (which writes them) before the tracer is released."""

    def __init__(
        self,
        container_id: str,
        role: Role,
        tracer_settings: TracerSettings | None = None,
        on_destroy: ResultSink | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.container_id = container_id
        self.role = Role(role)
        self.state = State.CREATED
        self.bus = EventBus()
        self.params = dict(params or {})
        self.tracer: ContainerTracer | None = None
        self.outputs: dict[str, Any] = {}
        self._on_destroy = on_destroy
        if tracer_settings is not None:
            self.tracer = ContainerTracer(tracer_settings)
            for kind in tracer_settings.subscribed:
                self.bus.subscribe(kind, self.tracer.trace)

    def _move(self, to: State) -> None:
        if to not in _NEXT[self.state]:
            raise WorkflowError(
                f"container {self.container_id}: cannot go from {self.state.value} to {to.value}"
            )
        self.state = to

    def start(self) -> None:
        self._move(State.STARTED)

    def run(self) -> None:
        self._move(State.RUNNING)

    def subscribe(self, kind: int | str, handler: Handler) -> None:
        self.bus.subscribe(kind, handler)

    def results(self) -> dict[str, Any]:
        out: dict[str, Any] = {"container_id": self.container_id, "role": self.role.value}
        if self.params:
            out["parameters"] = self.params
        if self.tracer is not None:
            out.update(self.tracer.result())
        out.update({k: v for k, v in self.outputs.items() if k not in out})
        return out

    def destroy(self, write: bool = True) -> None:
        """Write the results (through the sink; not when ``write`` is false, as after a
        failure) and release everything held."""
        if self.state is State.DESTROYED:
            return
        try:
            if write and self._on_destroy is not None:
                self._on_destroy(self, self.results())
        finally:
            self.state = State.DESTROYED
            self.tracer = None
            self.outputs = {}
            self.bus = EventBus()

    def __enter__(self) -> Container:
        self.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # a container that failed has no complete results: release it without writing,
        # so the failure itself propagates
        self.destroy(write=exc_type is None)
