"""Where a resolved value came from, as data: a :class:`Level` and the config path.

Rules such as "a parameter space makes containers hybrid unless someone chose a mode"
compare levels (``settings.level_of("data_flow.mode") is Level.PACKAGE_DEFAULT``)
instead of parsing the text of a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Optional


class Level(IntEnum):
    """The precedence levels of a setting, lowest first (DESIGN.md, Configuration)."""

    PACKAGE_DEFAULT = 0
    WORKFLOW_DEFAULT = 1
    USER_GLOBAL = 2
    PHASE = 3
    PHASE_OVERRIDE = 4
    CONTAINER_PATTERN = 5
    RUNTIME = 6

    @property
    def label(self) -> str:
        """``package default``, ``phase override``... (what ``config show`` prints)."""
        return self.name.lower().replace("_", " ")

    @property
    def chosen_by_user(self) -> bool:
        """True for the levels a user writes: the configuration and runtime arguments."""
        return self >= Level.USER_GLOBAL


#: The resolver's fine-grained ranks (see :mod:`phasekit.config.resolve`) by level.
RANK_LEVELS: dict[int, Level] = {
    0: Level.PACKAGE_DEFAULT,
    1: Level.WORKFLOW_DEFAULT,
    2: Level.WORKFLOW_DEFAULT,
    3: Level.WORKFLOW_DEFAULT,
    4: Level.USER_GLOBAL,
    5: Level.PHASE,
    6: Level.PHASE,
    7: Level.PHASE_OVERRIDE,
    8: Level.CONTAINER_PATTERN,
    9: Level.RUNTIME,
    10: Level.RUNTIME,
    11: Level.RUNTIME,
}


@dataclass(frozen=True)
class Provenance:
    """The origin of one resolved value.

    ``path`` is the config path that set it (``phases[0].data_flow.mode``, ``--set
    data_flow.mode``, ``default``, ``default for format parquet``); ``pattern`` is the
    container pattern whose entry set it (from YAML, workflow defaults or ``--set
    containers.<pattern>...``), None otherwise.
    """

    level: Level
    path: str
    pattern: Optional[str] = None

    @property
    def chosen_by_user(self) -> bool:
        return self.level.chosen_by_user

    def __str__(self) -> str:
        return self.path

    def to_dict(self) -> dict[str, Optional[str]]:
        out: dict[str, Optional[str]] = {"level": self.level.label, "path": self.path}
        if self.pattern is not None:
            out["pattern"] = self.pattern
        return out
