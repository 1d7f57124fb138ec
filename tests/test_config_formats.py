"""File formats and compressions: the file store owns them, config accepts exactly them.

Every (format, compression) the configuration accepts is accepted by FileStore, written
with that codec and read back; what the store cannot write the configuration refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phasekit.config import resolve
from phasekit.config.vocab import COMPRESSIONS
from phasekit.errors import ConfigError, InvalidArgument
from phasekit.stores import FileStore
from phasekit.stores.formats import FORMATS, allowed_compressions

PAIRS = [(fmt, comp) for fmt, comps in COMPRESSIONS.items() for comp in comps]


def _table() -> pa.Table:
    return pa.table({"x": list(range(200)), "y": [i * 0.5 for i in range(200)]})


def _flow(fmt: str, compression: Any = "unset") -> dict[str, Any]:
    files: dict[str, Any] = {"format": fmt}
    if compression != "unset":
        files["compression"] = compression
    return {"allow_pickle": True, "data_flow": {"mode": "file", "file_settings": files}}


def _store(tmp: Path, fmt: str, compression: Optional[str]) -> FileStore:
    return FileStore(tmp, format=fmt, compression=compression, allow_pickle=True)


def test_config_takes_the_stores_list() -> None:
    assert set(COMPRESSIONS) == set(FORMATS)
    for name in FORMATS:
        assert COMPRESSIONS[name] == allowed_compressions(name)
        assert set(COMPRESSIONS[name]) == set(FORMATS[name].compressions)


@pytest.mark.parametrize(("fmt", "compression"), PAIRS, ids=[f"{f}-{c}" for f, c in PAIRS])
def test_every_accepted_pair_writes_and_reads_back(
    tmp_path: Path, backend_name: str, fmt: str, compression: Optional[str]
) -> None:
    flow = resolve(_flow(fmt, compression or "none")).base.data_flow
    assert (flow.file.format, flow.file.compression) == (fmt, compression)
    store = _store(tmp_path, flow.file.format, flow.file.compression)
    table = _table()
    ref = store.put("t", table)
    assert store.get(ref).equals(table)
    if fmt == "parquet":
        codec = pq.ParquetFile(ref.path).metadata.row_group(0).column(0).compression
        assert codec == (compression or "uncompressed").upper()
    if fmt == "hdf5":
        import h5py

        with h5py.File(ref.path) as f:
            codecs = {f[name].compression for name in _datasets(f)}
        assert codecs == {compression}


def _datasets(group: Any) -> list[str]:
    import h5py

    out: list[str] = []
    group.visit(lambda name: out.append(name) if isinstance(group[name], h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_default_compression_is_the_stores_default(tmp_path: Path, fmt: str) -> None:
    flow = resolve(_flow(fmt)).base.data_flow
    assert flow.file.compression == FORMATS[fmt].default_compression
    # the store's own default (no compression argument) writes the same codec
    assert FileStore(tmp_path, format=fmt, allow_pickle=True).compression == (flow.file.compression)


@pytest.mark.parametrize(
    ("fmt", "compression"), [("json", "gzip"), ("csv", "gzip"), ("pickle", "gzip")]
)
def test_pairs_the_store_refuses_are_config_errors(
    tmp_path: Path, fmt: str, compression: str
) -> None:
    with pytest.raises(InvalidArgument):
        _store(tmp_path, fmt, compression)
    with pytest.raises(ConfigError, match=rf"not available with format '{fmt}'.*allowed"):
        resolve(_flow(fmt, compression))


def test_hdf5_lzf_is_accepted_by_both(tmp_path: Path) -> None:
    flow = resolve(_flow("hdf5", "lzf")).base.data_flow
    assert flow.file.compression == "lzf"
    ref = _store(tmp_path, "hdf5", "lzf").put("t", _table())
    assert ref.path is not None and Path(ref.path).exists()


def test_parquet_none_writes_uncompressed(tmp_path: Path) -> None:
    """``compression: none`` resolves to None, and None is uncompressed for the store too
    (it used to fall back to snappy)."""
    flow = resolve(_flow("parquet", "none")).base.data_flow
    ref = _store(tmp_path, "parquet", flow.file.compression).put("t", _table())
    assert pq.ParquetFile(ref.path).metadata.row_group(0).column(0).compression == "UNCOMPRESSED"
