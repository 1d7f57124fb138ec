"""Containment: no manifest, catalog row or name makes phasekit read, write or delete
outside its root (issue 15, point 1). Every escape the issue lists is a test here, and
hypothesis generates hostile manifests and rows; a sentinel folder outside every root
must be untouched (same names, bytes and mtimes) after each attempt."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog_util import sample_table, store
from phasekit.catalog import open_catalog
from phasekit.checksum import seal
from phasekit.errors import CatalogError, InvalidArgument, PhasekitError, UnsafePath
from phasekit.names import MAX_NAME_BYTES, check_name
from phasekit.stores import FileStore, HybridStore, MemoryStore, StreamStore
from stores_util import store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")


def make_sentinel(folder: Path) -> Path:
    """A folder outside every root, with a file a hostile path would name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "secret.arrow").write_bytes(b"do not read, replace or delete me")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "x.json").write_text('{"keep": true}')
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(folder))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def file_uri(path: Path) -> str:
    return "file://" + str(path)


# ------------------------------------------------------------------ FileStore


def _hostile_manifest(store_dir: Path, key: str, target: str) -> None:
    manifest_path = store_dir / ".phasekit" / f"{key}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["ref"]["uri"] = target
    manifest_path.write_text(json.dumps(seal(manifest)))  # resealed: a consistent forgery


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink_in_store"])
def test_file_store_manifest_pointing_outside_is_refused(tmp_path: Path, how: str) -> None:
    sentinel = make_sentinel(tmp_path / "outside")
    before = snapshot(sentinel)
    store_dir = tmp_path / "store"
    fs = FileStore(store_dir)
    fs.put("k", pa.table({"a": [1, 2]}))
    if how == "absolute":
        target = file_uri(sentinel / "secret.arrow")
    elif how == "dotdot":
        target = file_uri(store_dir) + "/../outside/secret.arrow"
    else:
        (store_dir / "link.arrow").symlink_to(sentinel / "secret.arrow")
        target = file_uri(store_dir / "link.arrow")
    _hostile_manifest(store_dir, "k", target)
    with pytest.raises(UnsafePath, match=r"outside|symbolic link|not directly"):
        fs.get("k")
    with pytest.raises(UnsafePath):
        fs.delete("k")
    with pytest.raises(UnsafePath):  # a replacing put would delete the previous file
        fs.put("k", pa.table({"a": [3]}))
    assert snapshot(sentinel) == before


def test_symlinked_manifest_folder_gets_nothing_written_outside(tmp_path: Path) -> None:
    sentinel = make_sentinel(tmp_path / "outside")
    before = snapshot(sentinel)
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / ".phasekit").symlink_to(sentinel, target_is_directory=True)
    with pytest.raises(UnsafePath, match="symbolic link"):
        FileStore(store_dir)
    # a store whose manifest folder is swapped for a link after it opened
    other = tmp_path / "store2"
    fs = FileStore(other)
    (other / ".phasekit").rmdir()
    (other / ".phasekit").symlink_to(sentinel, target_is_directory=True)
    with pytest.raises(UnsafePath):
        fs.put("k", {"a": 1})
    assert snapshot(sentinel) == before


def test_file_store_data_file_replaced_by_a_link_is_refused(tmp_path: Path) -> None:
    sentinel = make_sentinel(tmp_path / "outside")
    before = snapshot(sentinel)
    fs = FileStore(tmp_path / "store")
    ref = fs.put("k", pa.table({"a": [1]}))
    assert ref.path is not None
    ref.path.unlink()
    ref.path.symlink_to(sentinel / "secret.arrow")
    with pytest.raises(UnsafePath, match="outside its root"):
        fs.get("k")
    with pytest.raises(UnsafePath):
        fs.put("k", pa.table({"a": [2]}))
    assert snapshot(sentinel) == before


@pytest.mark.parametrize(
    "manifest",
    [b"", b"\x00\x01", b"[]", b'{"ref": 3}', b'{"ref": {"uri": "file:///x"}}', b'{"ref": {}}'],
    ids=["empty", "binary", "list", "ref_int", "ref_partial", "ref_empty"],
)
def test_corrupt_file_store_manifest_is_a_phasekit_error(tmp_path: Path, manifest: bytes) -> None:
    fs = FileStore(tmp_path / "store")
    fs.put("k", {"a": 1})
    (tmp_path / "store" / ".phasekit" / "k.json").write_bytes(manifest)
    for call in (lambda: fs.get("k"), lambda: fs.delete("k"), fs.list):
        with pytest.raises(PhasekitError, match="'k'"):
            call()


# ------------------------------------------------------------------ StreamStore


def _stream_manifest(folder: Path, edit: Any) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(seal(manifest)))  # resealed: a consistent forgery


@pytest.mark.parametrize("part", ["../../outside/secret.arrow", "/etc/passwd", "part-1.arrow"])
def test_stream_manifest_part_outside_is_not_read(tmp_path: Path, part: str) -> None:
    sentinel = make_sentinel(tmp_path / "outside")
    before = snapshot(sentinel)
    ss = StreamStore(tmp_path / "streams", buffer_size=2)
    for i in range(4):
        ss.put("s", {"i": i})
    ss.finish("s")
    folder = tmp_path / "streams" / "s.stream"

    def edit(m: dict[str, Any]) -> None:
        m["parts"][0]["file"] = part

    _stream_manifest(folder, edit)
    reader = StreamStore(tmp_path / "streams")
    with pytest.raises(PhasekitError, match="part"):
        reader.get("s")
    with pytest.raises(PhasekitError):
        list(reader.items("s"))
    assert snapshot(sentinel) == before


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(schema="!!not base64!!"),
        lambda m: m.update(schema="QUJD"),
        lambda m: m.update(parts="x"),
        lambda m: m["parts"][0].update(rows="many"),
        lambda m: m["parts"][0].pop("checksum"),
        lambda m: m["parts"].append(7),
        lambda m: m.update(kind="pickle"),
    ],
    ids=["schema_b64", "schema_bytes", "parts_str", "rows_str", "no_checksum", "part_int", "kind"],
)
def test_corrupt_stream_manifest_is_a_phasekit_error(tmp_path: Path, edit: Any) -> None:
    ss = StreamStore(tmp_path / "streams", buffer_size=2)
    for i in range(3):
        ss.put("s", {"i": i})
    ss.finish("s")
    _stream_manifest(tmp_path / "streams" / "s.stream", edit)
    reader = StreamStore(tmp_path / "streams")
    with pytest.raises(PhasekitError, match="'s'"):
        reader.get("s")


def test_stream_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    sentinel = make_sentinel(tmp_path / "outside")
    before = snapshot(sentinel)
    base = tmp_path / "streams"
    base.mkdir()
    (base / "s.stream").symlink_to(sentinel, target_is_directory=True)
    ss = StreamStore(base)
    with pytest.raises(UnsafePath):
        ss.put("s", {"i": 1})
    with pytest.raises(UnsafePath):
        ss.get("s")
    assert snapshot(sentinel) == before


# ------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: MemoryStore(),
        lambda tmp: FileStore(tmp / "f"),
        lambda tmp: StreamStore(tmp / "s"),
        lambda tmp: HybridStore(1 << 20, tmp / "h"),
    ],
    ids=["memory", "file", "stream", "hybrid"],
)
@pytest.mark.parametrize("name", ["x\udc80y", "\ud800", "é" * 101, "a" * (MAX_NAME_BYTES + 1)])
def test_every_store_refuses_bad_names_cleanly(tmp_path: Path, make: Any, name: str) -> None:
    s = make(tmp_path)
    try:
        with pytest.raises(InvalidArgument, match="not a valid name"):
            s.put(name, {"a": 1})
    finally:
        s.close()


def test_the_name_rule_is_in_bytes_and_fits_every_suffix(tmp_path: Path) -> None:
    longest = "é" * (MAX_NAME_BYTES // 2)
    assert check_name("key", longest) == longest
    fs = FileStore(tmp_path / "f", format="parquet")
    ref = fs.put(longest, pa.table({"a": [1]}))
    assert fs.get(ref).num_rows == 1
    with pytest.raises(InvalidArgument, match="bytes long in UTF-8"):
        check_name("key", longest + "é")


# ------------------------------------------------------------------ the catalog


def _hostile_row(db: Path, **columns: Any) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        row = dict(
            process_id="r1",
            stage_name="optimize",
            entity_name="AAPL",
            storage_type="reference",
            data_reference=None,
            inline_data=None,
            metadata="{}",
            created_at="2024-01-01T00:00:00.000000+00:00",
            size_bytes=0,
            format="arrow",
            checksum=None,
            state="present",
        )
        row.update(columns)
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(
            f"INSERT INTO intermediate_data ({names}) VALUES ({marks})", list(row.values())
        )


def _results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    with open_catalog(results) as cat:
        cat.start_process("wf", process_id="r1")
        store(cat, "r1", "optimize", "MSFT", sample_table(10))
        cat.finish_process("r1")
    return results


def test_recording_a_file_outside_the_results_folder_is_refused(tmp_path: Path) -> None:
    sentinel = make_sentinel(tmp_path / "outside")
    results = _results(tmp_path)
    with open_catalog(results) as cat, pytest.raises(CatalogError, match="outside its root"):
        cat.record_item(
            "r1",
            "optimize",
            "X",
            data_reference=file_uri(sentinel / "secret.arrow"),
            size_bytes=(sentinel / "secret.arrow").stat().st_size,
            checksum="crc32:00000000",
        )


@pytest.mark.parametrize(
    "reference",
    ["{out}/secret.arrow", "{results}/r1/../../outside/secret.arrow", "{results}/link.arrow"],
    ids=["absolute", "dotdot", "symlink"],
)
def test_export_cleanup_doctor_never_leave_their_roots(tmp_path: Path, reference: str) -> None:
    sentinel = make_sentinel(tmp_path / "outside")
    results = _results(tmp_path)
    (results / "link.arrow").symlink_to(sentinel / "secret.arrow")
    before = snapshot(sentinel)
    uri = file_uri(Path(reference.format(out=sentinel, results=results)))
    size = (sentinel / "secret.arrow").stat().st_size
    _hostile_row(results / "catalog.sqlite", data_reference=uri, size_bytes=size)
    _hostile_row(  # an inline row whose names would place the export outside --to
        results / "catalog.sqlite",
        storage_type="inline",
        stage_name="../../outside",
        entity_name="../sub/x",
        inline_data='{"x": 1}',
    )
    export_to = tmp_path / "export"
    with open_catalog(results, create=False) as cat:
        with pytest.raises(CatalogError):
            cat.export("r1", export_to)
        report = cat.doctor(repair=True)
        assert any(f.kind in ("bad_reference", "bad_row") for f in report.findings)
        with pytest.raises(CatalogError, match="damaged"):  # the hostile inline row
            cat.cleanup("keep_none")
        with contextlib.closing(sqlite3.connect(results / "catalog.sqlite")) as conn, conn:
            conn.execute("DELETE FROM intermediate_data WHERE storage_type = 'inline'")
        report = cat.cleanup("keep_none")  # the row naming a file outside keeps its file
        assert report.removal is not None and report.removal.failed
    assert snapshot(sentinel) == before


# ------------------------------------------------------------------ hypothesis

_COMPONENTS = st.sampled_from(
    ["..", ".", "", "outside", "secret.arrow", "sub", "x.json", "%2e%2e", "link", "/", "//"]
)
_HOSTILE_PATHS = st.builds(
    lambda parts, absolute: ("/" if absolute else "") + "/".join(parts),
    st.lists(_COMPONENTS, min_size=1, max_size=6),
    st.booleans(),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=_HOSTILE_PATHS, where=st.sampled_from(["file_manifest", "stream_part", "row"]))
def test_hostile_paths_touch_nothing_outside(tmp_path: Path, path: str, where: str) -> None:
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    sentinel = make_sentinel(case / "outside")
    results = case / "results"
    results.mkdir()
    (results / "link").symlink_to(sentinel, target_is_directory=True)
    before = snapshot(sentinel)
    target = str(results / path) if not path.startswith("/") else path
    if where == "file_manifest":
        fs = FileStore(results / "store")
        fs.put("k", pa.table({"a": [1]}))
        _hostile_manifest(results / "store", "k", "file://" + target)
        for call in (lambda: fs.get("k"), lambda: fs.put("k", {"b": 2}), lambda: fs.delete("k")):
            try:
                call()
            except PhasekitError:
                pass
    elif where == "stream_part":
        ss = StreamStore(results / "streams", buffer_size=1)
        ss.put("s", {"i": 1})
        ss.finish("s")
        _stream_manifest(
            results / "streams" / "s.stream", lambda m: m["parts"][0].update(file=path)
        )
        reader = StreamStore(results / "streams")
        for call in (lambda: reader.get("s"), lambda: reader.delete("s")):
            try:
                call()
            except PhasekitError:
                pass
    else:
        with open_catalog(results) as cat:
            cat.start_process("wf", process_id="r1")
            cat.finish_process("r1")
        _hostile_row(results / "catalog.sqlite", data_reference="file://" + target, size_bytes=1)
        _hostile_row(
            results / "catalog.sqlite",
            storage_type="inline",
            stage_name=path,
            entity_name=path,
            inline_data="1",
        )
        with open_catalog(results, create=False) as cat:
            for call in (
                lambda: cat.export("r1", case / "export"),
                lambda: cat.doctor(repair=True),
                lambda: cat.cleanup("keep_none"),
            ):
                try:
                    call()
                except PhasekitError:
                    pass
    assert snapshot(sentinel) == before
