"""Results on object storage against results on the local disk: the same small workflow.

Group ``storage:results-on-s3``: ``examples/small_workflow_memory.yaml`` with
``data_flow.mode=file`` and ``results.collection.store_container_items`` (every
container's results a file, so every container an object on S3), 1,500 hourly bars, one worker, run in this process. ``local`` writes its results
under a temporary folder; ``s3`` writes them to ``s3://BUCKET/results`` on a moto server
(S3's API, in server mode on 127.0.0.1) through boto3, with the catalog in a local folder;
``pyarrow+s3`` writes them to the same server through pyarrow's own S3 client
(``pyarrow+s3://BUCKET/results``). moto is a
Python server in a thread of this process, so the ``s3`` time includes its own CPU time
and shows the protocol's cost (one upload per file before its catalog row, the reads
back the run makes, checksums), not a real S3's latency. ``extra_info`` has the number
of items and objects.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phasekit.workflow import run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "small_workflow_memory.yaml"
SETTINGS = {
    "data_flow__mode": "file",
    "data__n_bars": 1500,
    "results__collection__store_container_items": True,  # each container's own files
}


@pytest.fixture(scope="module")
def s3_server() -> Iterator[None]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "phasekit-bench",
        "AWS_SECRET_ACCESS_KEY": "phasekit-bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def _new_bucket(request: pytest.FixtureRequest) -> str:
    """A bucket of its own for each target (moto's work per request grows with a bucket's
    objects, which would favour whichever target runs first)."""
    import boto3

    request.getfixturevalue("s3_server")
    name = f"bench-{secrets.token_hex(4)}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.mark.parametrize("target", ["local", "s3", "pyarrow+s3"])
def test_results_on_s3_vs_local(
    benchmark: Any, target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    benchmark.group = "storage:results-on-s3"
    bucket = _new_bucket(request) if target != "local" else None
    counts: list[int] = []

    def once() -> None:
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        if bucket is None:
            where: dict[str, Any] = {"results_dir": str(folder)}
        else:
            url = f"{target}://{bucket}/{folder.name}"
            where = {"results_dir": url, "local_dir": str(folder)}
        result = run(str(EXAMPLE), workers=1, **where, **SETTINGS)
        try:
            refs = [ref.uri or "" for phase in result.phases for ref in result.outputs(phase)]
            scheme = f"{target}://" if bucket else "file://"
            counts.append(sum(r.startswith(scheme) for r in refs))
        finally:
            result.close()

    benchmark.pedantic(once, rounds=3, iterations=1, warmup_rounds=1)
    assert counts and counts[0] > 20
    benchmark.extra_info.update(impl=target, items=counts[0], unit="files")
