"""Container patterns (fnmatch syntax): specificity and choosing the one pattern that applies.

Specificity is compared as a tuple: first the number of literal characters, then
the number of single-character wildcards (``?`` and ``[...]``), then the fewer
``*`` the better. An exact name therefore beats every pattern that matches it,
``portfolio_1?`` beats ``portfolio_*``, and two matching patterns with equal
tuples (``a*`` and ``*a`` for ``aa``) are a tie, which is an error. Matching is
case-sensitive on every platform (``fnmatch.fnmatchcase``).
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Optional

from phasekit.errors import ConfigError


def specificity(pattern: str) -> tuple[int, int, int]:
    """(literal characters, single-character wildcards, -stars) of an fnmatch pattern."""
    literal = singles = stars = 0
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            stars += 1
        elif char == "?":
            singles += 1
        elif char == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: fnmatch reads '[' literally
                literal += 1
            else:
                singles += 1
                i = j + 1
        else:
            literal += 1
    return literal, singles, -stars


def is_pattern(name: str) -> bool:
    """True when ``name`` holds fnmatch wildcards (``*``, ``?`` or a ``[...]`` class)."""
    return specificity(name) != (len(name), 0, 0)


def best_match(container_id: str, patterns: Iterable[str], where: str) -> Optional[str]:
    """The most specific of ``patterns`` matching ``container_id``, or None.

    Raises ConfigError naming both patterns when the two most specific matches tie;
    ``where`` names the mapping they come from (e.g. ``containers``).
    """
    ranked = sorted(
        ((specificity(p), p) for p in patterns if fnmatchcase(container_id, p)),
        reverse=True,
    )
    if not ranked:
        return None
    if len(ranked) > 1 and ranked[0][0] == ranked[1][0]:
        first, second = sorted((ranked[0][1], ranked[1][1]))
        raise ConfigError(
            f"{where}: container {container_id!r} matches both {first!r} and {second!r}, "
            "which are equally specific; make one of them more specific (more literal "
            "characters) or remove one"
        )
    return ranked[0][1]
