"""JSON and timestamp encoding of catalog values, the same for every SQL dialect."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import PurePath
from typing import Any

import numpy as np

from phasekit.errors import InvalidArgument

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SINCE_FORMS = "an ISO-8601 time (2024-05-01, 2024-05-01T12:00:00+00:00) or an age like 30m, 2h, 7d"


def _plain(value: Any) -> Any:
    """Make one value JSON-encodable: numpy scalars, paths, datetimes, NaN/inf (-> null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "biuUf":
        return plain_array(value)
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and getattr(value, "shape", None) == ():
        return _plain(item())
    tolist = getattr(value, "tolist", None)  # numpy array
    if callable(tolist):
        return _plain(tolist())
    raise InvalidArgument(
        f"value {value!r} of type {type(value).__name__} is not JSON-encodable; allowed: "
        "dicts, lists, strings, numbers, booleans, None, numpy scalars, datetimes and paths"
    )


def plain_array(values: np.ndarray) -> list[Any]:
    """A 1-D numpy array of numbers or text as a list, non-finite floats as None, by
    numpy (no Python step per element)."""
    if values.dtype.kind != "f":
        return values.tolist()  # type: ignore[no-any-return]
    finite = np.isfinite(values)
    if finite.all():
        return values.tolist()  # type: ignore[no-any-return]
    out = values.astype(object)
    out[~finite] = None
    return out.tolist()  # type: ignore[no-any-return]


def to_json(value: Any, field: str = "value") -> str:
    """Compact JSON text of ``value``; non-finite floats become ``null``."""
    try:
        return json.dumps(_plain(value), separators=(",", ":"), allow_nan=False)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}: {exc}") from None


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware datetime in UTC (naive values are taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def ts_text(value: datetime) -> str:
    """Fixed-width ISO text of a UTC time; sorts like the times it encodes."""
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_since(value: datetime | str, now: datetime | None = None) -> datetime:
    """A ``since`` bound: a datetime, an ISO-8601 string or an age such as ``"2h"``."""
    if isinstance(value, datetime):
        return as_utc(value)
    if not isinstance(value, str):
        raise InvalidArgument(f"since {value!r} is not a time; allowed: {SINCE_FORMS}")
    match = _RELATIVE.match(value)
    if match:
        age = float(match.group(1)) * _UNITS[match.group(2)]
        return (now or utc_now()) - timedelta(seconds=age)
    try:
        return as_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError:
        raise InvalidArgument(f"since {value!r} is not a time; allowed: {SINCE_FORMS}") from None


def parse_meta(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` to a filter; values are JSON scalars when they parse, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(
                f"--meta {pair!r} is not KEY=VALUE (e.g. --meta metrics.sharpe=1.5)"
            )
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = value if value is None or isinstance(value, (str, int, float, bool)) else raw
    return out
