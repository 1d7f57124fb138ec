"""SpillLedger: LRU order, budgets in a tree, errors, thread-safety; both backends agree."""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from phasekit.backend import backend_module
from phasekit.errors import InvalidArgument, UnknownKey

# ------------------------------------------------------------------ basics


def test_track_sets_used_peak_and_len(backend: ModuleType) -> None:
    led = backend.SpillLedger(100, name="root")
    led.track("a", 30)
    led.track("b", 50)
    assert led.used == 80
    assert led.peak == 80
    assert len(led) == 2
    assert "a" in led and "c" not in led and 1 not in led
    assert led.nbytes("b") == 50
    assert led.budget == 100 and led.name == "root"


def test_resize_changes_used_and_keeps_peak(backend: ModuleType) -> None:
    led = backend.SpillLedger(100)
    led.track("a", 90)
    led.track("a", 10)
    assert led.used == 10
    assert led.peak == 90
    assert len(led) == 1
    assert led.nbytes("a") == 10


def test_lru_order_follows_track_and_touch(backend: ModuleType) -> None:
    led = backend.SpillLedger(1000)
    for key in ("a", "b", "c", "d"):
        led.track(key, 1)
    assert led.keys() == ["a", "b", "c", "d"]
    led.touch("b")
    assert led.keys() == ["a", "c", "d", "b"]
    led.track("a", 5)  # re-size makes it most recently used
    assert led.keys() == ["c", "d", "b", "a"]


def test_forget_returns_bytes(backend: ModuleType) -> None:
    led = backend.SpillLedger(100)
    led.track("a", 30)
    led.track("b", 20)
    assert led.forget("a") == 30
    assert led.used == 20
    assert led.keys() == ["b"]
    assert "a" not in led
    assert led.peak == 50


def test_candidates_are_shortest_lru_prefix(backend: ModuleType) -> None:
    led = backend.SpillLedger(100)
    led.track("a", 40)
    led.track("b", 40)
    assert led.spill_candidates() == []
    assert not led.over_budget()
    led.track("c", 40)  # used 120 > 100: releasing "a" is enough
    assert led.over_budget()
    assert led.spill_candidates() == ["a"]
    led.touch("a")  # now "b" is the oldest
    assert led.spill_candidates() == ["b"]
    led.track("d", 70)  # used 190: release 90 -> b (40) + c (40) + a (40)
    assert led.spill_candidates() == ["b", "c", "a"]
    # candidates are not removed
    assert led.used == 190 and len(led) == 4


def test_used_equal_to_budget_is_within_budget(backend: ModuleType) -> None:
    led = backend.SpillLedger(10)
    led.track("a", 10)
    assert not led.over_budget()
    assert led.spill_candidates() == []
    zero = backend.SpillLedger(0)
    zero.track("z", 0)
    assert not zero.over_budget()
    zero.track("y", 1)
    assert zero.spill_candidates() == ["z", "y"]


def test_stats(backend: ModuleType) -> None:
    led = backend.SpillLedger(10, name="global")
    led.track("a", 7)
    led.track("b", 7)
    led.forget("b")
    assert led.stats() == {
        "name": "global",
        "budget": 10,
        "used": 7,
        "peak": 14,
        "items": 1,
        "over_budget": False,
    }


# ------------------------------------------------------------------ trees


def test_child_usage_counts_toward_parent(backend: ModuleType) -> None:
    root = backend.SpillLedger(100, name="root")
    left = root.child(50, name="left")
    right = backend.SpillLedger(50, parent=root, name="right")
    grand = left.child(10)
    left.track("l", 20)
    right.track("r", 30)
    grand.track("g", 15)
    root.track("o", 5)
    assert (root.used, left.used, right.used, grand.used) == (70, 35, 30, 15)
    assert root.keys() == ["l", "r", "g", "o"]
    assert left.keys() == ["l", "g"]
    assert grand.over_budget() and not left.over_budget()
    assert grand.spill_candidates() == ["g"]
    assert len(root) == 4 and len(left) == 2 and len(grand) == 1
    assert "r" in root and "r" not in left and "o" not in left


def test_parent_candidates_include_children_keys(backend: ModuleType) -> None:
    root = backend.SpillLedger(50)
    a = root.child(100)
    b = root.child(100)
    a.track("a1", 20)
    b.track("b1", 20)
    root.track("r1", 20)
    a.track("a2", 20)
    assert root.spill_candidates() == ["a1", "b1"]
    assert a.spill_candidates() == []
    root.touch("a1")  # a parent may touch its children's keys
    assert root.spill_candidates() == ["b1", "r1"]


def test_forget_from_ancestor_releases_child_bytes(backend: ModuleType) -> None:
    root = backend.SpillLedger(100)
    kid = root.child(100)
    kid.track("k", 40)
    assert root.forget("k") == 40
    assert kid.used == 0 and root.used == 0
    assert kid.peak == 40 and root.peak == 40


def test_tracking_a_key_of_another_ledger_moves_it(backend: ModuleType) -> None:
    root = backend.SpillLedger(100)
    a = root.child(100)
    b = root.child(100)
    a.track("k", 30)
    a.track("x", 1)
    b.track("k", 10)  # moves k from a to b, and re-sizes it
    assert "k" not in a and "k" in b
    assert (a.used, b.used, root.used) == (1, 10, 11)
    assert a.peak == 31 and b.peak == 10 and root.peak == 31
    assert root.keys() == ["x", "k"]
    root.track("k", 2)  # moves it up to the root
    assert (a.used, b.used, root.used) == (1, 0, 3)
    assert root.keys() == ["x", "k"] and b.keys() == []


def test_separate_trees_are_independent(backend: ModuleType) -> None:
    one = backend.SpillLedger(10)
    two = backend.SpillLedger(10)
    one.track("k", 1)
    two.track("k", 2)
    assert one.nbytes("k") == 1 and two.nbytes("k") == 2


def test_non_ascii_keys(backend: ModuleType) -> None:
    led = backend.SpillLedger(10)
    keys = ["é", "€uro", "😀", "a\x00b", ""]
    for i, key in enumerate(keys):
        led.track(key, i)
    assert led.keys() == keys
    assert led.forget("😀") == 2


# ------------------------------------------------------------------ errors


def test_unknown_keys_raise_unknown_key(backend: ModuleType) -> None:
    root = backend.SpillLedger(10)
    kid = root.child(10)
    root.track("r", 1)
    with pytest.raises(UnknownKey, match="nope"):
        root.touch("nope")
    with pytest.raises(UnknownKey):
        root.forget("nope")
    with pytest.raises(UnknownKey):
        root.nbytes("nope")
    with pytest.raises(KeyError):  # UnknownKey is a KeyError
        kid.touch("r")  # the parent's key is not in the child's subtree
    with pytest.raises(UnknownKey):
        kid.forget("r")
    assert root.used == 1


@pytest.mark.parametrize("bad", [1, 2.5, None, b"k", ("k",)])
def test_non_str_keys_raise_invalid_argument(backend: ModuleType, bad: Any) -> None:
    led = backend.SpillLedger(10)
    for call in (
        lambda: led.track(bad, 1),
        lambda: led.touch(bad),
        lambda: led.forget(bad),
        lambda: led.nbytes(bad),
    ):
        with pytest.raises(InvalidArgument, match="key"):
            call()
    assert bad not in led


@pytest.mark.parametrize("bad", [-1, -(2**70), 2**63, 1.5, "1", None])
def test_bad_byte_counts_raise_invalid_argument(backend: ModuleType, bad: Any) -> None:
    with pytest.raises(InvalidArgument, match="budget_bytes"):
        backend.SpillLedger(bad)
    led = backend.SpillLedger(10)
    with pytest.raises(InvalidArgument, match="budget_bytes"):
        led.child(bad)
    with pytest.raises(InvalidArgument, match="nbytes"):
        led.track("k", bad)
    assert "k" not in led and led.used == 0


def test_largest_byte_counts_do_not_overflow(backend: ModuleType) -> None:
    big = 2**63 - 1
    led = backend.SpillLedger(big)
    led.track("a", big)
    led.track("b", big)
    assert led.used == 2 * big
    assert led.over_budget()
    assert led.spill_candidates() == ["a"]


def test_integer_like_byte_counts_are_accepted(backend: ModuleType) -> None:
    np = pytest.importorskip("numpy")
    led = backend.SpillLedger(np.int64(10))
    led.track("k", np.int32(4))
    led.track("t", True)
    assert led.used == 5 and led.budget == 10


def test_names(backend: ModuleType) -> None:
    assert backend.SpillLedger(1).name == ""
    assert backend.SpillLedger(1, name=None).name == ""
    assert backend.SpillLedger(1).child(1, "kid").name == "kid"
    with pytest.raises(InvalidArgument, match="name"):
        backend.SpillLedger(1, name=5)


def test_bad_parent_raises_invalid_argument(backend: ModuleType) -> None:
    with pytest.raises(InvalidArgument, match="parent"):
        backend.SpillLedger(10, parent="root")


def test_parent_of_other_backend_is_refused(both_backends: tuple[ModuleType, ModuleType]) -> None:
    rust, python = both_backends
    with pytest.raises(InvalidArgument, match="parent"):
        rust.SpillLedger(10, parent=python.SpillLedger(10))
    with pytest.raises(InvalidArgument, match="parent"):
        python.SpillLedger(10, parent=rust.SpillLedger(10))


# ------------------------------------------------------------------ threads


def test_concurrent_track_forget_keeps_totals(backend: ModuleType) -> None:
    root = backend.SpillLedger(10**9)
    kids = [root.child(10**6, name=f"kid{i}") for i in range(4)]
    barrier = threading.Barrier(len(kids))
    errors: list[BaseException] = []

    def work(idx: int) -> None:
        led = kids[idx]
        try:
            barrier.wait()
            for i in range(3000):
                key = f"{idx}-{i}"
                led.track(key, i % 7 + 1)
                root.touch(key)
                if i % 3 == 0:
                    led.forget(key)
                shared = f"shared-{i % 11}"  # moved between the kids concurrently
                led.track(shared, 5)
                root.spill_candidates()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(kids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected_per_kid = sum(i % 7 + 1 for i in range(3000) if i % 3 != 0)
    shared_total = 11 * 5
    assert root.used == len(kids) * expected_per_kid + shared_total
    assert sum(k.used for k in kids) == root.used
    assert len(root) == len(kids) * 2000 + 11
    assert sorted(root.keys()) == sorted(k for kid in kids for k in kid.keys())
    for kid in kids:
        assert kid.used == sum(kid.nbytes(key) for key in kid.keys())


# ------------------------------------------------------------------ both backends, random ops

KEYS = st.sampled_from(["a", "b", "c", "d", "e", "f", "é", "😀"])
NBYTES = st.integers(min_value=0, max_value=2000)


class LedgerPair(RuleBasedStateMachine):
    """Drives a rust and a python ledger tree with the same operations."""

    nodes = Bundle("nodes")

    @initialize(target=nodes, budget=st.integers(0, 5000))
    def make_root(self, budget: int) -> Any:
        self.rust = backend_module("rust")
        self.python = backend_module("python")
        self.pairs: list[tuple[Any, Any]] = []
        return self._add(
            self.rust.SpillLedger(budget, name="root"), self.python.SpillLedger(budget, name="root")
        )

    def _add(self, rust_node: Any, python_node: Any) -> int:
        self.pairs.append((rust_node, python_node))
        return len(self.pairs) - 1

    @precondition(lambda self: len(self.pairs) < 6)
    @rule(target=nodes, parent=nodes, budget=st.integers(0, 3000))
    def make_child(self, parent: int, budget: int) -> int:
        r, p = self.pairs[parent]
        return self._add(
            r.child(budget, name=f"n{len(self.pairs)}"), p.child(budget, name=f"n{len(self.pairs)}")
        )

    def _same(self, call: Any) -> None:
        outcomes = []
        for node in (0, 1):
            try:
                outcomes.append(("ok", call(node)))
            except Exception as exc:  # compare the exception types
                outcomes.append(("error", type(exc)))
        assert outcomes[0] == outcomes[1]

    @rule(node=nodes, key=KEYS, nbytes=NBYTES)
    def track(self, node: int, key: str, nbytes: int) -> None:
        self._same(lambda b: self.pairs[node][b].track(key, nbytes))

    @rule(node=nodes, key=KEYS)
    def touch(self, node: int, key: str) -> None:
        self._same(lambda b: self.pairs[node][b].touch(key))

    @rule(node=nodes, key=KEYS)
    def forget(self, node: int, key: str) -> None:
        self._same(lambda b: self.pairs[node][b].forget(key))

    @rule(node=nodes, key=KEYS)
    def lookups(self, node: int, key: str) -> None:
        self._same(lambda b: self.pairs[node][b].nbytes(key))
        self._same(lambda b: key in self.pairs[node][b])

    @invariant()
    def observables_agree(self) -> None:
        for r, p in getattr(self, "pairs", []):
            assert r.used == p.used
            assert r.peak == p.peak
            assert r.keys() == p.keys()
            assert r.spill_candidates() == p.spill_candidates()
            assert r.over_budget() == p.over_budget()
            assert r.stats() == p.stats()
            assert len(r) == len(p)
            assert p.used == sum(p.nbytes(k) for k in p.keys())


TestLedgerPair = LedgerPair.TestCase
TestLedgerPair.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
