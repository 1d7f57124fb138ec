"""Crash test: a process storing items into a FileStore is SIGKILLed at random moments.

Afterwards every recorded item (the recorder is called only once an item is durable)
exists, verifies and reads back as what was stored; no half-written file is visible
under a final name; and a key being overwritten at the time of the kill still reads.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import phasekit
from phasekit.stores import FileStore, JsonLinesRecorder, Ref
from phasekit.stores.durable import file_checksum, is_tmp_name, path_checksum
from phasekit.stores.file import MANIFEST_DIR
from stores_util import store_backend  # noqa: F401

pytestmark = [pytest.mark.usefixtures("store_backend"), pytest.mark.slow]
TRIALS = 25  # per backend: 50 in all

PRODUCER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pyarrow as pa
    import phasekit
    from phasekit.stores import FileStore, JsonLinesRecorder, Ref

    base, backend = sys.argv[1], sys.argv[2]
    phasekit.set_backend(backend)
    recorder = JsonLinesRecorder(base + "/recorded.jsonl")
    plain = {f: FileStore(base + "/" + f, format=f, recorder=recorder)
             for f in ("arrow", "parquet", "json")}
    parted = FileStore(base + "/parted", format="parquet", partition_by=["g"], recorder=recorder)

    def value(i):
        n = 20_000 if i % 5 == 0 else 200  # some large writes, so kills land inside them
        return pa.table({"i": np.arange(n, dtype=np.int64) + i, "g": np.arange(n) % 3})

    i = 0
    while True:
        for store in (*plain.values(), parted):
            store.put(f"k{i}", value(i))
        plain["arrow"].put("latest", value(i))  # overwritten again and again
        i += 1
        if i == 2:
            print("ready", flush=True)
    """
)


def expected(i: int) -> pa.Table:
    n = 20_000 if i % 5 == 0 else 200
    return pa.table(
        {
            "i": pa.array(range(i, i + n), pa.int64()),
            "g": pa.array([k % 3 for k in range(n)], pa.int64()),
        }
    )


def check_visible_files(folder: Path) -> None:
    """Every file under a final (non-temporary) name is complete."""
    for path in folder.rglob("*"):
        if path.is_dir() or any(is_tmp_name(part) for part in path.relative_to(folder).parts):
            continue
        if path.suffix == ".arrow":
            pa.ipc.open_file(str(path)).read_all()
        elif path.suffix == ".parquet":
            pq.read_table(str(path), page_checksum_verification=True)
        elif path.suffix == ".json":
            json.loads(path.read_text())


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_at_a_random_moment_loses_no_recorded_item(tmp_path: Path, trial: int) -> None:
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    base = tmp_path / "store"
    base.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(base), phasekit.get_backend()],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(random.Random(trial).uniform(0.0, 0.4))
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    recorded = JsonLinesRecorder.read(base / "recorded.jsonl")
    unique = [r for r in recorded if r.key != "latest"]
    assert len(unique) >= 8  # two rounds of four stores before "ready"
    for ref in unique:
        assert ref.path is not None and ref.path.exists(), ref.uri
        assert path_checksum(ref.path) == ref.checksum, ref.uri
        store = FileStore(ref.path.parent)
        value = store.get(ref)
        want = expected(int(ref.key[1:]))
        assert value.sort_by("i").equals(want), ref.uri
    for name in ("arrow", "parquet", "json", "parted"):
        check_visible_files(base / name)
        store = FileStore(base / name)
        for ref in store.list():  # every committed manifest verifies
            store.get(ref)
    latest = FileStore(base / "arrow")  # opening resolves a half-done overwrite
    assert latest.get("latest").num_rows in (200, 20_000)
    assert [p for p in (base / "arrow").iterdir() if p.name.endswith(".phasekit-old")] == []
    for manifest in (base / "arrow" / MANIFEST_DIR).glob("*.json"):
        ref = Ref.from_dict(json.loads(manifest.read_text())["ref"])
        assert ref.path is not None and file_checksum(ref.path) == ref.checksum
