"""StreamStore: live hand-off while the producer runs, background persistence, late readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import phasekit
from phasekit.errors import StorageError, Timeout, UnknownKey
from phasekit.stores import JsonLinesRecorder, StreamStore
from phasekit.stores.durable import file_checksum
from stores_util import store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")


def wait_until(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Poll until ``condition`` holds (a generous limit: a hang fails, slowness does not)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def row(i: int) -> dict[str, Any]:
    return {"seq": i, "px": 100.0 + i}


def test_consumer_sees_every_item_in_order_while_the_producer_runs(tmp_path: Path) -> None:
    store = StreamStore(tmp_path, buffer_size=8, flush_interval=60)
    sub = store.subscribe("ticks")
    got: list[Any] = []
    consumer = threading.Thread(target=lambda: got.extend(sub))
    consumer.start()
    for i in range(200):
        store.put("ticks", row(i))
        if i % 25 == 24:
            # the consumer has everything so far although the stream is still open
            wait_until(lambda i=i: len(got) == i + 1, f"the consumer to reach item {i}")
            assert got == [row(k) for k in range(i + 1)]
    ref = store.finish("ticks")
    consumer.join(timeout=30)
    assert not consumer.is_alive()
    assert got == [row(i) for i in range(200)]
    assert ref.metadata["items"] == 200 and ref.kind == "json" and ref.checksum is not None


def test_two_subscribers_each_get_everything(tmp_path: Path) -> None:
    store = StreamStore(tmp_path, buffer_size=4)
    subs = [store.subscribe("s"), store.subscribe("s")]
    results: list[list[Any]] = [[], []]
    threads = [threading.Thread(target=lambda k=k: results[k].extend(subs[k])) for k in range(2)]
    for t in threads:
        t.start()
    batches = [pa.record_batch({"x": [i, i + 1]}) for i in range(50)]
    for b in batches:
        store.put("s", b)
    store.finish("s")
    for t in threads:
        t.join(timeout=30)
    assert results[0] == batches and results[1] == batches


def test_a_full_stream_blocks_the_producer_and_an_abandoned_subscriber_releases_it(
    tmp_path: Path,
) -> None:
    store = StreamStore(tmp_path, buffer_size=4, flush_interval=60)
    sub = store.subscribe("s")  # never read
    with pytest.raises(Timeout):
        for i in range(100):
            store.put("s", row(i), timeout=0.2)
    accepted = i
    assert accepted <= 4 + 1 + 4 + 4  # the channel, the pump, the subscriber, the tail
    sub.close()
    for k in range(accepted, accepted + 20):
        store.put("s", row(k), timeout=30)
    store.finish("s")


def test_a_part_holds_at_most_buffer_size_items(tmp_path: Path) -> None:
    """Items that reach the writer in several batches fill a part up to buffer_size, no
    more (three, then five: parts of five and three, not one of eight)."""
    store = StreamStore(tmp_path, buffer_size=5, flush_interval=3600)
    for i in range(3):
        store.put("s", row(i))
    wait_until(lambda: store.stats()["per_stream"]["s"]["items"] == 3, "three taken")
    for i in range(3, 8):
        store.put("s", row(i))
    store.finish("s")
    manifest = json.loads((tmp_path / "s.stream" / "manifest.json").read_text())
    assert [part["rows"] for part in manifest["parts"]] == [5, 3]
    assert store.get("s") == [row(i) for i in range(8)]
    store.close()


def test_persisted_every_buffer_size_items_and_every_flush_interval(tmp_path: Path) -> None:
    rec = JsonLinesRecorder(tmp_path / "rec.jsonl")
    store = StreamStore(tmp_path / "s", buffer_size=10, flush_interval=3600, recorder=rec)
    for i in range(25):
        store.put("by_count", row(i))
    wait_until(lambda: store.stats()["per_stream"]["by_count"]["parts"] == 2, "two flushes")
    # a reader in another process sees the two flushed parts before the stream ends
    late = StreamStore(tmp_path / "s")
    assert late.get("by_count") == [row(i) for i in range(20)]
    parts = JsonLinesRecorder.read(tmp_path / "rec.jsonl")
    assert [r.key for r in parts] == ["by_count.part-000001", "by_count.part-000002"]
    for ref in parts:
        assert ref.path is not None and file_checksum(ref.path) == ref.checksum
        assert ref.size_bytes == ref.path.stat().st_size
    timed = StreamStore(tmp_path / "t", buffer_size=1000, flush_interval=0.05)
    for i in range(3):
        timed.put("by_time", row(i))
    wait_until(lambda: timed.stats()["per_stream"]["by_time"]["parts"] == 1, "a timed flush")
    assert StreamStore(tmp_path / "t").get("by_time") == [row(i) for i in range(3)]
    store.close()
    timed.close()
    assert [r.key for r in JsonLinesRecorder.read(tmp_path / "rec.jsonl")][-1] == "by_count"


def test_late_readers_get_everything_from_the_files(tmp_path: Path) -> None:
    with StreamStore(tmp_path, buffer_size=7) as store:
        for i in range(30):
            store.put("ticks", row(i))
    late = StreamStore(tmp_path)
    assert late.get("ticks") == [row(i) for i in range(30)]
    assert list(late.items("ticks")) == [row(i) for i in range(30)]
    assert list(late.subscribe("ticks")) == [row(i) for i in range(30)]
    ref = late.ref("ticks")
    assert ref.metadata["items"] == 30 and ref.metadata["parts"] == 5
    assert [r.key for r in late.list()] == ["ticks"]
    with pytest.raises(StorageError, match="finished"):
        late.put("ticks", row(99))


def test_a_subscriber_joining_midway_replays_from_the_start(tmp_path: Path) -> None:
    store = StreamStore(tmp_path, buffer_size=5, flush_interval=3600)
    for i in range(12):  # two parts flushed, two items pending
        store.put("s", row(i))
    wait_until(lambda: store.stats()["per_stream"]["s"]["items"] == 12, "the pump")
    sub = store.subscribe("s")
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.extend(sub))
    t.start()
    for i in range(12, 20):
        store.put("s", row(i))
    store.finish("s")
    t.join(timeout=30)
    assert got == [row(i) for i in range(20)]


def test_memory_only_stream_and_errors(tmp_path: Path) -> None:
    store = StreamStore(None, buffer_size=3)
    for i in range(5):
        store.put("live", row(i))
    wait_until(lambda: store.stats()["per_stream"]["live"]["items"] == 5, "the pump")
    assert store.get("live") == [row(i) for i in range(5)]
    with pytest.raises(UnknownKey):
        store.get("nothing")
    store.close()
    with pytest.raises(Exception, match="buffer_size"):
        StreamStore(tmp_path, buffer_size=0)
    with pytest.raises(Exception, match="flush_interval"):
        StreamStore(tmp_path, flush_interval=0)


def test_delete_removes_the_stream(tmp_path: Path) -> None:
    store = StreamStore(tmp_path, buffer_size=2)
    for i in range(5):
        store.put("s", row(i))
    store.delete("s")
    assert os.listdir(tmp_path) == []
    with pytest.raises(UnknownKey):
        store.get("s")


CRASH_PRODUCER = textwrap.dedent(
    """
    import sys, phasekit
    from phasekit.stores import StreamStore
    phasekit.set_backend(sys.argv[2])
    store = StreamStore(sys.argv[1], buffer_size=10, flush_interval=0.02)
    i = 0
    ready = False
    while True:
        store.put("ticks", {"seq": i, "px": 100.0 + i})
        i += 1
        if not ready and store.stats()["per_stream"]["ticks"]["flushes"] >= 1:
            print("ready", flush=True)  # one part is committed: kill from now on
            ready = True
    """
)


@pytest.mark.parametrize("trial", range(5))
def test_a_killed_producer_loses_at_most_the_unflushed_tail(tmp_path: Path, trial: int) -> None:
    script = tmp_path / "producer.py"
    script.write_text(CRASH_PRODUCER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "s"), phasekit.get_backend()],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(0.03 * trial)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = tmp_path / "s" / "ticks.stream"
    manifest = json.loads((folder / "manifest.json").read_text())
    items = StreamStore(tmp_path / "s").get("ticks")  # verifies every listed part
    assert len(items) == sum(p["rows"] for p in manifest["parts"]) >= 10
    assert items == [{"seq": i, "px": 100.0 + i} for i in range(len(items))]
    # a visible part file is complete (listed, or durable and not yet listed)
    listed = {p["file"] for p in manifest["parts"]}
    for name in os.listdir(folder):
        if name.startswith("."):
            continue  # an in-progress temporary: hidden by its name
        assert name == "manifest.json" or name.startswith("part-")
        if name == "manifest.json" or name in listed:
            continue
        assert pa.ipc.open_file(str(folder / name)).read_all().num_rows == 10
