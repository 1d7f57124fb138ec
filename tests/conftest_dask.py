"""The session's Dask cluster (:mod:`dask_util`) for the executor tests.

Load with ``pytest_plugins = ["conftest_dask"]``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dask_util import DaskCluster, start_cluster


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[DaskCluster]:
    """A scheduler and two single-threaded workers for the whole session."""
    folder = Path(tempfile.mkdtemp(prefix="phasekit-dask-"))
    cluster = start_cluster(folder)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
