"""Pickle, only where explicitly allowed: loading a pickle can run arbitrary code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Optional

from phasekit.errors import InvalidArgument
from phasekit.stores import values
from phasekit.stores.durable import atomic_file, file_checksum, path_size
from phasekit.stores.formats.base import WriteOptions, Written

REFUSAL = (
    "loading a pickle can run arbitrary code, so phasekit loads pickles only from stores "
    "created with allow_pickle=True (set it only for files you wrote and trust)"
)


def refuse(item: str, path: Path) -> InvalidArgument:
    return InvalidArgument(f"item {item!r} is a pickle file ({path}); {REFUSAL}")


class PickleFormat:
    """Any picklable value (``.pkl``, protocol 5); needs ``allow_pickle=True`` both ways."""

    name = "pickle"
    kinds: tuple[str, ...] = (*values.KINDS, values.OBJECT)
    compressions: tuple[Optional[str], ...] = (None,)

    def path_for(self, folder: Path, key: str, kind: str, options: WriteOptions) -> Path:
        return folder / f"{key}.pkl"

    def write(self, value: Any, kind: str, path: Path, options: WriteOptions, what: str) -> Written:
        if not options.allow_pickle:
            raise InvalidArgument(f"{what}: format 'pickle' needs allow_pickle=True; {REFUSAL}")
        try:
            data = pickle.dumps(value, protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidArgument(f"{what}: the value cannot be pickled: {exc}") from exc
        with atomic_file(path, what) as tmp:
            tmp.write_bytes(data)
        return Written(path, path_size(path), file_checksum(path))

    def read(self, path: Path, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        if not options.allow_pickle:
            raise refuse(path.stem, path)
        with open(path, "rb") as fh:
            return pickle.load(fh)
