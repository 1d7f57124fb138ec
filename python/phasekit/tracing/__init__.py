"""Event tracing as the metrics system: a container's events go through an EventRing
under its retention policy while a streaming tracer computes the metrics."""

from __future__ import annotations

from phasekit.tracing.tracer import ContainerTracer, TracerSettings

__all__ = ["ContainerTracer", "TracerSettings"]
