"""Spill isolation (issue 15, point 5): a corrupt spilled extent fails only its own item;
compaction skips and reports it; every intact item stays readable."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from phasekit.errors import CorruptDataError
from phasekit.stores import HybridStore
from stores_util import store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")

N = 29
ITEM = 8_000  # bytes of one float64 array of 1_000 values


def value(i: int) -> object:
    if i % 3 == 0:
        return pa.table({"i": pa.array([i] * 200, pa.int64())})
    if i % 3 == 1:
        return {"i": i, "name": f"item-{i}", "xs": list(range(i % 7))}
    return np.full(1_000, float(i))


def same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, pa.Table):
        return isinstance(b, pa.Table) and a.equals(b)
    return a == b


def _corrupt_one(store: HybridStore, key: str) -> None:
    core = store._core
    entry = core.spilled[f"run/phase/{key}"]
    seg = core.log._segments[entry.extent.segment]
    with open(seg.path, "r+b") as fh:
        fh.seek(entry.extent.offset + entry.extent.length // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x10]))


@pytest.mark.parametrize("seed", range(6))
def test_a_corrupt_extent_fails_only_its_item(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = HybridStore(0, tmp_path, segment_bytes=3 * ITEM, compact_below=0.9)
    for i in range(N):
        store.put(f"k{i}", value(i))
    bad = f"k{rng.randrange(N)}"
    _corrupt_one(store, bad)
    alive = {f"k{i}" for i in range(N)}
    # deletes make segments sparse: compaction then reads (and must skip) the bad extent
    for key in rng.sample(sorted(alive - {bad}), 10):
        store.delete(key)
        alive.discard(key)
    for i in range(N, N + 10):  # more puts: more compaction, more spills
        store.put(f"k{i}", value(i))
        alive.add(f"k{i}")
    stats = store.stats()
    with pytest.raises(CorruptDataError, match=f"'run/phase/{bad}'"):
        store.get(bad)
    for key in sorted(alive - {bad}):
        assert same(store.get(key), value(int(key[1:]))), key
    assert stats["compactions"] >= 1
    assert store.stats()["corrupt_items"] == [f"run/phase/{bad}"]
    store.delete(bad)  # a lost item can be deleted; then it is gone
    assert store.stats()["corrupt_items"] == []
    store.put(bad, value(1))
    assert same(store.get(bad), value(1))
    store.close()


def test_compaction_reports_what_it_skipped(tmp_path: Path) -> None:
    store = HybridStore(0, tmp_path, segment_bytes=4 * ITEM, compact_below=0.9)
    for i in range(8):
        store.put(f"k{i}", np.full(1_000, float(i)))
    _corrupt_one(store, "k1")
    store.delete("k0")  # k0..k3 share a segment: it is compacted, k1 is skipped
    stats = store.stats()
    assert stats["corrupt_extents"] == 1 and stats["corrupt_items"] == ["run/phase/k1"]
    for i in (2, 3, 4, 5, 6, 7):
        np.testing.assert_array_equal(store.get(f"k{i}"), np.full(1_000, float(i)))
    with pytest.raises(CorruptDataError, match="fails its checksum"):
        store.get("k1")
    store.close()
