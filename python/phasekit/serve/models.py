"""The JSON bodies of the HTTP API (they make its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class ErrorBody(BaseModel):
    """Every error: the ``phasekit.errors`` class and the message the CLI prints."""

    error: str = Field(description="the phasekit.errors class, e.g. UnknownKey")
    message: str = Field(description="the same text as `phasekit: error: ...` on the CLI")


class Health(BaseModel):
    status: str
    catalog: str = Field(description="the catalog's dialect: sqlite or postgresql")
    auth: bool = Field(description="whether requests need an API token")


class Run(BaseModel):
    process_id: str
    workflow: str
    run_name: str | None
    status: str
    backend: str | None
    started_at: datetime
    finished_at: datetime | None
    config: dict[str, Any] = Field(
        description="the run's configuration; server paths rewritten: <results>, a path "
        "relative to the results folder, or <server path>"
    )


class Item(BaseModel):
    id: int
    process_id: str
    stage_name: str
    entity_name: str
    storage_type: str
    location: str = Field(description="where the bytes are: file, memory, stream or inline")
    path: str | None = Field(description="a file's path under the results folder")
    metadata: dict[str, Any] = Field(
        description="what was recorded with the item; server paths rewritten as in a run's config"
    )
    created_at: datetime
    size_bytes: int
    format: str | None
    checksum: str | None
    phase: str | None
    window_id: str | None
    container_id: str | None
    state: str


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null at the end"
    )


class MetricDiff(BaseModel):
    phase: str | None
    stage_name: str
    entity_name: str
    window_id: str | None
    container_id: str | None
    metric: str
    a: float | None
    b: float | None
    diff: float | None
    rel_diff: float | None


class ConfigDiff(BaseModel):
    path: str = Field(description="the dotted key of the setting, e.g. data.path")
    a: Any = Field(default=None, description="its value in run a (server paths rewritten)")
    b: Any = Field(default=None, description="its value in run b (server paths rewritten)")


class Comparison(BaseModel):
    run_a: Run
    run_b: Run
    metrics: list[MetricDiff]
    config: list[ConfigDiff]


class Removal(BaseModel):
    removed: list[int]
    freed_bytes: int
    failed: list[dict[str, Any]]


class Token(BaseModel):
    token_id: str
    name: str | None
    scope: str
    runs: str | None
    stages: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    status: str
