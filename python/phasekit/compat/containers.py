"""Design note 002's portfolio container with its event bus and metrics observer:
``Event``, ``EventType``, ``EventBus`` (observers with ``on_publish``/``on_delivered``/
``on_error`` hooks), ``ContainerConfig`` and ``Container``.

A container of type ``portfolio`` attaches a :class:`MetricsObserver` (its calculator a
:class:`BasicMetricsCalculator`) to its bus, as the source does; ``get_metrics()``
returns the observer's ``{'metrics', 'observer_stats'}``. The keys read from
``ContainerConfig.config``: ``initial_capital``, ``metrics.annualization_factor``,
``results.retention_policy`` and ``results.max_events``.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Optional

from phasekit.compat.tracing import (
    DEFAULT_ANNUALIZATION,
    DEFAULT_INITIAL_CAPITAL,
    DEFAULT_MAX_EVENTS,
    BasicMetricsCalculator,
    MetricsObserver,
)
from phasekit.errors import InvalidArgument

log = logging.getLogger(__name__)


class EventType(Enum):
    """The source's event types (matched by name by the tracers)."""

    BAR = "BAR"
    TICK = "TICK"
    FEATURES = "FEATURES"
    SIGNAL = "SIGNAL"
    ORDER_REQUEST = "ORDER_REQUEST"
    ORDER = "ORDER"
    FILL = "FILL"
    PORTFOLIO_UPDATE = "PORTFOLIO_UPDATE"
    POSITION_UPDATE = "POSITION_UPDATE"
    POSITION_OPEN = "POSITION_OPEN"
    POSITION_CLOSE = "POSITION_CLOSE"
    SYSTEM_START = "SYSTEM_START"
    SYSTEM_STOP = "SYSTEM_STOP"
    ERROR = "ERROR"
    REGIME_CHANGE = "REGIME_CHANGE"
    RISK_BREACH = "RISK_BREACH"
    CLASSIFICATION = "CLASSIFICATION"


@dataclass
class Event:
    """An event: type, payload and the tracing fields of the source."""

    event_type: Any
    payload: dict[str, Any]
    source_id: Optional[str] = None
    container_id: Optional[str] = None
    correlation_id: Optional[str] = None
    causation_id: Optional[str] = None
    timestamp: datetime = field(default_factory=datetime.now)
    metadata: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: f"evt_{uuid.uuid4().hex[:12]}")
    sequence_number: Optional[int] = None
    target_container: Optional[str] = None


Handler = Callable[[Event], None]


class EventBus:
    """Delivers events to the handlers of their type; observers see every event."""

    def __init__(self, bus_id: Optional[str] = None) -> None:
        self.bus_id = bus_id
        self._handlers: dict[Any, list[Handler]] = defaultdict(list)
        self._observers: list[Any] = []

    def attach_observer(self, observer: Any) -> None:
        self._observers.append(observer)

    def detach_observer(self, observer: Any) -> None:
        self._observers.remove(observer)

    def subscribe(self, event_type: Any, handler: Handler) -> None:
        self._handlers[event_type].append(handler)

    def unsubscribe(self, event_type: Any, handler: Handler) -> None:
        self._handlers[event_type].remove(handler)

    def publish(self, event: Event) -> None:
        for observer in self._observers:
            observer.on_publish(event)
        for handler in list(self._handlers.get(event.event_type, ())):
            try:
                handler(event)
            except Exception as error:
                for observer in self._observers:
                    observer.on_error(event, handler, error)
                raise
            for observer in self._observers:
                observer.on_delivered(event, handler)


@dataclass
class ContainerConfig:
    """Configuration of a container (the source's fields)."""

    name: str
    container_id: Optional[str] = None
    config: dict[str, Any] = field(default_factory=dict)
    capabilities: set[str] = field(default_factory=set)
    components: list[str] = field(default_factory=list)
    container_type: Optional[str] = None


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    section = config.get(name) or {}
    if not isinstance(section, dict):
        raise InvalidArgument(f"container config '{name}' must be a mapping, got {section!r}")
    return section


class Container:
    """A container with its own event bus; a ``portfolio`` container traces its events
    through a :class:`MetricsObserver`."""

    def __init__(self, config: ContainerConfig, parent_event_bus: Optional[EventBus] = None):
        self.config = config
        self.container_type = config.container_type or "container"
        self.container_id = config.container_id or f"{self.container_type}_{uuid.uuid4().hex[:8]}"
        self.name = config.name
        self.event_bus = parent_event_bus or EventBus(bus_id=self.container_id)
        self.streaming_metrics: Optional[MetricsObserver] = None
        self.state = "uninitialized"
        if self.container_type == "portfolio":
            self._setup_metrics()

    def _setup_metrics(self) -> None:
        settings = self.config.config
        metrics = _section(settings, "metrics")
        results = _section(settings, "results")
        calculator = BasicMetricsCalculator(
            initial_capital=settings.get("initial_capital", DEFAULT_INITIAL_CAPITAL),
            annualization_factor=metrics.get("annualization_factor", DEFAULT_ANNUALIZATION),
        )
        self.streaming_metrics = MetricsObserver(
            calculator=calculator,
            retention_policy=results.get("retention_policy", "trade_complete"),
            max_events=results.get("max_events", DEFAULT_MAX_EVENTS),
        )
        self.event_bus.attach_observer(self.streaming_metrics)

    def initialize(self) -> None:
        self.state = "initialized"

    def start(self) -> None:
        self.state = "running"

    def stop(self) -> None:
        self.state = "stopped"

    def cleanup(self) -> None:
        """Stop and detach the metrics observer from the bus."""
        self.stop()
        if self.streaming_metrics is not None:
            self.event_bus.detach_observer(self.streaming_metrics)

    def get_metrics(self) -> Optional[dict[str, Any]]:
        """The observer's metrics; a container without one gives its identity."""
        if self.streaming_metrics is None:
            return {"container_id": self.container_id, "container_type": self.container_type}
        return self.streaming_metrics.get_metrics()

    def get_final_metrics(self) -> Optional[dict[str, Any]]:
        """The observer's results (metrics, observer counters, trades)."""
        if self.streaming_metrics is None:
            return None
        return self.streaming_metrics.get_results()


__all__ = ["Container", "ContainerConfig", "Event", "EventBus", "EventType"]
