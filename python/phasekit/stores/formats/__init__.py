"""File formats of the file store, by name."""

from __future__ import annotations

from typing import Optional

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


#: The ``compression`` argument that means "the format's default" (snappy for parquet,
#: uncompressed for the others).
FORMAT_DEFAULT = "default"
#: Spellings of "uncompressed" besides None.
UNCOMPRESSED = ("none",)


def allowed_compressions(name: str) -> tuple[Optional[str], ...]:
    """The compressions of format ``name``, its default first (None: uncompressed)."""
    fmt = get_format(name)
    rest = tuple(c for c in fmt.compressions if c != fmt.default_compression)
    return (fmt.default_compression, *rest)


def partitioned_formats() -> tuple[str, ...]:
    """The formats that write ``partition_by`` as hive-partitioned folders."""
    return tuple(name for name, fmt in FORMATS.items() if fmt.partitioned)


def check_compression(
    fmt: Format, compression: object, field: str = "compression"
) -> Optional[str]:
    """The codec ``compression`` names for ``fmt``: ``"default"`` is the format's default,
    None and ``"none"`` are uncompressed; anything else it does not write is
    ``InvalidArgument`` listing what it does."""
    if compression == FORMAT_DEFAULT:
        return fmt.default_compression
    if compression in UNCOMPRESSED:
        compression = None
    if compression not in fmt.compressions:
        allowed = ", ".join("none" if c is None else repr(c) for c in fmt.compressions)
        raise InvalidArgument(
            f"{field} {compression!r} is not supported by format {fmt.name!r}; allowed: {allowed}"
        )
    return compression if isinstance(compression, str) else None


__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "FORMAT_DEFAULT",
    "UNCOMPRESSED",
    "Format",
    "WriteOptions",
    "Written",
    "allowed_compressions",
    "check_compression",
    "get_format",
    "partitioned_formats",
]
