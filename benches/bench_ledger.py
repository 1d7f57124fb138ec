"""SpillLedger bookkeeping against zict.LRU; size_of against dask.sizeof and pympler.asizeof.

``ledger:track_touch``: a ledger holding 10,000 keys; one call re-tracks and touches every
key (``items`` = 20,000 operations). ``zict.LRU`` does the same bookkeeping
(``lru[key] = nbytes`` with ``weight`` = the value, ``lru[key]`` to touch).
``ledger:insert``: 10,000 new keys tracked into an empty ledger (``items`` = 10,000).
Both check the ledger afterwards: every key held, the byte total, the last key the most
recently used.
``sizeof:arrow_table`` (a 1-million-row, 4-column table; ``_8_chunks``: the same in 8
chunks), ``sizeof:numpy`` (an 8 MB array): one call (``items`` = 1 call). For reference,
the library's own answers: ``pa.Table.nbytes``, ``get_total_buffer_size`` (what size_of
returns, called directly) and ``ndarray.nbytes``; every answer must equal the buffers'
size. ``sizeof:dict_<N>`` for N = 1k, 10k, 100k and 1M: a dict of N str keys and small
int/float/str values, each its own object (``items`` = entries, so the rate is entries
per second); ``sizeof:dict10k_shared_values``: 10k keys with 8 value objects repeated.
size_of samples a fixed number of entries, so its cost barely grows with N while the
peers' grows linearly: read the sweep, not one size. ``pympler.asizeof`` runs up to
100k entries (about 7 s a call at 1M). Each answer must lie within 25% of the sum of
``sys.getsizeof`` over the dict, its keys and its values (the shared-values case: every
occurrence counted, size_of's documented upper bound; pympler against each value object
once, as it counts); ``extra_info["bytes"]`` holds the
answer and ``extra_info["vs_getsizeof_sum"]`` its ratio to that sum.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import dask.sizeof
import numpy as np
import pyarrow as pa
import pytest
import zict
from pympler import asizeof

from phasekit.backend import backend_module

KEYS = [f"item-{i:05d}" for i in range(10_000)]
NBYTES = 4096


# ------------------------------------------------------------------ ledger


def _ledger_track_touch(impl: str) -> tuple[Callable[[], None], Any]:
    """(one call re-tracking and touching every key, the ledger it works on)."""
    if impl == "zict.LRU":
        lru: Any = zict.LRU(10**15, {}, weight=lambda key, value: value)
        for key in KEYS:
            lru[key] = NBYTES

        def run_zict() -> None:
            for key in KEYS:
                lru[key] = NBYTES
                lru[key]

        return run_zict, lru
    led = backend_module(impl).SpillLedger(10**15)
    for key in KEYS:
        led.track(key, NBYTES)
    track, touch = led.track, led.touch

    def run() -> None:
        for key in KEYS:
            track(key, NBYTES)
            touch(key)

    return run, led


def _check_ledger(ledger: Any) -> None:
    """Every key held once with its bytes, the last key the most recently used."""
    if isinstance(ledger, zict.LRU):
        keys, total = list(ledger.order), ledger.total_weight
    else:
        keys, total = ledger.keys(), ledger.used
    assert len(keys) == len(KEYS) and set(keys) == set(KEYS)
    assert total == len(KEYS) * NBYTES and keys[-1] == KEYS[-1]


@pytest.mark.parametrize("impl", ["rust", "python", "zict.LRU"])
def test_ledger_track_touch(benchmark: Any, impl: str) -> None:
    benchmark.group = "ledger:track_touch"
    benchmark.extra_info.update(items=2 * len(KEYS), unit="ops")
    run, ledger = _ledger_track_touch(impl)
    benchmark.pedantic(run, rounds=10 if impl == "zict.LRU" else 30)
    _check_ledger(ledger)


def _fresh(impl: str, made: list[Any]) -> tuple[tuple[Callable[[str, int], None]], dict[str, Any]]:
    if impl == "zict.LRU":
        lru: Any = zict.LRU(10**15, {}, weight=lambda key, value: value)
        made.append(lru)
        return (lru.__setitem__,), {}
    ledger = backend_module(impl).SpillLedger(10**15)
    made.append(ledger)
    return (ledger.track,), {}


def _insert(track: Callable[[str, int], None]) -> None:
    for key in KEYS:
        track(key, NBYTES)


@pytest.mark.parametrize("impl", ["rust", "python", "zict.LRU"])
def test_ledger_insert(benchmark: Any, impl: str) -> None:
    benchmark.group = "ledger:insert"
    benchmark.extra_info.update(items=len(KEYS), unit="ops")
    made: list[Any] = []
    rounds = 10 if impl == "zict.LRU" else 30
    benchmark.pedantic(_insert, setup=lambda: _fresh(impl, made), rounds=rounds)
    _check_ledger(made[-1])


# ------------------------------------------------------------------ size_of


def _table(chunks: int) -> pa.Table:
    n = 1_000_000
    whole = pa.table(
        {
            "ts": np.arange(n, dtype=np.int64),
            "price": np.linspace(1.0, 2.0, n),
            "qty": np.ones(n, dtype=np.float32),
            "symbol": np.arange(n, dtype=np.int32) % 100,
        }
    )
    if chunks == 1:
        return whole
    return pa.concat_tables([whole.slice(i * n // chunks, n // chunks) for i in range(chunks)])


def _bench_table(benchmark: Any, impl: str, table: pa.Table) -> None:
    benchmark.extra_info.update(items=1, unit="calls")
    if impl == "pa.Table.nbytes":
        result = benchmark(lambda: table.nbytes)
    elif impl == "get_total_buffer_size":
        result = benchmark(table.get_total_buffer_size)
    else:
        result = benchmark(backend_module(impl).size_of, table)
    benchmark.extra_info["bytes"] = int(result)
    if impl == "pa.Table.nbytes":  # the logical size: 8 + 8 + 4 + 4 bytes a row
        assert int(result) == table.num_rows * 24
    else:  # the buffers held, each buffer once (the chunks are slices of one table)
        distinct = {
            b.address: b.size for c in table.columns for ch in c.chunks for b in ch.buffers() if b
        }
        assert int(result) == sum(distinct.values())


TABLE_IMPLS = ["rust", "python", "get_total_buffer_size", "pa.Table.nbytes"]


@pytest.mark.parametrize("impl", TABLE_IMPLS)
def test_sizeof_arrow_table(benchmark: Any, impl: str) -> None:
    benchmark.group = "sizeof:arrow_table"
    _bench_table(benchmark, impl, _table(1))


@pytest.mark.parametrize("impl", TABLE_IMPLS)
def test_sizeof_arrow_table_8_chunks(benchmark: Any, impl: str) -> None:
    benchmark.group = "sizeof:arrow_table_8_chunks"
    _bench_table(benchmark, impl, _table(8))


@pytest.mark.parametrize("impl", ["rust", "python", "ndarray.nbytes"])
def test_sizeof_numpy(benchmark: Any, impl: str) -> None:
    array = np.zeros((1000, 1000), dtype=np.float64)
    benchmark.group = "sizeof:numpy"
    benchmark.extra_info.update(items=1, unit="calls")
    if impl == "ndarray.nbytes":
        result = benchmark(lambda: array.nbytes)
    else:
        result = benchmark(backend_module(impl).size_of, array)
    benchmark.extra_info["bytes"] = int(result)
    assert array.nbytes <= int(result) <= array.nbytes + 1024  # the data and the header


def _small_value(i: int) -> Any:
    """A small value object of its own: an int, a float or a short str."""
    kind = i % 3
    if kind == 0:
        return 1000 + i * 7919
    if kind == 1:
        return i * 0.37
    return f"status-{i}"


def _dict(entries: int, shared: bool = False) -> dict[str, Any]:
    """``entries`` str keys; ``shared``: the values are 8 objects repeated."""
    values = [_small_value(i) for i in range(8 if shared else entries)]
    return {f"key-{i:07d}": values[i % len(values)] for i in range(entries)}


def _getsizeof_sum(value: dict[str, Any], distinct: bool = False) -> int:
    """The dict, its keys and its values by ``sys.getsizeof``, every occurrence counted
    (``distinct``: each value object once, as pympler counts)."""
    values = {id(v): v for v in value.values()}.values() if distinct else value.values()
    return (
        sys.getsizeof(value)
        + sum(sys.getsizeof(k) for k in value)
        + sum(sys.getsizeof(v) for v in values)
    )


PEERS: dict[str, Callable[[Any], int]] = {
    "dask.sizeof": dask.sizeof.sizeof,
    "pympler.asizeof": asizeof.asizeof,
}
SIZES = {"1k": 1_000, "10k": 10_000, "100k": 100_000, "1M": 1_000_000}
DICT_IMPLS = ["rust", "python", "dask.sizeof", "pympler.asizeof"]


@pytest.fixture(scope="module")
def dicts() -> dict[str, tuple[dict[str, Any], int]]:
    """Each size's dict and its sys.getsizeof sum, built once."""
    out = {}
    for label, entries in SIZES.items():
        value = _dict(entries)
        out[label] = (value, _getsizeof_sum(value))
    return out


def _bench_dict(benchmark: Any, impl: str, value: dict[str, Any], reference: int) -> None:
    benchmark.extra_info.update(items=len(value), unit="entries")
    measure = PEERS.get(impl) or backend_module(impl).size_of
    if impl == "pympler.asizeof":
        result = benchmark.pedantic(measure, args=(value,), rounds=3)
    else:
        result = benchmark(measure, value)
    ratio = int(result) / reference
    benchmark.extra_info.update(bytes=int(result), vs_getsizeof_sum=round(ratio, 4))
    assert 0.75 <= ratio <= 1.25, f"{impl}: {int(result)} bytes, {ratio:.3f}x the getsizeof sum"


DICT_CASES = [
    (impl, size)
    for size in SIZES
    for impl in DICT_IMPLS
    if not (impl == "pympler.asizeof" and SIZES[size] > 100_000)
]


@pytest.mark.parametrize(("impl", "size"), DICT_CASES)
def test_sizeof_dict(
    benchmark: Any, impl: str, size: str, dicts: dict[str, tuple[dict[str, Any], int]]
) -> None:
    benchmark.group = f"sizeof:dict_{size}"
    benchmark.extra_info["impl"] = impl
    _bench_dict(benchmark, impl, *dicts[size])


@pytest.mark.parametrize("impl", DICT_IMPLS)
def test_sizeof_dict10k_shared_values(benchmark: Any, impl: str) -> None:
    benchmark.group = "sizeof:dict10k_shared_values"
    value = _dict(10_000, shared=True)
    _bench_dict(benchmark, impl, value, _getsizeof_sum(value, impl == "pympler.asizeof"))
