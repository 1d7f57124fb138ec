"""``size_of``: an estimate of the bytes a Python value holds (reference implementation).

The rules (docs/primitives.md, "size_of") are applied recursively from depth 0:

1. ``bytes``, ``bytearray``, ``str``, ``int``, ``float``, ``bool``, ``None``, ``complex``:
   ``sys.getsizeof``.
2. ``memoryview``: ``nbytes``.
3. a type from a ``pyarrow*`` module with ``get_total_buffer_size``: that.
4. a type from a ``numpy*`` module with ``nbytes``: that.
5. a type from a ``polars*`` module with ``estimated_size``: that.
6. a type from a ``pandas*`` module with ``memory_usage``:
   ``memory_usage(index=True, deep=False)``, summed for a DataFrame.
7. ``dict`` (keys and values), ``list``, ``tuple``, ``set``, ``frozenset``: ``sys.getsizeof``
   plus the items; past ``SAMPLE`` entries only ``SAMPLE`` evenly spaced ones are measured
   and scaled; at depth ``MAX_DEPTH`` and deeper, ``sys.getsizeof`` only.
8. anything else: ``sys.getsizeof``.

The rule that applies depends only on the value's type, so it is looked up once per type.
"""

from __future__ import annotations

import operator
import sys
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

MAX_DEPTH = 6
SAMPLE = 32

_getsizeof = sys.getsizeof
_index = operator.index

# rule kinds, looked up once per type
_SCALAR = 0  # rules 1 and 8: sys.getsizeof
_MEMORYVIEW = 1
_ARROW = 2
_NUMPY = 3
_POLARS = 4
_PANDAS = 5
_MAPPING = 6  # dict and its subclasses
_SEQUENCE = 7  # list, tuple and their subclasses
_SET = 8  # set, frozenset and their subclasses

_SCALAR_TYPES = (bytes, bytearray, str, int, float, bool, type(None), complex)
_LIBRARY_RULES = (
    ("pyarrow", "get_total_buffer_size", _ARROW),
    ("numpy", "nbytes", _NUMPY),
    ("polars", "estimated_size", _POLARS),
    ("pandas", "memory_usage", _PANDAS),
)

_rule_cache: dict[type, int] = {}


def _rule_of(tp: type) -> int:
    """The rule kind of values of type ``tp`` (first matching rule wins)."""
    if issubclass(tp, _SCALAR_TYPES):
        return _SCALAR
    if issubclass(tp, memoryview):
        return _MEMORYVIEW
    module = getattr(tp, "__module__", None)
    if isinstance(module, str):
        for prefix, attribute, kind in _LIBRARY_RULES:
            if module.startswith(prefix) and hasattr(tp, attribute):
                return kind
    if issubclass(tp, dict):
        return _MAPPING
    if issubclass(tp, (list, tuple)):
        return _SEQUENCE
    if issubclass(tp, (set, frozenset)):
        return _SET
    return _SCALAR


def _pandas_size(value: Any) -> int:
    try:
        usage = value.memory_usage(index=True, deep=False)
    except TypeError:  # pandas.Index.memory_usage has no ``index`` argument
        usage = value.memory_usage(deep=False)
    if isinstance(usage, int):
        return usage
    if hasattr(usage, "sum"):  # per-column sizes of a DataFrame
        usage = usage.sum()
    return _index(usage)


def _sampled(items: Iterable[Any], n: int) -> Iterator[Any]:
    """The items at positions ``i * n // SAMPLE`` (i = 0..SAMPLE-1) of an iterable of length n."""
    iterator = iter(items)
    previous = -1
    for i in range(SAMPLE):
        position = i * n // SAMPLE
        yield next(islice(iterator, position - previous - 1, None))
        previous = position


def _measure_items(items: Iterable[Any], n: int, measure: Callable[[Any], int]) -> int:
    if n <= SAMPLE:
        return sum(measure(item) for item in items)
    return sum(measure(item) for item in _sampled(items, n)) * n // SAMPLE


def _size(value: Any, depth: int) -> int:
    tp = type(value)
    kind = _rule_cache.get(tp)
    if kind is None:
        kind = _rule_cache.setdefault(tp, _rule_of(tp))
    if kind == _SCALAR:
        return _getsizeof(value)
    if kind == _ARROW:
        return _index(value.get_total_buffer_size())
    if kind == _NUMPY:
        return _index(value.nbytes)
    if kind == _MEMORYVIEW:
        return _index(value.nbytes)
    if kind == _POLARS:
        return _index(value.estimated_size())
    if kind == _PANDAS:
        return _pandas_size(value)
    own = _getsizeof(value)
    if depth >= MAX_DEPTH:
        return own
    inner = depth + 1
    n = len(value)
    if kind == _MAPPING:
        return own + _measure_items(
            value.items(), n, lambda kv: _size(kv[0], inner) + _size(kv[1], inner)
        )
    if n > SAMPLE and (tp is list or tp is tuple):
        # random access: measure the sampled positions directly (subclasses are iterated)
        return own + sum(_size(value[i * n // SAMPLE], inner) for i in range(SAMPLE)) * n // SAMPLE
    return own + _measure_items(value, n, lambda item: _size(item, inner))


def size_of(value: object) -> int:
    """Estimated bytes held by ``value`` (the rules are in docs/primitives.md)."""
    return _size(value, 0)


__all__ = ["MAX_DEPTH", "SAMPLE", "size_of"]
