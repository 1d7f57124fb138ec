"""Read an item's table from a ``phasekit serve`` server, at the speed of the socket.

With ``connections`` above 1, a whole table (no columns, no limit) is first asked of
``/items/{id}/file`` in byte ranges: the first :data:`FIRST_PART` bytes on one connection
and, when the file is larger, the rest in up to ``connections`` parts fetched at once,
one connection each, each part received straight into its slice of one pyarrow buffer.
The CRC-32 of each part is computed as it arrives and the parts' values combined into the
whole file's, which must match the ``X-Phasekit-Checksum`` the server sends (a file
changed on the server fails it: CorruptDataError). A stored Arrow IPC file is then opened
from that buffer without a copy. Anything else (another format, a folder, a server that
ignores ``Range``) is read from ``/items/{id}/data`` as below. The default is one
connection: on the 2-core host measured (docs/serve.md) the parts were slower than one
connection, the server's one event loop sending every part.

:func:`read_table` asks ``/items/{id}/data`` for an Arrow IPC stream. A body with a
``Content-Length`` (a stored Arrow file, sent as stored) is read straight into one
pyarrow buffer and decoded in place: one copy out of the socket, none after. A body
without one (a re-encoded table, sent chunked) is decoded batch by batch as it arrives.
Only the standard library's http.client and pyarrow are used (no extra needed). An error
answer raises the :mod:`phasekit.errors` class the server names, with its message.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit

import pyarrow as pa

from phasekit import errors
from phasekit._core import crc32
from phasekit.checksum import crc32_combine, format_crc32
from phasekit.errors import InvalidArgument, PhasekitError

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
"""URL schemes :func:`read_table` speaks."""
ARROW_STREAM = "application/vnd.apache.arrow.stream"
READ_BYTES = 4 << 20
"""Bytes of a body with a Content-Length asked for per read (and checksummed at a time)."""
FIRST_PART = 16 << 20
"""Bytes of a file asked for on the first connection; a larger file's rest comes in
parts over several connections at once."""
ARROW_FILE_MAGIC = b"ARROW1"


def read_table(
    url: str,
    item_id: int,
    *,
    token: str | None = None,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
    timeout: float = 300.0,
    connections: int = 1,
) -> pa.Table:
    """Item ``item_id``'s table from the server at ``url`` (``http://127.0.0.1:8750``);
    ``token``: an API token (``phk_...``); ``columns`` and ``limit`` as the endpoint's;
    ``timeout``: seconds a connect or a read may wait; ``connections``: 1 (the default),
    one GET of ``/items/{id}/data``; more: a stored Arrow file is fetched from
    ``/items/{id}/file`` in ranges, its part after :data:`FIRST_PART` bytes over up to
    this many connections at once, and checked against its checksum."""
    wanted = _connections(connections)
    prefix = _target_prefix(url, item_id)
    headers = {"Accept": ARROW_STREAM}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        if wanted > 1 and columns is None and limit is None:
            found = _read_file(url, prefix, headers, timeout, wanted)
            if found is not None:
                return pa.ipc.open_file(found).read_all()
        return _read_data(url, prefix, headers, timeout, columns, limit)
    except TimeoutError:
        raise errors.Timeout(
            f"the server at {url} did not answer within {timeout} s (timeout)"
        ) from None


def _connections(connections: int) -> int:
    if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
        raise InvalidArgument(f"connections={connections!r} is not valid; allowed: an integer >= 1")
    return connections


def _target_prefix(url: str, item_id: int) -> str:
    _connection(url, 1.0)  # the URL checked before anything is sent
    return f"{urlsplit(url).path.rstrip('/')}/items/{int(item_id)}"


def _read_data(
    url: str,
    prefix: str,
    headers: dict[str, str],
    timeout: float,
    columns: Sequence[str] | None,
    limit: int | None,
) -> pa.Table:
    """The table as an Arrow IPC stream from ``/data``, on one connection."""
    query = {"format": "arrow"}
    if columns is not None:
        query["columns"] = ",".join(columns)
    if limit is not None:
        query["limit"] = str(limit)
    conn = _connection(url, timeout)
    try:
        conn.request("GET", f"{prefix}/data?{urlencode(query)}", headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            raise _error(response.status, response.read())
        length = response.getheader("Content-Length")
        if length is None:
            return pa.ipc.open_stream(pa.PythonFile(response, mode="r")).read_all()
        body = _read_into_buffer(response, int(length))
        return pa.ipc.open_stream(body).read_all()
    finally:
        conn.close()


def _read_file(
    url: str, prefix: str, headers: dict[str, str], timeout: float, parts: int
) -> pa.Buffer | None:
    """The bytes of a stored Arrow IPC file from ``/file`` in ranges over up to ``parts``
    connections, checked against the whole file's checksum; None when the item is no
    such file or the server does not answer with a range (the caller reads ``/data``)."""
    conn = _connection(url, timeout)
    try:
        first = {**headers, "Range": f"bytes=0-{FIRST_PART - 1}"}
        conn.request("GET", f"{prefix}/file", headers=first)
        response = conn.getresponse()
        total = _range_total(response)
        if total is None or response.getheader("X-Phasekit-Decrypted") is not None:
            return None  # the body is left unread: the connection is closed
        length = int(response.getheader("Content-Length") or -1)
        if length != min(FIRST_PART, total) or total < len(ARROW_FILE_MAGIC):
            return None
        buffer = pa.allocate_buffer(total)
        view = memoryview(buffer).cast("B")
        head = _fill(response, view[:length], 0, len(ARROW_FILE_MAGIC))
        if bytes(view[:head]) != ARROW_FILE_MAGIC:
            return None
        crcs = [(_receive(response, view[:length], head), length)]
        spans = _spans(length, total, parts)
        if spans:
            crcs += _fetch_parts(url, prefix, headers, timeout, view, spans)
        _check(response.getheader("X-Phasekit-Checksum"), crcs, prefix)
        return buffer
    finally:
        conn.close()


def _range_total(response: http.client.HTTPResponse) -> int | None:
    """The file's size a 206 answer names in its Content-Range; None for any other."""
    if response.status != 206:
        return None
    found = (response.getheader("Content-Range") or "").rpartition("/")[2]
    return int(found) if found.isdigit() else None


def _spans(done: int, total: int, parts: int) -> list[tuple[int, int]]:
    """``[start, end)`` of up to ``parts`` parts of about equal size covering
    ``done..total``, each but the last at least :data:`FIRST_PART` bytes."""
    left = total - done
    if left <= 0:
        return []
    count = max(1, min(parts, left // FIRST_PART))
    step = -(-left // count)
    return [(s, min(s + step, total)) for s in range(done, total, step)]


def _fetch_parts(
    url: str,
    prefix: str,
    headers: dict[str, str],
    timeout: float,
    view: memoryview,
    spans: list[tuple[int, int]],
) -> list[tuple[int, int]]:
    """``(crc, length)`` of each span, fetched at once, one connection each."""

    def fetch(span: tuple[int, int]) -> tuple[int, int]:
        start, end = span
        conn = _connection(url, timeout)
        try:
            asked = {**headers, "Range": f"bytes={start}-{end - 1}"}
            conn.request("GET", f"{prefix}/file", headers=asked)
            response = conn.getresponse()
            if response.status != 206:
                raise _error(response.status, response.read())
            if response.getheader("Content-Range", "").partition("/")[0] != (
                f"bytes {start}-{end - 1}"
            ):
                raise errors.CorruptDataError(
                    f"the server answered bytes {start}-{end - 1} of {prefix}/file with "
                    f"{response.getheader('Content-Range')!r}"
                )
            return _receive(response, view[start:end], 0), end - start
        finally:
            conn.close()

    with ThreadPoolExecutor(len(spans)) as pool:
        return list(pool.map(fetch, spans))


def _check(expected: str | None, crcs: list[tuple[int, int]], prefix: str) -> None:
    """CorruptDataError unless the parts' CRC-32 values, combined, give ``expected``
    (nothing to check when the server sent no checksum)."""
    if expected is None:
        return
    crc = crcs[0][0]
    for part, length in crcs[1:]:
        crc = crc32_combine(crc, part, length)
    if format_crc32(crc) != expected:
        raise errors.CorruptDataError(
            f"{prefix}/file: the bytes received have checksum {format_crc32(crc)}, the "
            f"server's record says {expected}"
        )


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise InvalidArgument(
            f"server URL {url!r} is not valid; allowed: {' or '.join(SCHEMES)}://HOST[:PORT]"
        )
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def _read_into_buffer(response: http.client.HTTPResponse, size: int) -> pa.Buffer:
    """The body, read into one buffer of pyarrow's memory pool."""
    buffer = pa.allocate_buffer(size)
    _receive(response, memoryview(buffer).cast("B"), 0, check=False)
    return buffer


def _receive(
    response: http.client.HTTPResponse, view: memoryview, got: int, check: bool = True
) -> int:
    """``view[got:]`` read from the body, :data:`READ_BYTES` at a time; the CRC-32 of all
    of ``view`` (0 unless ``check``), computed piece by piece as they arrive."""
    size = len(view)
    crc = crc32(view[:got]) if check else 0
    while got < size:
        start = got
        got = _fill(response, view, got, min(size, got + READ_BYTES))
        if check:
            crc = crc32(view[start:got], crc)
    return crc


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


__all__ = ["FIRST_PART", "SCHEMES", "crc32_combine", "read_table"]
