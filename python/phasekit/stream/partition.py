"""Keys and partitions: murmur3 (x86, 32-bit) as in ``mmh3.hash``, ``partition`` and keyed state."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, Callable, Optional

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
