"""Keys and partitions: murmur3 (x86, 32-bit) as in ``mmh3.hash``, ``partition`` and keyed state."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from phasekit.errors import InvalidArgument

_M32 = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593


def key_bytes(key: Any) -> bytes:
    """The bytes hashed for a key: UTF-8 of a ``str``, bytes as they are, else ``str(key)``."""
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    return str(key).encode("utf-8")


def murmur3_32(key: Any, seed: int = 0, signed: bool = True) -> int:
    """MurmurHash3 x86 32-bit of ``key`` (see ``key_bytes``); equals ``mmh3.hash(key, seed)``."""
    data = key_bytes(key)
    h = seed & _M32
    length = len(data)
    nblocks = length // 4
    for k in struct.unpack_from(f"<{nblocks}I", data):
        k = (k * _C1) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * _C2) & _M32
        h ^= k
        h = ((h << 13) | (h >> 19)) & _M32
        h = (h * 5 + 0xE6546B64) & _M32
    tail = nblocks * 4
    rest = length & 3
    if rest:
        k = 0
        if rest == 3:
            k ^= data[tail + 2] << 16
        if rest >= 2:
            k ^= data[tail + 1] << 8
        k ^= data[tail]
        k = (k * _C1) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * _C2) & _M32
        h ^= k
    h ^= length
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    if signed and h & 0x80000000:
        return h - 0x100000000
    return h


def check_partitions(n: Any, name: str = "n") -> int:
    """``n`` as an integer >= 1, else ``InvalidArgument``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgument(f"{name} must be an integer >= 1, got {n!r}")
    return n


def partition(key: Any, n: int, seed: int = 0) -> int:
    """The partition ``0..n-1`` of ``key``: ``mmh3.hash(key, seed, signed=False) % n``."""
    check_partitions(n)
    return murmur3_32(key, seed, signed=False) % n


class Partitioner:
    """Maps items to ``n`` partitions by ``partition(key(item), n, seed)``, caching per key.

    The cache keeps hashing off the hot path when keys repeat (symbols, accounts); it is
    cleared when it grows past ``cache_size`` distinct keys.
    """

    __slots__ = ("_cache", "cache_size", "key", "n", "seed")

    def __init__(
        self, key: Callable[[Any], Any], n: int, seed: int = 0, cache_size: int = 65536
    ) -> None:
        self.key = key
        self.n = check_partitions(n)
        self.seed = seed
        self.cache_size = cache_size
        self._cache: dict[Any, int] = {}

    def __call__(self, item: Any) -> int:
        k = self.key(item)
        try:
            return self._cache[k]
        except KeyError:
            pass
        except TypeError:  # unhashable key: hash it every time
            return murmur3_32(k, self.seed, signed=False) % self.n
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        p = self._cache[k] = murmur3_32(k, self.seed, signed=False) % self.n
        return p

    def split(self, item: Any) -> Optional[list[tuple[int, Any]]]:
        """A columnar batch (pyarrow RecordBatch or Table, polars DataFrame) cut into the
        rows of each partition, in row order: ``[(partition, rows), ...]``; None for any
        other item. The key is taken from the whole batch (``key(batch)``, for a field
        name its column): a column of one key per row splits the batch row by row; a
        single value sends the whole batch to that key's partition."""
        rows = columnar_rows(item)
        if rows is None:
            return None
        keys = self.key(item)
        per_row = _column_values(keys, rows)
        if per_row is None:
            return [(self(item), item)]
        values, codes = per_row
        parts = np.fromiter((self._of_key(v) for v in values), np.int64, len(values))[codes]
        out: list[tuple[int, Any]] = []
        for j in range(self.n):
            index = np.flatnonzero(parts == j)
            if len(index) == rows:
                return [(j, item)]
            if len(index):
                out.append((j, _take(item, index)))
        return out

    def _of_key(self, k: Any) -> int:
        p = self._cache.get(k)
        if p is None:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            p = self._cache[k] = murmur3_32(k, self.seed, signed=False) % self.n
        return p


def columnar_rows(item: Any) -> Optional[int]:
    """The number of rows of a columnar batch (pyarrow RecordBatch or Table, polars
    DataFrame); None for any other item."""
    if isinstance(item, (pa.RecordBatch, pa.Table)):
        return int(item.num_rows)
    if type(item).__name__ == "DataFrame" and type(item).__module__.startswith("polars"):
        return int(item.height)
    return None


def _column_values(keys: Any, rows: int) -> Optional[tuple[list[Any], np.ndarray]]:
    """The distinct keys of a key column of ``rows`` values and each row's index into
    them; None when ``keys`` is not such a column (one key for the whole batch)."""
    if type(keys).__name__ == "Series" and type(keys).__module__.startswith("polars"):
        keys = keys.to_arrow()
    if isinstance(keys, np.ndarray) and keys.ndim == 1:
        keys = pa.array(keys)
    if not isinstance(keys, (pa.Array, pa.ChunkedArray)) or len(keys) != rows:
        return None
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    encoded = keys if pa.types.is_dictionary(keys.type) else pc.dictionary_encode(keys)
    values = encoded.dictionary.to_pylist()
    codes = encoded.indices
    if codes.null_count:  # null keys hash as None does for a single item
        values.append(None)
        codes = pc.fill_null(codes, len(values) - 1)
    return values, codes.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _take(item: Any, index: np.ndarray) -> Any:
    if isinstance(item, (pa.RecordBatch, pa.Table)):
        return item.take(pa.array(index))
    return item[index]


class KeyedState:
    """State per key for one node instance: a mapping with an optional default factory.

    ``state[key]`` creates the entry from ``default()`` when missing (if a default is
    set); ``get``/``set``/``pop``/``keys`` work as on a dict. Each parallel instance owns
    the keys that ``partition`` sends to it, so no locking is needed.
    """

    __slots__ = ("_data", "default")

    def __init__(self, default: Optional[Callable[[], Any]] = None) -> None:
        self.default = default
        self._data: dict[Any, Any] = {}

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._data[key]
        except KeyError:
            if self.default is None:
                raise
            value = self._data[key] = self.default()
            return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._data[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: Any, value: Any) -> None:
        self._data[key] = value

    def pop(self, key: Any, default: Any = None) -> Any:
        return self._data.pop(key, default)

    def keys(self) -> list[Any]:
        return list(self._data)

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._data.items())
