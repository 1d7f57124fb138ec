"""With encryption on, a FileStore's manifests (``.phasekit/<key>.json``: the item's
metadata and metrics) and a stream's (its schema) are encrypted like their data, read back transparently, checked by
``doctor`` with the run's recorded key, read by a catalog rebuild given the key, and
destroyed (with their data keys) by ``delete`` and ``cleanup``."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from phasekit.catalog import open_catalog
from phasekit.catalog.rebuild import rebuild_catalog
from phasekit.cli import main
from phasekit.crypt import Encryption, generate_key, key_files, open_encryption
from phasekit.crypt.aead import MAGIC
from phasekit.errors import KeyUnavailable
from phasekit.stores import FileStore, StreamStore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "small_workflow_memory.yaml"
KEY_VAR = "PK_TEST_MANIFEST_KEY"
TABLE = pa.table({"x": list(range(50))})
META = {"metrics": {"sharpe": 1.2345678912}, "params": {"strategy.fast": 17}}
MARKERS = (b"sharpe", b"1.2345678912", b"strategy.fast")


def _key(monkeypatch: pytest.MonkeyPatch, name: str = KEY_VAR) -> Encryption:
    monkeypatch.setenv(name, generate_key())
    return open_encryption(f"env:{name}")


def test_a_stores_manifest_is_encrypted_and_read_back(
    backend_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = _key(monkeypatch)
    store = FileStore(tmp_path / "s", encryption=enc)
    store.put("t", TABLE, metadata=META)
    manifest = (tmp_path / "s" / ".phasekit" / "t.json").read_bytes()
    assert manifest.startswith(MAGIC)
    assert not [m for m in MARKERS if m in manifest]
    # read back through the store: ref, list, get
    assert store.ref("t").metadata == META
    assert [r.key for r in store.list()] == ["t"]
    assert store.get("t").equals(TABLE)
    # without the key, or with another one: an error naming the key id
    with pytest.raises(KeyUnavailable, match=enc.key_id):
        FileStore(tmp_path / "s").ref("t")
    other = _key(monkeypatch, "PK_TEST_MANIFEST_OTHER")
    with pytest.raises(KeyUnavailable, match=enc.key_id):
        FileStore(tmp_path / "s", encryption=other).ref("t")
    # a plain store writes plain manifests (the check above can see a marker)
    FileStore(tmp_path / "p").put("t", TABLE, metadata=META)
    plain = (tmp_path / "p" / ".phasekit" / "t.json").read_bytes()
    assert all(m in plain for m in MARKERS)
    # an overwrite keeps one manifest key; a delete destroys it with the data key
    store.put("t", TABLE.slice(0, 5), metadata=META)
    assert len(key_files(tmp_path / "s")) == 2
    store.delete("t")
    assert key_files(tmp_path / "s") == []


def test_a_streams_manifest_is_encrypted(
    backend_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream's manifest names its columns (its schema): encrypted like its parts."""
    enc = _key(monkeypatch)
    rows = [{"secret_column_q": i * 1.5} for i in range(30)]
    store = StreamStore(tmp_path / "st", buffer_size=10, encryption=enc)
    for row in rows:
        store.put("s", row)
    store.finish("s")
    manifest = (tmp_path / "st" / "s.stream" / "manifest.json").read_bytes()
    assert manifest.startswith(MAGIC)
    assert b"secret_column_q" not in manifest and b'"schema"' not in manifest
    reopened = StreamStore(tmp_path / "st", encryption=enc)
    assert list(reopened.items("s")) == rows
    with pytest.raises(KeyUnavailable, match=enc.key_id):
        list(StreamStore(tmp_path / "st").items("s"))
    plain = StreamStore(tmp_path / "plain", buffer_size=10)
    plain.put("s", rows[0])
    plain.finish("s")
    shown = json.loads((tmp_path / "plain" / "s.stream" / "manifest.json").read_bytes())
    assert b"secret_column_q" in base64.b64decode(shown["schema"])  # what plain ones show
    reopened.delete("s")
    assert key_files(tmp_path / "st") == []  # the parts' and the manifest's keys
    for opened in (store, reopened, plain):
        opened.close()


def _metric_markers(items: list[Any]) -> set[bytes]:
    """Metric values (as JSON writes them) and parameter names of a run's items."""
    found: set[bytes] = set()
    for item in items:
        metrics = (item.metadata or {}).get("metrics") or {}
        for name, value in metrics.items():
            if isinstance(value, float) and math.isfinite(value) and value not in (0.0, 1.0):
                found.add(json.dumps(value).encode())
                found.add(name.encode())
    return found


def _run(results: Path, encrypted: bool) -> tuple[str, list[Any]]:
    from phasekit.workflow import run

    extra = {"encryption": {"enabled": True, "key": f"env:{KEY_VAR}"}} if encrypted else {}
    result = run(
        str(EXAMPLE), workers=1, results_dir=str(results), data_flow__mode="file",
        data__n_bars=1500, results__collection__store_container_items=True, **extra,
    )  # fmt: skip
    # each container's own results item (a FileStore item with a manifest holding its
    # metrics), which block windows write only when asked
    try:
        return result.run_id, result._catalog.list_items(result.run_id)
    finally:
        result.close()


def _manifests(results: Path) -> list[Path]:
    return sorted(p for p in results.rglob(".phasekit/*.json") if p.is_file())


def test_an_encrypted_runs_manifests_hold_no_metric_and_rebuild_and_doctor_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _key(monkeypatch)
    # the same run in plain: its manifests do hold the metrics the check looks for
    _plain_id, plain_items = _run(tmp_path / "plain", encrypted=False)
    plain_markers = _metric_markers(plain_items)
    assert plain_markers and any(
        m in p.read_bytes() for p in _manifests(tmp_path / "plain") for m in plain_markers
    )

    results = tmp_path / "sealed"
    run_id, items = _run(results, encrypted=True)
    markers = _metric_markers(items)
    manifests = _manifests(results)
    assert markers and len(manifests) >= 25
    for path in manifests:
        body = path.read_bytes()
        assert body.startswith(MAGIC), path
        assert not [m for m in markers if m in body], path
    with_metrics = {i.entity_name: i.metadata for i in items if (i.metadata or {}).get("metrics")}

    # doctor reads them with the run's recorded key; a tampered one is found
    with open_catalog(results, results_dir=results) as catalog:
        report = catalog.doctor()
        assert report.ok and not [f for f in report.findings if f.kind == "corrupt_manifest"]
        body = bytearray(manifests[0].read_bytes())
        body[-3] ^= 0x01
        manifests[0].write_bytes(bytes(body))
        found = [f for f in catalog.doctor().findings if f.kind == "corrupt_manifest"]
        assert [f.path for f in found] == [str(manifests[0])]
        body[-3] ^= 0x01
        manifests[0].write_bytes(bytes(body))

    # rebuild without the key: items come back, their metadata does not
    (results / "catalog.sqlite").write_bytes(b"not a database" * 100)
    bare = rebuild_catalog(results, results_dir=results)
    assert len(bare.sealed_manifests) == len(manifests) and "encrypted manifests" in bare.summary
    with open_catalog(results, results_dir=results) as catalog:
        rebuilt = {i.entity_name: i for i in catalog.list_items(run_id)}
        assert not [n for n in with_metrics if "metrics" in (rebuilt[n].metadata or {})]
        key_ids = {i.key_id for i in items if i.data_reference}
        assert len(key_ids) == 1 and None not in key_ids  # every file encrypted
        assert {i.key_id for i in rebuilt.values()} == key_ids  # read from the key files

    # rebuild with the key (phasekit doctor --repair --key): the metadata comes back
    (results / "catalog.sqlite").write_bytes(b"not a database" * 100)
    where = ["--results-dir", str(results)]
    capsys.readouterr()
    assert main(["doctor", "--key", f"env:{KEY_VAR}", *where]) != 0  # --key needs --repair
    assert "--key is used only with --repair" in capsys.readouterr().err
    main(["doctor", "--repair", "--key", f"env:{KEY_VAR}", *where, "--json"])
    with open_catalog(results, results_dir=results) as catalog:
        rebuilt = {i.entity_name: i for i in catalog.list_items(run_id)}
    for name, meta in with_metrics.items():
        assert rebuilt[name].metadata["metrics"] == meta["metrics"], name

    # cleanup deletes the manifests and destroys their data keys
    with open_catalog(results, results_dir=results) as catalog:
        removal = catalog.remove_items([i.id for i in catalog.list_items(run_id)])
        assert removal.failed == []
    assert _manifests(results) == [] and key_files(results) == []
