"""TCP settings of the connections the server accepts: a loopback peer gets congestion
control that does not pace.

A host whose default congestion control is BBR paces every connection: each send is
spread out by timers, which on loopback (no link to pace for) only costs the sender
CPU. A 256 MiB answer to a client on the same host took 56 ms from a bare socket
sender with BBR and 38 ms with Reno (docs/serve.md). Reno is built into every Linux
kernel and allowed to every user, so a connection from a loopback address is switched
to it; a remote peer keeps the host's choice. Where the option does not exist or is
refused, the connection keeps its default (logged at debug level).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Protocol

log = logging.getLogger(__name__)

LOOPBACK_CONGESTION = b"reno"
"""The congestion control of a connection from a loopback address."""


def is_loopback(peer: object) -> bool:
    """Whether a socket's peer address (``getpeername``) is a loopback address."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return False
    try:
        address = ipaddress.ip_address(peer[0].split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


class Connection(Protocol):
    """What is used of a connection's socket (asyncio's and uvloop's stand-ins have it)."""

    @property
    def family(self) -> int: ...

    def getpeername(self) -> object: ...

    def setsockopt(self, level: int, option: int, value: bytes, /) -> None: ...


def tune(sock: Connection | None) -> bool:
    """Give a connection from a loopback peer :data:`LOOPBACK_CONGESTION`; whether it
    was set."""
    option = getattr(socket, "TCP_CONGESTION", None)
    if sock is None or option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        if not is_loopback(sock.getpeername()):
            return False
        sock.setsockopt(socket.IPPROTO_TCP, option, LOOPBACK_CONGESTION)
    except OSError as exc:
        log.debug("congestion control of a loopback connection not set: %s", exc)
        return False
    return True


__all__ = ["LOOPBACK_CONGESTION", "Connection", "is_loopback", "tune"]
