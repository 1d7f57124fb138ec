"""A connection from a loopback address gets congestion control that does not pace
(:mod:`phasekit.serve.tcp`); a remote peer keeps the host's choice."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phasekit.catalog import open_catalog
from phasekit.serve import create_app
from phasekit.serve import protocol as serve_protocol
from phasekit.serve.tcp import LOOPBACK_CONGESTION, Connection, is_loopback, tune
from serve_util import LiveServer


def _congestion(sock: Any) -> bytes:
    """The congestion control of a socket (or uvloop's stand-in for one)."""
    return bytes(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)).rstrip(b"\0")


@pytest.fixture
def accepted() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()):
            conn, _ = listener.accept()
            with conn:
                yield conn


def test_a_loopback_connection_is_switched_to_reno(accepted: socket.socket) -> None:
    assert tune(accepted)
    assert _congestion(accepted) == LOOPBACK_CONGESTION


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        (("127.0.0.1", 5000), True),
        (("127.8.9.10", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 5000, 0, 0), True),
        (("::ffff:10.0.0.2", 5000, 0, 0), False),
        (("10.0.0.2", 5000), False),
        (("192.168.1.20", 5000), False),
        (("fe80::1%eth0", 5000, 0, 2), False),
        ("", False),  # a Unix socket's peer
        (("not an address", 1), False),
    ],
)
def test_only_loopback_peers_count(peer: object, loopback: bool) -> None:
    assert is_loopback(peer) is loopback


class _Remote:
    """A connection whose peer is remote: tune must not touch it."""

    family = socket.AF_INET
    touched = False

    def getpeername(self) -> object:
        return ("10.1.2.3", 40000)

    def setsockopt(self, level: int, option: int, value: bytes, /) -> None:
        self.touched = True


def test_a_remote_peer_keeps_the_hosts_choice() -> None:
    remote = _Remote()
    assert not tune(remote)
    assert not remote.touched
    assert not tune(None)


@pytest.mark.parametrize(("loop", "parser"), [("uvloop", "httptools"), ("asyncio", "h11")])
def test_the_server_tunes_each_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str, parser: str
) -> None:
    seen: list[bytes] = []

    def recorded(sock: Connection | None) -> bool:
        done = tune(sock)
        assert sock is not None
        seen.append(_congestion(sock))
        return done

    monkeypatch.setattr(serve_protocol, "tune", recorded)
    results = tmp_path / "results"
    with open_catalog(results, results_dir=results) as catalog:
        app = create_app(catalog)
        with LiveServer(app, parser=parser, loop=loop) as server, server.client() as c:
            assert c.get("/health").status_code == 200
    assert seen == [LOOPBACK_CONGESTION]
