"""Who may do what: API tokens checked on every request, and the loopback rule.

A server over a catalog that holds any API token (revoked and expired ones too) requires
one on every request but ``/health``: no or a bad token is 401, a token whose scope or
run/stage patterns do not cover the request is 403 with one message whatever exists.
A catalog without tokens is served without authentication, and only on a loopback
address (:func:`check_bind`).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass

from phasekit.catalog import Catalog, ItemRow
from phasekit.catalog.tokens import (
    UNAUTHENTICATED,
    TokenRow,
    active_tokens,
    authenticate,
    has_tokens,
)
from phasekit.errors import AccessDenied, NotAuthenticated

log = logging.getLogger("phasekit.serve")

FORBIDDEN = "this API token does not allow this request"
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Access:
    """What the request may touch: ``token`` is ``None`` on a server without tokens."""

    token: TokenRow | None

    @property
    def limited(self) -> bool:
        """Whether run or stage patterns restrict the token."""
        return self.token is not None and (
            self.token.runs is not None or self.token.stages is not None
        )

    def may_see_run(self, run: str) -> bool:
        return self.token is None or self.token.allows_run(run)

    def may_see_item(self, item: ItemRow) -> bool:
        return self.token is None or (
            self.token.allows_run(item.process_id) and self.token.allows_stage(item.stage_name)
        )

    def check_run(self, run: str) -> None:
        if not self.may_see_run(run):
            raise AccessDenied(FORBIDDEN)


def unlimited(access: Access) -> None:
    """AccessDenied for a token that run or stage patterns restrict (token management
    reaches every run, so it needs a token without limits)."""
    if access.limited:
        raise AccessDenied(FORBIDDEN)


class Gate:
    """Checks the ``Authorization`` header of each request against the catalog's tokens."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._verified: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def required(self) -> bool:
        """Whether requests need a token (the catalog holds any)."""
        return has_tokens(self.catalog)

    def access(self, authorization: str | None, scope: str) -> Access:
        """The :class:`Access` of a request needing ``scope``; NotAuthenticated (401) or
        AccessDenied (403)."""
        if not self.required():
            return Access(None)
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise NotAuthenticated(UNAUTHENTICATED)
        with self._lock:
            token = authenticate(self.catalog, presented.strip(), verified=self._verified)
        if not token.allows_scope(scope):
            raise AccessDenied(FORBIDDEN)
        return Access(token)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(catalog: Catalog, host: str) -> None:
    """Refuse (AccessDenied) a non-loopback ``host`` while the catalog holds no active token."""
    if is_loopback(host) or active_tokens(catalog):
        return
    raise AccessDenied(
        f"phasekit serve refuses to listen on {host!r}: the catalog {catalog.url} holds no "
        "active API token, so anyone who can reach that address could read every run; "
        "allowed without tokens: a loopback address (127.0.0.1, ::1, localhost); "
        "create a token with `phasekit token create`"
    )
