"""The hook through which a store reports durable items (the catalog implements it)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

from phasekit.errors import CorruptDataError
from phasekit.stores.ref import Ref


@runtime_checkable
class ItemRecorder(Protocol):
    """Told about every stored item once it is durable (files: written, fsynced, renamed).

    A store calls ``record_item(ref)`` after each successful ``put`` (memory and hybrid
    stores right away; file stores once the file and its manifest are durable; stream
    stores for every persisted part file and once more when the stream finishes).
    A recorder may also define ``forget_item(ref)``; stores call it after ``delete``.
    """

    def record_item(self, ref: Ref) -> None: ...


def notify_forget(recorder: Optional[ItemRecorder], ref: Ref) -> None:
    """Call ``recorder.forget_item(ref)`` when the recorder has that optional method."""
    forget = getattr(recorder, "forget_item", None)
    if forget is not None:
        forget(ref)


class JsonLinesRecorder:
    """A minimal durable recorder: one JSON line per ref, appended and fsynced."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record_item(self, ref: Ref) -> None:
        line = (json.dumps({"event": "record", **ref.to_dict()}) + "\n").encode()
        self._append(line)

    def forget_item(self, ref: Ref) -> None:
        self._append((json.dumps({"event": "forget", "uri": ref.uri}) + "\n").encode())

    def _append(self, line: bytes) -> None:
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    @staticmethod
    def read(path: str | os.PathLike[str]) -> list[Ref]:
        """The refs recorded and not forgotten, in order; a torn last line is ignored."""
        refs: dict[str, Ref] = {}
        try:
            lines = Path(path).read_bytes().split(b"\n")
        except FileNotFoundError:
            return []
        for i, raw in enumerate(lines):
            if not raw:
                continue
            try:
                entry: dict[str, Any] = json.loads(raw)
            except ValueError as exc:
                if i == len(lines) - 1:
                    break  # the process died while appending this line
                raise CorruptDataError(f"{path}: line {i + 1} is not JSON: {exc}") from exc
            if entry.pop("event", "record") == "forget":
                refs.pop(entry["uri"], None)
            else:
                ref = Ref.from_dict(entry)
                refs.pop(ref.uri, None)
                refs[ref.uri] = ref
        return list(refs.values())


__all__ = ["ItemRecorder", "JsonLinesRecorder", "notify_forget"]
