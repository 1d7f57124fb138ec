"""File formats of the file store, by name."""

from __future__ import annotations

from phasekit.errors import InvalidArgument
from phasekit.stores.formats.arrow import ArrowFormat
from phasekit.stores.formats.base import Format, WriteOptions, Written
from phasekit.stores.formats.csv import CsvFormat
from phasekit.stores.formats.hdf5 import Hdf5Format
from phasekit.stores.formats.json import JsonFormat
from phasekit.stores.formats.parquet import ParquetFormat
from phasekit.stores.formats.pickle import PickleFormat

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        ArrowFormat(),
        ParquetFormat(),
        JsonFormat(),
        CsvFormat(),
        PickleFormat(),
        Hdf5Format(),
    )
}
DEFAULT_FORMAT = "arrow"


def get_format(name: str, field: str = "format") -> Format:
    """The format called ``name``; ``InvalidArgument`` lists the allowed names."""
    fmt = FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise InvalidArgument(
            f"{field} {name!r} is not a known format; allowed: {', '.join(FORMATS)}"
        )
    return fmt


def check_compression(fmt: Format, compression: object, field: str = "compression") -> None:
    if compression not in fmt.compressions:
        allowed = ", ".join(repr(c) for c in fmt.compressions)
        raise InvalidArgument(
            f"{field} {compression!r} is not supported by format {fmt.name!r}; allowed: {allowed}"
        )


__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "Format",
    "WriteOptions",
    "Written",
    "check_compression",
    "get_format",
]
