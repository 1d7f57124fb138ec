"""The catalog's ``key_id`` column (schema version 6), in both dialects."""

from __future__ import annotations

from pathlib import Path

from phasekit.catalog import open_catalog
from phasekit.catalog.schema import SCHEMA_VERSION

pytest_plugins = ["conftest_pg"]


def record(cat: object, run: str, entity: str, key_id: str | None) -> int:
    return cat.record_item(  # type: ignore[attr-defined]
        run, "p", entity, inline_data={"v": 1}, key_id=key_id
    )


def test_key_id_is_recorded_and_rotated(catalog_url: str, results_dir: Path) -> None:
    with open_catalog(catalog_url, results_dir=results_dir) as cat:
        run = cat.start_process("wf", process_id="r")
        a = record(cat, run, "a", "pk-aaaaaaaaaaaaaaaa")
        b = record(cat, run, "b", "pk-bbbbbbbbbbbbbbbb")
        c = record(cat, run, "c", None)
        assert cat.set_key_id(["pk-aaaaaaaaaaaaaaaa"], "pk-cccccccccccccccc") == 1
    with open_catalog(catalog_url, results_dir=results_dir, create=False) as cat:
        got = {i.id: i.key_id for i in cat.get_items([a, b, c])}  # row checks verified
        assert got == {a: "pk-cccccccccccccccc", b: "pk-bbbbbbbbbbbbbbbb", c: None}
        assert cat.set_key_id(["pk-cccccccccccccccc"], "pk-cccccccccccccccc") == 0


def test_a_version_5_catalog_gains_key_id(catalog_url: str, results_dir: Path) -> None:
    assert SCHEMA_VERSION == 6
    with open_catalog(catalog_url, results_dir=results_dir) as cat:
        run = cat.start_process("wf", process_id="old")
        item = record(cat, run, "a", None)
        cat._write("ALTER TABLE intermediate_data DROP COLUMN key_id")
        cat._write("UPDATE phasekit_schema SET version = 5")
    with open_catalog(catalog_url, results_dir=results_dir) as cat:
        assert cat.get_item(item).key_id is None
        new = record(cat, "old", "b", "pk-dddddddddddddddd")
    with open_catalog(catalog_url, results_dir=results_dir, create=False) as cat:
        assert cat.get_item(new).key_id == "pk-dddddddddddddddd"
        version = cat._read("SELECT version FROM phasekit_schema")
        assert version[0][0] == 6
