"""Encrypted items through ``phasekit serve``: ``/file`` (with Range over the plaintext)
and ``/runs/{id}/export`` send decrypted bytes, streamed chunk by chunk, with the
server's key; without a key they refuse with the CLI's KeyUnavailable text, never
ciphertext."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest

from phasekit.catalog import Catalog, CatalogRecorder, open_catalog
from phasekit.checksum import bytes_checksum
from phasekit.crypt import Encryption, SealedReader, generate_key, open_encryption, open_sealed
from phasekit.crypt.aead import CHUNK_BYTES
from phasekit.serve import create_app
from phasekit.stores import FileStore
from phasekit.stores.sealed import read_plain
from serve_util import LiveServer


@dataclass
class Sealed:
    catalog: Catalog
    enc: Encryption
    item: int
    path: Path
    plain: bytes


@pytest.fixture
def sealed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sealed]:
    """An encrypted table item of about 3.2 MB (four 1 MiB chunks)."""
    monkeypatch.setenv("PK_SERVE_ENC_KEY", generate_key())
    enc = open_encryption("env:PK_SERVE_ENC_KEY")
    results = tmp_path / "results"
    catalog = open_catalog(results, results_dir=results)
    catalog.start_process("wfenc", process_id="enc-run")
    recorder = CatalogRecorder(catalog, "enc-run", "p")
    store = FileStore(
        results / "enc-run", run="enc-run", phase="p", recorder=recorder, encryption=enc
    )
    store.put("t", pa.table({"x": np.arange(400_000, dtype=np.int64)}))
    row = catalog.list_items("enc-run")[0]
    assert row.path is not None
    plain = bytes(read_plain(row.path, enc, "test") or b"")
    assert len(plain) > 3 * CHUNK_BYTES and plain not in row.path.read_bytes()
    yield Sealed(catalog, enc, row.id, row.path, plain)
    catalog.close()


def test_file_is_sent_decrypted_with_ranges_over_the_plaintext(sealed: Sealed) -> None:
    with LiveServer(create_app(sealed.catalog, sealed.enc)) as server, server.client() as c:
        whole = c.get(f"/items/{sealed.item}/file")
        assert whole.status_code == 200, whole.text
        assert whole.content == sealed.plain
        assert int(whole.headers["Content-Length"]) == len(sealed.plain)
        size = len(sealed.plain)
        for start, end in ((0, 9), (CHUNK_BYTES - 5, 2 * CHUNK_BYTES + 7), (size - 3, size - 1)):
            part = c.get(f"/items/{sealed.item}/file", headers={"Range": f"bytes={start}-{end}"})
            assert part.status_code == 206, part.text
            assert part.content == sealed.plain[start : end + 1]
            assert part.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        tail = c.get(f"/items/{sealed.item}/file", headers={"Range": "bytes=-100"})
        assert tail.content == sealed.plain[-100:]
        outside = c.get(f"/items/{sealed.item}/file", headers={"Range": f"bytes={size}-"})
        assert outside.status_code == 416


def test_tampered_encrypted_file_is_cut_short(sealed: Sealed) -> None:
    raw = bytearray(sealed.path.read_bytes())
    raw[2 * CHUNK_BYTES + 100] ^= 1  # inside chunk 1 or 2: the first chunk is sent first
    sealed.path.write_bytes(bytes(raw))
    with LiveServer(create_app(sealed.catalog, sealed.enc)) as server, server.client() as c:
        with pytest.raises(httpx.RemoteProtocolError):  # shorter than its Content-Length
            c.get(f"/items/{sealed.item}/file")


def test_export_archives_encrypted_files_decrypted(sealed: Sealed) -> None:
    with LiveServer(create_app(sealed.catalog, sealed.enc)) as server, server.client() as c:
        got = c.get("/runs/enc-run/export")
        assert got.status_code == 200, got.text
    with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
        names = tar.getnames()
        data_name = next(n for n in names if n.endswith(sealed.path.name))
        member = tar.extractfile(data_name)
        assert member is not None and member.read() == sealed.plain
        manifest_file = tar.extractfile("enc-run/manifest.json")
        assert manifest_file is not None
        manifest = json.loads(manifest_file.read())
    entry = next(f for f in manifest["files"] if f["name"] == data_name)
    assert entry == {
        "name": data_name,
        "size_bytes": len(sealed.plain),
        "checksum": bytes_checksum(sealed.plain),
        "decrypted": True,
    }


@pytest.mark.parametrize("route", ["/items/{item}/file", "/runs/enc-run/export"])
def test_without_a_key_encrypted_items_are_refused_naming_the_key(
    sealed: Sealed, route: str
) -> None:
    with LiveServer(create_app(sealed.catalog)) as server, server.client() as c:
        got = c.get(route.format(item=sealed.item))
    assert got.status_code == 409
    body = got.json()
    assert body["error"] == "KeyUnavailable"
    assert (
        f"encrypted under master key {sealed.enc.key_id}; no key is configured" in (body["message"])
    )


def test_data_of_a_large_encrypted_table_is_decrypted_as_read(sealed: Sealed) -> None:
    table = pa.ipc.open_file(pa.BufferReader(sealed.plain)).read_all()
    with LiveServer(create_app(sealed.catalog, sealed.enc)) as server, server.client() as c:
        got = c.get(f"/items/{sealed.item}/data")
        assert got.status_code == 200, got.text
        assert pa.ipc.open_stream(got.content).read_all().equals(table)
        few = c.get(f"/items/{sealed.item}/data", params={"format": "json", "limit": 3})
        assert few.json() == [{"x": 0}, {"x": 1}, {"x": 2}]


def test_sealed_reader_seeks_and_reads_any_span(sealed: Sealed) -> None:
    opened = open_sealed(sealed.path, sealed.enc, "test")
    assert opened is not None and opened.size == len(sealed.plain)
    reader = SealedReader(opened)
    size = len(sealed.plain)
    for start, n in ((0, 5), (CHUNK_BYTES - 2, CHUNK_BYTES + 4), (size - 7, 100), (size, 10)):
        reader.seek(start)
        assert reader.read(n) == sealed.plain[start : start + n]
    reader.seek(-4, io.SEEK_END)
    assert reader.read() == sealed.plain[-4:]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_data_of_encrypted_parquet_and_csv_tables(sealed: Sealed, fmt: str) -> None:
    """Readers that seek (Parquet's footer first) or read on (CSV) through the
    decrypting file."""
    results = sealed.path.parent
    recorder = CatalogRecorder(sealed.catalog, "enc-run", "p")
    store = FileStore(results, run="enc-run", phase="p", recorder=recorder, encryption=sealed.enc)
    table = pa.table({"x": np.arange(200_000, dtype=np.int64), "y": np.arange(200_000) * 0.5})
    store.put(f"t_{fmt}", table, format=fmt)
    row = next(i for i in sealed.catalog.list_items("enc-run") if i.format == fmt)
    assert row.path is not None and b"PKCRYPT" in row.path.read_bytes()[:8]
    with LiveServer(create_app(sealed.catalog, sealed.enc)) as server, server.client() as c:
        got = c.get(f"/items/{row.id}/data", params={"columns": "y"})
    assert got.status_code == 200, got.text
    sent = pa.ipc.open_stream(got.content).read_all()
    assert sent.column("y").to_pylist() == table.column("y").to_pylist()
