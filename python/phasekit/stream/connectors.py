"""Connecting a Dag to the outside: phasekit Channels, Python lists and Arrow IPC files.

``channel_source``/``channel_sink`` let a Dag read from or write to a Channel that
another component owns (the streaming data flow between workflow phases uses them);
``collect`` gathers a sink's items into a list (returned as the sink's result);
``ipc_sink`` writes Arrow batches or dict rows to an Arrow IPC file through
``phasekit.IpcWriter`` and returns the writer's description (path, rows, checksum).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Optional

import phasekit
from phasekit.errors import ChannelClosed, InvalidArgument, Timeout
from phasekit.paths import make_private
from phasekit.stream.nodes import NodeContext


class ChannelSource:
    """A source that receives from a Channel until it is closed and drained.

    It checks for a graceful stop every ``poll`` seconds while the channel is empty.
    """

    def __init__(self, channel: Any, max_items: int = 256, poll: float = 0.05) -> None:
        self.channel = channel
        self.max_items = max_items
        self.poll = poll
        self._ctx: Optional[NodeContext] = None

    def open(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    def __iter__(self) -> Iterator[Any]:
        ch, ctx = self.channel, self._ctx
        while ctx is None or not ctx.stopping:
            try:
                items = ch.recv_many(self.max_items, self.poll)
            except Timeout:
                continue
            except ChannelClosed:
                return
            yield from items


class ChannelSink:
    """A sink that sends every item to a Channel; closes it at the end if ``close_channel``."""

    def __init__(self, channel: Any, close_channel: bool = True) -> None:
        self.channel = channel
        self.close_channel = close_channel
        self.sent = 0

    def process_batch(self, items: list[Any]) -> None:
        self.sent += self.channel.send_many(items)

    def close(self) -> dict[str, int]:
        if self.close_channel:
            self.channel.close()
        return {"sent": self.sent}

    def abort(self) -> None:
        if self.close_channel:
            self.channel.close()


class Collect:
    """A sink that appends every item to ``items``; its result is that list."""

    def __init__(self, into: Optional[list[Any]] = None) -> None:
        self.items: list[Any] = into if into is not None else []

    def process_batch(self, items: list[Any]) -> None:
        self.items.extend(items)

    def close(self) -> list[Any]:
        return self.items


class IpcSink:
    """A sink writing Arrow record batches (or tables, polars frames) and dict rows to an
    Arrow IPC file with ``phasekit.IpcWriter``. Dict rows are buffered and written
    ``rows_per_batch`` at a time. The result is ``IpcWriter.close()``'s dict; on a failed
    or cancelled run the writer is aborted and no file appears."""

    def __init__(
        self,
        path: Any,
        *,
        schema: Any = None,
        compression: Optional[str] = None,
        rows_per_batch: int = 65536,
        format: str = "file",
    ) -> None:
        if isinstance(rows_per_batch, bool) or not isinstance(rows_per_batch, int):
            raise InvalidArgument(f"rows_per_batch must be an integer >= 1, got {rows_per_batch!r}")
        if rows_per_batch < 1:
            raise InvalidArgument(f"rows_per_batch must be an integer >= 1, got {rows_per_batch!r}")
        self.path = path
        self.schema = schema
        self.compression = compression
        self.rows_per_batch = rows_per_batch
        self.format = format
        self._rows: list[dict[str, Any]] = []
        self._writer: Any = None

    def open(self) -> None:
        self._writer = phasekit.IpcWriter(
            self.path, schema=self.schema, compression=self.compression, format=self.format
        )

    def process_batch(self, items: list[Any]) -> None:
        for item in items:
            if isinstance(item, Mapping):
                self._rows.append(dict(item))
                if len(self._rows) >= self.rows_per_batch:
                    self._flush_rows()
            else:
                self._flush_rows()
                self._writer.write(item)

    def _flush_rows(self) -> None:
        if not self._rows:
            return
        import pyarrow as pa

        rows, self._rows = self._rows, []
        schema = self.schema if isinstance(self.schema, pa.Schema) else None
        self._writer.write(pa.RecordBatch.from_pylist(rows, schema=schema))

    def close(self) -> dict[str, Any]:
        self._flush_rows()
        info = dict(self._writer.close())
        make_private(str(info.get("path") or self.path))  # 0600 like every file phasekit writes
        return info

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


def channel_source(channel: Any, max_items: int = 256, poll: float = 0.05) -> ChannelSource:
    """A source reading ``channel`` until it is closed (see ``ChannelSource``)."""
    return ChannelSource(channel, max_items, poll)


def channel_sink(channel: Any, close_channel: bool = True) -> ChannelSink:
    """A sink writing into ``channel`` (see ``ChannelSink``)."""
    return ChannelSink(channel, close_channel)


def collect(into: Optional[list[Any]] = None) -> Collect:
    """A sink gathering items into a list (``into`` or a new one)."""
    return Collect(into)


def ipc_sink(
    path: Any,
    *,
    schema: Any = None,
    compression: Optional[str] = None,
    rows_per_batch: int = 65536,
    format: str = "file",
) -> IpcSink:
    """A sink writing an Arrow IPC file (see ``IpcSink``)."""
    return IpcSink(
        path, schema=schema, compression=compression, rows_per_batch=rows_per_batch, format=format
    )
