"""MemoryStore: items held by reference in this process, never copied unless asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import phasekit
from phasekit.stores import values
from phasekit.stores.base import DEFAULT_PHASE, DEFAULT_RUN, StoreBase, check_metadata
from phasekit.stores.recorder import ItemRecorder
from phasekit.stores.ref import Ref


class MemoryStore(StoreBase):
    """Holds the very objects it is given (``get`` returns the same object, in O(1)).

    ``copy_on_put=True`` stores a copy of mutable values (numpy, pandas, polars,
    JSON-like) so that later in-place changes by the producer cannot reach the consumer;
    Arrow data is immutable and is never copied. Any Python object is accepted (kind
    ``object``). ``size_bytes`` of a Ref is ``phasekit.size_of`` of the value.
    """

    scheme = "memory"
    format_name = "memory"

    def __init__(
        self,
        *,
        run: str = DEFAULT_RUN,
        phase: str = DEFAULT_PHASE,
        namespace: tuple[str, ...] = (),
        copy_on_put: bool = False,
        recorder: Optional[ItemRecorder] = None,
    ) -> None:
        super().__init__(run=run, phase=phase, namespace=namespace, recorder=recorder)
        self.copy_on_put = bool(copy_on_put)
        self._items: dict[str, tuple[Any, Ref]] = {}
        self._counts = {"puts": 0, "gets": 0, "hits": 0, "misses": 0, "deletes": 0}

    def put(self, key: str, data: Any, metadata: Optional[Mapping[str, Any]] = None) -> Ref:
        """Store ``data`` under ``key`` (replacing an item of that key) and return its Ref."""
        self._check_open()
        key = self._key(key)
        meta = check_metadata(metadata)
        kind = values.kind_of(data, allow_object=True)
        if self.copy_on_put:
            data = values.copy_value(data, kind)
        ref = Ref(
            uri=self.uri(key),
            key=key,
            kind=kind,
            format=self.format_name,
            size_bytes=int(phasekit.size_of(data)),
            metadata=meta,
        )
        with self._lock:
            self._items[key] = (data, ref)
            self._counts["puts"] += 1
        self._record(ref)
        return ref

    def get(self, ref: Ref | str) -> Any:
        """The object stored under the key (the same object, not a copy)."""
        self._check_open()
        key = self._key(ref)
        with self._lock:
            self._counts["gets"] += 1
            entry = self._items.get(key)
            if entry is None:
                self._counts["misses"] += 1
                raise self._missing(key)
            self._counts["hits"] += 1
        return entry[0]

    def ref(self, key: str) -> Ref:
        """The Ref of the item stored under ``key``."""
        key = self._key(key)
        with self._lock:
            entry = self._items.get(key)
        if entry is None:
            raise self._missing(key)
        return entry[1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def list(self) -> list[Ref]:
        """Refs of the items held, in insertion order."""
        with self._lock:
            return [ref for _value, ref in self._items.values()]

    def delete(self, ref: Ref | str) -> None:
        """Drop the item (the store's reference to it); ``UnknownKey`` if absent."""
        self._check_open()
        key = self._key(ref)
        with self._lock:
            entry = self._items.pop(key, None)
            if entry is None:
                raise self._missing(key)
            self._counts["deletes"] += 1
        self._forget(entry[1])

    def stats(self) -> dict[str, Any]:
        """items, bytes_in_memory (sum of size_of at put), puts, gets, hits, misses, deletes."""
        with self._lock:
            nbytes = sum(ref.size_bytes for _v, ref in self._items.values())
            return {
                "store": "memory",
                "items": len(self._items),
                "bytes_in_memory": nbytes,
                "bytes_on_disk": 0,
                **self._counts,
            }

    def close(self) -> None:
        """Drop every item; the store refuses further calls."""
        with self._lock:
            self._items.clear()
        super().close()


__all__ = ["MemoryStore"]
