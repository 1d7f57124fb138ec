"""uvicorn's HTTP protocols, answering a request they cannot parse with a JSON error and
tuning each connection (:mod:`.tcp`).

uvicorn parses HTTP with httptools when it is installed (the ``serve`` extra brings it:
faster for large bodies), else with h11. Either answers a request it cannot parse (a
control character in a header value, a malformed request line) with a 400 of its own
before the application sees it; here that answer is JSON like every other error of the
API (``{"error": "InvalidArgument", "message": ...}``).
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from phasekit.serve.tcp import tune

BAD_REQUEST = (
    "request is not valid HTTP/1.1 ({}); allowed: a request line and headers as RFC 9112 "
    "has them (no control characters in header values)"
)


def bad_request_answer(reason: str) -> bytes:
    """The whole 400 answer to a request that could not be parsed (the connection closes)."""
    body = json.dumps({"error": "InvalidArgument", "message": BAD_REQUEST.format(reason)})
    data = body.encode()
    head = (
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + data


class JsonBadRequest:
    """Mixed into a uvicorn protocol: its ``send_400_response`` sends JSON."""

    transport: Any

    def send_400_response(self, msg: str) -> None:
        self.transport.write(bad_request_answer(msg.rstrip(".")))
        self.transport.close()


class Tuned:
    """Mixed into a uvicorn protocol: each connection made is tuned (:func:`.tcp.tune`)."""

    def connection_made(self, transport: Any) -> None:
        tune(transport.get_extra_info("socket"))
        super().connection_made(transport)  # type: ignore[misc]


class H11JsonProtocol(JsonBadRequest, Tuned, H11Protocol):
    """uvicorn's h11 protocol with JSON bad-request answers."""


def http_protocol(parser: str | None = None) -> type:
    """The protocol class for ``parser`` (``httptools`` or ``h11``; None: httptools when
    it is installed, else h11)."""
    if parser is None:
        parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if parser == "h11":
        return H11JsonProtocol
    if parser == "httptools":
        return _httptools_protocol()
    from phasekit.errors import InvalidArgument

    raise InvalidArgument(f"HTTP parser {parser!r} is not known; allowed: httptools, h11")


@cache
def _httptools_protocol() -> type:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsJsonProtocol(JsonBadRequest, Tuned, HttpToolsProtocol):
        """uvicorn's httptools protocol with JSON bad-request answers."""

    return HttpToolsJsonProtocol


__all__ = ["BAD_REQUEST", "H11JsonProtocol", "bad_request_answer", "http_protocol"]
