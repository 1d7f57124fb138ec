"""murmur3 equals mmh3; partitions are even; keyed state."""

from __future__ import annotations

import collections

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phasekit.errors import InvalidArgument
from phasekit.stream import KeyedState, murmur3_32, partition
from phasekit.stream.partition import Partitioner


@given(st.text(), st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_murmur3_equals_mmh3_on_text(key: str, seed: int) -> None:
    assert murmur3_32(key, seed) == mmh3.hash(key, seed)
    assert murmur3_32(key, seed, signed=False) == mmh3.hash(key, seed, signed=False)


@given(st.binary(max_size=64), st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_murmur3_equals_mmh3_on_bytes(key: bytes, seed: int) -> None:
    assert murmur3_32(key, seed) == mmh3.hash(key, seed)


def test_known_vectors_and_non_string_keys() -> None:
    assert murmur3_32("", 0) == 0
    assert murmur3_32("foo") == mmh3.hash("foo") == -156908512
    assert murmur3_32(12345) == mmh3.hash("12345")  # other keys hash their str()


@pytest.mark.parametrize("n", [2, 7, 16])
def test_partition_is_mmh3_unsigned_modulo_n_and_evenly_spread(n: int) -> None:
    keys = [f"account-{i}" for i in range(20_000)]
    counts = collections.Counter(partition(k, n) for k in keys)
    assert all(partition(k, n, seed=3) == mmh3.hash(k, 3, signed=False) % n for k in keys[:500])
    expected = len(keys) / n
    assert set(counts) == set(range(n))
    assert all(abs(c - expected) < 0.1 * expected for c in counts.values()), counts
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 3 * n  # far below what a skewed hash gives


def test_partition_arguments_and_partitioner_cache() -> None:
    with pytest.raises(InvalidArgument):
        partition("a", 0)
    part = Partitioner(lambda x: x["k"], 5, cache_size=2)
    items = [{"k": f"k{i % 4}"} for i in range(40)]
    assert [part(x) for x in items] == [partition(x["k"], 5) for x in items]
    assert part({"k": ["unhashable"]}) == partition("['unhashable']", 5)


def test_keyed_state() -> None:
    state = KeyedState(default=list)
    state["a"].append(1)
    state.set("b", [2])
    assert state.get("a") == [1] and "b" in state and len(state) == 2
    assert sorted(state.keys()) == ["a", "b"] and state.pop("a") == [1]
    with pytest.raises(KeyError):
        KeyedState()["missing"]
