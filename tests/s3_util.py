"""An S3-compatible server for tests: moto in server mode on 127.0.0.1 (a random free
port), with the client settings a test needs in its environment (and only there)."""

from __future__ import annotations

import io
import json
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "phasekit-test",
            "AWS_SECRET_ACCESS_KEY": "phasekit-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def polars_options(self) -> dict[str, str]:
        """``storage_options`` for polars' own object store reader (``pl.read_ipc("s3://...")``)."""
        env = self.env()
        return {
            "aws_endpoint_url": self.endpoint,
            "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
            "aws_region": env["AWS_DEFAULT_REGION"],
            "aws_allow_http": "true",
        }


class Breaks(io.BytesIO):
    """A source that fails after its first part was read (a disk error mid-upload)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise OSError(5, "Input/output error")
        return super().read(size)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_json(capsys: pytest.CaptureFixture[str], *args: str, ok: bool = True) -> Any:
    """The ``--json`` answer of a phasekit command (which must succeed when ``ok``)."""
    from phasekit.cli import main

    capsys.readouterr()
    status = main([*args, "--json"])
    assert status == 0 or not ok, status
    return json.loads(capsys.readouterr().out)


def corrupt_and_check(
    capsys: pytest.CaptureFixture[str], bucket: str, key: str, item_id: int, where: list[str]
) -> None:
    """Flip the last byte of object ``key``: ``show --verify`` of its item fails on the
    checksum and ``doctor`` reports it ``corrupt_file``."""
    import boto3

    from phasekit.cli import main

    client = boto3.client("s3")
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 0xFF]))
    capsys.readouterr()
    assert main(["show", str(item_id), "--verify", *where]) != 0
    assert "fails its checksum" in capsys.readouterr().err
    report = cli_json(capsys, "doctor", *where, ok=False)
    assert [f["kind"] for f in report["findings"] if f.get("item_id") == item_id] == [
        "corrupt_file"
    ]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def bucket(s3_env: S3Server) -> str:
    """A fresh bucket on the server (the environment points clients at it)."""
    import boto3

    name = f"phasekit-{secrets.token_hex(4)}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def versioned_bucket(s3_env: S3Server) -> str:
    """A fresh bucket that keeps every version of its objects (versioning enabled)."""
    import boto3

    name = f"phasekit-v-{secrets.token_hex(4)}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def object_versions(bucket: str, prefix: str = "") -> list[tuple[str, bool]]:
    """Every version and delete marker under ``prefix``: ``(key, is a delete marker)``."""
    import boto3

    found: list[tuple[str, bool]] = []
    pages = boto3.client("s3").get_paginator("list_object_versions")
    for page in pages.paginate(Bucket=bucket, Prefix=prefix):
        found += [(v["Key"], False) for v in page.get("Versions", [])]
        found += [(m["Key"], True) for m in page.get("DeleteMarkers", [])]
    return sorted(found)
