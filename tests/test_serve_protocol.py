"""The HTTP protocols ``phasekit serve`` runs: a request the parser refuses gets a JSON
error like every other error of the API, with httptools and with h11."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from phasekit.catalog import open_catalog
from phasekit.errors import InvalidArgument
from phasekit.serve import create_app
from phasekit.serve.launch import server_config
from phasekit.serve.protocol import http_protocol
from serve_util import LiveServer


def _raw(port: int, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """(status line, headers, body) of the answer to ``request`` sent as it is."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.mark.parametrize("parser", ["httptools", "h11"])
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1 trailing words\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02 not http at all\r\n\r\n",
    ],
)
def test_a_request_the_parser_refuses_gets_a_json_error(
    tmp_path: Path, parser: str, request_bytes: bytes
) -> None:
    results = tmp_path / "results"
    with open_catalog(results, results_dir=results) as catalog:
        with LiveServer(create_app(catalog), parser=parser) as server:
            status, headers, body = _raw(server.port, request_bytes)
            # the server goes on answering
            ok = _raw(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    answer = json.loads(body)
    assert answer["error"] == "InvalidArgument"
    assert answer["message"].startswith("request is not valid HTTP/1.1 (Invalid HTTP request")
    assert "allowed:" in answer["message"]
    assert ok[0] == b"HTTP/1.1 200 OK"


def test_protocol_classes(tmp_path: Path) -> None:
    assert issubclass(http_protocol(), HttpToolsProtocol)  # installed: httptools chosen
    assert issubclass(http_protocol("httptools"), HttpToolsProtocol)
    assert issubclass(http_protocol("h11"), H11Protocol)
    with pytest.raises(
        InvalidArgument, match="HTTP parser 'h2' is not known; allowed: httptools, h11"
    ):
        http_protocol("h2")
    with open_catalog(tmp_path / "r", results_dir=tmp_path / "r") as catalog:
        app = create_app(catalog)
        assert server_config(app, "127.0.0.1", 0).http is http_protocol()
        assert server_config(app, "127.0.0.1", 0, "h11").http is http_protocol("h11")
