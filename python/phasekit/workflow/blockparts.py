"""A block window's completed blocks kept on disk until the window is complete, so a
resumed run reads them back instead of computing them again (``<window>/.blocks/``).

A block whose window tables are part sets (:mod:`phasekit.workflow.blockwrite`) is kept
by its parts themselves: its catalog row lists them (:data:`PARTS_KEY`), and a resumed
run reuses it when every part it lists is there with its checksum (a worker's part on
object storage is read from its object)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import pyarrow as pa

from phasekit.crypt import Encryption
from phasekit.errors import PhasekitError
from phasekit.paths import contained, make_private, make_private_dir
from phasekit.stores.durable import verify
from phasekit.stores.formats.base import encode_schema
from phasekit.stores.sealed import read_plain, write_sealed_bytes
from phasekit.stores.streamparts import part_of
from phasekit.workflow.blocks import BlockJob, BlockOutcome, read_stream, stream_bytes
from phasekit.workflow.blockwrite import WrittenBlock, table_folder

log = logging.getLogger(__name__)

BLOCK_PARTS = ".blocks"
"""The folder (in a window's folder) of the batches of the window's completed blocks,
kept until the window is complete."""
PART_NAMES = ("results", "trades", "curves")
PARTS_KEY = "parts"
"""Metadata key of a block row whose window tables are part sets: its part of each
(``{table: {file, checksum, size_bytes, rows, items}}``)."""
PART_TABLES = ("containers", "trades", "equity")
"""The window tables a block row's parts may name."""
Kept = Union[BlockOutcome, WrittenBlock]


def block_entity(index: int) -> str:
    """The catalog entity of a block's marker."""
    return f"block_{index:05d}"


def block_marker(job: BlockJob) -> dict[str, Any]:
    """What a block's marker records: its containers (first, last, count)."""
    ids = job.container_ids
    return {"first": ids[0], "last": ids[-1], "containers": len(ids)}


class BlockParts:
    """The kept batches of one phase's block windows and the catalog rows of their
    blocks (``window_dir``: a window's folder)."""

    def __init__(
        self,
        window_dir: Callable[[Optional[str]], Path],
        run_id: str,
        phase: str,
        catalog: Any,
        encryption: Optional[Encryption],
    ) -> None:
        self._window_dir = window_dir
        self.run_id, self.phase = run_id, phase
        self.catalog = catalog
        self.encryption = encryption

    def _folder(self, window_id: Optional[str]) -> Path:
        return self._window_dir(window_id) / BLOCK_PARTS

    def save(self, window_id: Optional[str], outcome: BlockOutcome) -> None:
        """Keep a block's batches (Arrow IPC streams as the worker sent them; sealed when
        the run encrypts) until its window is complete: a resumed run reads them back."""
        folder = self._folder(window_id)
        make_private_dir(folder)
        for name, data in zip(PART_NAMES, (outcome.results, outcome.trades, outcome.curves)):
            path = folder / f"{block_entity(outcome.job.index)}.{name}.arrows"
            what = f"writing {path.name} of phase {self.phase}"
            if self.encryption is not None:
                write_sealed_bytes(path, data, self.encryption, what)
            else:
                # not synced: a part a crash damages fails to read back and its block is
                # computed again
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(data)
                make_private(tmp)
                os.replace(tmp, path)

    def drop(self, window_id: Optional[str]) -> None:
        """Delete a window's kept block batches (once the window is complete)."""
        shutil.rmtree(self._folder(window_id), ignore_errors=True)

    def done(
        self, window_id: Optional[str], blocks: Sequence[BlockJob], written: bool = True
    ) -> dict[int, Kept]:
        """The blocks of ``blocks`` an earlier attempt of the run completed (its marker
        recorded, its batches kept, or, ``written``, the parts its row lists), read
        back; the rows of any other block of that attempt in this window are deleted
        (they are computed again). Nothing to read without kept batches or parts: a
        window's rows are committed after its batches or parts are kept, and the
        batches are deleted only once the window is complete."""
        window = self._window_dir(window_id)
        parted = written and table_folder(window, "containers").is_dir()
        if not self._folder(window_id).is_dir() and not parted:
            return {}
        rows = [
            r
            for r in self.catalog.list_items(self.run_id, stage=self.phase)
            if r.window_id == window_id and r.storage_type == "inline"
        ]
        markers = {r.entity_name: r for r in rows if r.metadata.get("output_type") == "block"}
        if not markers:
            return {}
        done: dict[int, Kept] = {}
        for job in blocks:
            marker = markers.get(block_entity(job.index))
            if marker is None or marker.inline_data != block_marker(job):
                continue
            outcome: Optional[Kept] = self._read(window_id, job)
            parts = marker.metadata.get(PARTS_KEY)
            if outcome is None and parted and parts is not None:
                outcome = self._read_written(window, job, parts)
            if outcome is not None:
                done[job.index] = outcome
        by_index = {job.index: job for job in blocks}
        kept = {cid for i in done for cid in by_index[i].container_ids}
        kept_markers = {block_entity(i) for i in done}
        # only these blocks' rows: an earlier call in the window (a walk-forward
        # window's train sets before its test set) keeps its own
        mine = {cid for job in blocks for cid in job.container_ids}
        names = {block_entity(job.index) for job in blocks}
        stale = [
            r.id
            for r in rows
            if (r.entity_name in names and r.entity_name not in kept_markers)
            or (r.container_id in mine and r.container_id not in kept)
        ]
        if stale:
            self.catalog.delete_item_rows(stale)
        log.info("phase %s: window %s: %d block(s) reused", self.phase, window_id, len(done))
        return done

    def _read_written(self, window: Path, job: BlockJob, listed: Any) -> Optional[WrittenBlock]:
        """A block whose parts its row lists, when every one is there with its checksum
        (None, the block computed again, otherwise)."""
        from phasekit.workflow.blocktables import metric_names

        try:
            if not isinstance(listed, dict) or not set(listed) <= set(PART_TABLES):
                raise ValueError(f"its row's parts {sorted(listed)!r} name no window tables")
            parts = {name: part_of(raw) for name, raw in listed.items()}
            schemas: dict[str, str] = {}
            results: Optional[pa.Table] = None
            for name, part in parts.items():
                path = contained(part.file, table_folder(window, name), f"part of {name}")
                table = self._read_part(path, part.checksum, f"{name}/{part.file}")
                schemas[name] = encode_schema(table.schema)
                if name == "containers":
                    results = table
            if results is None:
                raise ValueError("its row lists no part of the containers table")
        except (OSError, ValueError, TypeError, pa.ArrowException, PhasekitError) as exc:
            log.warning("block %s of %s is computed again: %s", job.index, window, exc)
            return None
        metrics = stream_bytes(results.select(metric_names(results.schema.names)))
        return WrittenBlock(job, metrics, parts, schemas)

    def _read_part(self, path: Path, checksum: str, what: str) -> pa.Table:
        """A kept part, verified against its checksum: its file, or on object storage
        (a worker wrote it there, not here) its object."""
        from phasekit.catalog.publish import PublishingCatalog

        if not path.exists() and isinstance(self.catalog, PublishingCatalog):
            root = self.catalog.root
            data = root.read(self.catalog.object_key(path), checksum, what)
            return pa.ipc.open_file(pa.py_buffer(data)).read_all()
        verify(path, checksum, what)
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()

    def _read(self, window_id: Optional[str], job: BlockJob) -> Optional[BlockOutcome]:
        if not self._folder(window_id).is_dir():
            return None
        parts = []
        for name in PART_NAMES:
            path = self._folder(window_id) / f"{block_entity(job.index)}.{name}.arrows"
            try:
                plain = read_plain(path, self.encryption, f"block part {path.name}")
                data = bytes(plain) if plain is not None else path.read_bytes()
                read_stream(data)
            except (OSError, ValueError, pa.ArrowException, PhasekitError) as exc:
                log.warning(
                    "block %s of window %s is computed again: %s", job.index, window_id, exc
                )
                return None
            parts.append(data)
        return BlockOutcome(job, *parts)
