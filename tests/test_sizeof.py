"""size_of: the documented rules, and identical results from both backends."""

from __future__ import annotations

import ctypes
import sys
from collections import OrderedDict, namedtuple
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phasekit.backend import backend_module

MAX_DEPTH = 6
SAMPLE = 32


def _same(value: Any) -> int:
    """size_of of both backends; they must agree."""
    rust = backend_module("rust").size_of(value)
    python = backend_module("python").size_of(value)
    assert rust == python, f"rust {rust} != python {python} for {type(value).__name__}"
    return int(python)


# ------------------------------------------------------------------ O(1) rules

SCALARS = [
    b"",
    b"x" * 1000,
    bytearray(b"abc"),
    "",
    "ascii",
    "é" * 10,
    "€uro",
    "😀 emoji",
    "a" * 100_000,
    0,
    1,
    -1,
    2**30,
    2**62,
    -(2**63),
    2**64,
    10**100,
    -(10**300),
    0.0,
    float("nan"),
    True,
    False,
    None,
    1 + 2j,
    np.float64(1.5),  # a float subclass: rule 1
    np.str_("numpy str"),
]


@pytest.mark.parametrize("value", SCALARS, ids=lambda v: type(v).__name__)
def test_scalars_are_getsizeof(backend: ModuleType, value: Any) -> None:
    assert backend.size_of(value) == sys.getsizeof(value)


def test_non_ascii_str_after_utf8_cache(backend: ModuleType) -> None:
    text = "".join(["naïve "] * 7)
    before = backend.size_of(text)
    assert before == sys.getsizeof(text)
    ctypes.pythonapi.PyUnicode_AsUTF8.restype = ctypes.c_char_p
    ctypes.pythonapi.PyUnicode_AsUTF8(ctypes.py_object(text))  # caches the utf-8 form
    assert sys.getsizeof(text) > before
    assert backend.size_of(text) == sys.getsizeof(text)


def test_memoryview_is_nbytes(backend: ModuleType) -> None:
    data = bytes(1000)
    assert backend.size_of(memoryview(data)) == 1000
    assert backend.size_of(memoryview(data)[10:20]) == 10


def test_numpy_is_nbytes(backend: ModuleType) -> None:
    big = np.zeros((1000, 100), dtype=np.float32)
    assert backend.size_of(big) == 400_000
    assert backend.size_of(big[::2]) == 200_000
    assert backend.size_of(np.array(["x" * 100, 1], dtype=object)) == 16  # pointers only
    assert backend.size_of(np.int64(3)) == 8  # not a Python int subclass: rule 4


def test_arrow_is_total_buffer_size(backend: ModuleType) -> None:
    table = pa.table({"a": np.arange(1000, dtype=np.int64), "s": [str(i) for i in range(1000)]})
    assert backend.size_of(table) == table.get_total_buffer_size()
    batch = table.to_batches()[0]
    assert backend.size_of(batch) == batch.get_total_buffer_size()
    assert backend.size_of(table["a"]) == 8000
    assert backend.size_of(pa.array([1, 2, None])) == pa.array([1, 2, None]).get_total_buffer_size()


def test_polars_is_estimated_size(backend: ModuleType) -> None:
    frame = pl.DataFrame({"a": list(range(1000)), "b": [float(i) for i in range(1000)]})
    assert backend.size_of(frame) == frame.estimated_size()
    assert backend.size_of(frame["a"]) == frame["a"].estimated_size()


def test_pandas_is_shallow_memory_usage(backend: ModuleType) -> None:
    frame = pd.DataFrame({"a": np.arange(100), "b": ["x"] * 100})
    assert backend.size_of(frame) == int(frame.memory_usage(index=True, deep=False).sum())
    series = frame["a"]
    assert backend.size_of(series) == series.memory_usage(index=True, deep=False)
    index = pd.Index(np.arange(50))
    assert backend.size_of(index) == index.memory_usage(deep=False)


def test_other_objects_are_getsizeof(backend: ModuleType) -> None:
    class Thing:
        pass

    thing = Thing()
    assert backend.size_of(thing) == sys.getsizeof(thing)
    assert backend.size_of(Thing) == sys.getsizeof(Thing)
    assert backend.size_of(pa.int64()) == sys.getsizeof(pa.int64())  # no buffer size


# ------------------------------------------------------------------ containers


def test_small_containers_sum_their_items(backend: ModuleType) -> None:
    items = [1, "two", 3.0]
    expected_items = sum(sys.getsizeof(x) for x in items)
    for container in (list(items), tuple(items), set(items), frozenset(items)):
        assert backend.size_of(container) == sys.getsizeof(container) + expected_items
    mapping = {"a": 1, "bb": [1, 2]}
    assert backend.size_of(mapping) == (
        sys.getsizeof(mapping)
        + sys.getsizeof("a")
        + sys.getsizeof(1)
        + sys.getsizeof("bb")
        + sys.getsizeof([1, 2])
        + 2 * sys.getsizeof(1)
    )


def test_large_containers_are_sampled_and_scaled(backend: ModuleType) -> None:
    n = 1000
    values = [("x" * (i % 50)) for i in range(n)]
    positions = [i * n // SAMPLE for i in range(SAMPLE)]
    sampled = sum(sys.getsizeof(values[p]) for p in positions)
    assert backend.size_of(values) == sys.getsizeof(values) + sampled * n // SAMPLE
    mapping = {f"k{i}": values[i] for i in range(n)}
    keys = list(mapping)
    sampled = sum(sys.getsizeof(keys[p]) + sys.getsizeof(mapping[keys[p]]) for p in positions)
    assert backend.size_of(mapping) == sys.getsizeof(mapping) + sampled * n // SAMPLE


def test_sampling_follows_iteration_order_after_deletes(backend: ModuleType) -> None:
    mapping = {f"k{i}": "v" * i for i in range(200)}
    for i in range(0, 200, 3):
        del mapping[f"k{i}"]
    mapping.update({f"n{i}": "w" * (i * 7 % 13) for i in range(40)})
    n = len(mapping)
    items = list(mapping.items())
    sampled = sum(
        sys.getsizeof(items[i * n // SAMPLE][0]) + sys.getsizeof(items[i * n // SAMPLE][1])
        for i in range(SAMPLE)
    )
    assert backend.size_of(mapping) == sys.getsizeof(mapping) + sampled * n // SAMPLE
    _same(mapping)


def test_depth_limit_counts_getsizeof_only(backend: ModuleType) -> None:
    inner: list[Any] = ["leaf" * 10]
    nested: Any = inner
    for _ in range(MAX_DEPTH):
        nested = [nested]
    # nested: depth 0..5 are wrappers, `inner` sits at depth 6 and counts getsizeof only
    wrappers = MAX_DEPTH * sys.getsizeof([None])
    assert backend.size_of(nested) == wrappers + sys.getsizeof(inner)


def test_cycles_are_bounded_by_depth(backend: ModuleType) -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert backend.size_of(loop) == (MAX_DEPTH + 1) * sys.getsizeof(loop)
    mapping: dict[str, Any] = {}
    mapping["self"] = mapping
    assert backend.size_of(mapping) > 0
    _same(mapping)


def test_subclasses_of_containers(backend: ModuleType) -> None:
    point = namedtuple("point", "x y")
    ordered = OrderedDict((str(i), i) for i in range(100))
    for value in (point(1, "y"), ordered, [point(i, i) for i in range(100)]):
        _same(value)
    assert backend.size_of(point(1, "y")) == (
        sys.getsizeof(point(1, "y")) + sys.getsizeof(1) + sys.getsizeof("y")
    )


def test_shared_objects_are_counted_each_time(backend: ModuleType) -> None:
    shared = "s" * 100
    assert backend.size_of([shared, shared]) == sys.getsizeof([shared, shared]) + 2 * sys.getsizeof(
        shared
    )


def test_library_objects_inside_containers(backend: ModuleType) -> None:
    value = {
        "arr": np.zeros(100),
        "tab": pa.table({"a": [1, 2, 3]}),
        "df": pl.DataFrame({"a": [1]}),
    }
    expected = sys.getsizeof(value) + sum(sys.getsizeof(k) for k in value) + 800
    expected += value["tab"].get_total_buffer_size() + value["df"].estimated_size()
    assert backend.size_of(value) == expected


# ------------------------------------------------------------------ both backends agree

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True),
    st.complex_numbers(),
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=128)),
    st.text(alphabet=st.characters(min_codepoint=0x10000, max_codepoint=0x1F9FF)),
    st.binary(),
    st.binary().map(bytearray),
    st.integers(0, 300).map(lambda n: np.arange(n)),
    st.integers(0, 300).map(lambda n: pa.array(range(n))),
    st.integers(0, 50).map(lambda n: pa.table({"x": list(range(n))})),
    st.integers(0, 50).map(lambda n: pl.DataFrame({"x": list(range(n))})),
    st.integers(0, 50).map(lambda n: pd.DataFrame({"x": list(range(n))})),
    st.integers(0, 50).map(lambda n: pd.Series(range(n), dtype="int64")),
    st.floats(allow_nan=False).map(np.float64),
    st.integers(-(2**31), 2**31).map(np.int64),
    st.binary().map(lambda b: memoryview(b)),
)

hashables = st.one_of(st.integers(), st.text(), st.floats(allow_nan=False), st.binary())


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=80),
        st.lists(children, max_size=80).map(tuple),
        st.dictionaries(hashables, children, max_size=80),
        st.sets(hashables, max_size=80),
        st.frozensets(hashables, max_size=80),
    )


values = st.recursive(scalars, _containers, max_leaves=300)


@settings(max_examples=400, deadline=None)
@given(values)
def test_backends_agree_on_random_values(value: Any) -> None:
    _same(value)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_ints_match_getsizeof(value: int) -> None:
    assert _same(value) == sys.getsizeof(value)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_strs_match_getsizeof(value: str) -> None:
    assert _same(value) == sys.getsizeof(value)


def test_instance_dicts_and_popped_dicts(backend: ModuleType) -> None:
    class Many:
        def __init__(self) -> None:
            for i in range(50):
                setattr(self, f"attr{i}", "v" * i)

    obj = Many()
    assert backend.size_of(vars(obj)) == _same(vars(obj))
    popped = {i: str(i) * (i % 9) for i in range(300)}
    for _ in range(40):
        popped.popitem()  # deletes from the end: no holes before the live entries
    _same(popped)
    shifted = {i: str(i) for i in range(300)}
    del shifted[0]  # a hole before every live entry
    assert backend.size_of(shifted) == _same(shifted)
