"""Where a phase's results go: the container store chosen by the resolved data flow,
and the phase files of DESIGN.md's layout, each recorded in the catalog::

    <results_dir>/<run>/<phase>/[<window>/]containers/<container_id>_results.json
    <results_dir>/<run>/<phase>/[<window>/]containers/<container_id>_equity.arrow
    <results_dir>/<run>/<phase>/[<window>/]{aggregate_results.json, all_trades.arrow,
                                             phase_summary.json}

Container results go through the store of the container's resolved data flow:
``file`` writes the files above; ``memory`` keeps them in a MemoryStore; ``hybrid``
keeps them in memory under the budget and spills the least recently used to disk;
``streaming`` hands them to a StreamStore that persists them in the background.
Phase files are always written (they are small, except all_trades.arrow, which is
streamed through an IpcWriter batch by batch).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

import phasekit
from phasekit.stores import FileStore, HybridStore, MemoryStore, Ref, StreamStore
from phasekit.stores.durable import write_json
from phasekit.workflow.topology import TRADES_SCHEMA

log = logging.getLogger(__name__)


def jsonable(value: Any) -> Any:
    """Plain JSON values: NaN and infinities become None, numpy scalars Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class PhaseResults:
    """Writes one phase's results and records every stored item in the catalog."""

    def __init__(
        self,
        run_dir: Path,
        run_id: str,
        phase: str,
        mode: str,
        memory_limit_bytes: int,
        catalog: Any,
        *,
        file_format: str = "json",
        buffer_size: int = 1000,
        flush_interval: float = 60.0,
        container_mode: Callable[[str], str | None] | None = None,
    ) -> None:
        self.run_id, self.phase, self.mode = run_id, phase, mode
        self.phase_dir = run_dir / phase
        self.catalog = catalog
        self.file_format = file_format
        self._memory_limit = memory_limit_bytes
        self._buffer_size, self._flush_interval = buffer_size, flush_interval
        self._container_mode = container_mode or (lambda _cid: None)
        self._stores: dict[tuple[str, str], Any] = {}
        self._trade_writers: dict[str, Any] = {}
        self.container_refs: list[Ref] = []

    # ------------------------------------------------------------------ stores

    def _dir(self, window_id: str | None) -> Path:
        return self.phase_dir / window_id if window_id else self.phase_dir

    def _recorder(self, window_id: str | None) -> Any:
        from phasekit.catalog import CatalogRecorder

        return CatalogRecorder(
            self.catalog, self.run_id, self.phase, window_id=window_id, stage_name=self.phase
        )

    def store(self, window_id: str | None, mode: str | None = None) -> Any:
        """The container store of a window for a data-flow mode (the phase's by default),
        created on first use."""
        mode = mode or self.mode
        key = (window_id or "", mode)
        if key in self._stores:
            return self._stores[key]
        folder = self._dir(window_id) / "containers"
        recorder = self._recorder(window_id)
        names = {"run": self.run_id, "phase": self.phase}
        if mode == "file":
            folder.mkdir(parents=True, exist_ok=True)
            store: Any = FileStore(folder, format="json", recorder=recorder, **names)
        elif mode == "hybrid":
            store = HybridStore(self._memory_limit, folder / ".spill", recorder=recorder, **names)
        elif mode == "streaming":
            store = StreamStore(
                folder / ".stream",
                buffer_size=self._buffer_size,
                flush_interval=self._flush_interval,
                recorder=recorder,
                **names,
            )
        else:
            store = MemoryStore(recorder=recorder, **names)
        self._stores[key] = store
        return store

    def put_container(
        self,
        window_id: str | None,
        container_id: str,
        results: Mapping[str, Any],
        equity: pa.Table | None,
    ) -> dict[str, Any]:
        """Store one destroyed container's results (and equity curve) through the store of
        its data-flow mode (its ``containers:`` pattern's, else the phase's); returns
        their URIs."""
        mode = self._container_mode(container_id) or self.mode
        store = self.store(window_id, mode)
        meta = jsonable(
            {
                "container_id": container_id,
                "window_id": window_id,
                "metrics": results.get("metrics", {}),
            }
        )
        clean = jsonable(results)
        key = "container_results" if mode == "streaming" else f"{container_id}_results"
        ref = store.put(key, clean, meta)
        if mode != "streaming":
            self.container_refs.append(ref)
        out = {"results": ref.uri}
        if equity is not None:
            if mode in ("file", "streaming"):
                out["equity_curve"] = self._write_table(
                    self._dir(window_id) / "containers" / f"{container_id}_equity.arrow",
                    equity,
                    f"{container_id}_equity",
                    window_id,
                    container_id,
                )
            else:
                out["equity_curve"] = store.put(f"{container_id}_equity", equity, meta).uri
        return out

    # ------------------------------------------------------------------ phase files

    def write_table(self, window_id: str | None, name: str, table: pa.Table) -> str:
        """Write ``<name>.arrow`` in the window's folder (the phase's with None) and
        record it; returns its URI."""
        return self._write_table(self._dir(window_id) / f"{name}.arrow", table, name, window_id)

    def read_table(self, uri: str) -> pa.Table:
        """A table this run wrote (an Arrow IPC file, by its URI)."""
        import pyarrow.feather as feather

        from phasekit.catalog import uri_to_path

        return feather.read_table(uri_to_path(uri))

    def _write_table(
        self,
        path: Path,
        table: pa.Table,
        entity: str,
        window_id: str | None,
        container_id: str | None = None,
    ) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        with phasekit.IpcWriter(str(path), schema=table.schema, compression="lz4") as writer:
            if table.num_rows:
                writer.write(table)
            info = writer.close()
        return self._record_file(Path(info["path"]), entity, window_id, info, container_id, "arrow")

    def _record_file(
        self,
        path: Path,
        entity: str,
        window_id: str | None,
        info: Mapping[str, Any],
        container_id: str | None,
        fmt: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        uri = path.resolve().as_uri()
        self.catalog.record_item(
            self.run_id,
            self.phase,
            entity,
            data_reference=uri,
            metadata=dict(metadata or {}),
            size_bytes=int(info["size_bytes"]),
            checksum=info["checksum"],
            format=fmt,
            phase=self.phase,
            window_id=window_id,
            container_id=container_id,
            storage_type="reference",
        )
        return uri

    def add_trades(self, window_id: str | None, table: pa.Table) -> None:
        """Append trades to the window's all_trades.arrow (streamed, not held)."""
        key = window_id or ""
        writer = self._trade_writers.get(key)
        if writer is None:
            folder = self._dir(window_id)
            folder.mkdir(parents=True, exist_ok=True)
            writer = phasekit.IpcWriter(
                str(folder / "all_trades.arrow"), schema=TRADES_SCHEMA, compression="lz4"
            )
            self._trade_writers[key] = writer
        if table.num_rows:
            writer.write(table)

    def write_json(
        self, window_id: str | None, name: str, obj: Any, metadata: Mapping[str, Any] | None = None
    ) -> str:
        path = self._dir(window_id) / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        checksum = write_json(path, jsonable(obj), f"writing {name}.json of phase {self.phase}")
        info = {"size_bytes": path.stat().st_size, "checksum": checksum}
        return self._record_file(path, name, window_id, info, None, "json", metadata)

    def finish_window(self, window_id: str | None) -> str | None:
        """Finish the window's container stream (streaming mode) and close its
        all_trades.arrow durably; both are recorded."""
        store = self._stores.get((window_id or "", "streaming"))
        if store is not None:
            self.container_refs.append(store.finish("container_results"))
        writer = self._trade_writers.pop(window_id or "", None)
        if writer is None:
            return None
        info = writer.close()
        return self._record_file(
            Path(info["path"]), "all_trades", window_id, info, None, "arrow", {"rows": info["rows"]}
        )

    def stats(self) -> dict[str, Any]:
        return {f"{w or '-'}/{m}": store.stats() for (w, m), store in self._stores.items()}

    def close(self) -> None:
        for writer in self._trade_writers.values():
            writer.abort()
        self._trade_writers.clear()
        for store in self._stores.values():
            store.close()


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
