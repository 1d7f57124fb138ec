"""``SpillLedger``: byte accounting in least-recently-used order over a tree of budgets.

Reference implementation. One ``_Tree`` per root holds a lock and one ``OrderedDict``
of every key of the tree in LRU order (oldest first) mapped to its owner and bytes;
each ledger keeps its own ``used`` (its keys plus its descendants') and ``peak``.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from typing import Any, Optional

from phasekit.errors import InvalidArgument, UnknownKey

MAX_BYTES = 2**63 - 1
"""Largest accepted ``budget_bytes`` and ``nbytes`` (a signed 64-bit count)."""


def _byte_count(argument: str, value: object) -> int:
    try:
        count = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgument(
            f"{argument} must be an int, got {type(value).__name__} {value!r}"
        ) from None
    if not 0 <= count <= MAX_BYTES:
        raise InvalidArgument(f"{argument} must be in 0..{MAX_BYTES}, got {count}")
    return count


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidArgument(f"ledger key must be a str, got {type(key).__name__} {key!r}")
    return key


class _Tree:
    """State shared by the ledgers of one tree."""

    __slots__ = ("entries", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # key -> (owner, nbytes), least recently used first
        self.entries: OrderedDict[str, tuple[SpillLedger, int]] = OrderedDict()


class SpillLedger:
    """Byte accounting in least-recently-used order, with per-child budgets under a parent.

    Keys are ``str`` and unique within a tree of ledgers (a root and its children).
    A ledger's ``used`` includes the usage of its descendants.
    """

    __slots__ = ("_ancestors", "_budget", "_name", "_parent", "_peak", "_tree", "_used")

    def __init__(
        self, budget_bytes: int, parent: Optional[SpillLedger] = None, name: str = ""
    ) -> None:
        self._budget = _byte_count("budget_bytes", budget_bytes)
        if name is None:  # as the rust backend: None means no name
            name = ""
        if not isinstance(name, str):
            raise InvalidArgument(f"name must be a str, got {type(name).__name__} {name!r}")
        if parent is not None and not isinstance(parent, SpillLedger):
            raise InvalidArgument(
                f"parent must be a SpillLedger of the same backend or None, "
                f"got {type(parent).__module__}.{type(parent).__name__}"
            )
        self._name = name
        self._parent = parent
        self._used = 0
        self._peak = 0
        self._tree: _Tree = parent._tree if parent is not None else _Tree()
        # self first, then each ancestor up to the root
        self._ancestors: tuple[SpillLedger, ...] = (self,) + (
            parent._ancestors if parent is not None else ()
        )

    # ------------------------------------------------------------ properties

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def name(self) -> str:
        return self._name

    @property
    def used(self) -> int:
        with self._tree.lock:
            return self._used

    @property
    def peak(self) -> int:
        with self._tree.lock:
            return self._peak

    # ------------------------------------------------------------ internals

    def _holds(self, owner: SpillLedger) -> bool:
        """Whether ``owner`` is this ledger or one of its descendants."""
        return self in owner._ancestors

    def _lookup(self, key: object) -> tuple[str, SpillLedger, int]:
        """The key's owner and bytes; ``UnknownKey`` when not in this subtree (lock held)."""
        checked = _check_key(key)
        entry = self._tree.entries.get(checked)
        if entry is None or not self._holds(entry[0]):
            where = f"ledger {self._name!r}" if self._name else "this ledger"
            raise UnknownKey(f"key {checked!r} is not tracked in {where} or its children")
        return checked, entry[0], entry[1]

    def _subtree_entries(self) -> list[tuple[str, int]]:
        """(key, bytes) of this subtree, least recently used first (lock held)."""
        if self._parent is None:
            return [(key, entry[1]) for key, entry in self._tree.entries.items()]
        return [
            (key, nbytes)
            for key, (owner, nbytes) in self._tree.entries.items()
            if self._holds(owner)
        ]

    # ------------------------------------------------------------ operations

    def track(self, key: str, nbytes: int) -> None:
        """Record (or re-size) ``key`` in this ledger and mark it most recently used."""
        key = _check_key(key)
        count = _byte_count("nbytes", nbytes)
        tree = self._tree
        with tree.lock:
            old = tree.entries.pop(key, None)
            if old is not None:
                for ledger in old[0]._ancestors:
                    ledger._used -= old[1]
            tree.entries[key] = (self, count)
            for ledger in self._ancestors:
                ledger._used += count
                if ledger._used > ledger._peak:
                    ledger._peak = ledger._used

    def touch(self, key: str) -> None:
        """Mark ``key`` most recently used; ``UnknownKey`` if not in this ledger's subtree."""
        with self._tree.lock:
            checked, _, _ = self._lookup(key)
            self._tree.entries.move_to_end(checked)

    def forget(self, key: str) -> int:
        """Stop tracking ``key`` (anywhere in this ledger's subtree); returns its bytes."""
        with self._tree.lock:
            checked, owner, nbytes = self._lookup(key)
            del self._tree.entries[checked]
            for ledger in owner._ancestors:
                ledger._used -= nbytes
            return nbytes

    def over_budget(self) -> bool:
        with self._tree.lock:
            return self._used > self._budget

    def spill_candidates(self) -> list[str]:
        """Least recently used keys of this subtree, oldest first, whose release brings
        ``used`` to at most ``budget``; empty when within budget."""
        with self._tree.lock:
            excess = self._used - self._budget
            if excess <= 0:
                return []
            candidates = []
            for key, nbytes in self._subtree_entries():
                candidates.append(key)
                excess -= nbytes
                if excess <= 0:
                    break
            return candidates

    def child(self, budget_bytes: int, name: str = "") -> SpillLedger:
        return SpillLedger(budget_bytes, parent=self, name=name)

    def nbytes(self, key: str) -> int:
        with self._tree.lock:
            return self._lookup(key)[2]

    def keys(self) -> list[str]:
        """Keys of this ledger's subtree, least recently used first."""
        with self._tree.lock:
            return [key for key, _ in self._subtree_entries()]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self._tree.lock:
            entry = self._tree.entries.get(key)
            return entry is not None and self._holds(entry[0])

    def _count(self) -> int:
        """Keys in this subtree (lock held)."""
        if self._parent is None:
            return len(self._tree.entries)
        return sum(1 for owner, _ in self._tree.entries.values() if self._holds(owner))

    def __len__(self) -> int:
        with self._tree.lock:
            return self._count()

    def stats(self) -> dict[str, Any]:
        """Keys: name, budget, used, peak, items, over_budget."""
        with self._tree.lock:
            return {
                "name": self._name,
                "budget": self._budget,
                "used": self._used,
                "peak": self._peak,
                "items": self._count(),
                "over_budget": self._used > self._budget,
            }

    def __repr__(self) -> str:
        return f"SpillLedger(name={self._name!r}, budget={self._budget}, used={self.used})"


__all__ = ["MAX_BYTES", "SpillLedger"]
