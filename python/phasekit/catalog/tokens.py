"""API tokens of ``phasekit serve``, kept in the catalog's ``api_tokens`` table.

A token is shown once, when it is created: ``phk_<token id>.<secret>``. The catalog keeps
only a salted scrypt hash of the secret (``scrypt$N$r$p$<salt hex>$<hash hex>``), the
token's scope, its optional run and stage patterns (fnmatch), its expiry and whether it
was revoked. :func:`authenticate` checks a presented token with a constant-time
comparison and raises :class:`~phasekit.errors.NotAuthenticated` with one message
whatever was wrong, so a caller learns nothing about which tokens exist.

Scopes are ordered: ``read`` < ``write`` < ``admin``; a token allows its scope and the
ones below it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from phasekit.catalog.encode import as_utc, utc_now
from phasekit.catalog.schema import TOKEN_COLUMNS
from phasekit.errors import InvalidArgument, NotAuthenticated, UnknownKey

if TYPE_CHECKING:
    from phasekit.catalog.base import Catalog

log = logging.getLogger("phasekit.catalog")

SCOPES = ("read", "write", "admin")
"""Token scopes, lowest first; a scope includes those before it."""
TOKEN_PREFIX = "phk_"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_TOKEN = re.compile(r"^phk_([0-9a-f]{16})\.([A-Za-z0-9_-]{20,100})$")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)\s*$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
EXPIRY_FORMS = "an age like 30m, 12h, 7d, 4w or an ISO-8601 time (2027-01-31T00:00:00+00:00)"
UNAUTHENTICATED = "this server requires an API token (Authorization: Bearer phk_...); the request has none that is valid"
_SELECT = f"SELECT {', '.join(TOKEN_COLUMNS)} FROM api_tokens"


@dataclass(frozen=True)
class TokenRow:
    """One API token as the catalog keeps it (without its hash)."""

    token_id: str
    name: str | None
    scope: str
    runs: str | None
    stages: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utc_now()):
            return "expired"
        return "active"

    def allows_scope(self, scope: str) -> bool:
        """Whether this token's scope includes ``scope``."""
        return SCOPES.index(self.scope) >= SCOPES.index(check_scope(scope))

    def allows_run(self, run: str) -> bool:
        return self.runs is None or fnmatch.fnmatchcase(run, self.runs)

    def allows_stage(self, stage: str) -> bool:
        return self.stages is None or fnmatch.fnmatchcase(stage, self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "name": self.name,
            "scope": self.scope,
            "runs": self.runs,
            "stages": self.stages,
            "created_at": self.created_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
            "status": self.status(),
        }


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise InvalidArgument(f"token scope {scope!r} is not valid; allowed: {', '.join(SCOPES)}")
    return scope


def _check_pattern(what: str, pattern: str | None) -> str | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str) or not pattern.strip() or any(ord(c) < 32 for c in pattern):
        raise InvalidArgument(
            f"token {what} pattern {pattern!r} is not valid; allowed: a non-empty fnmatch "
            "pattern without control characters (opt-*, optimize)"
        )
    return pattern


def parse_expiry(value: str | datetime, now: datetime | None = None) -> datetime:
    """An expiry: an age from ``now`` (``7d``) or a time; it must lie in the future."""
    now = now or utc_now()
    if isinstance(value, datetime):
        when = as_utc(value)
    else:
        match = _AGE.match(value)
        if match:
            when = now + timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        else:
            try:
                when = as_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
            except ValueError:
                raise InvalidArgument(
                    f"token expiry {value!r} is not valid; allowed: {EXPIRY_FORMS}"
                ) from None
    if when <= now:
        raise InvalidArgument(
            f"token expiry {value!s} is not in the future; allowed: {EXPIRY_FORMS}"
        )
    return when


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt hex>$<hash hex>`` of ``secret`` with a random (or given) salt."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=_HASH_BYTES
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def secret_matches(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored`` (constant-time comparison of the hashes)."""
    try:
        kind, n, r, p, salt_hex, hash_hex = stored.split("$")
        if kind != "scrypt":
            return False
        expected = bytes.fromhex(hash_hex)
        digest = hashlib.scrypt(
            secret.encode(),
            salt=bytes.fromhex(salt_hex),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):  # a damaged hash matches nothing
        return False
    return hmac.compare_digest(digest, expected)


def _row(catalog: Catalog, raw: Any) -> tuple[TokenRow, str]:
    values = dict(zip(TOKEN_COLUMNS, raw))

    def ts(value: Any) -> datetime | None:
        return None if value is None else catalog._ts_value(value)

    row = TokenRow(
        token_id=str(values["token_id"]),
        name=values["name"],
        scope=str(values["scope"]),
        runs=values["runs"],
        stages=values["stages"],
        created_at=catalog._ts_value(values["created_at"]),
        expires_at=ts(values["expires_at"]),
        revoked_at=ts(values["revoked_at"]),
    )
    return row, str(values["secret_hash"])


def create_token(
    catalog: Catalog,
    scope: str,
    *,
    name: str | None = None,
    runs: str | None = None,
    stages: str | None = None,
    expires: str | datetime | None = None,
) -> tuple[str, TokenRow]:
    """A new token: returns the token text (shown once; only its hash is kept) and its row."""
    check_scope(scope)
    if name is not None and (not name.strip() or any(ord(c) < 32 for c in name)):
        raise InvalidArgument(f"token name {name!r} is not valid; allowed: printable text")
    now = utc_now()
    row = TokenRow(
        token_id=secrets.token_hex(8),
        name=name,
        scope=scope,
        runs=_check_pattern("run", runs),
        stages=_check_pattern("stage", stages),
        created_at=now,
        expires_at=None if expires is None else parse_expiry(expires, now),
        revoked_at=None,
    )
    secret = secrets.token_urlsafe(32)
    params = (
        row.token_id,
        row.name,
        hash_secret(secret),
        row.scope,
        row.runs,
        row.stages,
        catalog._ts_param(row.created_at),
        None if row.expires_at is None else catalog._ts_param(row.expires_at),
        None,
    )
    catalog._write(
        f"INSERT INTO api_tokens ({', '.join(TOKEN_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in TOKEN_COLUMNS)})",
        params,
    )
    log.info("created API token %s (scope %s)", row.token_id, scope)
    return f"{TOKEN_PREFIX}{row.token_id}.{secret}", row


def list_tokens(catalog: Catalog) -> list[TokenRow]:
    """Every token, oldest first."""
    rows = catalog._read(f"{_SELECT} ORDER BY created_at, token_id")
    return [_row(catalog, raw)[0] for raw in rows]


def get_token(catalog: Catalog, token_id: str) -> TokenRow:
    rows = catalog._read(f"{_SELECT} WHERE token_id = ?", (token_id,))
    if not rows:
        raise UnknownKey(f"API token {token_id!r} is not in catalog {catalog.url}")
    return _row(catalog, rows[0])[0]


def revoke_token(catalog: Catalog, token_id: str) -> TokenRow:
    """Revoke a token (it stays listed, as revoked); ``UnknownKey`` when there is none."""
    catalog._write(
        "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
        (catalog._ts_param(utc_now()), token_id),
    )
    row = get_token(catalog, token_id)
    log.info("revoked API token %s", token_id)
    return row


def has_tokens(catalog: Catalog) -> bool:
    """Whether the catalog holds any token (revoked and expired ones too): a server over
    it then requires a token on every request."""
    return bool(catalog._read("SELECT 1 FROM api_tokens LIMIT 1"))


def active_tokens(catalog: Catalog) -> list[TokenRow]:
    now = utc_now()
    return [row for row in list_tokens(catalog) if row.status(now) == "active"]


def authenticate(
    catalog: Catalog, presented: str, *, verified: MutableMapping[str, bytes] | None = None
) -> TokenRow:
    """The active token ``presented`` names, or :class:`NotAuthenticated` (one message for
    a malformed, unknown, wrong, expired or revoked token).

    ``verified`` (token id -> SHA-256 of a secret that passed scrypt) spares the scrypt
    cost on repeated requests; the row (revocation, expiry) is read every time.
    """
    match = _TOKEN.match(presented or "")
    if match is None:
        raise NotAuthenticated(UNAUTHENTICATED)
    token_id, secret = match.group(1), match.group(2)
    rows = catalog._read(f"{_SELECT} WHERE token_id = ?", (token_id,))
    if not rows:
        log.info("API token %s: unknown", token_id)
        raise NotAuthenticated(UNAUTHENTICATED)
    row, stored = _row(catalog, rows[0])
    fingerprint = hashlib.sha256(secret.encode()).digest()
    known = verified.get(token_id) if verified is not None else None
    if known is not None and hmac.compare_digest(known, fingerprint):
        ok = True
    else:
        ok = secret_matches(secret, stored)
        if ok and verified is not None:
            verified[token_id] = fingerprint
    if not ok:
        log.info("API token %s: wrong secret", token_id)
        raise NotAuthenticated(UNAUTHENTICATED)
    state = row.status()
    if state != "active":
        log.info("API token %s: %s", token_id, state)
        raise NotAuthenticated(UNAUTHENTICATED)
    return row


__all__ = [
    "SCOPES",
    "TokenRow",
    "active_tokens",
    "authenticate",
    "check_scope",
    "create_token",
    "get_token",
    "has_tokens",
    "list_tokens",
    "parse_expiry",
    "revoke_token",
]
