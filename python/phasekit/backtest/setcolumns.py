"""A block's parameter sets as columns (:class:`SetColumns`), without a dict per set."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np


@dataclass(frozen=True)
class SetColumns(Sequence[Mapping[str, object]]):
    """A block's parameter sets (a strategy's keyword arguments) as columns: a set's
    ``keys`` in order, the values every set shares (``fixed``) and, per other key, an
    object array of each set's value (``varying``). A set is made a dict only when it is
    taken (an error naming it, a user strategy's per-set ``signals``)."""

    keys: tuple[str, ...]
    fixed: Mapping[str, object]
    varying: Mapping[str, np.ndarray]
    size: int

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, i: int) -> dict[str, object]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, object]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, object] | list[dict[str, object]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.size))]
        if not -self.size <= i < self.size:
            raise IndexError(i)
        row = i % self.size
        return {k: self.varying[k][row] if k in self.varying else self.fixed[k] for k in self.keys}

    def __iter__(self) -> Iterator[dict[str, object]]:
        """Each set as a dict, built by iterators (no Python step per set)."""
        if not self.keys:
            return map(dict, itertools.repeat((), self.size))
        cols = [self.column(k) for k in self.keys]
        return map(dict, map(zip, itertools.repeat(self.keys), zip(*cols)))

    def column(self, name: str) -> list[object]:
        """Each set's value of ``name`` (a key of the sets)."""
        return self.values(name, None)

    def values(self, name: str, default: object) -> list[object]:
        """Each set's value of ``name`` (``default`` where the sets have none)."""
        if name in self.varying:
            return self.varying[name].tolist()  # type: ignore[no-any-return]
        return [self.fixed.get(name, default)] * self.size
