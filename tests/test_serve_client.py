"""phasekit.serve.client.read_table against a live server (uvicorn on 127.0.0.1), and
against bare sockets for answers a server of ours does not give (a cut-short body, a
silence, an error that is not JSON)."""

from __future__ import annotations

import re
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from phasekit.catalog import Catalog, open_catalog
from phasekit.catalog.tokens import create_token
from phasekit.errors import (
    CorruptDataError,
    InvalidArgument,
    NotAuthenticated,
    PhasekitError,
    Timeout,
    UnknownKey,
)
from phasekit.serve import client, create_app
from serve_util import Filled, LiveServer, fill


@dataclass
class Served:
    url: str
    catalog: Catalog
    filled: Filled


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    results = tmp_path_factory.mktemp("client") / "results"
    catalog = open_catalog(results, results_dir=results)
    filled = fill(catalog)
    with LiveServer(create_app(catalog)) as server:
        yield Served(server.url, catalog, filled)
    catalog.close()


def _requests(url: str, route: str) -> int:
    """How many GET requests of ``route`` the server counted (its /metrics)."""
    text = httpx.get(f"{url}/metrics").text
    found = re.findall(
        rf'phasekit_http_requests_total\{{method="GET",route="{re.escape(route)}",'
        r'status="\d+"\} (\d+(?:\.\d+)?)',
        text,
    )
    return int(sum(float(n) for n in found))


def _counts(url: str) -> tuple[int, int]:
    return _requests(url, "/items/{item_id}/file"), _requests(url, "/items/{item_id}/data")


def test_a_stored_arrow_file_is_read_in_ranges_into_one_buffer(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default one GET of /data; with ``connections`` > 1 a file under FIRST_PART
    bytes takes one range request, a larger one the first part, then the rest in up to
    ``connections`` parts at once."""
    item = served.filled.arrow
    size = served.catalog.get_item(item).size_bytes
    for connections, expected in ((None, (0, 1)), (3, (1, 0))):
        before = _counts(served.url)
        asked = {} if connections is None else {"connections": connections}
        assert client.read_table(served.url, item, **asked).equals(served.filled.table)
        after = _counts(served.url)
        assert (after[0] - before[0], after[1] - before[1]) == expected, connections
    monkeypatch.setattr(client, "FIRST_PART", 4096)
    assert size > 4 * 4096  # so 3 parts of the rest are each at least FIRST_PART
    for connections, expected in ((3, (4, 0)), (2, (3, 0)), (1, (0, 1))):
        before = _counts(served.url)
        table = client.read_table(served.url, item, connections=connections)
        assert table.equals(served.filled.table)
        after = _counts(served.url)
        assert (after[0] - before[0], after[1] - before[1]) == expected, connections
    # a parquet item: its first range is not an Arrow file, so it is read from /data
    before = _counts(served.url)
    table = client.read_table(served.url, served.filled.parquet, connections=3)
    assert table.equals(served.filled.table)
    after = _counts(served.url)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


@pytest.mark.parametrize("connections", [0, -1, True, 1.5])
def test_connections_must_be_a_positive_integer(served: Served, connections: object) -> None:
    with pytest.raises(InvalidArgument, match="allowed: an integer >= 1"):
        client.read_table(served.url, served.filled.arrow, connections=connections)  # type: ignore[arg-type]


def test_a_changed_byte_of_the_file_fails_the_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte changed on the server (size kept) in a part fetched on another connection:
    the combined CRC-32 does not match the recorded one."""
    monkeypatch.setattr(client, "FIRST_PART", 4096)
    results = tmp_path / "results"
    with open_catalog(results, results_dir=results) as catalog:
        filled = fill(catalog)
        path = catalog.item_path(catalog.get_item(filled.arrow))
        assert path is not None
        with LiveServer(create_app(catalog)) as server:
            assert client.read_table(server.url, filled.arrow, connections=3).equals(filled.table)
            data = bytearray(path.read_bytes())
            spot = len(data) * 2 // 3
            data[spot] ^= 0x01
            path.chmod(0o600)
            path.write_bytes(bytes(data))
            with pytest.raises(CorruptDataError, match=r"checksum crc32:.*record says crc32:"):
                client.read_table(server.url, filled.arrow, connections=3)


@pytest.mark.parametrize("cut", [0, 1, 7, 4096, 99_999])
def test_crc32_combine_gives_the_crc_of_the_joined_bytes(cut: int) -> None:
    data = bytes(range(256)) * 400
    a, b = data[:cut], data[cut:]
    assert client.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(data)


def test_columns_and_limit_are_asked_for(served: Served) -> None:
    some = client.read_table(served.url, served.filled.arrow, columns=["x", "i"], limit=7)
    assert some.equals(served.filled.table.select(["x", "i"]).slice(0, 7))
    assert client.read_table(served.url + "/", served.filled.csv, limit=3).num_rows == 3


def test_server_errors_raise_their_class(served: Served) -> None:
    with pytest.raises(UnknownKey, match="999999"):
        client.read_table(served.url, 999999)
    with pytest.raises(InvalidArgument, match="column 'nope' is not in the table"):
        client.read_table(served.url, served.filled.arrow, columns=["nope"])
    with pytest.raises(InvalidArgument, match="inline JSON value"):
        client.read_table(served.url, served.filled.inline)


def test_a_token_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    with open_catalog(results, results_dir=results) as catalog:
        filled = fill(catalog)
        token, _ = create_token(catalog, "read")
        with LiveServer(create_app(catalog)) as server:
            with pytest.raises(NotAuthenticated):
                client.read_table(server.url, filled.arrow)
            with pytest.raises(NotAuthenticated):
                client.read_table(server.url, filled.arrow, token=token + "x")
            table = client.read_table(server.url, filled.arrow, token=token)
            assert table.equals(filled.table)
            with monkeypatch.context() as patched:  # the token on every part's request
                patched.setattr(client, "FIRST_PART", 4096)
                table = client.read_table(server.url, filled.arrow, token=token, connections=3)
                with pytest.raises(NotAuthenticated):
                    client.read_table(server.url, filled.arrow, connections=3)
    assert table.equals(filled.table)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1", "127.0.0.1:8750", "http://"])
def test_a_url_it_cannot_speak_is_refused(url: str) -> None:
    with pytest.raises(InvalidArgument, match=r"allowed: http or https://HOST\[:PORT\]"):
        client.read_table(url, 1)


@pytest.fixture
def bare() -> Iterator[tuple[str, list[bytes]]]:
    """A socket on 127.0.0.1 answering each connection with the next canned bytes (None:
    silence until the client leaves)."""
    answers: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                answer = answers.pop(0)
                if answer:
                    conn.sendall(answer)
                else:
                    time.sleep(1.0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", answers
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_answers_no_server_of_ours_gives(bare: tuple[str, list[bytes]]) -> None:
    url, answers = bare
    answers.append(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" + b"x" * 10
    )
    with pytest.raises(CorruptDataError, match="ended after 10 of its 1000 bytes"):
        client.read_table(url, 1)
    answers.append(
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops"
    )
    with pytest.raises(PhasekitError, match="answered 502: b'oops'"):
        client.read_table(url, 1)
    answers.append(b"")
    started = time.monotonic()
    with pytest.raises(Timeout, match=r"did not answer within 0.3 s"):
        client.read_table(url, 1, timeout=0.3)
    assert time.monotonic() - started < 0.9  # the timeout was applied, not the silence's end


def _stream_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_a_large_body_is_read_whole_and_its_end_is_not_waited_for(
    bare: tuple[str, list[bytes]],
) -> None:
    """A body of several READ_BYTES is read whole as soon as its last byte is there: the
    connection stays open after it (the bare server is silent for 1 s), and the read
    ends well before the timeout would."""
    table = pa.table({"x": pa.array(range(3 * client.READ_BYTES // 8), pa.int64())})
    body = _stream_bytes(table)
    assert len(body) > 2 * client.READ_BYTES
    url, answers = bare
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    answers.append(head + body)  # then 1 s of silence, the connection kept
    started = time.monotonic()
    got = client.read_table(url, 1, timeout=0.8)
    assert time.monotonic() - started < 0.8
    assert got.equals(table)
    # cut short: an error, not a wait for the rest
    answers.append(head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + body[:5000])
    with pytest.raises(CorruptDataError, match=f"ended after 5000 of its {len(body)} bytes"):
        client.read_table(url, 1, timeout=5)
