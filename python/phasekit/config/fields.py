"""Validated field types of the configuration models, each with a precise message.

Every check raises :func:`fail`, a pydantic custom error whose text is final;
``messages.py`` only prefixes the config path. ``sub`` (a tuple of keys and
indexes) extends that path when a check looks inside the value.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Annotated, Any, NoReturn, Optional

from pydantic import BaseModel, ConfigDict, PlainValidator
from pydantic_core import PydanticCustomError

from phasekit.config.limits import MAX_AMOUNT, MAX_COUNT, MAX_MEMORY_MB, MAX_SECONDS, MAX_SEED
from phasekit.config.names import name_problem, pattern_problem
from phasekit.config.vocab import (
    EVENT_KIND_ALIASES,
    EVENT_KINDS_REFUSED,
    choice_message,
    show,
    type_name,
)
from phasekit.errors import InvalidArgument
from phasekit.events import EventType, event_kind

ERROR_TYPE = "phasekit_config"


def fail(message: str, sub: tuple[Any, ...] = ()) -> NoReturn:
    """Raise a validation error with a final message (``sub``: path inside the value)."""
    raise PydanticCustomError(ERROR_TYPE, "{message}", {"message": message, "sub": sub})


def unsupported(message: str) -> NoReturn:
    """Raise a validation error for a key or value phasekit does not support (one it knows
    from the design notes' source project); ``phasekit config show`` lists these instead of
    failing, ``phasekit run`` refuses them."""
    raise PydanticCustomError(
        ERROR_TYPE, "{message}", {"message": message, "sub": (), "unsupported": True}
    )


def is_unsupported(error: Mapping[str, Any]) -> bool:
    """Whether a pydantic error (an item of ``ValidationError.errors()``) came from
    :func:`unsupported`."""
    return error.get("type") == ERROR_TYPE and bool((error.get("ctx") or {}).get("unsupported"))


def expected(what: str, value: Any) -> NoReturn:
    fail(f"expected {what}, got {show(value)} ({type_name(value)})")


def choice(
    allowed: Iterable[str], hints: Optional[Mapping[str, tuple[str, str]]] = None
) -> Callable[[Any], str]:
    """One of ``allowed`` (``hints``: see :func:`~phasekit.config.vocab.choice_message`)."""
    allowed = tuple(allowed)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            fail(choice_message(value, allowed, hints=hints))
        return value

    return check


def integer(ge: Optional[int] = None, le: Optional[int] = None) -> Callable[[Any], int]:
    """An integer (not a bool) in ``[ge, le]``."""
    bounds = [f">= {ge}"] if ge is not None else []
    if le is not None:
        bounds.append(f"<= {le:,}")
    what = "an integer" + (" " + " and ".join(bounds) if bounds else "")

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            expected(what, value)
        if ge is not None and value < ge:
            fail(f"must be >= {ge}, got {show(value)}")
        if le is not None and value > le:
            fail(f"must be <= {le:,}, got {show(value)}")
        return value

    return check


def _bound(value: float) -> str:
    """A bound as it reads in a message: 1,000,000 rather than 1e+06."""
    if float(value).is_integer() and abs(value) < 1e18:
        return f"{int(value):,}"
    return f"{value:g}"


def number(
    gt: Optional[float] = None, ge: Optional[float] = None, le: Optional[float] = None
) -> Callable[[Any], float]:
    """A finite number (not a bool, NaN or an infinity) within the bounds given."""
    bounds = []
    if gt is not None:
        bounds.append(f"> {_bound(gt)}")
    if ge is not None:
        bounds.append(f">= {_bound(ge)}")
    if le is not None:
        bounds.append(f"<= {_bound(le)}")
    what = "a number" + (" " + " and ".join(bounds) if bounds else "")

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            expected(what, value)
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"must be a finite number, got {show(value)}")
        if (gt is not None and not value > gt) or (ge is not None and not value >= ge):
            fail(f"must be {' and '.join(bounds)}, got {show(value)}")
        if le is not None and not value <= le:
            fail(f"must be {' and '.join(bounds)}, got {show(value)}")
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        expected("true or false", value)
    return value


Bool = Annotated[bool, PlainValidator(_boolean)]


def check_text(value: Any) -> str:
    if not isinstance(value, str):
        expected("a string", value)
    if not value.strip():
        fail("must not be empty")
    if "\x00" in value:
        fail(f"{show(value)} contains a NUL character")
    return value


Text = Annotated[str, PlainValidator(check_text)]


def check_path(value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        expected("a path (string)", value)
    return check_text(value)


PathText = Annotated[str, PlainValidator(check_path)]


def name_check(what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        problem = name_problem(value, what)
        if problem is not None:
            fail(problem)
        return value  # type: ignore[no-any-return]

    return check


def _pattern(value: Any) -> str:
    problem = pattern_problem(value)
    if problem is not None:
        fail(problem)
    return value  # type: ignore[no-any-return]


Pattern = Annotated[str, PlainValidator(_pattern)]


def check_event_kind(value: Any) -> str:
    known = [e.name for e in EventType]
    note = " or a kind registered with register_event_kind"
    if not isinstance(value, str):
        fail(choice_message(value, known, note))
    if value.upper() in EVENT_KINDS_REFUSED:
        fail(f"{show(value)} is not a phasekit event kind: {EVENT_KINDS_REFUSED[value.upper()]}")
    value = EVENT_KIND_ALIASES.get(value.upper(), value)
    try:
        event_kind(value)
    except InvalidArgument:
        fail(choice_message(value, known, note))
    return value.upper()


def iso_date(value: Any) -> str:
    """A date or datetime (YAML dates, ``datetime`` objects or ISO strings) as ISO text;
    midnight without a time zone reads as the plain date (``2020-01-31``)."""
    moment: Optional[datetime] = None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return value.isoformat()
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            moment = None
    if moment is None:
        fail(f"expected a date such as 2020-01-31 or 2020-01-31T09:30:00, got {show(value)}")
    if moment.tzinfo is None and moment.time() == datetime.min.time():
        return moment.date().isoformat()
    return moment.isoformat()


Date = Annotated[str, PlainValidator(iso_date)]
AnyInt = Annotated[int, PlainValidator(integer())]
PositiveInt = Annotated[int, PlainValidator(integer(ge=1, le=MAX_COUNT))]
PositiveNumber = Annotated[float, PlainValidator(number(gt=0))]
NonNegative = Annotated[float, PlainValidator(number(ge=0))]
AnyNumber = Annotated[float, PlainValidator(number())]
Seed = Annotated[int, PlainValidator(integer(ge=0, le=MAX_SEED))]
MegaBytes = Annotated[float, PlainValidator(number(gt=0, le=MAX_MEMORY_MB))]
Seconds = Annotated[float, PlainValidator(number(gt=0, le=MAX_SECONDS))]
Amount = Annotated[float, PlainValidator(number(gt=0, le=MAX_AMOUNT))]

_IMPORT_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_import_spec(value: str) -> bool:
    """True for ``package.module:attribute``."""
    return bool(_IMPORT_SPEC.match(value))


def choice_or_import(allowed: Iterable[str], what: str) -> Callable[[Any], str]:
    """A name from ``allowed`` or a ``module:attribute`` import spec."""
    allowed = tuple(allowed)

    def check(value: Any) -> str:
        if isinstance(value, str) and (value in allowed or is_import_spec(value)):
            return value
        fail(choice_message(value, allowed, f", or a {what} as module:attribute"))

    return check


def string_list(item: Callable[[Any], str], single_ok: bool = True) -> Callable[[Any], list[str]]:
    """A list of strings checked by ``item``; a single string becomes a one-item list."""

    def check(value: Any) -> list[str]:
        if single_ok and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            expected("a list", value)
        out = []
        for i, element in enumerate(value):
            try:
                out.append(item(element))
            except PydanticCustomError as exc:
                ctx = exc.context or {}
                fail(str(ctx.get("message", exc.message())), (i, *ctx.get("sub", ())))
        return out

    return check


class Model(BaseModel):
    """Base of every configuration model: unknown keys are errors, no type coercion
    (a quoted ``"100"`` is not an integer), instances are immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
