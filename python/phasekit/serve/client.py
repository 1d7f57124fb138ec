"""Read an item's table from a ``phasekit serve`` server, at the speed of the socket.

:func:`read_table` asks ``/items/{id}/data`` for an Arrow IPC stream. A body with a
``Content-Length`` (a stored Arrow file, sent as stored) is read straight into one
pyarrow buffer and decoded in place: one copy out of the socket, none after; the socket
wakes the reader only once :data:`WAKE_BYTES` have arrived (SO_RCVLOWAT), so the copy
goes in few large reads rather than one per loopback packet. A body
without one (a re-encoded table, sent chunked) is decoded batch by batch as it arrives.
Only the standard library's http.client and pyarrow are used (no extra needed). An error
answer raises the :mod:`phasekit.errors` class the server names, with its message.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit

import pyarrow as pa

from phasekit import errors
from phasekit.errors import InvalidArgument, PhasekitError

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
"""URL schemes :func:`read_table` speaks."""
ARROW_STREAM = "application/vnd.apache.arrow.stream"
WAKE_BYTES = 4 << 20
"""Bytes of a body with a Content-Length that must have arrived before a read returns
(SO_RCVLOWAT), but for its last WAKE_BYTES."""


def read_table(
    url: str,
    item_id: int,
    *,
    token: str | None = None,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
    timeout: float = 300.0,
) -> pa.Table:
    """Item ``item_id``'s table from the server at ``url`` (``http://127.0.0.1:8750``);
    ``token``: an API token (``phk_...``); ``columns`` and ``limit`` as the endpoint's;
    ``timeout``: seconds a connect or a read may wait."""
    conn = _connection(url, timeout)
    query = {"format": "arrow"}
    if columns is not None:
        query["columns"] = ",".join(columns)
    if limit is not None:
        query["limit"] = str(limit)
    headers = {"Accept": ARROW_STREAM}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    target = f"{urlsplit(url).path.rstrip('/')}/items/{int(item_id)}/data?{urlencode(query)}"
    try:
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            raise _error(response.status, response.read())
        length = response.getheader("Content-Length")
        if length is None:
            return pa.ipc.open_stream(pa.PythonFile(response, mode="r")).read_all()
        body = _read_into_buffer(response, int(length), conn.sock)
        return pa.ipc.open_stream(body).read_all()
    except TimeoutError:
        raise errors.Timeout(
            f"the server at {url} did not answer within {timeout} s (timeout)"
        ) from None
    finally:
        conn.close()


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise InvalidArgument(
            f"server URL {url!r} is not valid; allowed: {' or '.join(SCHEMES)}://HOST[:PORT]"
        )
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def _read_into_buffer(
    response: http.client.HTTPResponse, size: int, sock: socket.socket | None
) -> pa.Buffer:
    """The body, read into one buffer of pyarrow's memory pool. ``sock``: the connection's
    socket, asked to wake this reader only once :data:`WAKE_BYTES` have arrived (fewer,
    larger reads than one per loopback packet) until the body's last WAKE_BYTES, read
    without it (a wait for bytes that never come would end only at the timeout)."""
    buffer = pa.allocate_buffer(size)
    view = memoryview(buffer).cast("B")
    got = 0
    if sock is not None and size > 2 * WAKE_BYTES and _set_lowat(sock, WAKE_BYTES):
        got = _fill(response, view, got, size - WAKE_BYTES)
        _set_lowat(sock, 1)
    _fill(response, view, got, size)
    return buffer


def _fill(response: http.client.HTTPResponse, view: memoryview, got: int, end: int) -> int:
    """``view[got:end]`` read from the body; ``end``."""
    while got < end:
        n = response.readinto(view[got:end])
        if not n:
            raise errors.CorruptDataError(
                f"the server's answer ended after {got} of its {len(view)} bytes"
            )
        got += n
    return got


def _set_lowat(sock: socket.socket, wanted: int) -> bool:
    """Ask ``sock`` to wake a reader once ``wanted`` bytes are queued; False when the
    platform cannot."""
    option = getattr(socket, "SO_RCVLOWAT", None)
    if option is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, wanted)
    except OSError:
        return False
    return True


def _error(status: int, body: bytes) -> PhasekitError:
    """The phasekit error an error answer names (PhasekitError when it names none)."""
    try:
        found = json.loads(body)
        name, message = str(found["error"]), str(found["message"])
    except (ValueError, KeyError, TypeError):
        return PhasekitError(f"the server answered {status}: {body[:200]!r}")
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, PhasekitError):
        return kind(message)
    return PhasekitError(f"the server answered {status} ({name}): {message}")


__all__ = ["SCHEMES", "read_table"]
