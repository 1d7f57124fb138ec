"""The closed vocabularies of the configuration: allowed values, their aliases, did-you-mean."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from phasekit.catalog.cleanup import POLICIES as CLEANUP_POLICIES
from phasekit.events import RETENTION_POLICIES
from phasekit.registry import (
    ENGINES,
    EXECUTOR_ADDRESSES,
    EXECUTORS,
    MONTE_CARLO_METHODS,
    SEQUENCES,
    WALK_FORWARD_MODES,
)
from phasekit.stores.factory import MODES
from phasekit.stores.formats import FORMATS as STORE_FORMATS
from phasekit.stores.formats import allowed_compressions, partitioned_formats

# Owned below and re-exported here for the model: sequences and their modes and methods,
# executors and engines (registry), cleanup policies (catalog.cleanup), retention policies (events), data-flow
# modes (stores.factory).
__all__ = [
    "CLEANUP_POLICIES",
    "ENGINES",
    "EXECUTORS",
    "EXECUTOR_ADDRESSES",
    "MODES",
    "MONTE_CARLO_METHODS",
    "RETENTION_POLICIES",
    "SEQUENCES",
    "WALK_FORWARD_MODES",
]

RESULTS_STORAGE = {"memory": "memory", "disk": "file"}
# Values of the other vocabularies written where a data_flow mode is expected.
MODE_HINTS = {
    "disk": ("file", "'disk' is the results_storage spelling of file"),
    "persist": ("file", "'persist' is the storage_strategy spelling of file"),
}
STORAGE_STRATEGY_MODES = {"memory": "memory", "persist": "file", "hybrid": "hybrid"}
# The file formats and the compressions each accepts (the first entry is the format's
# default) are the file store's: phasekit.stores.formats owns them.
FORMATS: tuple[str, ...] = tuple(STORE_FORMATS)
COMPRESSIONS: dict[str, tuple[Optional[str], ...]] = {
    name: allowed_compressions(name) for name in FORMATS
}
PARTITIONED_FORMATS = partitioned_formats()
TOPOLOGIES = ("backtest", "analysis", "stream")
OUTPUT_KINDS = (
    "container_results",
    "aggregate_metrics",
    "trades",
    "equity_curves",
    "selected_parameters",
    "container_items",
)
#: The output kinds a phase collects unless its ``output`` says otherwise. Every kind but
#: ``container_items`` (each container's own results item, ``<id>_results``, through its
#: store, besides the window's ``containers`` table of a block window).
OUTPUT_DEFAULTS: dict[str, bool] = {kind: kind != "container_items" for kind in OUTPUT_KINDS}
DIRECTIONS = ("maximize", "minimize")
#: Event kinds of the design notes' source project written in ``event_tracing``: the
#: phasekit kind each one is, or (``None``) why phasekit has none and what to write.
EVENT_KIND_ALIASES: dict[str, str] = {
    # phasekit has no risk step between an order request and an order: one ORDER kind
    "ORDER_REQUEST": "ORDER",
}
EVENT_KINDS_REFUSED: dict[str, str] = {
    "POSITION_UPDATE": (
        "phasekit reports position changes as POSITION_OPEN and POSITION_CLOSE events "
        "(with the FILL that made them); write those instead"
    ),
}
SAMPLINGS = ("grid", "random")
DATA_SOURCES = ("synthetic", "file")


def suggest(value: Any, allowed: Iterable[Any]) -> Optional[str]:
    """The allowed value closest to ``value`` (difflib), or None when nothing is close."""
    if not isinstance(value, str):
        return None
    names = [str(a) for a in allowed if a is not None]
    lowered = {n.lower(): n for n in names}
    if value.lower() in lowered:
        return lowered[value.lower()]
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    return close[0] if close else None


def show(value: Any) -> str:
    """A value as it reads in a message: strings quoted, None as null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def listing(allowed: Iterable[Any]) -> str:
    """``a, b, c`` with None shown as ``none``."""
    return ", ".join("none" if a is None else str(a) for a in allowed)


def choice_message(
    value: Any,
    allowed: Iterable[Any],
    note: str = "",
    hints: Optional[Mapping[str, tuple[str, str]]] = None,
) -> str:
    """``'fiel' is not allowed; allowed: memory, file; did you mean 'file'?``

    ``note`` follows the list of allowed values; ``hints`` maps values of another
    vocabulary to (suggestion, reason), e.g. ``disk`` -> (``file``, why).
    """
    allowed = list(allowed)
    text = f"{show(value)} is not allowed; allowed: {listing(allowed)}{note}"
    if hints and isinstance(value, str) and value in hints:
        hinted, why = hints[value]
        return text + f"; did you mean {hinted!r}? ({why})"
    near = suggest(value, allowed)
    if near is not None:
        text += f"; did you mean {near!r}?"
    return text


def type_name(value: Any) -> str:
    """A short description of a value's type for messages (``str``, ``list``, ``mapping``)."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def unknown_key_message(key: Any, allowed: Iterable[str], home: Optional[str] = None) -> str:
    """``unknown key 'x'; did you mean 'y'? (allowed keys: ...)``; ``home`` names the
    section where the key does exist when it was put at the wrong level."""
    allowed = tuple(allowed)
    text = f"unknown key {show(key)}"
    near = suggest(key, allowed)
    if near is not None:
        text += f"; did you mean {near!r}?"
    elif home is not None:
        text += f"; it belongs under {home}"
    return text + f" (allowed keys: {', '.join(sorted(allowed))})"
