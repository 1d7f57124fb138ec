"""Encryption at rest: the chunked format, every kind of file it covers, keys.

Tampering is checked in memory: the encrypted bytes of a real file of each kind (a file
store's file, a hybrid spill segment, a stream part, a results file) get 1,000 single
bit flips and 1,000 truncations, and each must fail to decrypt. Keys: a wrong or missing
master key is ``KeyUnavailable`` naming the key id; ``phasekit keys rotate`` re-wraps
without rewriting data; deleting an item destroys its data key. The format and tamper
tests run on both backends (``backend_name``: the package's backend is switched, so
the chunks are sealed and opened by Rust or by ``cryptography``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from phasekit.checksum import bytes_checksum
from phasekit.cli import main as cli_main
from phasekit.crypt import (
    Encryption,
    MemoryKeyring,
    generate_key,
    key_files,
    load_master_key,
    open_encryption,
)
from phasekit.crypt.aead import ChunkWriter, new_header, new_token, seal, unseal
from phasekit.crypt.keyring import key_place, nested_name
from phasekit.errors import CorruptDataError, InvalidArgument, KeyUnavailable, StorageError
from phasekit.stores import FileStore, HybridStore, StreamStore
from phasekit.stores.durable import FileSink

SECRET = "top-secret-value-7f3a"
TABLE = pa.table({"x": list(range(300)), "s": [SECRET] * 300})
N = 1000


@pytest.fixture
def enc(monkeypatch: pytest.MonkeyPatch) -> Encryption:
    monkeypatch.setenv("PK_TEST_MASTER", generate_key())
    return open_encryption("env:PK_TEST_MASTER")


def other_key(monkeypatch: pytest.MonkeyPatch, name: str = "PK_TEST_OTHER") -> Encryption:
    monkeypatch.setenv(name, generate_key())
    return open_encryption(f"env:{name}")


def assert_tamper_detected(blob: bytes, open_: Callable[[bytes], bytes], seed: int) -> None:
    """N single-bit flips and N truncations of ``blob``: every one fails to decrypt."""
    assert open_(blob)  # the untouched bytes decrypt
    rng = random.Random(seed)
    for _ in range(N):
        flipped = bytearray(blob)
        pos = rng.randrange(len(blob))
        flipped[pos] ^= 1 << rng.randrange(8)
        with pytest.raises((CorruptDataError, KeyUnavailable)):
            open_(bytes(flipped))
    for _ in range(N):
        cut = rng.randrange(len(blob))
        with pytest.raises((CorruptDataError, KeyUnavailable)):
            open_(blob[:cut])


# ---------------------------------------------------------------- the format


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 5])
def test_chunked_roundtrip_at_every_boundary(backend_name: str, size: int) -> None:
    key = os.urandom(32)
    data = os.urandom(size)
    header = new_header(new_token(), chunk_bytes=4096)
    blob = seal(data, key, "item", header)
    assert unseal(blob, "item", lambda h: key, "item") == data
    streamed: list[bytes] = []

    class Sink:
        def write(self, b: bytes) -> None:
            streamed.append(bytes(b))

    # writes smaller than a chunk, of a chunk, across chunks and of several chunks (sealed
    # straight from the write): the same bytes as sealing the whole at once
    for pieces in ([1000], [4096], [4097], [9000], [1, 12288, 5, 0, 4095], [3 * 4096 + 5]):
        streamed.clear()
        writer = ChunkWriter(Sink(), key, "item", header)
        at, turn = 0, 0
        while at < size:
            n = pieces[turn % len(pieces)]
            writer.write(data[at : at + n])
            at, turn = at + n, turn + 1
        writer.close()
        assert b"".join(streamed) == blob, pieces
        assert writer.tell() == size


def chunks_of(blob: bytes, chunk: int) -> tuple[bytes, list[bytes]]:
    from phasekit.crypt.aead import HEADER_BYTES, TAG_BYTES

    body = blob[HEADER_BYTES:]
    step = chunk + TAG_BYTES
    return blob[:HEADER_BYTES], [body[i : i + step] for i in range(0, len(body), step)]


def test_reordered_dropped_and_swapped_chunks_are_detected(backend_name: str) -> None:
    key = os.urandom(32)
    data = os.urandom(4 * 4096 + 100)
    blob = seal(data, key, "a", new_header(new_token(), chunk_bytes=4096))
    head, parts = chunks_of(blob, 4096)
    assert len(parts) == 5

    def opens(b: bytes, item: str = "a") -> bool:
        try:
            unseal(b, item, lambda h: key, "a")
        except CorruptDataError:
            return False
        return True

    assert opens(blob)
    assert not opens(head + parts[1] + parts[0] + b"".join(parts[2:]))  # reordered
    assert not opens(head + b"".join(parts[:-1]))  # last chunk dropped (cut at a boundary)
    assert not opens(head + b"".join(parts[:2] + parts[3:]))  # a middle chunk dropped
    assert not opens(blob, item="b")  # the same bytes under another item
    other = seal(data, key, "a", new_header(new_token(), chunk_bytes=4096))
    _, other_parts = chunks_of(other, 4096)
    assert not opens(head + other_parts[0] + b"".join(parts[1:]))  # a chunk of another file


# ---------------------------------------------------------------- file kinds


def test_file_store_files_detect_tampering_and_hide_plaintext(
    backend_name: str, tmp_path: Path, enc: Encryption
) -> None:
    store = FileStore(tmp_path / "s", encryption=enc)
    ref = store.put("t", TABLE)
    assert store.get("t").equals(TABLE)
    assert ref.key_id == enc.key_id
    blob = ref.path.read_bytes()
    assert SECRET.encode() not in blob and b"ARROW1" not in blob
    keyring = enc.keyring(ref.path.parent)
    assert_tamper_detected(blob, lambda b: keyring.open(ref.path.name, b, "t"), seed=1)


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "json", "csv", "hdf5", "pickle"])
def test_every_format_roundtrips_encrypted(tmp_path: Path, enc: Encryption, fmt: str) -> None:
    store = FileStore(tmp_path / "s", format=fmt, encryption=enc, allow_pickle=True)
    ref = store.put("t", TABLE)
    assert store.get("t").equals(TABLE)
    assert SECRET.encode() not in ref.path.read_bytes()
    assert (
        FileStore(tmp_path / "s", format=fmt, encryption=enc, allow_pickle=True)
        .get("t")
        .equals(TABLE)
    )


def test_spill_segments_detect_tampering_and_hide_plaintext(
    backend_name: str, tmp_path: Path, enc: Encryption
) -> None:
    store = HybridStore(0, tmp_path / "spill", encryption=enc)
    store.put("t", TABLE)  # a budget of 0 spills it at once
    core = store._core
    (ikey,) = core.spilled
    assert isinstance(core.keyring, MemoryKeyring)
    on_disk = b"".join(p.read_bytes() for p in core.log.folder.iterdir() if p.is_file())
    assert on_disk and SECRET.encode() not in on_disk
    blob = bytes(core.log.read(ikey, core.spilled[ikey].extent))
    keyring = core.keyring
    assert_tamper_detected(blob, lambda b: keyring.open(ikey, b, ikey), seed=2)
    assert store.get("t").equals(TABLE)  # larger than the budget: it stays on disk
    store.delete("t")  # its data key is destroyed with it
    assert ikey not in keyring.keys
    with pytest.raises(KeyUnavailable):
        keyring.open(ikey, blob, ikey)
    store.close()


def test_stream_parts_detect_tampering_and_hide_plaintext(
    backend_name: str, tmp_path: Path, enc: Encryption
) -> None:
    rows = [{"x": i, "s": SECRET} for i in range(50)]
    store = StreamStore(tmp_path / "streams", buffer_size=25, encryption=enc)
    for row in rows:
        store.put("s", row)
    store.finish("s")
    folder = tmp_path / "streams" / "s.stream"
    parts = sorted(folder.glob("part-*.arrow"))
    assert len(parts) == 2
    assert list(store.items("s")) == rows
    reopened = StreamStore(tmp_path / "streams", encryption=enc)
    assert list(reopened.items("s")) == rows
    blob = parts[0].read_bytes()
    assert SECRET.encode() not in blob
    keyring = enc.keyring(folder.parent)
    name = nested_name(folder, parts[0].name)
    assert_tamper_detected(blob, lambda b: keyring.open(name, b, name), seed=3)
    with pytest.raises(KeyUnavailable, match=enc.key_id):
        list(StreamStore(tmp_path / "streams").items("s"))
    reopened.delete("s")
    assert not key_files(tmp_path / "streams")  # the parts' data keys are destroyed
    store.close()
    reopened.close()


def run_config(results: Path, **extra: object) -> dict[str, object]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_settings_effect import config

    return config(results, **extra)


def test_results_files_detect_tampering_and_read_back(
    backend_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phasekit.workflow import run

    monkeypatch.setenv("PK_RUN_KEY", generate_key())
    res = run(
        run_config(
            tmp_path / "results",
            **{"data_flow.mode": "file", "encryption": {"enabled": True, "key": "env:PK_RUN_KEY"}},
        )
    )
    enc = open_encryption("env:PK_RUN_KEY")
    summary = res.run_dir / "parameter_search" / "phase_summary.json"
    blob = summary.read_bytes()
    assert blob.startswith(b"PKCRYPT")
    keyring = enc.keyring(summary.parent)
    assert_tamper_detected(blob, lambda b: keyring.open(summary.name, b, "summary"), seed=4)
    # every API reads it back: metrics (aggregate results), each output's load
    assert res.metrics("parameter_search").num_rows == 6
    loaded = [
        o.load() for o in res.outputs("parameter_search") if (o.uri or "").startswith("file:")
    ]
    assert loaded and all(v is not None for v in loaded)
    rows = {o.entity: o for o in res.outputs("parameter_search")}
    catalog_rows = [o._item for o in rows.values() if (o.uri or "").startswith("file:")]
    assert {r.key_id for r in catalog_rows} == {enc.key_id}
    res.close()


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "phasekit-seal-write"]


def test_a_large_encrypted_put_is_written_behind_the_sealing_and_a_failing_write_undone(
    backend_name: str, enc: Encryption, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 8 MiB are written by the file's writer thread while the next is sealed
    (and checksummed); a write that fails fails the put, leaving the previous value, no
    temporary file and no thread."""
    store = FileStore(tmp_path / "s", encryption=enc)
    big = pa.table({"v": pa.array(range(3 << 20), pa.int64())})  # 24 MiB: 3 runs
    store.put("t", TABLE)
    threads: list[str] = []
    real = FileSink.write

    def spy(self: FileSink, data: Any) -> int:
        threads.append(threading.current_thread().name)
        return real(self, data)

    monkeypatch.setattr(FileSink, "write", spy)
    ref = store.put("t", big)
    assert store.get("t").equals(big)
    assert ref.size_bytes > big.nbytes
    assert ref.path is not None
    assert ref.checksum == bytes_checksum(ref.path.read_bytes())  # summed while sealed
    assert threads.count("phasekit-seal-write") >= 2
    assert not _writer_threads()

    def failing(self: FileSink, data: Any) -> int:
        if threading.current_thread().name == "phasekit-seal-write":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(FileSink, "write", failing)
    with pytest.raises(StorageError, match="No space left"):
        store.put("t", big)
    monkeypatch.setattr(FileSink, "write", real)
    assert store.get("t").equals(big)  # the previous value
    assert not _writer_threads()
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.endswith("phasekit-tmp")]


# ---------------------------------------------------------------- keys


def test_wrong_and_missing_keys_name_the_key_id(
    tmp_path: Path, enc: Encryption, monkeypatch: pytest.MonkeyPatch
) -> None:
    FileStore(tmp_path / "s", encryption=enc).put("t", TABLE)
    other = other_key(monkeypatch)
    with pytest.raises(KeyUnavailable, match=f"{enc.key_id}.*{other.key_id}"):
        FileStore(tmp_path / "s", encryption=other).get("t")
    with pytest.raises(KeyUnavailable, match=enc.key_id):
        FileStore(tmp_path / "s").get("t")
    monkeypatch.delenv("PK_TEST_OTHER")
    with pytest.raises(KeyUnavailable, match="PK_TEST_OTHER is not set"):
        open_encryption("env:PK_TEST_OTHER")
    with pytest.raises(KeyUnavailable, match="cannot read the key file"):
        load_master_key(f"file:{tmp_path / 'absent.key'}")
    (tmp_path / "short.key").write_text("abc")
    with pytest.raises(InvalidArgument, match=r"not a 32-byte key"):
        load_master_key(f"file:{tmp_path / 'short.key'}")
    with pytest.raises(InvalidArgument, match=r"allowed: env:\.\.\. or file:\.\.\."):
        load_master_key("vault:x")


def test_a_key_file_and_a_key_variable_are_the_same_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = generate_key()
    monkeypatch.setenv("PK_SAME", text)
    (tmp_path / "k").write_text(text + "\n")
    raw = tmp_path / "raw"
    import base64

    raw.write_bytes(base64.b64decode(text))
    ids = {load_master_key(s).key_id for s in ("env:PK_SAME", f"file:{tmp_path / 'k'}")}
    ids.add(load_master_key(f"file:{raw}").key_id)
    assert len(ids) == 1


def test_rotation_rewraps_keys_without_rewriting_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phasekit.catalog import open_catalog
    from phasekit.workflow import run

    monkeypatch.setenv("PK_OLD", generate_key())
    monkeypatch.setenv("PK_NEW", generate_key())
    results = tmp_path / "results"
    cfg = run_config(
        results, **{"data_flow.mode": "file", "encryption": {"enabled": True, "key": "env:PK_OLD"}}
    )
    res = run(cfg)
    old, new = load_master_key("env:PK_OLD"), load_master_key("env:PK_NEW")
    data = {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in results.rglob("*")
        if p.is_file() and p.read_bytes()[:7] == b"PKCRYPT"
    }
    assert len(data) > 6
    before = {p: p.read_bytes() for p in key_files(results)}
    assert cli_main(["keys", "rotate", "--results-dir", str(results), "--old", "env:PK_OLD",
                     "--new", "env:PK_NEW"]) == 0  # fmt: skip
    after = {p: p.read_bytes() for p in key_files(results)}
    assert after.keys() == before.keys() and all(after[p] != before[p] for p in after)
    for p, digest in data.items():  # the data files are untouched
        assert hashlib.sha256(p.read_bytes()).hexdigest() == digest
    with open_catalog(res.catalog_url) as catalog:
        ids = {
            i.key_id
            for i in catalog.list_items(res.run_id)
            if (i.data_reference or "").startswith("file:")
        }
        assert ids == {new.key_id}
    res.close()
    store = next(results.rglob("containers"))
    with pytest.raises(KeyUnavailable, match=f"under master key {new.key_id}.*is {old.key_id}"):
        FileStore(store, encryption=Encryption(old)).get("portfolio_00000_results")
    value = FileStore(store, encryption=Encryption(new)).get("portfolio_00000_results")
    assert value.num_rows == 1
    # a second rotation with a key that wrapped nothing here changes nothing
    monkeypatch.setenv("PK_STRAY", generate_key())
    assert cli_main(["keys", "rotate", "--results-dir", str(results), "--old", "env:PK_STRAY",
                     "--new", "env:PK_OLD"]) == 1  # fmt: skip
    assert {p: p.read_bytes() for p in key_files(results)} == after


def test_deleting_an_item_shreds_its_data_key(tmp_path: Path, enc: Encryption) -> None:
    store = FileStore(tmp_path / "s", encryption=enc)
    ref = store.put("t", TABLE)
    backup = tmp_path / "copy.arrow"
    shutil.copy(ref.path, backup)
    assert len(key_files(tmp_path / "s")) == 2  # the file's and its manifest's
    store.delete("t")
    assert not key_files(tmp_path / "s")
    shutil.copy(backup, ref.path)  # the data is back, the master key is at hand
    with pytest.raises(KeyUnavailable, match="does not exist"):
        enc.keyring(ref.path.parent).read(ref.path, "t")


def test_overwriting_an_item_keeps_one_data_key(tmp_path: Path, enc: Encryption) -> None:
    store = FileStore(tmp_path / "s", encryption=enc)
    old = store.put("t", TABLE).path.read_bytes()
    store.put("t", TABLE.slice(0, 10))
    assert len(key_files(tmp_path / "s")) == 2  # the file's and its manifest's, current only
    assert store.get("t").num_rows == 10
    with pytest.raises(KeyUnavailable):  # the old version's key is gone
        enc.keyring(tmp_path / "s").open("t.arrow", old, "t")


def test_older_keys_are_destroyed_in_threads_before_an_overwrite_returns(
    tmp_path: Path, enc: Encryption, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the new version is committed, the data file's and the manifest's older keys
    are destroyed in threads of their own while the replaced file is removed; the put
    returns after both. A key that cannot be destroyed fails the put without undoing
    the committed version."""
    import phasekit.crypt.keyring as keyring

    folder = tmp_path / "s"
    store = FileStore(folder, encryption=enc)
    store.put("t", TABLE)
    old_keys = sorted(key_files(folder))
    destroyed: list[tuple[str, str]] = []
    real = keyring.destroy_file

    def spy(path: Path) -> None:
        destroyed.append((path.name, threading.current_thread().name))
        real(path)

    monkeypatch.setattr(keyring, "destroy_file", spy)
    store.put("t", TABLE.slice(0, 10))
    assert sorted(name for name, _ in destroyed) == sorted(p.name for p in old_keys)
    assert {thread for _, thread in destroyed} == {"phasekit-settle"}
    assert not [p for p in old_keys if p.exists()]
    assert len(key_files(folder)) == 2

    def stuck(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(keyring, "destroy_file", stuck)
    with pytest.raises(OSError, match="Input/output error"):
        store.put("t", TABLE.slice(0, 3))
    assert store.get("t").num_rows == 3  # committed before the keys were settled
    assert not [p for p in folder.iterdir() if "phasekit-old" in p.name]


def test_a_key_file_is_durable_before_its_file_is_renamed_into_place(
    tmp_path: Path, enc: Encryption, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data key's file is written in a thread while the data is encoded and sealed;
    the data file and the manifest are renamed into place only once their key files
    are there (and have been fsynced: the thread's write ended)."""
    import phasekit.stores.durable as durable

    folder = tmp_path / "s"
    store = FileStore(folder, encryption=enc)
    seen: list[tuple[str, int]] = []
    real_replace = os.replace

    def replace(src: object, dst: object) -> None:
        name = Path(str(dst)).name
        if name in ("t.arrow", "t.json"):
            keys = [
                p
                for p in key_files(folder)
                if p.name.startswith(f"{name}.") or f".{name}." in p.name
            ]
            seen.append((name, len(keys)))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(durable.os, "replace", replace)
    store.put("t", TABLE)
    assert [name for name, _ in seen] == ["t.arrow", "t.json"]
    assert all(count == 1 for _, count in seen), seen
    assert store.get("t").equals(TABLE)


def test_a_failed_put_leaves_no_key_file_and_the_old_version(
    tmp_path: Path, enc: Encryption, monkeypatch: pytest.MonkeyPatch
) -> None:
    import phasekit.crypt.keyring as keyring
    from phasekit.errors import StorageError
    from phasekit.stores.formats.arrow import ArrowFormat

    folder = tmp_path / "s"
    store = FileStore(folder, encryption=enc)
    store.put("t", TABLE)
    before = sorted(p.name for p in key_files(folder))

    def broken(self: object, value: object, kind: str, options: object, sink: Any) -> None:
        sink.write(b"x" * (3 << 20))  # some chunks sealed and written, then a failure
        raise ValueError("cannot encode")

    with monkeypatch.context() as m:  # encoding fails after the key files were started
        m.setattr(ArrowFormat, "write_into", broken)
        with pytest.raises(ValueError, match="cannot encode"):
            store.put("t", TABLE.slice(0, 5))
    assert sorted(p.name for p in key_files(folder)) == before
    assert store.get("t").equals(TABLE)

    def no_disk(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:  # the key file cannot be written: nothing commits
        m.setattr(keyring, "_write_private", no_disk)
        with pytest.raises(StorageError, match="No space left"):
            store.put("t", TABLE.slice(0, 5))
    assert sorted(p.name for p in key_files(folder)) == before
    assert store.get("t").equals(TABLE)
    assert not [p for p in folder.iterdir() if "phasekit-tmp" in p.name]


def test_encryption_refuses_partitioned_folders(tmp_path: Path, enc: Encryption) -> None:
    with pytest.raises(
        InvalidArgument, match=r"partition_by .* cannot be combined with encryption"
    ):
        FileStore(tmp_path / "s", format="parquet", partition_by=["x"], encryption=enc)


def test_key_place_finds_nested_keys(tmp_path: Path, enc: Encryption) -> None:
    store = StreamStore(tmp_path / "st", buffer_size=1, encryption=enc)
    store.put("k", {"a": 1})
    store.finish("k")
    part = next((tmp_path / "st" / "k.stream").glob("part-*.arrow"))
    from phasekit.crypt.aead import read_header

    folder, name = key_place(part, read_header(part.read_bytes(), "p"))
    assert folder == tmp_path / "st" and name == "k.stream." + part.name
    store.close()


def test_a_reader_without_the_key_uses_the_runs_recorded_key_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the report and other catalog readers do: a LazyRef made from a catalog row
    decrypts with the key source the run recorded (the key itself is never recorded)."""
    from phasekit.catalog import open_catalog
    from phasekit.workflow import LazyRef, run

    monkeypatch.setenv("PK_RECORDED", generate_key())
    enc = {"enabled": True, "key": "env:PK_RECORDED"}
    res = run(run_config(tmp_path / "results", **{"data_flow.mode": "file", "encryption": enc}))
    res.close()
    with open_catalog(res.catalog_url) as catalog:
        row = next(
            i for i in catalog.list_items(res.run_id) if i.entity_name == "aggregate_results"
        )
        assert row.key_id == load_master_key("env:PK_RECORDED").key_id

        def lazy() -> LazyRef:
            fields = (row.data_reference, row.window_id, row.format, row.size_bytes)
            return LazyRef(row.entity_name, *fields, catalog, row)

        assert lazy().load()["ranking"]
        monkeypatch.delenv("PK_RECORDED")
        key_id = row.key_id
        with pytest.raises(KeyUnavailable, match=f"master key {key_id}: .*PK_RECORDED is not set"):
            lazy().load()


def test_export_writes_decrypted_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    from phasekit.catalog import open_catalog
    from phasekit.workflow import run

    monkeypatch.setenv("PK_EXPORT", generate_key())
    enc = {"enabled": True, "key": "env:PK_EXPORT"}
    res = run(run_config(tmp_path / "results", **{"data_flow.mode": "file", "encryption": enc}))
    res.close()
    with open_catalog(res.catalog_url) as catalog:
        copied = catalog.export(res.run_id, tmp_path / "copy")
        converted = catalog.export(res.run_id, tmp_path / "pq", "parquet")
    files = {e.entity_name: tmp_path / "copy" / e.target for e in copied.exported}
    assert json.loads(files["aggregate_results"].read_bytes())["ranking"]
    assert feather.read_table(files["portfolio_00000_results"]).num_rows == 1
    tables = [e for e in converted.exported if e.converted]
    assert tables and all(pq.read_table(tmp_path / "pq" / e.target) for e in tables)


def test_keys_generate_prints_a_new_key_each_time(capsys: pytest.CaptureFixture[str]) -> None:
    import base64

    keys = []
    for _ in range(2):
        assert cli_main(["keys", "generate"]) == 0
        keys.append(capsys.readouterr().out.strip())
    assert keys[0] != keys[1]
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)


def test_keys_rotate_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--old`` twice (two runs under two keys), ``--catalog`` (a catalog outside the
    results folder: without the flag its rows are not touched), ``--json``."""
    import json

    from phasekit.catalog import open_catalog
    from phasekit.workflow import run

    results, catalog = tmp_path / "results", tmp_path / "elsewhere" / "cat.sqlite"
    ids = {}
    for name in ("PK_A", "PK_B", "PK_C"):
        monkeypatch.setenv(name, generate_key())
        ids[name] = load_master_key(f"env:{name}").key_id
    for name in ("PK_A", "PK_B"):
        enc = {"enabled": True, "key": f"env:{name}"}
        cfg = run_config(results, **{"data_flow.mode": "file", "encryption": enc})
        run({**cfg, "catalog": str(catalog)}).close()
    base = ["keys", "rotate", "--results-dir", str(results), "--old", "env:PK_A"]
    assert cli_main([*base, "--old", "env:PK_B", "--new", "env:PK_C", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rewrapped"] == len(key_files(results)) > 0
    assert sorted(out["old_key_ids"]) == sorted([ids["PK_A"], ids["PK_B"]])
    assert out["catalog_rows"] == 0  # no catalog.sqlite in the results folder
    with open_catalog(str(catalog)) as cat:
        assert {i.key_id for i in cat.list_items() if i.key_id} == {ids["PK_A"], ids["PK_B"]}
    args = ["--old", "env:PK_A", "--old", "env:PK_B", "--new", "env:PK_C"]
    assert cli_main([*base[:4], *args, "--catalog", str(catalog), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rewrapped"] == 0 and out["already_current"] == len(key_files(results))
    assert out["catalog_rows"] > 0
    with open_catalog(str(catalog)) as cat:
        assert {i.key_id for i in cat.list_items() if i.key_id} == {ids["PK_C"]}
    assert cli_main([*base[:4], *args]) == 0  # text output
    assert "re-wrapped 0 data keys with " + ids["PK_C"] in capsys.readouterr().out
