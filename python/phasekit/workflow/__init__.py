"""Workflows: phases and their dependencies, sequences of execution windows,
containers, the executor and ``phasekit.run``."""

from __future__ import annotations

from phasekit.workflow.builtin import BUILTIN_WORKFLOWS
from phasekit.workflow.container import Container, EventBus, Role, State
from phasekit.workflow.params import ParameterSpace
from phasekit.workflow.phase import PhaseOutcome
from phasekit.workflow.run import LazyRef, RunResult, load_and_resolve, run
from phasekit.workflow.sequencer import Sequencer
from phasekit.workflow.sequences import SEQUENCES, Window, windows_for

__all__ = [
    "BUILTIN_WORKFLOWS",
    "SEQUENCES",
    "Container",
    "EventBus",
    "LazyRef",
    "ParameterSpace",
    "PhaseOutcome",
    "Role",
    "RunResult",
    "Sequencer",
    "State",
    "Window",
    "load_and_resolve",
    "run",
    "windows_for",
]
