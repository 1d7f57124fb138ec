"""The session's Ray cluster (:mod:`ray_util`) for the Ray executor tests.

Load with ``pytest_plugins = ["conftest_ray"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ray_util import RayCluster, running_cluster


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A head node with 2 CPUs and a 200 MB object store for the whole session."""
    with running_cluster() as cluster:
        yield cluster
