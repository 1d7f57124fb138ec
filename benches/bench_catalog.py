"""Catalog throughput on SQLite and PostgreSQL: inserts/s and filtered queries/s.

Groups (SQLite against PostgreSQL, the same work in each group):
``catalog:insert_row`` (300 rows, one ``record_item`` and one transaction each),
``catalog:insert_batch`` (``record_items`` of 1,000 in one transaction),
``catalog:query_container`` and ``catalog:query_meta`` (50 ``list_items`` calls with
stage + container filters, or with two metadata filters, on a catalog of 25,000 items;
the rate is queries/s). Each checks the rows inserted or the rows the queries found. The PostgreSQL server is the tests' throwaway
server (fsync off), SQLite runs in WAL mode with ``synchronous=normal`` (the default).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from phasekit.catalog import Catalog, NewItem, open_catalog

pytest_plugins = ["conftest_pg"]

INSERTS = 300
BATCH = 1000
QUERIES = 50
FILLED = 20_000


def _meta(i: int) -> dict[str, object]:
    return {
        "fast": i % 10,
        "slow": 20 + i % 7,
        "metrics": {"sharpe": (i % 97) / 50, "trades": i % 31},
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def bench_catalog(request: pytest.FixtureRequest) -> Iterator[Catalog]:
    results = Path(tempfile.mkdtemp(prefix="phasekit-bench-"))
    url = str(results) if request.param == "sqlite" else request.getfixturevalue("pg_url")
    cat = open_catalog(url, results_dir=results)
    yield cat
    cat.close()


def _new(run: str, stage: str, i: int) -> NewItem:
    return NewItem(
        run,
        stage,
        f"e{i}",
        data_reference=f"memory://{run}/{stage}/e{i}",
        metadata=_meta(i),
        size_bytes=1000 + i,
        phase=stage,
        container_id=f"portfolio_{i % 200}",
    )


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_insert(benchmark: Any, bench_catalog: Catalog, mode: str) -> None:
    """``row``: one record_item (one transaction) per item; ``batch``: record_items of 1,000."""
    run = bench_catalog.start_process("bench")
    rounds = iter(range(1000))
    count = INSERTS if mode == "row" else BATCH

    def one_by_one() -> None:
        stage = f"s{next(rounds)}"
        for i in range(count):
            item = _new(run, stage, i)
            bench_catalog.record_item(
                item.process_id,
                item.stage_name,
                item.entity_name,
                data_reference=item.data_reference,
                metadata=item.metadata,
                size_bytes=item.size_bytes,
                phase=item.phase,
                container_id=item.container_id,
            )

    def batch() -> None:
        stage = f"s{next(rounds)}"
        bench_catalog.record_items([_new(run, stage, i) for i in range(count)])

    benchmark.group = f"catalog:insert_{mode}"
    benchmark.extra_info.update(items=count, unit="rows")
    benchmark.pedantic(
        one_by_one if mode == "row" else batch, rounds=5, iterations=1, warmup_rounds=1
    )
    last = f"s{next(rounds) - 1}"  # the stage of the last timed round
    assert len(bench_catalog.list_items(run, stage=last)) == count


@pytest.fixture
def filled(bench_catalog: Catalog) -> tuple[Catalog, str]:
    run = bench_catalog.start_process("bench", process_id="filled")
    other = bench_catalog.start_process("bench", process_id="other")
    for start in range(0, FILLED, 5000):
        bench_catalog.record_items(
            [_new(run, f"stage{i % 4}", i) for i in range(start, start + 5000)]
        )
    bench_catalog.record_items([_new(other, "stage0", i) for i in range(5000)])
    return bench_catalog, run


@pytest.mark.parametrize("query", ["container", "meta"])
def test_query(benchmark: Any, filled: tuple[Catalog, str], query: str) -> None:
    catalog, run = filled

    def container_queries() -> int:
        return sum(
            len(catalog.list_items(run, stage="stage1", container=f"portfolio_{k}"))
            for k in range(QUERIES)
        )

    def meta_queries() -> int:
        return sum(
            len(
                catalog.list_items(
                    run, stage="stage1", meta={"fast": k % 10, "metrics.trades": k % 31}
                )
            )
            for k in range(QUERIES)
        )

    fn = container_queries if query == "container" else meta_queries
    benchmark.group = f"catalog:query_{query}"
    benchmark.extra_info.update(items=QUERIES, unit="queries")
    found = benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    assert found == _expected_matches(query)


def _expected_matches(query: str) -> int:
    """Rows of the filled run the QUERIES queries match, from how ``_new`` numbers them."""
    stage1 = [i for i in range(FILLED) if i % 4 == 1]
    if query == "container":
        return sum(1 for k in range(QUERIES) for i in stage1 if i % 200 == k)
    return sum(1 for k in range(QUERIES) for i in stage1 if i % 10 == k % 10 and i % 31 == k % 31)
