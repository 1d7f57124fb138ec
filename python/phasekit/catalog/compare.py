"""Two runs side by side: the numeric metrics of their items, and their config differences.

An item's metrics are the numbers in ``metadata["metrics"]`` (nested mappings flattened
to dotted names). Items of the two runs are joined on (phase, stage, entity, window,
container); when a run recorded the same key twice, its latest item counts. The
containers of a block row (:mod:`.blockrows`) are joined as their own rows would be
(entity ``<container_id>_results``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from phasekit.catalog.blockrows import container_metrics
from phasekit.catalog.rows import ItemRow, ProcessRow

if TYPE_CHECKING:
    from phasekit.catalog.base import Catalog

Key = tuple[str, str, str, str, str]
_NONE = ""


@dataclass(frozen=True)
class MetricDiff:
    phase: str | None
    stage_name: str
    entity_name: str
    window_id: str | None
    container_id: str | None
    metric: str
    a: float | None
    b: float | None

    @property
    def diff(self) -> float | None:
        """``b - a`` when both are numbers."""
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def rel_diff(self) -> float | None:
        """``(b - a) / |a|`` when both are numbers and ``a`` is not zero."""
        d = self.diff
        return None if d is None or not self.a else d / abs(self.a)

    @property
    def item(self) -> str:
        """The item the metric is of, short: ``stage[/phase]/window/container`` (the
        phase where it differs from the stage; the entity where it is not the
        container's ``<container>_results``)."""
        phase = self.phase if self.phase != self.stage_name else None
        entity: str | None = self.entity_name
        if self.container_id and entity == f"{self.container_id}_results":
            entity = None
        parts = (self.stage_name, phase, self.window_id, self.container_id, entity)
        return "/".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "diff": self.diff, "rel_diff": self.rel_diff}


@dataclass(frozen=True)
class ConfigDiff:
    path: str
    a: Any
    b: Any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    run_a: ProcessRow
    run_b: ProcessRow
    metrics: list[MetricDiff]
    config: list[ConfigDiff]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a.to_dict(),
            "run_b": self.run_b.to_dict(),
            "metrics": [m.to_dict() for m in self.metrics],
            "config": [c.to_dict() for c in self.config],
        }


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted paths."""
    out: dict[str, Any] = {}
    for key, inner in value.items():
        path = f"{prefix}{key}"
        if isinstance(inner, Mapping) and inner:
            out.update(flatten(inner, path + "."))
        else:
            out[path] = inner
    return out


def metrics_of(item: ItemRow) -> dict[str, float | None]:
    """The numeric metrics of an item (``None`` for a metric recorded as null)."""
    raw = item.metadata.get("metrics")
    if not isinstance(raw, Mapping):
        return {}
    return _numbers(raw)


def _key(item: ItemRow) -> Key:
    return (
        item.phase or _NONE,
        item.stage_name,
        item.entity_name,
        item.window_id or _NONE,
        item.container_id or _NONE,
    )


def _numbers(raw: Mapping[str, Any]) -> dict[str, float | None]:
    return {
        name: (float(v) if v is not None else None)
        for name, v in flatten(raw).items()
        if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
    }


def _by_key(items: list[ItemRow]) -> dict[Key, dict[str, float | None]]:
    found: dict[Key, dict[str, float | None]] = {}
    for item in items:  # id order: a later item replaces an earlier one
        metrics = metrics_of(item)
        if metrics:
            found[_key(item)] = metrics
        # a block row: each of its containers as its own row would be
        phase, window = item.phase or _NONE, item.window_id or _NONE
        for cid, raw in container_metrics(item):
            numbers = _numbers(raw)
            if numbers:
                found[(phase, item.stage_name, f"{cid}_results", window, cid)] = numbers
    return found


def compare_runs(catalog: Catalog, run_a: str, run_b: str) -> Comparison:
    proc_a, proc_b = catalog.resolve_run(run_a), catalog.resolve_run(run_b)
    side_a = _by_key(catalog.list_items(proc_a.process_id))
    side_b = _by_key(catalog.list_items(proc_b.process_id))
    rows: list[MetricDiff] = []
    for key in sorted(set(side_a) | set(side_b)):
        ma, mb = side_a.get(key, {}), side_b.get(key, {})
        for metric in sorted(set(ma) | set(mb)):
            phase, stage, entity, window, container = key
            rows.append(
                MetricDiff(
                    phase or None,
                    stage,
                    entity,
                    window or None,
                    container or None,
                    metric,
                    ma.get(metric),
                    mb.get(metric),
                )
            )
    ca, cb = flatten(proc_a.config), flatten(proc_b.config)
    config = [
        ConfigDiff(path, ca.get(path), cb.get(path))
        for path in sorted(set(ca) | set(cb))
        if ca.get(path) != cb.get(path) or (path in ca) != (path in cb)
    ]
    return Comparison(proc_a, proc_b, rows, config)
