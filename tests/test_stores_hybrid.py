"""HybridStore: budgets through SpillLedger, LRU spilling to segments, reloads, faults, memory."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import phasekit
from phasekit.errors import CorruptDataError, StorageError, UnknownKey
from phasekit.stores import HybridStore, JsonLinesRecorder, segments
from stores_util import assert_same, sample_values, small_disk, store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")
ITEM = 80_000  # bytes of one float64 array of 10_000 values


def arr(i: int, n: int = 10_000) -> np.ndarray:
    return np.full(n, float(i))


def where(store: HybridStore, key: str) -> str:
    core = store._core
    ikey = f"{store._prefix}/{key}"
    return "memory" if ikey in core.memory else "disk" if ikey in core.spilled else "absent"


def test_least_recently_used_items_spill_first(tmp_path: Path) -> None:
    store = HybridStore(3 * ITEM, tmp_path)
    for k in "abc":
        store.put(k, arr(ord(k)))
    assert [where(store, k) for k in "abc"] == ["memory"] * 3
    store.put("d", arr(4))
    assert where(store, "a") == "disk"
    store.get("b")  # b becomes most recently used
    store.put("e", arr(5))
    assert [where(store, k) for k in "bcde"] == ["memory", "disk", "memory", "memory"]
    np.testing.assert_array_equal(store.get("a"), arr(ord("a")))  # reload, c or d spills
    stats = store.stats()
    assert stats["spills"] == 3 and stats["reloads"] == 1 and stats["hits"] == 1
    assert stats["items"] == 5 and stats["items_in_memory"] == 3 and stats["items_on_disk"] == 2
    assert stats["bytes_in_memory"] == 3 * ITEM and stats["bytes_on_disk"] == 2 * ITEM
    assert stats["peak_bytes_in_memory"] == 4 * ITEM
    store.close()


def test_memory_never_exceeds_budget_by_more_than_the_item(tmp_path: Path) -> None:
    budget = 1_000_000
    rng = np.random.default_rng(1)
    store = HybridStore(budget, tmp_path)
    expected = {}
    largest = 0
    for i in range(200):
        value = rng.random(int(rng.integers(1, 40_000)))
        largest = max(largest, value.nbytes)
        expected[f"k{i}"] = value
        store.put(f"k{i}", value)
        assert store.ledger.used <= budget
        if i % 7 == 0:
            key = f"k{int(rng.integers(0, i + 1))}"
            np.testing.assert_array_equal(store.get(key), expected[key])
            assert store.ledger.used <= budget
    assert store.ledger.peak <= budget + largest
    for key, value in expected.items():
        np.testing.assert_array_equal(store.get(key), value)
    store.close()


def test_every_kind_survives_spill_and_reload(tmp_path: Path) -> None:
    values = sample_values()
    store = HybridStore(0, tmp_path)  # everything spills at once
    for name, value in values.items():
        store.put(name, value)
    assert store.stats()["items_on_disk"] == len(values)
    for name, value in values.items():
        assert_same(value, store.get(name))
    store.close()


def test_an_item_larger_than_the_budget_stays_on_disk_after_get(tmp_path: Path) -> None:
    store = HybridStore(ITEM // 2, tmp_path)
    store.put("big", arr(1))
    assert where(store, "big") == "disk"
    np.testing.assert_array_equal(store.get("big"), arr(1))
    assert where(store, "big") == "disk" and store.ledger.used == 0
    store.close()


def test_container_views_have_their_own_budget_under_the_global_one(tmp_path: Path) -> None:
    rec = JsonLinesRecorder(tmp_path / "rec.jsonl")
    store = HybridStore(6 * ITEM, tmp_path, run="r", phase="p", recorder=rec)
    a = store.container("portfolio_a", 2 * ITEM)
    b = store.container("portfolio_b", 5 * ITEM)
    refs = [a.put(f"x{i}", arr(i)) for i in range(4)]
    assert refs[0].uri == "memory://r/p/portfolio_a/x0"
    assert a.ledger.used == 2 * ITEM and a.stats()["items_on_disk"] == 2
    for i in range(5):
        b.put(f"y{i}", arr(10 + i))
    # b is within its own budget (5 items) but the store holds 2 + 5 > 6: the global
    # least recently used (a's oldest in memory) spills
    assert store.ledger.used <= 6 * ITEM and b.ledger.used <= 5 * ITEM
    assert where(a, "x2") == "disk"
    # the same key in two containers is two items
    a.put("same", {"who": "a"})
    b.put("same", {"who": "b"})
    assert a.get("same") == {"who": "a"} and b.get("same") == {"who": "b"}
    # the store resolves the refs of its containers; a container only its own
    np.testing.assert_array_equal(store.get(refs[1]), arr(1))
    with pytest.raises(Exception, match="does not belong"):
        b.get(refs[1])
    assert {r.key for r in a.list()} == {"x0", "x1", "x2", "x3", "same"}
    assert len(store.list()) == 11
    assert a.stats()["puts"] == 5 and store.stats()["puts"] == 11
    assert len(JsonLinesRecorder.read(tmp_path / "rec.jsonl")) == 11
    a.close()
    assert len(store.list()) == 6 and a.ledger.used == 0
    store.close()
    with pytest.raises(StorageError, match="closed"):
        b.put("z", 1)


def test_delete_replace_and_missing(tmp_path: Path) -> None:
    store = HybridStore(ITEM, tmp_path)
    store.put("a", arr(1))
    store.put("b", arr(2))  # a spills
    store.put("a", arr(3))  # replaces the spilled a
    np.testing.assert_array_equal(store.get("a"), arr(3))
    store.delete("a")
    store.delete("b")
    with pytest.raises(UnknownKey, match="no item 'a'"):
        store.get("a")
    with pytest.raises(UnknownKey):
        store.delete("a")
    stats = store.stats()
    assert stats["items"] == 0 and stats["bytes_in_memory"] == 0 and stats["bytes_on_disk"] == 0
    folder = store.spill_dir
    store.close()
    assert not folder.exists()


def test_segments_are_compacted_when_mostly_dead(tmp_path: Path) -> None:
    store = HybridStore(0, tmp_path, segment_bytes=4 * ITEM)
    for i in range(40):
        store.put(f"k{i}", arr(i))
    assert store.stats()["segments"] == 10
    assert len(list(store.spill_dir.iterdir())) == 10  # few files, not one per item
    for i in range(40):
        if i % 4:
            store.delete(f"k{i}")
    stats = store.stats()
    assert stats["compactions"] >= 8
    assert stats["segments"] <= 4 and stats["segment_file_bytes"] <= 2 * 10 * ITEM
    for i in range(0, 40, 4):
        np.testing.assert_array_equal(store.get(f"k{i}"), arr(i))
    store.close()


def test_a_corrupted_spill_segment_is_detected_and_named(tmp_path: Path) -> None:
    store = HybridStore(0, tmp_path)
    store.put("a", arr(1))
    segment = next(store.spill_dir.iterdir())
    data = bytearray(segment.read_bytes())
    data[100] ^= 0x04
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError) as err:
        store.get("a")
    assert "'run/phase/a'" in str(err.value) and str(segment) in str(err.value)
    store.close()


def test_concurrent_puts_and_gets(tmp_path: Path) -> None:
    store = HybridStore(20 * ITEM, tmp_path)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(60):
                store.put(f"t{t}-{i}", arr(t * 1000 + i))
                j = i // 2
                np.testing.assert_array_equal(store.get(f"t{t}-{j}"), arr(t * 1000 + j))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert store.stats()["items"] == 240 and store.ledger.used <= 20 * ITEM
    store.close()


# ------------------------------------------------------------------ failed spills


def test_injected_disk_full_during_spill_keeps_items_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = HybridStore(2 * ITEM, tmp_path)
    store.put("a", arr(1))

    def full(fd: int, buf: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segments, "_write_all", full)
    with caplog.at_level(logging.WARNING, logger="phasekit.stores.hybrid"):
        for k in "bcd":
            store.put(k, arr(ord(k)))
    assert "the disk is full" in caplog.text and "stays in memory" in caplog.text
    stats = store.stats()
    assert stats["spill_failures"] == 2 and stats["spills"] == 0
    assert stats["items_in_memory"] == 4 and stats["bytes_in_memory"] == 4 * ITEM
    monkeypatch.undo()
    store.put("e", arr(5))  # room again: back within budget
    assert store.ledger.used == 2 * ITEM and store.stats()["spills"] == 3
    for k, v in {"a": 1, "b": ord("b"), "c": ord("c"), "d": ord("d"), "e": 5}.items():
        np.testing.assert_array_equal(store.get(k), arr(v))
    store.close()


def test_permission_denied_spill_folder_keeps_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = HybridStore(ITEM, tmp_path)

    def denied(*_a: Any, **_k: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(segments.SegmentLog, "_open_segment", denied)
    store.put("a", arr(1))
    store.put("b", arr(2))
    assert store.stats()["spill_failures"] == 1 and store.stats()["items_in_memory"] == 2
    np.testing.assert_array_equal(store.get("a"), arr(1))
    store.close()


def test_real_disk_full_during_spill_loses_nothing(small_disk: Path) -> None:  # noqa: F811
    store = HybridStore(4 * ITEM, small_disk, segment_bytes=1 << 20)
    values = {f"k{i}": arr(i) for i in range(40)}  # 3.2 MB into a 1 MiB disk
    values["table"] = pa.table({"x": np.arange(20_000, dtype=np.int64)})
    for key, value in values.items():
        store.put(key, value)
    stats = store.stats()
    assert stats["spill_failures"] > 0 and stats["spills"] > 0
    assert stats["items"] == len(values)
    assert stats["bytes_on_disk"] <= 1 << 20
    for key, value in values.items():
        assert_same(value, store.get(key))
    store.close()
    assert list(small_disk.iterdir()) == []


# ------------------------------------------------------------------ resident memory

RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import pyarrow as pa
    import phasekit
    from phasekit.stores import HybridStore

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise SystemExit("no " + field)

    backend, kind, spill_dir = sys.argv[1:4]
    phasekit.set_backend(backend)
    budget, item, n = 48 << 20, 4 << 20, 120  # 480 MiB stored, 10x the budget
    rng = np.random.default_rng(0)
    def make(i):
        a = np.full(item // 8, float(i))
        return a if kind == "numpy" else pa.table({"x": a})
    probe = make(-1); del probe  # allocator warm-up
    baseline = status("VmRSS")
    store = HybridStore(budget, spill_dir)
    for i in range(n):
        store.put(f"k{i}", make(i))
    for i in range(n):  # read everything back: reloads spill others
        v = store.get(f"k{i}")
        first = float(v[0]) if kind == "numpy" else v.column(0)[0].as_py()
        assert first == float(i), (i, first)
        del v
    stats = store.stats()
    print(json.dumps({"baseline": baseline, "peak": status("VmHWM"), "budget": budget,
                      "item": item, "spills": stats["spills"], "reloads": stats["reloads"],
                      "ledger_peak": stats["peak_bytes_in_memory"]}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["numpy", "arrow"])
def test_peak_resident_memory_stays_within_budget_plus_one_item(tmp_path: Path, kind: str) -> None:
    """Store 10x the budget, then read it all back, in a fresh process; its peak RSS
    (VmHWM) stays within RSS before the first put + budget + one item + a 16 MiB margin
    (interpreter, allocator slack and the spill/reload buffers of one item)."""
    script = tmp_path / "rss.py"
    script.write_text(RSS_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), phasekit.get_backend(), kind, str(tmp_path / "spill")],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    margin = 16 << 20
    assert r["spills"] >= 108 and r["reloads"] >= 108
    assert r["ledger_peak"] <= r["budget"] + r["item"]
    assert r["peak"] - r["baseline"] <= r["budget"] + r["item"] + margin, r


def _part(i: int, rows: int = 1000) -> pa.Table:
    return pa.table({"i": np.arange(i * rows, (i + 1) * rows), "x": np.full(rows, float(i))})


PART = int(phasekit.size_of(_part(0)))  # bytes of one part


def test_join_writes_a_table_larger_than_the_budget_to_disk_part_by_part(tmp_path: Path) -> None:
    store = HybridStore(2 * PART, tmp_path)
    window = store.container("w", 2 * PART)
    parts = window.container("parts", 2 * PART)
    refs = [parts.put(f"p{i}", _part(i)) for i in range(8)]  # 4x the budget
    assert store.stats()["items_on_disk"] == 6  # the older parts spilled as they came
    peaks = store.ledger.peak
    ref = window.join("table", refs, {"rows": 8000})
    assert ref.uri == window.uri("table") and ref.size_bytes == 8 * PART
    assert ref.metadata == {"rows": 8000}
    assert where(window, "table") == "disk" and window.ref("table") == ref
    assert all(r.key not in parts for r in refs)  # the parts are dropped
    stats = store.stats()
    assert stats["items"] == 1 and stats["bytes_in_memory"] == 0
    # joining held one part at a time: the peak is what the puts reached, within budget + a part
    assert store.ledger.peak == peaks <= 3 * PART
    table = window.get("table")
    assert table.equals(pa.concat_tables([_part(i) for i in range(8)]))
    assert where(window, "table") == "disk"  # larger than its budget: stays on disk after get
    store.close()


def test_join_keeps_a_table_within_the_budget_in_memory(tmp_path: Path) -> None:
    store = HybridStore(10 * PART, tmp_path)
    refs = [store.put(f"p{i}", _part(i)) for i in range(3)]
    ref = store.join("table", [refs[0], "p1", refs[2]])
    assert where(store, "table") == "memory" and store.stats()["spills"] == 0
    assert ref.size_bytes == store.stats()["bytes_in_memory"]
    assert store.get("table").equals(pa.concat_tables([_part(i) for i in range(3)]))
    assert [r.key for r in store.list()] == ["table"]
    store.close()


def test_join_casts_parts_to_the_first_schema_and_refuses_what_it_cannot_join(
    tmp_path: Path,
) -> None:
    store = HybridStore(0, tmp_path)  # everything on disk
    store.put("a", _part(0, 10))
    store.put("b", _part(1, 10).cast(pa.schema([("i", pa.int32()), ("x", pa.float64())])))
    store.join("t", ["a", "b"])
    assert store.get("t").schema == _part(0).schema
    assert store.get("t").column("i").to_pylist() == list(range(20))
    store.put("n", arr(1))
    with pytest.raises(
        phasekit.errors.InvalidArgument, match=r"'run/phase/n'.*numpy.*pyarrow\.Table"
    ):
        store.join("u", ["n"])
    with pytest.raises(UnknownKey, match="'gone'"):
        store.join("u", ["t", "gone"])
    assert "t" in store and "n" in store and "u" not in store  # nothing changed
    store.close()


def test_join_with_encryption_keeps_spilled_parts_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phasekit.crypt import generate_key, open_encryption

    monkeypatch.setenv("PK_TEST_JOIN", generate_key())
    store = HybridStore(PART, tmp_path, encryption=open_encryption("env:PK_TEST_JOIN"))
    refs = [store.put(f"p{i}", _part(i)) for i in range(3)]
    store.join("t", refs)
    assert store.get("t").equals(pa.concat_tables([_part(i) for i in range(3)]))
    assert all(e.sealed for e in store._core.spilled.values())
    store.close()
