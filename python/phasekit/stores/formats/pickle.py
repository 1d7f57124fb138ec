"""Pickle, only where explicitly allowed: loading a pickle can run arbitrary code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from phasekit.errors import InvalidArgument
from phasekit.stores import values
from phasekit.stores.formats.base import Format, WriteOptions

REFUSAL = (
    "loading a pickle can run arbitrary code, so phasekit loads pickles only from stores "
    "created with allow_pickle=True (set it only for files you wrote and trust)"
)


def refuse(item: str, path: Path) -> InvalidArgument:
    return InvalidArgument(f"item {item!r} is a pickle file ({path}); {REFUSAL}")


class PickleFormat(Format):
    """Any picklable value (``.pkl``, protocol 5); needs ``allow_pickle=True`` both ways."""

    name = "pickle"
    extension = ".pkl"
    kinds: tuple[str, ...] = (*values.KINDS, values.OBJECT)

    def check(self, kind: str, options: WriteOptions) -> None:
        if not options.allow_pickle:
            raise InvalidArgument(f"format 'pickle' needs allow_pickle=True; {REFUSAL}")

    def encode(self, value: Any, kind: str, path: Path, options: WriteOptions) -> dict[str, Any]:
        data, info = self.to_bytes(value, kind, options)
        path.write_bytes(data)
        return info

    def to_bytes(self, value: Any, kind: str, options: WriteOptions) -> tuple[Any, dict[str, Any]]:
        try:
            return pickle.dumps(value, protocol=5), {}
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidArgument(f"the value cannot be pickled: {exc}") from exc

    def from_bytes(self, data: Any, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        if not options.allow_pickle:
            raise InvalidArgument(f"a pickle value needs allow_pickle=True; {REFUSAL}")
        return pickle.loads(data)

    def read(self, path: Path, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        if not options.allow_pickle:
            raise refuse(path.stem, path)
        with open(path, "rb") as fh:
            return pickle.load(fh)
