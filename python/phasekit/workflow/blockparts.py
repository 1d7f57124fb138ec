"""A block window's completed blocks kept on disk until the window is complete, so a
resumed run reads them back instead of computing them again (``<window>/.blocks/``)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

from phasekit.crypt import Encryption
from phasekit.errors import PhasekitError
from phasekit.paths import make_private, make_private_dir
from phasekit.stores.sealed import read_plain, write_sealed_bytes
from phasekit.workflow.blocks import BlockJob, BlockOutcome, read_stream

log = logging.getLogger(__name__)

BLOCK_PARTS = ".blocks"
"""The folder (in a window's folder) of the batches of the window's completed blocks,
kept until the window is complete."""
PART_NAMES = ("results", "trades", "curves")


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

    def done(self, window_id: Optional[str], blocks: Sequence[BlockJob]) -> dict[int, BlockOutcome]:
        """The blocks of ``blocks`` an earlier attempt of the run completed (its marker
        recorded, its batches kept), read back; the rows of any other block of that
        attempt in this window are deleted (they are computed again). Nothing to read
        without kept batches: a window's rows are committed after its batches are kept,
        and the batches are deleted only once the window is complete."""
        if not self._folder(window_id).is_dir():
            return {}
        rows = [
            r
            for r in self.catalog.list_items(self.run_id, stage=self.phase)
            if r.window_id == window_id and r.storage_type == "inline"
        ]
        markers = {r.entity_name: r for r in rows if r.metadata.get("output_type") == "block"}
        if not markers:
            return {}
        done: dict[int, BlockOutcome] = {}
        for job in blocks:
            marker = markers.get(block_entity(job.index))
            if marker is None or marker.inline_data != block_marker(job):
                continue
            outcome = self._read(window_id, job)
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

    def _read(self, window_id: Optional[str], job: BlockJob) -> Optional[BlockOutcome]:
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
