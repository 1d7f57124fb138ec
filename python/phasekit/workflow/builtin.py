"""The built-in workflows: their phases and each phase's defaults (seed 002).

* ``optimization``: one ``parameter_search`` phase over all bars.
* ``train_test_optimization``: ``parameter_search`` on the train split (file results,
  position events, ``trade_complete``), its ``top_k`` best of train run on the test split
  in their in-sample order; then ``validation`` runs the selected sets once on the test
  split (memory results, PORTFOLIO_UPDATE traced, ``sliding_window`` of 1000).
* ``walk_forward_optimization``: ``walk_forward``: on each window optimise on the train
  part and run the best set on the following test part; the out-of-sample equity is
  stitched across windows.

User settings override these defaults as DESIGN.md's precedence says.
"""

from __future__ import annotations

from typing import Any

from phasekit.errors import ConfigError
from phasekit.registry import DEFAULT_DATA_SPLIT

POSITION_EVENTS = ["POSITION_OPEN", "POSITION_CLOSE", "FILL"]

_SEARCH = {
    "results_storage": "disk",
    "event_tracing": POSITION_EVENTS,
    "retention_policy": "trade_complete",
}

BUILTIN_WORKFLOWS: dict[str, dict[str, dict[str, Any]]] = {
    "optimization": {
        "parameter_search": {"sequence": "single_pass", "topology": "backtest", **_SEARCH},
    },
    "train_test_optimization": {
        "parameter_search": {
            "sequence": "train_test",
            "topology": "backtest",
            "description": "Search the parameter space on the train split",
            "config": {"data_split": DEFAULT_DATA_SPLIT},
            **_SEARCH,
        },
        "validation": {
            "sequence": "train_test",
            "topology": "backtest",
            "depends_on": ["parameter_search"],
            "description": "Validate the best sets on the test split with equity tracking",
            "results_storage": "memory",
            "event_tracing": [*POSITION_EVENTS, "PORTFOLIO_UPDATE"],
            "retention_policy": "sliding_window",
            "sliding_window_size": 1000,
        },
    },
    "walk_forward_optimization": {
        "walk_forward": {
            "sequence": "walk_forward",
            "topology": "backtest",
            "description": "Optimise on each train window, trade the best set out of sample",
            **_SEARCH,
        },
    },
}


#: The source project's names of a built-in workflow's phases (its own
#: ``train_test_optimization`` calls them ``training`` and ``testing``), accepted as
#: ``phase_overrides`` keys.
PHASE_ALIASES: dict[str, dict[str, str]] = {
    "train_test_optimization": {"training": "parameter_search", "testing": "validation"},
}


def phase_aliases(name: str | None) -> dict[str, str]:
    """Other names of the phases of workflow ``name`` (none for a user workflow)."""
    return PHASE_ALIASES.get(name or "", {})


CUSTOM_WORKFLOW = "custom"
"""The workflow type recorded for a config with a ``phases:`` list and no ``workflow``."""


def workflow_defaults(name: str | None) -> dict[str, dict[str, Any]] | None:
    """The per-phase defaults of a built-in workflow (None for a user workflow)."""
    if name is None or name not in BUILTIN_WORKFLOWS:
        return None
    return BUILTIN_WORKFLOWS[name]


def check_workflow(name: str | None, has_phases: bool) -> None:
    if name is None and not has_phases:
        raise ConfigError(
            "workflow: give a built-in workflow "
            f"({', '.join(BUILTIN_WORKFLOWS)}) or a `phases:` list"
        )
    if name is not None and name not in BUILTIN_WORKFLOWS and not has_phases:
        import difflib

        near = difflib.get_close_matches(name, BUILTIN_WORKFLOWS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(
            f"workflow: {name!r} is not a built-in workflow ({', '.join(BUILTIN_WORKFLOWS)})"
            f" and the config has no `phases:`{hint}"
        )
