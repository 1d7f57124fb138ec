"""SpillLedger bookkeeping against zict.LRU; size_of against dask.sizeof and pympler.asizeof.

``ledger:track_touch``: a ledger holding 10,000 keys; one call re-tracks and touches every
key (``items`` = 20,000 operations). ``zict.LRU`` does the same bookkeeping
(``lru[key] = nbytes`` with ``weight`` = the value, ``lru[key]`` to touch).
``ledger:insert``: 10,000 new keys tracked into an empty ledger (``items`` = 10,000).
``sizeof:arrow_table`` (a 1-million-row, 4-column table; ``_8_chunks``: the same in 8
chunks), ``sizeof:numpy`` (an 8 MB array): one call (``items`` = 1). For reference, the
library's own answers: ``pa.Table.nbytes``, ``get_total_buffer_size`` (what size_of
returns, called directly) and ``ndarray.nbytes``. ``sizeof:dict10k``: a dict of 10,000 str keys
and small int/float/str values, each its own object; ``sizeof:dict10k_shared_values``:
the same keys with 8 value objects repeated. ``extra_info["bytes"]`` holds each
implementation's answer and ``extra_info["vs_asizeof"]`` its ratio to
``pympler.asizeof``'s byte count (also printed with ``-s``).
"""

from __future__ import annotations

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


def _ledger_track_touch(impl: str) -> Callable[[], None]:
    if impl == "zict.LRU":
        lru: Any = zict.LRU(10**15, {}, weight=lambda key, value: value)
        for key in KEYS:
            lru[key] = NBYTES

        def run_zict() -> None:
            for key in KEYS:
                lru[key] = NBYTES
                lru[key]

        return run_zict
    led = backend_module(impl).SpillLedger(10**15)
    for key in KEYS:
        led.track(key, NBYTES)
    track, touch = led.track, led.touch

    def run() -> None:
        for key in KEYS:
            track(key, NBYTES)
            touch(key)

    return run


@pytest.mark.parametrize("impl", ["rust", "python", "zict.LRU"])
def test_ledger_track_touch(benchmark: Any, impl: str) -> None:
    benchmark.group = "ledger:track_touch"
    benchmark.extra_info["items"] = 2 * len(KEYS)
    benchmark.pedantic(_ledger_track_touch(impl), rounds=10 if impl == "zict.LRU" else 30)


def _fresh(impl: str) -> tuple[tuple[Callable[[str, int], None]], dict[str, Any]]:
    if impl == "zict.LRU":
        lru: Any = zict.LRU(10**15, {}, weight=lambda key, value: value)
        return (lru.__setitem__,), {}
    return (backend_module(impl).SpillLedger(10**15).track,), {}


def _insert(track: Callable[[str, int], None]) -> None:
    for key in KEYS:
        track(key, NBYTES)


@pytest.mark.parametrize("impl", ["rust", "python", "zict.LRU"])
def test_ledger_insert(benchmark: Any, impl: str) -> None:
    benchmark.group = "ledger:insert"
    benchmark.extra_info["items"] = len(KEYS)
    benchmark.pedantic(_insert, setup=lambda: _fresh(impl), rounds=10 if impl == "zict.LRU" else 30)


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
    benchmark.extra_info["items"] = 1
    if impl == "pa.Table.nbytes":
        result = benchmark(lambda: table.nbytes)
    elif impl == "get_total_buffer_size":
        result = benchmark(table.get_total_buffer_size)
    else:
        result = benchmark(backend_module(impl).size_of, table)
    benchmark.extra_info["bytes"] = int(result)


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
    benchmark.extra_info["items"] = 1
    if impl == "ndarray.nbytes":
        result = benchmark(lambda: array.nbytes)
    else:
        result = benchmark(backend_module(impl).size_of, array)
    benchmark.extra_info["bytes"] = int(result)


def _small_value(i: int) -> Any:
    """A small value object of its own: an int, a float or a short str."""
    kind = i % 3
    if kind == 0:
        return 1000 + i * 7919
    if kind == 1:
        return i * 0.37
    return f"status-{i}"


def _dict10k(shared: bool = False) -> dict[str, Any]:
    """10,000 str keys; ``shared``: the values are 8 objects repeated (asizeof counts each
    once, size_of counts every occurrence: the documented upper bound)."""
    values = [_small_value(i) for i in range(8 if shared else 10_000)]
    return {f"key-{i:05d}": values[i % len(values)] for i in range(10_000)}


PEERS: dict[str, Callable[[Any], int]] = {
    "dask.sizeof": dask.sizeof.sizeof,
    "pympler.asizeof": asizeof.asizeof,
}


def _bench_dict(benchmark: Any, impl: str, shared: bool) -> None:
    value = _dict10k(shared)
    benchmark.group = "sizeof:dict10k" + ("_shared_values" if shared else "")
    benchmark.extra_info["items"] = len(value)
    measure = PEERS.get(impl) or backend_module(impl).size_of
    if impl == "pympler.asizeof":
        result = benchmark.pedantic(measure, args=(value,), rounds=5)
    else:
        result = benchmark(measure, value)
    reference = asizeof.asizeof(value)
    benchmark.extra_info["bytes"] = int(result)
    benchmark.extra_info["vs_asizeof"] = round(int(result) / reference, 4)
    print(
        f"\n{benchmark.group} {impl}: {int(result)} bytes ({int(result) / reference:.3f} x asizeof)"
    )


DICT_IMPLS = ["rust", "python", "dask.sizeof", "pympler.asizeof"]


@pytest.mark.parametrize("impl", DICT_IMPLS)
def test_sizeof_dict10k(benchmark: Any, impl: str) -> None:
    _bench_dict(benchmark, impl, shared=False)


@pytest.mark.parametrize("impl", DICT_IMPLS)
def test_sizeof_dict10k_shared_values(benchmark: Any, impl: str) -> None:
    _bench_dict(benchmark, impl, shared=True)
