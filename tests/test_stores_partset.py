"""Part sets (:mod:`phasekit.stores.partset`): parts written by several writers, one
manifest as the commit point, every part verified as it is read."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from phasekit.checksum import tree_checksum
from phasekit.errors import CorruptDataError, InvalidArgument, StorageError, UnsafePath
from phasekit.stores import partset
from phasekit.stores.streamparts import MANIFEST, Part


def _table(start: int, n: int) -> pa.Table:
    ids = pa.array(range(start, start + n), pa.int64())
    return pa.table({"id": ids, "x": pa.array([0.5] * n, pa.float64())})


def _written(folder: Path) -> list[Part]:
    # parts 0 and 2 (a part is named after its block; numbers need not be contiguous)
    return [
        partset.write_part(folder, 0, _table(0, 3), "lz4"),
        partset.write_part(folder, 2, _table(3, 2), "lz4"),
    ]


def test_committed_parts_read_as_one_table(tmp_path: Path, backend_name: str) -> None:
    folder = tmp_path / "containers.parts"
    parts = _written(folder)
    (folder / ".part-000009.arrow.tmp").write_bytes(b"a killed writer's leftover")
    size, checksum = partset.commit(folder, _table(0, 0).schema, "lz4", parts)
    assert sorted(p.name for p in folder.iterdir()) == [
        MANIFEST,
        "part-000001.arrow",
        "part-000003.arrow",
    ]
    # the folder's checksum, joined from the parts' without reading them
    assert checksum == tree_checksum(folder)
    assert size == sum(p.stat().st_size for p in folder.iterdir())
    assert partset.is_part_set(folder)
    assert partset.read_part_set(folder).equals(_table(0, 5))
    schema, batches = partset.part_set_batches(folder, "t", ["x"])
    assert schema.names == ["x"] and sum(b.num_rows for b in batches) == 5
    with pytest.raises(InvalidArgument, match="no column 'y'"):
        partset.part_set_batches(folder, "t", ["y"])


def test_a_missing_or_damaged_part_or_manifest_is_an_error(
    tmp_path: Path, backend_name: str
) -> None:
    folder = tmp_path / "trades.parts"
    parts = _written(folder)
    with pytest.raises(CorruptDataError, match="no manifest"):
        partset.read_part_set(folder)
    partset.commit(folder, _table(0, 0).schema, None, parts)
    second = folder / "part-000003.arrow"
    data = bytearray(second.read_bytes())
    data[-20] ^= 0x55
    second.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="fails its checksum"):
        partset.read_part_set(folder, "table t")
    second.unlink()
    with pytest.raises(CorruptDataError, match="missing"):
        partset.read_part_set(folder)
    with pytest.raises(StorageError, match=r"part-000003\.arrow is missing"):
        partset.commit(folder, _table(0, 0).schema, None, parts)
    with pytest.raises(CorruptDataError, match="is missing"):
        partset.read_part_set(tmp_path / "none.parts")


def test_a_manifest_naming_a_file_outside_its_folder_is_refused(
    tmp_path: Path, backend_name: str
) -> None:
    folder = tmp_path / "equity.parts"
    partset.commit(folder, _table(0, 0).schema, None, _written(folder))
    (tmp_path / "secret.arrow").write_bytes((folder / "part-000001.arrow").read_bytes())
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["parts"][0]["file"] = "../secret.arrow"
    manifest.pop("check")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UnsafePath):
        partset.read_part_set(folder)
    with pytest.raises(InvalidArgument):
        partset.part_name(-1)
