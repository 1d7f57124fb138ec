"""The fast paths of ``/items/{id}/data``: a stored file's checksum verified once per
version of the file, and an Arrow file sent as stored (no decoding and re-encoding, from
a memory map, with a Content-Length) when an Arrow stream of all of it is asked for. Both
backends write the stored files."""

from __future__ import annotations

import asyncio
import mmap
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import uvloop

from catalog_util import record_file
from phasekit.catalog import Catalog, CatalogRecorder, open_catalog
from phasekit.errors import CorruptDataError
from phasekit.serve import app as serve_app
from phasekit.serve import create_app
from phasekit.serve.data import (
    ARROW_EOS,
    SEND_BYTES,
    UVLOOP_PIECE,
    _mapped,
    arrow_stream_bytes,
    piece_bytes,
)
from phasekit.serve.maps import ServedMaps
from phasekit.serve.verified import VerifiedFiles
from phasekit.stores import FileStore
from serve_util import LiveServer


@dataclass
class Stored:
    catalog: Catalog
    item: int
    path: Path
    table: pa.Table


def _table() -> pa.Table:
    batches = [
        pa.record_batch({"x": np.arange(i * 50, (i + 1) * 50), "s": [f"r{j}" for j in range(50)]})
        for i in range(7)
    ]
    return pa.Table.from_batches(batches)


@pytest.fixture
def stored(tmp_path: Path, backend_name: str) -> Iterator[Stored]:
    """An Arrow table of seven batches written by a FileStore of the backend."""
    results = tmp_path / "results"
    catalog = open_catalog(results, results_dir=results)
    catalog.start_process("wf", process_id="r1")
    store = FileStore(
        results / "r1", run="r1", phase="p", recorder=CatalogRecorder(catalog, "r1", "p")
    )
    table = _table()
    store.put("t", table)
    row = catalog.list_items("r1")[0]
    assert row.path is not None and row.format == "arrow"
    yield Stored(catalog, row.id, row.path, table)
    catalog.close()


def _stream_part(raw: bytes) -> bytes:
    """What an Arrow file holds between its magic (and zero padding) and its footer."""
    if not raw.startswith(b"ARROW1"):
        return raw
    footer = int.from_bytes(raw[-10:-6], "little")
    start = 8
    while raw[start : start + 8] == bytes(8):
        start += 8
    return raw[start : len(raw) - 10 - footer]


def test_an_arrow_file_is_sent_as_stored(stored: Stored) -> None:
    raw = stored.path.read_bytes()
    with LiveServer(create_app(stored.catalog)) as server, server.client() as c:
        whole = c.get(f"/items/{stored.item}/data")
        some = c.get(f"/items/{stored.item}/data", params={"columns": "x"})
    assert whole.status_code == 200, whole.text
    sent = whole.content
    part = _stream_part(raw)
    assert sent in (part, part + ARROW_EOS)  # its own bytes, not re-encoded batches
    reader = pa.ipc.open_stream(sent)
    assert reader.read_all().equals(stored.table)
    assert pa.ipc.open_stream(sent).read_all().to_batches().__len__() == 7
    # a column selection is decoded and re-encoded
    assert some.status_code == 200
    assert pa.ipc.open_stream(some.content).read_all().equals(stored.table.select(["x"]))


@pytest.mark.parametrize(
    ("loop", "parser"), [("asyncio", "h11"), ("uvloop", "httptools"), ("asyncio", "httptools")]
)
def test_sent_as_stored_with_its_length_on_each_loop(
    stored: Stored, loop: str, parser: str
) -> None:
    part = _stream_part(stored.path.read_bytes())
    app = create_app(stored.catalog)
    with LiveServer(app, parser=parser, loop=loop) as server, server.client() as c:
        sent = c.get(f"/items/{stored.item}/data")
    assert sent.status_code == 200, sent.text
    assert sent.headers["content-length"] == str(len(sent.content))
    assert "transfer-encoding" not in sent.headers
    assert sent.content in (part, part + ARROW_EOS)
    assert pa.ipc.open_stream(sent.content).read_all().equals(stored.table)


def _pieces(path: Path, run: object) -> list[memoryview | bytes]:
    async def collect() -> list[memoryview | bytes]:
        found = arrow_stream_bytes(path, "item 1", ServedMaps())
        assert found is not None
        return [piece async for piece in found.pieces()]

    return run(collect())  # type: ignore[operator, no-any-return]


def test_pieces_are_views_of_the_map_sized_for_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "big.arrow"
    table = pa.table({"x": np.arange(1_500_000, dtype=np.float64)})  # 12 MB: several pieces
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    for run, step in ((asyncio.run, SEND_BYTES), (uvloop.run, UVLOOP_PIECE)):
        pieces = _pieces(path, run)
        mapped = [p for p in pieces if isinstance(p, memoryview)]
        if run is uvloop.run:
            assert all(isinstance(p.obj, mmap.mmap) for p in mapped)  # views, not copies
        else:  # read with pread: asyncio copies unsent bytes, a cut map would be SIGBUS
            assert not mapped
            mapped = [memoryview(p) for p in pieces]
        assert [len(p) for p in mapped[:-1]] == [step] * (len(mapped) - 1)
        assert len(mapped) == -(-sum(len(p) for p in mapped) // step)
        body = b"".join(pieces)
        assert pa.ipc.open_stream(body).read_all().equals(table)
    assert asyncio.run(_loop_piece()) == SEND_BYTES
    assert uvloop.run(_loop_piece()) == UVLOOP_PIECE


async def _loop_piece() -> int:
    return piece_bytes()


def test_a_file_shorter_than_when_checked_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "t.arrow"
    path.write_bytes(b"x" * 100)
    maps = ServedMaps()
    assert len(_mapped(path, 100, "item 7", maps).view) == 100
    with pytest.raises(CorruptDataError, match=r"item 7: file .* has 100 bytes, 101 when checked"):
        _mapped(path, 101, "item 7", maps)


def test_a_stream_file_without_its_end_marker_gets_one(tmp_path: Path) -> None:
    results = tmp_path / "results"
    with open_catalog(results, results_dir=results) as catalog:
        catalog.start_process("wf", process_id="r1")
        table = _table()
        path = results / "r1" / "t.arrow"
        path.parent.mkdir(parents=True)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        raw = sink.getvalue().to_pybytes()
        footer = int.from_bytes(raw[-10:-6], "little")
        end = len(raw) - 10 - footer
        assert raw[end - 8 : end] == ARROW_EOS
        # the same file without the end marker before its footer (older writers)
        path.write_bytes(raw[: end - 8] + raw[end:])
        item = record_file(catalog, "r1", "s", "t", path, "arrow")
        with LiveServer(create_app(catalog)) as server, server.client() as c:
            sent = c.get(f"/items/{item}/data").content
    assert sent == raw[8 : end - 8] + ARROW_EOS
    assert pa.ipc.open_stream(sent).read_all().equals(table)


def test_checksum_is_verified_once_per_version_of_the_file(stored: Stored) -> None:
    app = create_app(stored.catalog)
    verified: VerifiedFiles = app.state.phasekit_api.verified
    with LiveServer(app) as server, server.client() as c:
        for _ in range(3):
            assert c.get(f"/items/{stored.item}/data").status_code == 200
        assert verified.checked == 1
        # a byte changed, its size and modification time put back: still seen (ctime)
        st = stored.path.stat()
        raw = bytearray(stored.path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        stored.path.write_bytes(bytes(raw))
        os.utime(stored.path, ns=(st.st_atime_ns, st.st_mtime_ns))
        bad = c.get(f"/items/{stored.item}/data")
        assert bad.status_code == 409 and "fails its checksum" in bad.json()["message"]
        raw[len(raw) // 2] ^= 0xFF
        stored.path.write_bytes(bytes(raw))
        assert c.get(f"/items/{stored.item}/data").status_code == 200
        assert verified.checked == 2  # the failed check is not remembered


def test_verified_files_forget_the_least_recent(stored: Stored) -> None:
    row = stored.catalog.get_item(stored.item)
    verified = VerifiedFiles(limit=1)
    other = stored.path.with_name("copy.arrow")
    other.write_bytes(stored.path.read_bytes())
    copy = row.__class__(**{**row.__dict__, "data_reference": other.as_uri()})
    for item, path in ((row, stored.path), (copy, other), (row, stored.path)):
        verified.verify(stored.catalog, item, path)
    assert verified.checked == 3  # the limit of one dropped the first file's check
    verified.verify(stored.catalog, row, stored.path)
    assert verified.checked == 3


def test_a_file_cut_short_or_replaced_while_sent_under_asyncio_ends_the_response(
    tmp_path: Path,
) -> None:
    """asyncio would copy the unsent rest of a mapped piece: its pieces are read with
    pread from the mapped inode, so a file cut short in place meanwhile (or replaced
    before the body starts) is a CorruptDataError that ends the body short, never a
    SIGBUS of the server."""
    path = tmp_path / "big.arrow"
    table = pa.table({"x": np.arange(1_500_000, dtype=np.float64)})  # 12 MB: several pieces
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)

    async def cut(how: str) -> int:
        found = arrow_stream_bytes(path, "item 1", ServedMaps())
        assert found is not None
        got = 0
        if how == "replaced":  # after the map was made, before the body is sent
            os.replace(path, tmp_path / "old.arrow")
            path.write_bytes(b"\0" * found.end)
        with pytest.raises(CorruptDataError, match=f"item 1: file .* was {how}"):
            async for piece in found.pieces():
                got += len(piece)
                os.truncate(path, SEND_BYTES + 100)  # in place: the same inode
        return got

    assert asyncio.run(cut("cut short")) == SEND_BYTES  # the first piece, then the error
    table2 = pa.table({"x": np.arange(1_500_000, dtype=np.float64)})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table2.schema) as writer:
        writer.write_table(table2)
    assert asyncio.run(cut("replaced")) == 0


def test_a_map_serves_every_request_while_its_file_is_unchanged(stored: Stored) -> None:
    """The map made for one answer is reused by the next (no fresh map to fault in and
    unmap per request) until the file changes; then the new bytes are sent."""
    app = create_app(stored.catalog)
    maps: ServedMaps = app.state.phasekit_api.maps
    part = _stream_part(stored.path.read_bytes())
    with LiveServer(app, loop="uvloop") as server, server.client() as c:
        for _ in range(3):
            sent = c.get(f"/items/{stored.item}/data")
            assert sent.status_code == 200 and sent.content in (part, part + ARROW_EOS)
        ranged = c.get(f"/items/{stored.item}/file", headers={"Range": "bytes=0-99"})
        assert ranged.status_code == 206 and ranged.content == stored.path.read_bytes()[:100]
        assert (maps.made, len(maps)) == (1, 1)
        # the same table written again: a new version of the file, a new map
        store = stored.path.read_bytes()
        stored.path.unlink()
        stored.path.write_bytes(store)
        sent = c.get(f"/items/{stored.item}/data")
        assert sent.status_code == 200 and sent.content in (part, part + ARROW_EOS)
        assert maps.made == 2
        # the server deletes the item: its map goes at once, the file's space with it
        assert c.delete(f"/items/{stored.item}").status_code == 200
        assert not stored.path.exists() and len(maps) == 0


def test_maps_are_dropped_when_idle_or_past_the_limit(tmp_path: Path) -> None:
    now = [0.0]
    maps = ServedMaps(idle=10, limit=2, clock=lambda: now[0])
    paths = []
    for i in range(3):
        path = tmp_path / f"f{i}"
        path.write_bytes(bytes([i]) * 10)
        paths.append(path)
    views = [_mapped(p, 10, f"item {i}", maps).view for i, p in enumerate(paths)]
    assert len(maps) == 2  # the least recently used (f0) dropped
    assert bytes(views[0]) == bytes(10)  # a dropped map stays readable while it is held
    now[0] = 5.0
    _mapped(paths[2], 10, "item 2", maps)  # used again: kept
    now[0] = 12.0
    assert maps.sweep() == 1 and len(maps) == 1  # f1 unused for 10 s
    maps.forget(paths[2])
    assert len(maps) == 0 and maps.made == 3
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert len(_mapped(empty, 0, "item 9", maps).view) == 0
    with pytest.raises(CorruptDataError, match=r"item 5: file .*gone is missing"):
        _mapped(tmp_path / "gone", 0, "item 5", maps)  # deleted after its check
    none_kept = ServedMaps(limit=0)
    assert bytes(_mapped(paths[1], 10, "item 1", none_kept).view) == bytes([1]) * 10
    assert len(none_kept) == 0


def test_the_server_drops_idle_maps_while_it_runs(
    stored: Stored, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve_app, "SWEEP_SECONDS", 0.05)
    app = create_app(stored.catalog)
    maps: ServedMaps = app.state.phasekit_api.maps
    maps.idle = 0.2
    with LiveServer(app) as server, server.client() as c:
        assert c.get(f"/items/{stored.item}/data").status_code == 200
        assert len(maps) == 1
        deadline = time.monotonic() + 10
        while len(maps) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(maps) == 0  # no request came: the sweep dropped it
