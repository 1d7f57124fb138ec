"""Parquet files (page checksums on), or hive-partitioned Parquet datasets with ``partition_by``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from phasekit.errors import InvalidArgument
from phasekit.stores import values
from phasekit.stores.durable import atomic_dir, path_size, tree_checksum
from phasekit.stores.formats.base import (
    Format,
    WriteOptions,
    Written,
    decode_schema,
    encode_schema,
)


def _codec(options: WriteOptions) -> str:
    return options.compression or "none"


class ParquetFormat(Format):
    """Every value kind as Parquet (``.parquet``); tabular kinds also partitioned by columns."""

    name = "parquet"
    extension = ".parquet"
    kinds: tuple[str, ...] = values.KINDS
    compressions: tuple[Optional[str], ...] = ("snappy", "zstd", "gzip", "lz4", "brotli", None)
    default_compression: Optional[str] = "snappy"
    partitioned = True

    def groupable(self, kind: str, options: WriteOptions) -> bool:
        return not options.partition_by

    def encode(self, value: Any, kind: str, path: Path, options: WriteOptions) -> dict[str, Any]:
        table = values.to_arrow(value, kind)
        pq.write_table(table, str(path), compression=_codec(options), write_page_checksum=True)
        return {}

    def write(self, value: Any, kind: str, path: Path, options: WriteOptions, what: str) -> Written:
        if not options.partition_by:
            return super().write(value, kind, path, options, what)
        self.check(kind, options)
        return self._write_dataset(values.to_arrow(value, kind), kind, path, options, what)

    def _write_dataset(
        self, table: pa.Table, kind: str, path: Path, options: WriteOptions, what: str
    ) -> Written:
        if kind not in values.TABULAR:
            raise InvalidArgument(
                f"partition_by needs a table-like value, got a {kind}; allowed: "
                f"{', '.join(values.TABULAR)}"
            )
        missing = [c for c in options.partition_by if c not in table.schema.names]
        if missing:
            raise InvalidArgument(
                f"partition_by columns {missing} are not in the value; its columns: "
                f"{table.schema.names}"
            )
        import pyarrow.dataset as ds

        fmt = ds.ParquetFileFormat()
        write_options = fmt.make_write_options(
            compression=_codec(options), write_page_checksum=True
        )
        with atomic_dir(path, what) as tmp:
            ds.write_dataset(
                table,
                str(tmp),
                format=fmt,
                file_options=write_options,
                partitioning=list(options.partition_by),
                partitioning_flavor="hive",
                basename_template="part-{i}.parquet",
            )
        info = {"schema": encode_schema(table.schema), "partition_by": list(options.partition_by)}
        return Written(path, path_size(path), tree_checksum(path), info)

    def read(self, path: Path, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        if path.is_dir():
            return values.from_arrow(self._read_dataset(path, info), kind, info.get("numpy"))
        table = pq.read_table(str(path), page_checksum_verification=True)
        return values.from_arrow(table, kind, info.get("numpy"))

    def to_bytes(self, value: Any, kind: str, options: WriteOptions) -> tuple[Any, dict[str, Any]]:
        if options.partition_by:
            raise InvalidArgument(
                "partition_by (a folder of Parquet files) cannot be combined with encryption; "
                "turn one of them off"
            )
        sink = pa.BufferOutputStream()
        table = values.to_arrow(value, kind)
        pq.write_table(table, sink, compression=_codec(options), write_page_checksum=True)
        return sink.getvalue(), {}

    def from_bytes(self, data: Any, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        table = pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
        return values.from_arrow(table, kind, info.get("numpy"))

    @staticmethod
    def _read_dataset(path: Path, info: dict[str, Any]) -> pa.Table:
        import pyarrow.dataset as ds

        schema = decode_schema(info["schema"])
        keys = pa.schema([schema.field(c) for c in info.get("partition_by", [])])
        dataset = ds.dataset(
            str(path),
            schema=schema,
            format=ds.ParquetFileFormat(
                default_fragment_scan_options=ds.ParquetFragmentScanOptions(
                    page_checksum_verification=True
                )
            ),
            partitioning=ds.partitioning(keys, flavor="hive"),
        )
        return dataset.to_table().replace_schema_metadata(schema.metadata)
