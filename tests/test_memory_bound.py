"""What keeps a long run near its memory budget: a hybrid store's small index of spilled
items, the heap handed back after spilling, jobs built when taken, and JSON written
piece by piece."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from phasekit.stores import HybridStore, JsonLinesRecorder, trim
from phasekit.stores.durable import write_json
from phasekit.workflow.phase import JobList
from stores_util import store_backend  # noqa: F401

ITEM = 80_000  # bytes of one float64 array of 10_000 values


@pytest.mark.usefixtures("store_backend")
def test_spilled_refs_fold_and_come_back_equal(tmp_path: Path) -> None:
    recorder = JsonLinesRecorder(tmp_path / "items.jsonl")
    store = HybridStore(2 * ITEM, spill_dir=tmp_path, run="r 1", phase="p%", recorder=recorder)
    view = store.container("c é", 2 * ITEM)
    put = [
        view.put(f"k{i}", np.full(10_000, float(i)), {"i": i, "m": {"x": [1, 2]}}) for i in range(5)
    ]
    assert view.stats()["items_on_disk"] == 3
    folded = [k for k, r in store._core.refs.items() if type(r).__name__ == "_Folded"]
    assert len(folded) == 3  # the spilled ones hold no Ref object
    for ref in put:
        again = view.ref(ref.key)
        assert again == ref and again.uri == ref.uri and again.kind == ref.kind
        assert dict(again.metadata) == dict(ref.metadata)
        assert again.created_at == ref.created_at
    assert [r.uri for r in store.list()] == [r.uri for r in put]
    view.delete("k0")  # spilled: the recorder is told with the full Ref
    assert [r.uri for r in JsonLinesRecorder.read(tmp_path / "items.jsonl")] == [
        r.uri for r in put[1:]
    ]
    np.testing.assert_array_equal(view.get("k1"), np.full(10_000, 1.0))
    assert view.ref("k1") == put[1]
    store.close()


@pytest.mark.usefixtures("store_backend")
def test_spilling_trims_the_heap(tmp_path: Path) -> None:
    store = HybridStore(ITEM, spill_dir=tmp_path)
    store._core.trimmer = trim.Trimmer(after_bytes=2 * ITEM)
    for i in range(7):  # 6 spills of ITEM bytes: 3 releases
        store.put(f"k{i}", np.full(10_000, float(i)))
    assert store.stats()["spills"] == 6
    assert store.stats()["memory_trims"] == 3
    store.close()


def test_trimmer_counts_freed_bytes() -> None:
    t = trim.Trimmer(after_bytes=100)
    t.freed(60)
    assert t.trims == 0
    t.freed(60)
    assert t.trims == 1
    t.freed(99)
    assert t.trims == 1


def _anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.parametrize("pool_name", ["mimalloc", "system"])
def test_trimming_hands_pyarrow_pool_pages_back(pool_name: str) -> None:
    """pyarrow's allocator keeps the pages of freed buffers resident; a trim (what the
    hybrid store does after spilling) hands them back: with mimalloc, pyarrow's default
    pool, and with the C library's (``ARROW_DEFAULT_MEMORY_POOL=system``)."""
    import pyarrow as pa

    if not Path("/proc/self/status").exists():
        pytest.skip("resident memory is read from /proc/self/status (Linux)")
    pool = getattr(pa, f"{pool_name}_memory_pool")()
    default = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        pool.release_unused()
        before = _anon_mb()
        buffers = [pa.allocate_buffer(600_000) for _ in range(200)]  # 120 MB, as curves
        for buffer in buffers:
            np.frombuffer(buffer, dtype=np.uint8)[:] = 1  # resident
        held = _anon_mb()
        assert held - before > 100
        del buffers, buffer
        t = trim.Trimmer(after_bytes=1)
        t.freed(1)
        assert t.trims == 1
        assert _anon_mb() - before < 40, (before, held, _anon_mb())
    finally:
        pa.set_memory_pool(default)


def test_trim_is_available_on_glibc() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert trim.available()


def test_job_list_builds_jobs_when_taken() -> None:
    built: list[int] = []

    def make(i: int) -> str:
        built.append(i)
        return f"job{i}"

    jobs = JobList(make, range(10, 20))  # type: ignore[arg-type]
    assert len(jobs) == 10 and built == []
    assert jobs[2:5] == ["job12", "job13", "job14"]
    assert jobs[0] == "job10" and jobs[-1] == "job19"
    assert built == [12, 13, 14, 10, 19]
    assert list(jobs) == [f"job{i}" for i in range(10, 20)]


def test_write_json_streams_the_same_bytes(tmp_path: Path) -> None:
    obj = {"ranking": [{"id": i, "m": [1.5, None, "é"]} for i in range(30_000)], "a": 1}
    checksum = write_json(tmp_path / "x.json", obj, "a test file")
    data = (tmp_path / "x.json").read_bytes()
    assert len(data) > 1 << 20  # several buffers
    assert data == json.dumps(obj, sort_keys=True).encode()  # compact when large
    assert checksum == f"crc32:{zlib.crc32(data):08x}"
    odd = {"k": [{"z": 1, "a": [2.5, float("inf")]}, "x"], "e": [], "n": None}
    for value in (
        odd,
        {2: "b", 1: "a"},
        {"k": [[1], {"b": {"a": 1}}], "a": "é"},
        [1, {"b": 2, "a": 1}],
    ):
        big = {"pad": list(range(20_000)), "value": value}  # past one buffer: compact
        for doc, indent in ((value, 1), (big, None)):
            write_json(tmp_path / "o.json", doc, "a test file")
            expected = json.dumps(doc, indent=indent, sort_keys=True).encode()
            assert (tmp_path / "o.json").read_bytes() == expected
    small = {"b": [1, 2], "a": {"x": None}}
    checksum = write_json(tmp_path / "s.json", small, "a test file")
    data = (tmp_path / "s.json").read_bytes()
    assert data == json.dumps(small, indent=1, sort_keys=True).encode()  # indented
    assert checksum == f"crc32:{zlib.crc32(data):08x}"


def test_write_json_failure_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"old": 1}')
    with pytest.raises(TypeError):
        write_json(tmp_path / "x.json", {"ok": list(range(50_000)), "bad": object()}, "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    assert json.loads((tmp_path / "x.json").read_text()) == {"old": 1}
