"""Prometheus metrics of the server: requests, latency and bytes sent per route.

Each application has its own registry (several servers may run in one process).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "phasekit_http_requests",
            "HTTP requests by route template, method and status",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.seconds = Histogram(
            "phasekit_http_request_seconds",
            "Time to the end of each response, by route template",
            ("route",),
            registry=self.registry,
        )
        self.bytes_sent = Counter(
            "phasekit_http_response_bytes",
            "Bytes of response bodies, by route template",
            ("route",),
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """A pure ASGI middleware (it passes streamed bodies through as they come)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]
        sent = [0]

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            route = _route(scope)
            self.metrics.requests.labels(route, scope["method"], str(status[0])).inc()
            self.metrics.seconds.labels(route).observe(time.perf_counter() - started)
            self.metrics.bytes_sent.labels(route).inc(sent[0])
