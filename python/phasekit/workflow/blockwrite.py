"""Blocks whose window-table parts are written where they run (a cluster worker).

On a cluster executor (``dask``, ``ray``), a block window whose tables go to files
(:meth:`~phasekit.workflow.blocktables.BlockTables.sink_for`) stores each table as a part
set (:mod:`phasekit.stores.partset`): each block's rows of ``containers``, ``trades``
and ``equity`` are one part of each, named after the block (``part-<index + 1>``). A
block sent with a :class:`PartSink` is written by the worker that ran it
(:func:`written_block`): the worker builds the block's part of each table, writes it
under its final name in the run's results folder and hands back only a
:class:`WrittenBlock` (the parts' names, sizes, checksums and rows, and the block's
metric columns for its catalog row and the ranking), never the block's rows. A worker
that cannot see the results folder (its :attr:`PartSink.probe` is not there with the
client's token: another machine without the shared folder) hands the rows back
instead and the client writes the parts itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import pyarrow as pa

from phasekit.errors import PhasekitError
from phasekit.stores.formats.base import decode_schema, encode_schema
from phasekit.stores.partset import SUFFIX, write_object_part, write_part
from phasekit.stores.streamparts import Part

if TYPE_CHECKING:
    from phasekit.workflow.blocks import BlockJob, IpcStream

log = logging.getLogger(__name__)

__all__ = ["PartSink", "WrittenBlock", "block_tables_of", "table_folder", "write_block_parts"]


@dataclass(frozen=True)
class PartSink:
    """Where and how a block's parts are written: the window's folder (absolute, as the
    client sees it), the window tables written (of ``containers``, ``trades``,
    ``equity``), the phase's file compression, each container's ``snapshot_interval``
    (None: every point), and a file only a worker seeing the client's results folder
    finds holding ``token``."""

    window_dir: str
    tables: tuple[str, ...]
    compression: Optional[str]
    intervals: Optional[tuple[int, ...]]
    probe: str
    token: str
    objects: Optional[str] = None
    """The results root on object storage (its URL) when the run's results live there:
    the parts are then objects under ``window_key`` and ``probe`` is a key too."""
    window_key: Optional[str] = None
    """The window's folder as a key below ``objects``."""

    def reachable(self) -> bool:
        """This process sees the client's results folder or bucket (the probe holds the
        token); once it did, it is not asked again in this process."""
        key = (self.objects, self.probe, self.token)
        if key in _REACHED:
            return True
        try:
            if self.objects is not None:
                from phasekit.objstore import ObjectRoot

                data = ObjectRoot.from_url(self.objects).read(self.probe, None)
                found = data.decode("utf-8", "replace") == self.token
            else:
                found = Path(self.probe).read_text(encoding="utf-8") == self.token
        except (OSError, PhasekitError) as exc:
            log.info("the results of the run are not reachable here: %s", exc)
            return False
        if found:
            _REACHED.add(key)
        return found


_REACHED: set[tuple[Optional[str], str, str]] = set()
"""The probes (results root, probe, token) this process found: a phase's blocks after
its first do not read the probe again."""


@dataclass(frozen=True)
class WrittenBlock:
    """What a block whose parts were written hands back: its job, its metric columns
    (an Arrow IPC stream) and, per window table, its part and the part's schema."""

    job: BlockJob
    metrics: IpcStream
    parts: Mapping[str, Part]
    schemas: Mapping[str, str]

    def metrics_table(self) -> pa.Table:
        from phasekit.workflow.blocks import read_stream

        return read_stream(self.metrics)

    def schema(self, name: str) -> pa.Schema:
        return decode_schema(self.schemas[name])


def table_folder(window_dir: Path, name: str) -> Path:
    """The part set folder of the window table ``name``."""
    return window_dir / f"{name}{SUFFIX}"


def block_tables_of(
    job: BlockJob,
    results: pa.Table,
    trades: Optional[pa.Table],
    curves: Optional[pa.Table],
    ts: np.ndarray,
    names: Sequence[str],
    intervals: Optional[Union[Sequence[int], np.ndarray]],
) -> dict[str, pa.Table]:
    """The block's part of each window table of ``names``: its ``containers`` rows, its
    ``trades`` (the symbol added; always, when the block has trades at all) and its
    ``equity`` points (every ``intervals[i]``-th of container ``i``; only when there are
    some), as :meth:`~phasekit.workflow.blocktables.BlockTables.put` writes them."""
    from phasekit.workflow.blocktables import equity_table, trades_table

    out: dict[str, pa.Table] = {}
    if "containers" in names:
        out["containers"] = results
    if trades is not None and "trades" in names:
        out["trades"] = trades_table(trades, job.symbol)
    if curves is not None and "equity" in names:
        every = np.ones(len(job), np.int64) if intervals is None else np.asarray(intervals)
        equity = equity_table(curves, ts, job.container_ids, every)
        if equity.num_rows:
            out["equity"] = equity
    return out


def write_block_parts(
    window_dir: Path, job: BlockJob, tables: Mapping[str, pa.Table], compression: Optional[str]
) -> dict[str, Part]:
    """Write each table as the block's part of its part set; returns the parts by table."""
    return {
        name: write_part(table_folder(window_dir, name), job.index, table, compression)
        for name, table in tables.items()
    }


def written_block(
    sink: PartSink,
    job: BlockJob,
    results: pa.Table,
    trades: pa.Table,
    curves: pa.Table,
    ts: np.ndarray,
) -> WrittenBlock:
    """What a worker runs once a block is computed: its parts written to the sink's
    window folder (see the module docstring), and what the client needs of it."""
    from phasekit.workflow.blocks import stream_bytes
    from phasekit.workflow.blocktables import metric_names

    tables = block_tables_of(job, results, trades, curves, ts, sink.tables, sink.intervals)
    if sink.objects is not None and sink.window_key is not None:
        from phasekit.objstore import ObjectRoot

        root = ObjectRoot.from_url(sink.objects)
        parts = {
            name: write_object_part(
                root, f"{sink.window_key}/{name}{SUFFIX}", job.index, table, sink.compression
            )
            for name, table in tables.items()
        }
    else:
        parts = write_block_parts(Path(sink.window_dir), job, tables, sink.compression)
    schemas = {name: encode_schema(table.schema) for name, table in tables.items()}
    metrics = stream_bytes(results.select(metric_names(results.schema.names)))
    return WrittenBlock(job, metrics, parts, schemas)
