"""Buckets that keep old versions of objects, against a real S3-compatible server (moto in
server mode on 127.0.0.1, versioning enabled on the bucket).

Where a bucket keeps versions, what phasekit deletes (an item's data, manifest and key
objects) loses every version and delete marker, so crypto-shredding destroys the data
key there too; ``keys rotate`` deletes the old wrappings once the new ones are confirmed
(a crash in between leaves every key object readable with the new key). An unversioned
bucket is handled as before; a transport that cannot tell says so once and in
``doctor``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pytest

from phasekit import objstore
from phasekit.catalog.doctor import DoctorReport, _report_versions
from phasekit.crypt import generate_key, load_master_key
from phasekit.crypt.objects import key_stem
from phasekit.errors import StorageError
from phasekit.objstore import ObjectRoot
from s3_util import cli_json, object_versions

pytest_plugins = ["s3_util"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "small_workflow_memory.yaml"
KEY_VAR = "PHASEKIT_TEST_V_KEY"
NEW_VAR = "PHASEKIT_TEST_V_NEW_KEY"
SCHEMES = ["s3", "pyarrow+s3"]


def _put(root: ObjectRoot, rel: str, data: bytes) -> None:
    root.put_stream(rel, io.BytesIO(data), None)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_delete_removes_every_version_and_delete_marker(scheme: str, versioned_bucket: str) -> None:
    root = ObjectRoot.from_url(f"{scheme}://{versioned_bucket}/p")
    assert root.keeps_versions is True
    for n in range(3):
        _put(root, "run/a.bin", b"version %d" % n)
    _put(root, "run/a.bin2", b"a neighbour sharing the key as a prefix")
    _put(root, "run/gone.bin", b"deleted by another client first")
    boto3.client("s3").delete_object(Bucket=versioned_bucket, Key="p/run/gone.bin")
    assert ("p/run/gone.bin", True) in object_versions(versioned_bucket)  # a delete marker
    root.delete("run/a.bin")
    root.delete("run/gone.bin")
    assert object_versions(versioned_bucket) == [("p/run/a.bin2", False)]
    assert root.read("run/a.bin2", None) == b"a neighbour sharing the key as a prefix"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_drop_old_versions_keeps_the_current_one(scheme: str, versioned_bucket: str) -> None:
    root = ObjectRoot.from_url(f"{scheme}://{versioned_bucket}/p")
    for n in range(3):
        _put(root, "k.key", b"wrapping %d" % n)
    assert root.drop_old_versions("k.key") == 2
    assert object_versions(versioned_bucket) == [("p/k.key", False)]
    assert root.read("k.key", None) == b"wrapping 2"
    assert root.drop_old_versions("k.key") == 0


def test_versions_are_listed_and_deleted_in_batches(
    versioned_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objstore, "VERSION_BATCH", 2)  # pages and batches of 2 versions
    calls: list[int] = []
    root = ObjectRoot.from_url(f"s3://{versioned_bucket}/p")
    for n in range(5):
        _put(root, "many.bin", b"%d" % n)
    client = root.transport.client  # type: ignore[attr-defined]
    real = client.delete_objects

    def counted(**kw: Any) -> Any:
        calls.append(len(kw["Delete"]["Objects"]))
        return real(**kw)

    monkeypatch.setattr(client, "delete_objects", counted)
    root.delete("many.bin")
    assert calls == [2, 2, 1]
    assert object_versions(versioned_bucket) == []
    assert root.versioned_keys() == []


def test_a_suspended_bucket_still_keeps_versions(versioned_bucket: str) -> None:
    root = ObjectRoot.from_url(f"s3://{versioned_bucket}/p")
    _put(root, "a.bin", b"made while versioning was enabled")
    boto3.client("s3").put_bucket_versioning(
        Bucket=versioned_bucket, VersioningConfiguration={"Status": "Suspended"}
    )
    _put(root, "a.bin", b"made while suspended")
    assert root.keeps_versions is True
    root.delete("a.bin")
    assert object_versions(versioned_bucket) == []


def test_versions_the_store_refuses_to_delete_are_a_storage_error(
    versioned_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = ObjectRoot.from_url(f"s3://{versioned_bucket}/p")
    _put(root, "locked.bin", b"under a retention rule")
    client = root.transport.client  # type: ignore[attr-defined]

    def refused(**kw: Any) -> dict[str, Any]:
        listed = kw["Delete"]["Objects"]
        return {"Errors": [{**o, "Code": "AccessDenied", "Message": "locked"} for o in listed]}

    monkeypatch.setattr(client, "delete_objects", refused)
    with pytest.raises(StorageError, match=r"1 object versions not deleted .*p/locked.bin.*locked"):
        root.delete("locked.bin")
    assert object_versions(versioned_bucket) == [("p/locked.bin", False)]


def test_an_unversioned_bucket_is_handled_as_before(bucket: str) -> None:
    root = ObjectRoot.from_url(f"s3://{bucket}/p")
    assert root.keeps_versions is False
    _put(root, "a.bin", b"one")
    _put(root, "a.bin", b"two")  # replaced in place: no old version to drop
    assert root.drop_old_versions("a.bin") == 0
    assert root.versioned_keys() == ["a.bin"]
    root.delete("a.bin")
    assert object_versions(bucket) == []
    root.delete("a.bin")  # deleting what is gone is no error on S3


def test_pyarrow_without_boto3_cannot_tell_and_says_so_once(
    versioned_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(objstore, "_WARNED", set())
    with monkeypatch.context() as blocked:
        blocked.setitem(sys.modules, "boto3", None)
        first = ObjectRoot.from_url(f"pyarrow+s3://{versioned_bucket}/p")
        _put(first, "a.bin", b"one")
        _put(first, "a.bin", b"two")
        with caplog.at_level(logging.WARNING, logger="phasekit.objstore"):
            assert first.keeps_versions is None
            other = ObjectRoot.from_url(f"pyarrow+s3://{versioned_bucket}/q")
            assert other.keeps_versions is None
        first.delete("a.bin")  # the current version goes; the old ones stay, as warned
        assert not first.exists("a.bin")
    said = [r.getMessage() for r in caplog.records if "cannot tell whether" in r.getMessage()]
    assert len(said) == 1 and "install boto3" in said[0]
    kept = [k for k, marker in object_versions(versioned_bucket) if k == "p/a.bin" and not marker]
    assert kept == ["p/a.bin"] * 2
    report = DoctorReport(repair=False)
    _report_versions(first, report)
    assert [(f.kind, f.severity, f.path) for f in report.findings] == [
        ("object_versions_unknown", "info", first.url)
    ]


def test_filesystems_without_versions_need_no_version_api() -> None:
    pytest.importorskip("fsspec")
    root = ObjectRoot.from_url("fsspec+memory://versions-test/p")
    assert root.keeps_versions is False
    _put(root, "a.bin", b"one")
    root.delete("a.bin")
    assert not root.exists("a.bin")
    report = DoctorReport(repair=False)
    _report_versions(root, report)
    assert report.findings == []
    # a transport without a version API refuses to be asked, with a phasekit error
    with pytest.raises(StorageError, match="cannot list or delete object versions"):
        list(root.transport.versions(root.bucket, "p/"))


def _config(tmp_path: Path, encrypted: bool) -> Path:
    text = EXAMPLE.read_text()
    if encrypted:
        text += f"\nencryption:\n  enabled: true\n  key: env:{KEY_VAR}\n"
    path = tmp_path / "workflow.yaml"
    path.write_text(text)
    return path


def _run(tmp_path: Path, url: str, encrypted: bool) -> list[str]:
    local = tmp_path / "local"
    args = ["run", str(_config(tmp_path, encrypted)), "--results-dir", url]
    args += ["--local-dir", str(local), "--workers", "1", "--set", "data.n_bars=1500"]
    from phasekit.cli import main

    assert main(args) == 0
    return ["--results-dir", str(local)]


def _key_versions(bucket: str) -> dict[str, list[str]]:
    """The key id of every version of every key object (newest first)."""
    client = boto3.client("s3")
    found: dict[str, list[str]] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            if key_stem(v["Key"].split("/", 1)[1]) is not None:
                body = client.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
                found.setdefault(v["Key"], []).append(json.loads(body["Body"].read())["key_id"])
    return found


def _rotate_crashing(url: str, catalog: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from phasekit.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["keys", "rotate", "--results-dir", url, "--catalog", catalog]
    args += ["--old", f"env:{KEY_VAR}", "--new", f"env:{NEW_VAR}"]
    env = {**os.environ, "PHASEKIT_FAILPOINT": "rotate.before_drop_versions"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_encrypted_run_on_a_versioned_bucket(
    versioned_bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old_secret = generate_key()
    monkeypatch.setenv(KEY_VAR, old_secret)
    monkeypatch.setenv(NEW_VAR, generate_key())
    old_id = load_master_key(f"env:{KEY_VAR}").key_id
    new_id = load_master_key(f"env:{NEW_VAR}").key_id
    url = f"s3://{versioned_bucket}/sealed"
    where = _run(tmp_path, url, encrypted=True)
    catalog = where[1] + "/catalog.sqlite"
    before = _key_versions(versioned_bucket)
    assert before and all(ids == [old_id] for ids in before.values())

    # ---- keys rotate killed after the new wrappings were confirmed, before old versions go
    proc = _rotate_crashing(url, catalog)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    crashed = _key_versions(versioned_bucket)
    assert set(crashed) == set(before)
    assert all(ids[0] == new_id and old_id in ids for ids in crashed.values()), crashed
    # every key object reads with the new key (the catalog's key ids are not updated yet)
    monkeypatch.setenv(KEY_VAR, os.environ[NEW_VAR])
    exported = cli_json(capsys, "export", "latest", "--to", str(tmp_path / "e1"), *where)
    assert exported["exported"]

    # ---- rotating again finishes: no old wrapping is left
    monkeypatch.setenv(KEY_VAR, old_secret)
    rotate = ["keys", "rotate", "--results-dir", url, "--catalog", catalog]
    again = cli_json(capsys, *rotate, "--old", f"env:{KEY_VAR}", "--new", f"env:{NEW_VAR}")
    assert again["rewrapped"] == 0 and again["already_current"] == len(before)
    assert again["old_versions_deleted"] == len(before) and again["catalog_rows"] > 0
    assert _key_versions(versioned_bucket) == {k: [new_id] for k in before}
    monkeypatch.setenv(KEY_VAR, os.environ[NEW_VAR])
    again = cli_json(capsys, "export", "latest", "--to", str(tmp_path / "e2"), *where)
    assert len(again["exported"]) == len(exported["exported"])
    arrow = next(e for e in again["exported"] if e["target"].endswith(".arrow"))
    exported_file = pa.memory_map(str(tmp_path / "e2" / arrow["target"]))
    assert pa.ipc.open_file(exported_file).read_all().num_rows > 0  # decrypted

    # ---- cleanup: no version of any data, manifest or key object remains
    removal = cli_json(capsys, "cleanup", "--policy", "keep_none", *where)["removal"]
    assert removal["failed"] == [] and removal["files_deleted"]
    assert object_versions(versioned_bucket, "sealed/") == []


def test_rotate_on_a_versioned_bucket_leaves_one_wrapping(
    versioned_bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_VAR, generate_key())
    monkeypatch.setenv(NEW_VAR, generate_key())
    new_id = load_master_key(f"env:{NEW_VAR}").key_id
    url = f"s3://{versioned_bucket}/r"
    where = _run(tmp_path, url, encrypted=True)
    before = _key_versions(versioned_bucket)
    rotate = ["keys", "rotate", "--results-dir", url, "--catalog", where[1] + "/catalog.sqlite"]
    done = cli_json(capsys, *rotate, "--old", f"env:{KEY_VAR}", "--new", f"env:{NEW_VAR}")
    assert done["rewrapped"] == done["old_versions_deleted"] == len(before)
    assert _key_versions(versioned_bucket) == {k: [new_id] for k in before}
    monkeypatch.setenv(KEY_VAR, os.environ[NEW_VAR])
    exported = cli_json(capsys, "export", "latest", "--to", str(tmp_path / "e"), *where)
    assert exported["exported"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_cleanup_of_a_plain_run_leaves_no_version(
    scheme: str, versioned_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = _run(tmp_path, f"{scheme}://{versioned_bucket}/plain", encrypted=False)
    assert object_versions(versioned_bucket, "plain/")
    removal = cli_json(capsys, "cleanup", "--policy", "keep_none", *where)["removal"]
    assert removal["failed"] == [] and removal["files_deleted"]
    assert object_versions(versioned_bucket, "plain/") == []
