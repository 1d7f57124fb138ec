"""The Store protocol and what every store shares (names, URIs, metadata, the recorder)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, Optional, Protocol, Self, runtime_checkable
from urllib.parse import quote

from phasekit.errors import InvalidArgument, StorageError, UnknownKey
from phasekit.stores.names import check_name
from phasekit.stores.recorder import ItemRecorder, notify_forget
from phasekit.stores.ref import Ref, named_uri

DEFAULT_RUN = "run"
DEFAULT_PHASE = "phase"


@runtime_checkable
class Store(Protocol):
    """Where intermediate results live; every store (memory, file, hybrid, stream) has this."""

    def put(self, key: str, data: Any, metadata: Optional[Mapping[str, Any]] = None) -> Ref: ...

    def get(self, ref: Ref | str) -> Any: ...

    def list(self) -> list[Ref]: ...

    def delete(self, ref: Ref | str) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...


def check_metadata(metadata: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """A copy of ``metadata`` when it is a JSON-serialisable mapping with string keys."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgument(f"metadata must be a mapping, got {type(metadata).__name__}")
    bad = [k for k in metadata if not isinstance(k, str)]
    if bad:
        raise InvalidArgument(f"metadata keys must be strings, got {bad[:3]!r}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"metadata must be JSON-serialisable: {exc}") from exc
    return dict(metadata)


class StoreBase:
    """Names, URIs, the recorder hook, the closed state and the context manager."""

    scheme = "memory"
    format_name = "memory"

    def __init__(
        self,
        *,
        run: str = DEFAULT_RUN,
        phase: str = DEFAULT_PHASE,
        namespace: tuple[str, ...] = (),
        recorder: Optional[ItemRecorder] = None,
    ) -> None:
        self.run = check_name("run", run)
        self.phase = check_name("phase", phase)
        self.namespace = tuple(check_name("namespace", n) for n in namespace)
        if recorder is not None and not callable(getattr(recorder, "record_item", None)):
            raise InvalidArgument(
                f"recorder must have a record_item(ref) method, got {type(recorder).__name__}"
            )
        self.recorder = recorder
        self._lock = threading.RLock()
        self._closed = False

    # ---------------------------------------------------------------- names and refs

    def uri(self, key: str) -> str:
        """The URI of ``key`` in this store (for memory and stream stores)."""
        prefix = self.__dict__.get("_uri_prefix")
        if prefix is None:
            prefix = named_uri(self.scheme, (self.run, self.phase, *self.namespace, "k"))[:-1]
            self.__dict__["_uri_prefix"] = prefix
        return prefix + quote(check_name("key", key), safe="")

    def _key(self, ref: Ref | str, field: str = "key") -> str:
        """The key of a Ref or a key string, validated; refs of other stores are refused."""
        if isinstance(ref, Ref):
            self._check_own(ref)
            return ref.key
        return check_name(field, ref)

    def _check_own(self, ref: Ref) -> None:
        expected = self.uri(ref.key)
        if ref.uri != expected:
            raise InvalidArgument(f"ref {ref.uri!r} does not belong to this store ({expected!r})")

    def _missing(self, key: str) -> UnknownKey:
        where = "/".join((self.run, self.phase, *self.namespace))
        return UnknownKey(f"no item {key!r} in {type(self).__name__} {where}")

    def _record(self, ref: Ref) -> None:
        if self.recorder is not None:
            self.recorder.record_item(ref)

    def _forget(self, ref: Ref) -> None:
        notify_forget(self.recorder, ref)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{type(self).__name__} is closed")

    # ---------------------------------------------------------------- lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DEFAULT_PHASE", "DEFAULT_RUN", "Store", "StoreBase", "check_metadata"]
