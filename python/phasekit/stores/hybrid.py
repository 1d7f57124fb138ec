"""HybridStore: items in memory under a byte budget; the least recently used spill to disk.

The budget is a ``phasekit.SpillLedger`` tree: the store's ledger is the global
budget and :meth:`HybridStore.container` gives a view whose items count under a child
ledger with its own budget. After every put (and reload) the store spills the least
recently used items of each ledger that is over its budget (the view's, then its
ancestors'), so memory held never exceeds a budget by more than the item being
stored. Spilled items go to append-only segment files in a private folder (numpy
raw bytes, Arrow IPC streams, JSON text) and come back transparently on ``get``. A
spill that fails (disk full, permission) keeps the item in memory, logs a warning and
counts it in ``stats()["spill_failures"]``; nothing is lost.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import pyarrow as pa

import phasekit
from phasekit.crypt import Encryption, MemoryKeyring
from phasekit.errors import CorruptDataError, InvalidArgument, StorageError
from phasekit.paths import make_private_dir
from phasekit.stores import values
from phasekit.stores.base import DEFAULT_PHASE, DEFAULT_RUN, StoreBase, check_metadata
from phasekit.stores.durable import is_disk_full
from phasekit.stores.names import check_name
from phasekit.stores.recorder import ItemRecorder
from phasekit.stores.ref import Ref, named_uri
from phasekit.stores.segments import Extent, SegmentLog
from phasekit.stores.spillcodec import Spilled, check_spillable, load, spill, spill_tables
from phasekit.stores.trim import Trimmer

log = logging.getLogger(__name__)

_COUNTS = (
    "puts",
    "gets",
    "hits",
    "misses",
    "deletes",
    "spills",
    "spilled_bytes",
    "reloads",
    "reloaded_bytes",
    "spill_failures",
)


class _Folded(NamedTuple):
    """A spilled item's Ref less what its key gives back (URI, key, format): the index
    of a store holds one per spilled item, thousands of them, so each keeps only this."""

    kind: str
    size_bytes: int
    metadata: Mapping[str, Any]
    created_at: float


def _fold(ref: Ref | _Folded) -> _Folded:
    if isinstance(ref, _Folded):
        return ref
    return _Folded(ref.kind, ref.size_bytes, ref.metadata, ref.created_at)


@dataclass
class _Core:
    """State shared by a store and its container views (guarded by ``lock``)."""

    log: SegmentLog
    memory: dict[str, Any] = field(default_factory=dict)
    spilled: dict[str, Spilled] = field(default_factory=dict)
    refs: dict[str, Union[Ref, _Folded]] = field(default_factory=dict)
    """key -> its Ref; folded (:class:`_Folded`) while the item is on disk."""
    chains: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """key -> the ledgers it counts under: its view's, then the view's ancestors'."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    corrupt: dict[str, str] = field(default_factory=dict)
    """key -> why its spilled bytes are lost (a corrupt extent); ``get`` raises that."""
    compaction_failures: int = 0
    closed: bool = False
    keyring: Optional[MemoryKeyring] = None
    """The data keys of encrypted spills (None: encryption off)."""
    trimmer: Trimmer = field(default_factory=Trimmer)
    """Returns the heap's free space to the system as spills free memory."""


def _check_budget(budget_bytes: Any) -> int:
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 0:
        raise InvalidArgument(f"budget_bytes must be an int >= 0, got {budget_bytes!r}")
    return budget_bytes


def _private_folder(spill_dir: Optional[str | os.PathLike[str]]) -> Path:
    if spill_dir is None:
        return Path(tempfile.mkdtemp(prefix="phasekit-spill-"))
    base = Path(os.path.abspath(os.fspath(spill_dir)))
    try:
        make_private_dir(base)
        folder = base / f"phasekit-spill-{secrets.token_hex(6)}"
        folder.mkdir(mode=0o700)
    except OSError as exc:
        raise StorageError(f"cannot create a spill folder in {base}: {exc}") from exc
    return folder


class HybridStore(StoreBase):
    """Memory under ``budget_bytes``, spilling the least recently used items to ``spill_dir``.

    ``spill_dir`` is where a private ``phasekit-spill-*`` folder is made (a temporary
    folder when None); it is removed by :meth:`close`. Sizes are ``phasekit.size_of``.
    Values: Arrow tables and batches, polars and pandas frames, numpy arrays (not of
    object dtype) and JSON-like values. Thread-safe.
    """

    scheme = "memory"
    format_name = "hybrid"

    def __init__(
        self,
        budget_bytes: int,
        spill_dir: Optional[str | os.PathLike[str]] = None,
        *,
        run: str = DEFAULT_RUN,
        phase: str = DEFAULT_PHASE,
        namespace: tuple[str, ...] = (),
        recorder: Optional[ItemRecorder] = None,
        segment_bytes: int = 64 << 20,
        compact_below: float = 0.5,
        encryption: Optional[Encryption] = None,
    ) -> None:
        super().__init__(run=run, phase=phase, namespace=namespace, recorder=recorder)
        budget = _check_budget(budget_bytes)
        if not isinstance(segment_bytes, int) or segment_bytes < 1:
            raise InvalidArgument(f"segment_bytes must be an int >= 1, got {segment_bytes!r}")
        if not 0.0 <= float(compact_below) <= 1.0:
            raise InvalidArgument(f"compact_below must be in 0..1, got {compact_below!r}")
        folder = _private_folder(spill_dir)
        self._core = _Core(SegmentLog(folder, segment_bytes, float(compact_below)))
        # spill segments die with the process: their data keys live in memory only
        self._core.keyring = MemoryKeyring() if encryption is not None else None
        self._ledger = phasekit.SpillLedger(budget, name="/".join(self._names))
        self._chain: tuple[Any, ...] = (self._ledger,)
        self._core.counts[self._prefix] = dict.fromkeys(_COUNTS, 0)

    # ---------------------------------------------------------------- views

    @functools.cached_property
    def _names(self) -> tuple[str, ...]:
        return (self.run, self.phase, *self.namespace)

    @functools.cached_property
    def _prefix(self) -> str:
        return "/".join(self._names)

    def container(self, name: str, budget_bytes: int) -> HybridStore:
        """A view for one container: its items count under a child ledger of ``budget_bytes``
        (and under this store's budget); it shares the spill folder and the LRU order."""
        self._check_open()
        name = check_name("container", name)
        budget = _check_budget(budget_bytes)
        view = object.__new__(HybridStore)
        StoreBase.__init__(
            view,
            run=self.run,
            phase=self.phase,
            namespace=(*self.namespace, name),
            recorder=self.recorder,
        )
        view._lock = self._lock
        view._core = self._core
        view._ledger = self._ledger.child(budget, name=view._prefix)
        view._chain = (view._ledger, *self._chain)
        self._core.counts.setdefault(view._prefix, dict.fromkeys(_COUNTS, 0))
        return view

    @property
    def ledger(self) -> Any:
        """The SpillLedger of this store or view (read its ``used``, ``peak``, ``stats()``)."""
        return self._ledger

    @property
    def spill_dir(self) -> Path:
        """The private folder of the spill segments."""
        return self._core.log.folder

    # ---------------------------------------------------------------- keys

    def _ikey(self, ref: Ref | str) -> str:
        """The internal key (the URI's names joined by '/') of a key or a Ref of this tree."""
        if isinstance(ref, Ref):
            names = ref.names
            if ref.scheme != self.scheme or names[: len(self._names)] != self._names:
                raise InvalidArgument(
                    f"ref {ref.uri!r} does not belong to this store ({self.uri('<key>')})"
                )
            return "/".join(names)
        return f"{self._prefix}/{check_name('key', ref)}"

    def _in_view(self, ikey: str) -> bool:
        return ikey.startswith(self._prefix + "/")

    def _count(self, name: str, n: int = 1) -> None:
        self._core.counts[self._prefix][name] += n

    def _check_open(self) -> None:
        if self._closed or self._core.closed:
            raise StorageError(f"HybridStore {self._prefix} is closed")

    # ---------------------------------------------------------------- put

    def put(self, key: str, data: Any, metadata: Optional[Mapping[str, Any]] = None) -> Ref:
        """Hold ``data`` in memory (spilling older items past the budget); returns its Ref."""
        self._check_open()
        # interned: the ledger hands keys back as new strings when it picks items to
        # spill; the spilled index then keys on this one object, not a second copy
        ikey = sys.intern(self._ikey(key))
        meta = check_metadata(metadata)
        kind = values.kind_of(data)
        check_spillable(data, kind)
        nbytes = int(phasekit.size_of(data))
        ref = self._new_ref(ikey, kind, nbytes, meta)
        with self._lock:
            self._drop(ikey)
            self._hold(ikey, data, ref)
        self._record(ref)
        return ref

    def _hold(self, ikey: str, data: Any, ref: Ref) -> None:
        """Keep a new item in memory and spill past the budgets (lock held)."""
        core = self._core
        core.memory[ikey] = data
        core.refs[ikey] = ref
        core.chains[ikey] = self._chain
        self._ledger.track(ikey, ref.size_bytes)
        self._count("puts")
        self._enforce(self._chain)
        self._maybe_compact()

    def join(
        self,
        key: str,
        parts: Sequence[Ref | str],
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> Ref:
        """One Arrow table item ``key`` made of the items ``parts`` (Arrow tables of this
        store or its views, in order; the first one's schema, the others cast to it),
        which are dropped: what a table written part by part becomes under the budget.
        An item within the budget is the parts' chunks (no copy), held as ``put``
        holds an item. A larger one is written to the spill segments as one Arrow IPC
        stream, a part at a time (a spilled part read back for its turn only), so it is
        on disk from the start and memory holds at most one part for it; ``get`` reads
        it back whole. With encryption on (a sealed item's bytes are sealed whole) the
        parts are always concatenated and held as ``put`` holds an item. Its size is
        the parts' sizes summed (in memory: ``phasekit.size_of`` of the table)."""
        self._check_open()
        ikey = sys.intern(self._ikey(key))
        keys = [self._ikey(p) for p in parts]
        meta = check_metadata(metadata)
        core = self._core
        with self._lock:
            refs = [self._part_ref(k) for k in keys]
            fits = sum(r.size_bytes for r in refs) <= min(led.budget for led in self._chain)
            if fits or core.keyring is not None:
                tables = [self._part_table(k) for k in keys]
                schema = tables[0].schema if tables else pa.schema([])
                # the parts' chunks, not copied
                table = pa.concat_tables([t.cast(schema) for t in tables])
                ref = self._joined_in_memory(ikey, keys, table, meta)
            else:
                ref = self._joined_on_disk(ikey, keys, refs, meta)
        for old in refs:
            self._forget(old)
        self._record(ref)
        return ref

    def _part_ref(self, ikey: str) -> Ref:
        ref = self._core.refs.get(ikey)
        if ref is None or ikey in self._core.corrupt:
            raise self._missing(ikey.rsplit("/", 1)[1])
        if ref.kind != values.TABLE:
            raise InvalidArgument(
                f"join: item {ikey!r} is a {ref.kind}; only pyarrow.Table items can be joined"
            )
        return self._unfold(ikey, ref)

    def _part_table(self, ikey: str) -> pa.Table:
        """A part's table (lock held): from memory, or read from its extent (not kept)."""
        core = self._core
        if ikey in core.memory:
            return core.memory[ikey]
        return load(core.log, ikey, core.spilled[ikey], core.keyring)

    def _new_ref(self, ikey: str, kind: str, nbytes: int, meta: Mapping[str, Any]) -> Ref:
        name = ikey.rsplit("/", 1)[1]
        return Ref(
            uri=self.uri(name),
            key=name,
            kind=kind,
            format=self.format_name,
            size_bytes=nbytes,
            metadata=meta,
        )

    def _joined_on_disk(
        self, ikey: str, keys: list[str], refs: list[Ref], meta: Mapping[str, Any]
    ) -> Ref:
        core = self._core
        tables = (self._part_table(k) for k in keys)
        entry = spill_tables(core.log, ikey, tables, values.TABLE)
        self._drop(ikey)
        for k in keys:
            self._drop(k)
        ref = self._new_ref(ikey, values.TABLE, sum(r.size_bytes for r in refs), meta)
        core.spilled[ikey] = entry
        core.refs[ikey] = _fold(ref)
        core.chains[ikey] = self._chain
        self._count("puts")
        self._count("spills")
        self._count("spilled_bytes", entry.extent.length)
        self._maybe_compact()
        return ref

    def _joined_in_memory(
        self, ikey: str, keys: list[str], table: pa.Table, meta: Mapping[str, Any]
    ) -> Ref:
        self._drop(ikey)
        for k in keys:
            self._drop(k)
        ref = self._new_ref(ikey, values.TABLE, int(phasekit.size_of(table)), meta)
        self._hold(ikey, table, ref)
        return ref

    def _drop(self, ikey: str) -> bool:
        """Forget an item wherever it is (lock held); False when absent."""
        core = self._core
        if ikey in core.memory:
            del core.memory[ikey]
            core.chains.pop(ikey)[0].forget(ikey)
        elif ikey in core.spilled:
            entry = core.spilled.pop(ikey)
            core.log.release(ikey, entry.extent)
            core.chains.pop(ikey, None)
            if core.keyring is not None:
                core.keyring.shred(ikey)
        elif ikey in core.corrupt:
            del core.corrupt[ikey]
            core.chains.pop(ikey, None)
        else:
            return False
        core.refs.pop(ikey, None)
        return True

    def _enforce(self, chain: tuple[Any, ...]) -> None:
        """Spill least recently used items until every ledger of ``chain`` is within budget."""
        for ledger in chain:
            while ledger.over_budget():
                candidates = ledger.spill_candidates()
                if not candidates:
                    break
                for ikey in candidates:
                    if not self._spill_one(sys.intern(ikey)):
                        return  # keep what failed in memory; try again at the next put

    def _spill_one(self, ikey: str) -> bool:
        core = self._core
        value = core.memory[ikey]
        kind = core.refs[ikey].kind
        owner = core.chains[ikey][0]
        view_counts = core.counts[ikey.rsplit("/", 1)[0]]
        try:
            entry = spill(core.log, ikey, value, kind, core.keyring)
        except OSError as exc:
            view_counts["spill_failures"] += 1
            reason = "the disk is full" if is_disk_full(exc) else str(exc)
            log.warning(
                "cannot spill %s to %s (%s); it stays in memory (%d bytes over budget)",
                ikey,
                core.log.folder,
                reason,
                owner.used - owner.budget,
            )
            return False
        del core.memory[ikey]
        del value
        core.spilled[ikey] = entry
        core.refs[ikey] = _fold(core.refs[ikey])
        core.trimmer.freed(owner.forget(ikey))
        view_counts["spills"] += 1
        view_counts["spilled_bytes"] += entry.extent.length
        return True

    def _maybe_compact(self) -> None:
        core = self._core
        if not core.log.needs_compaction():
            return

        def moved(ikey: str, extent: Extent) -> None:
            core.spilled[ikey] = dataclasses.replace(core.spilled[ikey], extent=extent)

        try:
            core.log.compact(moved, self._lost)
        except OSError as exc:
            core.compaction_failures += 1
            log.warning("compacting spill segments in %s failed: %s", core.log.folder, exc)

    def _lost(self, ikey: str, exc: CorruptDataError) -> None:
        """A spilled item whose bytes fail their checksum: only it is lost (lock held)."""
        self._core.spilled.pop(ikey, None)
        self._core.corrupt[ikey] = str(exc)

    # ---------------------------------------------------------------- get

    def get(self, ref: Ref | str) -> Any:
        """The value, from memory or reloaded from its spill segment (then held in memory)."""
        self._check_open()
        ikey = self._ikey(ref)
        core = self._core
        with self._lock:
            self._count("gets")
            if ikey in core.memory:
                core.chains[ikey][0].touch(ikey)
                self._count("hits")
                return core.memory[ikey]
            entry = core.spilled.get(ikey)
            if entry is None:
                if ikey in core.corrupt:
                    raise CorruptDataError(core.corrupt[ikey])
                self._count("misses")
                raise self._missing(ikey.rsplit("/", 1)[1])
            return self._reload(ikey, entry)

    def _reload(self, ikey: str, entry: Spilled) -> Any:
        core = self._core
        try:
            value = load(core.log, ikey, entry, core.keyring)
        except CorruptDataError as exc:
            core.log.release(ikey, entry.extent)
            self._lost(ikey, exc)
            raise
        self._count("reloads")
        self._count("reloaded_bytes", entry.extent.length)
        chain = core.chains[ikey]
        nbytes = int(phasekit.size_of(value))
        if any(nbytes > ledger.budget for ledger in chain):
            return value  # larger than its budget on its own: it stays on disk
        core.log.release(ikey, entry.extent)
        del core.spilled[ikey]
        if core.keyring is not None:
            core.keyring.shred(ikey)
        core.memory[ikey] = value
        chain[0].track(ikey, nbytes)
        self._enforce(chain)
        self._maybe_compact()
        return value

    # ---------------------------------------------------------------- list, delete

    def ref(self, key: str) -> Ref:
        ikey = self._ikey(key)
        with self._lock:
            ref = self._core.refs.get(ikey)
        if ref is None:
            raise self._missing(key)
        return self._unfold(ikey, ref)

    def _unfold(self, ikey: str, ref: Ref | _Folded) -> Ref:
        """The Ref of ``ikey`` (rebuilt when folded: equal to the one ``put`` returned)."""
        if isinstance(ref, Ref):
            return ref
        names = ikey.split("/")
        return Ref(
            uri=named_uri(self.scheme, names),
            key=names[-1],
            kind=ref.kind,
            format=self.format_name,
            size_bytes=ref.size_bytes,
            metadata=ref.metadata,
            created_at=ref.created_at,
        )

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._ikey(key) in self._core.refs

    def list(self) -> list[Ref]:
        """Refs of the items of this store or view (and its containers), oldest put first."""
        with self._lock:
            return [self._unfold(k, r) for k, r in self._core.refs.items() if self._in_view(k)]

    def delete(self, ref: Ref | str) -> None:
        """Drop the item from memory or disk; ``UnknownKey`` if absent."""
        self._check_open()
        ikey = self._ikey(ref)
        with self._lock:
            folded = self._core.refs.get(ikey)
            if folded is None or not self._drop(ikey):
                raise self._missing(ikey.rsplit("/", 1)[1])
            old = self._unfold(ikey, folded)
            self._count("deletes")
            self._maybe_compact()
        self._forget(old)

    # ---------------------------------------------------------------- stats, close

    def stats(self) -> dict[str, Any]:
        """Memory and disk use of this store or view, and its counters (with its containers')."""
        core = self._core
        with self._lock:
            counts = dict.fromkeys(_COUNTS, 0)
            for prefix, own in core.counts.items():
                if prefix == self._prefix or prefix.startswith(self._prefix + "/"):
                    for name, n in own.items():
                        counts[name] += n
            on_disk = [e for k, e in core.spilled.items() if self._in_view(k)]
            in_memory = sum(1 for k in core.memory if self._in_view(k))
            result: dict[str, Any] = {
                "store": "hybrid",
                "name": self._prefix,
                "budget_bytes": self._ledger.budget,
                "items": in_memory
                + len(on_disk)
                + sum(1 for k in core.corrupt if self._in_view(k)),
                "items_in_memory": in_memory,
                "items_on_disk": len(on_disk),
                "bytes_in_memory": self._ledger.used,
                "peak_bytes_in_memory": self._ledger.peak,
                "bytes_on_disk": sum(e.extent.length for e in on_disk),
                **counts,
                "compaction_failures": core.compaction_failures,
                "memory_trims": core.trimmer.trims,
                "corrupt_items": sorted(k for k in core.corrupt if self._in_view(k)),
                "spill_dir": str(core.log.folder),
            }
            log_stats = core.log.stats()
            result.update({k: v for k, v in log_stats.items() if k != "bytes_on_disk"})
            return result

    def close(self) -> None:
        """Drop this view's items (the whole store's, and its spill folder, for the store)."""
        core = self._core
        with self._lock:
            if self._closed:
                return
            for ikey in [k for k in core.refs if self._in_view(k)]:
                self._drop(ikey)
            if len(self._chain) == 1:
                core.closed = True
                core.log.close()
        super().close()


__all__ = ["HybridStore"]
