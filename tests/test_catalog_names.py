"""Hostile names, references and catalog URLs get a clear error naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from phasekit.catalog import Catalog, CatalogRecorder, check_name, open_catalog
from phasekit.errors import CatalogError, InvalidArgument

pytest_plugins = ["conftest_pg"]

HOSTILE: list[Any] = [
    "",
    ".",
    "..",
    "../etc",
    "a/../../b",
    "a/b",
    "/abs/path",
    "a\\b",
    "C:evil",
    "nul\x00byte",
    "new\nline",
    "tab\there",
    "bell\x07",
    "zero\u200bwidth",
    ".hidden",
    " padded ",
    "x.phasekit-tmp",
    "x" * 201,
    5,
    None,
    b"bytes",
]
ITEM_FIELDS = ("stage_name", "entity_name", "phase", "window_id", "container_id")


def _record(catalog: Catalog, run: str, field: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"stage_name": "p", "entity_name": "e", field: value}
    stage, entity = kwargs.pop("stage_name"), kwargs.pop("entity_name")
    catalog.record_item(run, stage, entity, inline_data=1, **kwargs)


@pytest.mark.parametrize("field", ITEM_FIELDS)
def test_item_names(catalog: Catalog, field: str) -> None:
    run = catalog.start_process("wf")
    for value in HOSTILE:
        if value is None and field not in ("stage_name", "entity_name"):
            continue  # optional fields may be None
        with pytest.raises(InvalidArgument, match=field) as info:
            _record(catalog, run, field, value)
        assert "allowed" in str(info.value) or "must be a string" in str(info.value)
    assert catalog.list_items(run) == []


def test_run_and_workflow_names(catalog: Catalog) -> None:
    for value in HOSTILE:
        with pytest.raises(InvalidArgument, match="process_id"):
            catalog.start_process("wf", process_id=value) if value is not None else check_name(
                "process_id", None
            )
        with pytest.raises(InvalidArgument, match="workflow"):
            catalog.start_process(value)
        with pytest.raises(InvalidArgument, match="process_id"):
            catalog.record_item(value, "p", "e", inline_data=1)
    assert catalog.list_processes() == []


def test_recorder_checks_names_up_front(catalog: Catalog) -> None:
    run = catalog.start_process("wf")
    with pytest.raises(InvalidArgument, match=r"phase '\.\./x'"):
        CatalogRecorder(catalog, run, "../x")
    with pytest.raises(InvalidArgument, match="container_id 'a/b'"):
        CatalogRecorder(catalog, run, "p", container_id="a/b")


def test_messages_say_what_and_what_is_allowed() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_name("stage_name", "../up")
    text = str(info.value)
    assert text.startswith("stage_name '../up' is not a valid name: it contains '..'")
    assert "allowed:" in text
    with pytest.raises(InvalidArgument, match="contains a NUL character"):
        check_name("entity_name", "a\x00")
    with pytest.raises(InvalidArgument, match=r"contains the control character U\+001B"):
        check_name("entity_name", "esc\x1b[31m")
    assert check_name("entity_name", "AAPL 1d é") == "AAPL 1d é"


@pytest.mark.parametrize(
    "ref",
    [
        "../x",
        "relative/path",
        "s3://bucket/key",
        "http://host/x",
        "file://host/share/x",
        "file:relative",
        "x\x00",
    ],
)
def test_bad_references(catalog: Catalog, ref: str) -> None:
    run = catalog.start_process("wf")
    with pytest.raises(CatalogError, match="data reference"):
        catalog.record_item(run, "p", "e", data_reference=ref, checksum="crc32:00000000")


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:hunter2@db/x",
        "s3://bucket/catalog",
        "http://example.com/c",
        "redis://localhost:6379",
    ],
)
def test_bad_catalog_urls(url: str) -> None:
    with pytest.raises(CatalogError) as info:
        open_catalog(url)
    text = str(info.value)
    assert "unsupported scheme" in text and "postgresql://" in text and "sqlite:///" in text
    assert "hunter2" not in text and url.split("://")[0] in text


def test_empty_and_nul_locations(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="catalog location is empty"):
        open_catalog("  ")
    with pytest.raises(CatalogError, match="NUL"):
        open_catalog("postgresql://u@h/db\x00")
    with pytest.raises(CatalogError, match="names no file"):
        open_catalog("sqlite://")
