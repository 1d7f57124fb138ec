"""Helpers for the catalog tests: write durable files the way stores do, and record them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from phasekit.catalog import Catalog, path_to_uri, reference_checksum, reference_size

SUFFIX = {"arrow": ".arrow", "parquet": ".parquet", "csv": ".csv", "json": ".json"}


def sample_table(n: int = 100, seed: int = 0) -> pa.Table:
    return pa.table(
        {
            "i": pa.array(range(seed, seed + n), pa.int64()),
            "x": pa.array([float(k) * 0.5 + seed for k in range(n)]),
            "s": pa.array([f"r{k}" for k in range(n)]),
        }
    )


def write_durable(path: Path, write: Any) -> None:
    """Write through a temporary name, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.test.phasekit-tmp")
    write(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)


def write_table(path: Path, table: pa.Table, fmt: str) -> None:
    def write(tmp: Path) -> None:
        if fmt == "arrow":
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
        elif fmt == "parquet":
            pq.write_table(table, str(tmp))
        elif fmt == "csv":
            pcsv.write_csv(table, str(tmp))
        else:
            tmp.write_text(json.dumps(table.to_pydict()))

    write_durable(path, write)


def store(
    catalog: Catalog,
    run: str,
    stage: str,
    entity: str,
    table: pa.Table | None = None,
    fmt: str = "arrow",
    **kwargs: Any,
) -> int:
    """Write ``<results>/<run>/<stage>/<entity><suffix>`` durably and record it."""
    assert catalog.results_dir is not None
    folder = Path(catalog.results_dir) / run / stage
    if kwargs.get("window_id"):
        folder = folder / kwargs["window_id"]
    if kwargs.get("container_id"):
        folder = folder / "containers"
    path = folder / f"{kwargs.get('container_id') or entity}{SUFFIX[fmt]}"
    write_table(path, table if table is not None else sample_table(), fmt)
    return record_file(catalog, run, stage, entity, path, fmt, **kwargs)


def record_file(
    catalog: Catalog, run: str, stage: str, entity: str, path: Path, fmt: str, **kwargs: Any
) -> int:
    """Record the file or folder at ``path`` (its size and checksum) as an item."""
    return catalog.record_item(
        run,
        stage,
        entity,
        data_reference=path_to_uri(path),
        size_bytes=reference_size(path),
        checksum=reference_checksum(path),
        format=fmt,
        **kwargs,
    )
