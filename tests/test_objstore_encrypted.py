"""Encrypted runs with results on object storage, against a real S3-compatible server
(moto in server mode on 127.0.0.1).

A ``phasekit run`` with ``encryption`` and ``results_dir: s3://...`` uploads its files
sealed, each with its wrapped data key: no object holds a plaintext (nor the master
key). Every reader decrypts transparently: the Python API, ``show --verify``,
``export``, ``doctor`` and ``phasekit serve`` (``/data``, ``/file``, export); a wrong
or missing key is an error naming the key id; ``keys rotate`` re-wraps the key objects;
``cleanup`` deletes the key objects with the data (crypto-shredding).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pyarrow as pa
import pytest

from phasekit.catalog import open_catalog
from phasekit.cli import main
from phasekit.crypt import generate_key, load_master_key, open_encryption
from phasekit.crypt.aead import MAGIC
from phasekit.crypt.objects import key_stem, open_object
from phasekit.errors import KeyUnavailable
from phasekit.objstore import ObjectRoot
from phasekit.workflow.run import resolve_target

if TYPE_CHECKING:
    from s3_util import S3Server

pytest_plugins = ["s3_util"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "small_workflow_memory.yaml"
KEY_VAR = "PHASEKIT_TEST_S3_KEY"
NEW_VAR = "PHASEKIT_TEST_S3_NEW_KEY"


def _config(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text() + f"\nencryption:\n  enabled: true\n  key: env:{KEY_VAR}\n"
    path = tmp_path / "encrypted.yaml"
    path.write_text(text)
    return path


def _cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _cli_fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) != 0
    return capsys.readouterr().err


def _bucket_objects(bucket: str) -> dict[str, bytes]:
    client = boto3.client("s3")
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_encryption_is_accepted_with_results_on_object_storage(bucket: str, tmp_path: Path) -> None:
    enc = {"encryption": {"enabled": True, "key": f"env:{KEY_VAR}"}}
    resolved, root = resolve_target(str(EXAMPLE), enc, f"s3://{bucket}/x", str(tmp_path / "l"))
    assert root is not None and resolved.encryption.enabled


def test_encrypted_run_on_s3(
    bucket: str,
    s3_env: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from phasekit.serve import create_app
    from phasekit.workflow import run
    from serve_util import LiveServer

    secret = generate_key()
    monkeypatch.setenv(KEY_VAR, secret)
    key_id = load_master_key(f"env:{KEY_VAR}").key_id
    local = tmp_path / "local"
    url = f"s3://{bucket}/sealed"
    result = run(
        str(_config(tmp_path)), workers=1, results_dir=url, local_dir=str(local),
        data_flow__mode="file", data__n_bars=1500,
    )  # fmt: skip
    run_id = result.run_id
    where = ["--results-dir", str(local)]
    try:
        items = result._catalog.list_items(run_id)
        objects = [i for i in items if (i.data_reference or "").startswith("s3://")]
        assert objects and all(i.key_id == key_id for i in objects)
        arrow = next(i for i in objects if i.format == "arrow" and i.size_bytes > 0)
        lazy = next(r for r in result.outputs(arrow.stage_name) if r.uri == arrow.data_reference)
        table = lazy.load()  # fetched with its key object, decrypted
        ranked = result.metrics("optimization")  # aggregate_results.json, decrypted
    finally:
        result.close()
    assert table.num_rows > 0 and ranked.num_rows > 0
    assert not (local / run_id).exists()  # only the catalog stays local

    # ---- the bucket holds ciphertext and wrapped keys only
    stored = _bucket_objects(bucket)
    root = ObjectRoot.from_url(url)
    data_keys = {root.key(root.relative(str(i.data_reference))) for i in objects}
    key_objects = [k for k in stored if key_stem(k[len("sealed/") :]) is not None]
    assert data_keys <= set(stored) and len(key_objects) >= len(data_keys)
    markers = [name.encode() for name in table.column_names] + [b"ARROW1"]
    for key in data_keys:
        assert stored[key].startswith(MAGIC), key
        assert not [m for m in markers if m in stored[key]], key
    for key in key_objects:
        body = json.loads(stored[key])
        assert body["key_id"] == key_id and set(body) == {"version", "key_id", "wrapped"}
    assert not [k for k, v in stored.items() if secret.encode() in v]
    # the stores' manifests are encrypted too, and no object but the key objects holds a
    # metric value of the run (its rankings and summaries would in plaintext)
    manifests = [k for k in stored if re.search(r"/\.phasekit/[^/]+\.json$", k)]
    metrics = {
        json.dumps(v).encode()
        for row in ranked.to_pylist()
        for v in row.values()
        if isinstance(v, float) and v not in (0.0, 1.0)
    }
    assert manifests and metrics
    for key in manifests:
        assert stored[key].startswith(MAGIC), key
    for key in set(stored) - set(key_objects):
        assert not [m for m in metrics if m in stored[key]], key

    # ---- the CLI: show --verify, doctor, export (decrypted)
    assert _cli_json(capsys, "show", str(arrow.id), "--verify", *where)["verified"] == "ok"
    report = _cli_json(capsys, "doctor", *where)
    assert report["ok"] and not [f for f in report["findings"] if f["severity"] != "info"]
    assert not [f for f in report["findings"] if f["kind"] == "unreferenced_object"]
    out = tmp_path / "export"
    exported = _cli_json(capsys, "export", run_id, "--to", str(out), *where)
    target = {e["source"]: e for e in exported["exported"]}[arrow.data_reference]["target"]
    assert pa.ipc.open_file(pa.memory_map(str(out / target))).read_all().equals(table)
    # a key object no row's object has is reported by doctor (a stray upload)
    rel = root.relative(str(arrow.data_reference))
    stray = f"{Path(rel).parent.as_posix()}/.phasekit/keys/ghost.arrow.0123456789abcdef.key"
    boto3.client("s3").put_object(Bucket=bucket, Key=root.key(stray), Body=b"{}")
    report = _cli_json(capsys, "doctor", *where)
    assert [f["path"] for f in report["findings"] if f["kind"] == "unreferenced_object"] == [
        root.uri(stray)
    ]
    # doctor --repair deletes the stray key object, and no key object of a recorded item
    before = set(_bucket_objects(bucket))
    repaired = _cli_json(capsys, "doctor", "--repair", "--object-grace", "0", *where)
    assert [f["path"] for f in repaired["findings"] if f.get("repaired")] == [root.uri(stray)]
    assert set(_bucket_objects(bucket)) == before - {root.key(stray)}

    # ---- phasekit serve: decrypted with the key, refused (naming the key id) without
    with open_catalog(local / "catalog.sqlite", results_dir=local) as catalog:
        with LiveServer(create_app(catalog, result._encryption)) as server, server.client() as c:
            data = c.get(f"/items/{arrow.id}/data")
            assert data.status_code == 200, data.text
            assert pa.ipc.open_stream(pa.py_buffer(data.content)).read_all().equals(table)
            raw = c.get(f"/items/{arrow.id}/file")
            assert raw.headers["X-Phasekit-Decrypted"] == "true"
            assert pa.ipc.open_file(pa.py_buffer(raw.content)).read_all().equals(table)
            part = c.get(f"/items/{arrow.id}/file", headers={"Range": "bytes=0-5"})
            assert part.status_code == 206 and part.content == b"ARROW1"
            tar = c.get(f"/runs/{run_id}/export")
            assert tar.status_code == 200, tar.text
            archive = tarfile.open(fileobj=io.BytesIO(tar.content))
            member = archive.extractfile(rel)
            assert member is not None
            assert pa.ipc.open_file(pa.py_buffer(member.read())).read_all().equals(table)
            listing = archive.extractfile(f"{run_id}/manifest.json")
            assert listing is not None
            entry = next(f for f in json.loads(listing.read())["files"] if f["name"] == rel)
            assert entry["decrypted"] is True
        with LiveServer(create_app(catalog)) as server, server.client() as c:
            for path in ("data", "file"):
                refused = c.get(f"/items/{arrow.id}/{path}")
                assert refused.status_code == 409, (path, refused.text)
                assert refused.json()["error"] == "KeyUnavailable"
                assert key_id in refused.json()["message"]
                assert not [m for m in markers if m in refused.content]
            refused = c.get(f"/runs/{run_id}/export")
            assert refused.status_code == 409 and key_id in refused.json()["message"]
        monkeypatch.setenv("PHASEKIT_TEST_S3_WRONG", generate_key())
        wrong = open_encryption("env:PHASEKIT_TEST_S3_WRONG")
        with LiveServer(create_app(catalog, wrong)) as server, server.client() as c:
            for path in (
                f"/items/{arrow.id}/data",
                f"/items/{arrow.id}/file",
                f"/runs/{run_id}/export",
            ):
                refused = c.get(path)
                assert refused.status_code == 409, (path, refused.text)
                assert (
                    key_id in refused.json()["message"]
                    and wrong.key_id in refused.json()["message"]
                )

    # ---- a wrong key: the CLI export names the key id the data needs
    monkeypatch.setenv(KEY_VAR, generate_key())
    err = _cli_fails(capsys, "export", run_id, "--to", str(tmp_path / "wrong"), *where)
    assert key_id in err

    # ---- rotate the key objects to a new master key
    monkeypatch.setenv(KEY_VAR, secret)
    monkeypatch.setenv(NEW_VAR, generate_key())
    new_id = load_master_key(f"env:{NEW_VAR}").key_id
    catalog_file = str(local / "catalog.sqlite")
    keys = ["--old", f"env:{KEY_VAR}", "--new", f"env:{NEW_VAR}"]
    err = _cli_fails(capsys, "keys", "rotate", "--results-dir", url, *keys)
    assert "give --catalog" in err  # the rows' key ids must change with the keys
    rotate = ["keys", "rotate", "--results-dir", url, "--catalog", catalog_file]
    rotated = _cli_json(capsys, *rotate, "--old", f"env:{KEY_VAR}", "--new", f"env:{NEW_VAR}")
    assert rotated["rewrapped"] == len(key_objects) and rotated["old_key_ids"] == [key_id]
    assert rotated["catalog_rows"] == len([i for i in items if i.key_id == key_id])
    after = _bucket_objects(bucket)
    assert {k: after[k] for k in data_keys} == {k: stored[k] for k in data_keys}  # untouched
    assert all(json.loads(after[k])["key_id"] == new_id for k in key_objects)
    # the old key reads nothing now; the new one (under the recorded source) reads all
    err = _cli_fails(capsys, "export", run_id, "--to", str(tmp_path / "old"), *where)
    assert new_id in err
    monkeypatch.setenv(KEY_VAR, load_master_key(f"env:{NEW_VAR}").secret.hex())
    again = _cli_json(capsys, "export", run_id, "--to", str(tmp_path / "new"), *where)
    target = {e["source"]: e for e in again["exported"]}[arrow.data_reference]["target"]
    assert pa.ipc.open_file(pa.memory_map(str(tmp_path / "new" / target))).read_all().equals(table)

    # ---- cleanup deletes the objects and their key objects: a kept copy is unreadable
    kept = stored[root.key(rel)]
    removal = _cli_json(capsys, "cleanup", "--policy", "keep_none", *where)["removal"]
    assert removal["failed"] == []
    assert {root.uri(k[len("sealed/") :]) for k in key_objects} <= set(removal["files_deleted"])
    assert _bucket_objects(bucket) == {}
    new_master = load_master_key(f"env:{NEW_VAR}")
    with pytest.raises(KeyUnavailable, match="destroyed"):
        open_object(root, rel, kept, new_master, "a kept copy")
