"""Type stub of the Rust extension ``phasekit._core``.

The pure-Python backend ``phasekit._pure`` has the same names, signatures,
results, errors and iteration order; the specification of each primitive is
here and in ``docs/primitives.md``.
"""

from collections.abc import Iterator
from typing import Any, Optional, Union

from typing_extensions import Self, final

__version__: str
"""The package version (Cargo.toml's); the Python layer refuses a core of another version."""
BUILD_PROFILE: str
"""``release`` or ``debug`` (debug assertions on)."""
BUILD_FEATURES: tuple[str, ...]
"""The Cargo features compiled in (``python`` for every extension build)."""
BUILD_TARGET: str
"""The target triple, e.g. ``x86_64-unknown-linux-gnu``."""
BUILD_RUSTC: str
"""``rustc --version`` of the compiler that built it."""
__all__: list[str]

@final
class ArrowBatch:
    """A record batch held by Rust; consumers import it through the PyCapsule protocol."""

    def __arrow_c_array__(
        self, requested_schema: Optional[object] = None
    ) -> tuple[object, object]: ...
    def __arrow_c_stream__(self, requested_schema: Optional[object] = None) -> object: ...
    def __arrow_c_schema__(self) -> object: ...
    def __len__(self) -> int: ...

# ---------------------------------------------------------------- EventRing

EVENT_FIELDS: tuple[str, ...]
"""Column names of an exported event batch, in order: ts, kind, key, symbol, price, quantity, value."""
EVENT_BYTES: int
"""Bytes of one retained event (46: int64 ts, uint16 kind, int64 key, int32 symbol, 3 x float64)."""
TRADE_FIELDS: tuple[str, ...]
"""Columns of a closed-trade summary: key, symbol, open_ts, close_ts, entry_price, exit_price, quantity, pnl, n_events."""
TRADE_BYTES: int
"""Bytes of one closed-trade summary (68)."""
POLICIES: tuple[str, ...]
"""Retention policies: sliding_window, trade_complete, minimal, keep_all."""
POSITION_FIELDS: tuple[str, ...]
"""Keys of a ``positions()`` row: symbol, quantity, avg_price, open_ts, n_events."""
REALIZED_FIELDS: tuple[str, ...]
"""Keys of ``realized()``: trades, winning, losing, pnl, gross_profit, gross_loss."""
FLAT_TOLERANCE: float
"""A closing fill within this fraction of the lot's size makes it flat (1e-9)."""

@final
class EventRing:
    """Columnar retention of traced events under a policy.

    * ``sliding_window``: the last ``capacity`` events.
    * ``trade_complete``: events with ``key >= 0`` belong to position ``key``; on its
      POSITION_CLOSE every retained event of the position is dropped and a one-row
      closed-trade summary is kept (see :meth:`trades`). Events with ``key < 0``
      are not retained.
    * ``minimal``: like ``trade_complete`` without summaries: only events of open positions.
    * ``keep_all``: every event up to ``max_events``; past it the oldest are dropped
      and counted as evicted.

    Every policy keeps a position book from FILL events (docs/primitives.md): a lot
    per symbol, one trade per closing fill; under ``trade_complete``/``minimal`` a
    lot's events are dropped once it is flat.

    Retained events keep arrival order.
    """

    def __new__(
        cls,
        policy: str = "sliding_window",
        capacity: int = 1000,
        max_events: int = 1_000_000,
        keep_trades: Optional[bool] = None,
    ) -> Self: ...
    @property
    def keep_trades(self) -> bool: ...
    def positions(self) -> list[dict[str, Union[int, float]]]:
        """The book's open lots by symbol (keys: POSITION_FIELDS)."""
    def realized(self) -> dict[str, Union[int, float]]:
        """Counters of every closed trade (keys: REALIZED_FIELDS)."""
    @property
    def policy(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def max_events(self) -> int: ...
    def append(
        self,
        ts: int,
        kind: int,
        key: int = -1,
        symbol: int = 0,
        price: float = 0.0,
        quantity: float = 0.0,
        value: float = 0.0,
    ) -> None: ...
    def extend(self, batch: Any) -> int:
        """Append many events: an Arrow record batch or table (PyCapsule producer) or a
        mapping of column name to numpy array / sequence. ``ts`` and ``kind`` are required;
        the other columns default as in :meth:`append`. Returns the number of events read."""
    def __len__(self) -> int: ...
    def clear(self) -> None: ...
    def stats(self) -> dict[str, int]:
        """Keys: seen, retained, evicted, retained_bytes, open_positions, trades."""
    def to_arrow(self) -> Any:
        """The retained events as a ``pyarrow.RecordBatch`` (schema of EVENT_FIELDS)."""
    def trades(self, start: int = 0) -> Any:
        """Closed-trade summaries from row ``start`` on (kept when ``keep_trades``; by
        default under ``trade_complete`` only) as a ``pyarrow.RecordBatch``."""
    def __arrow_c_schema__(self) -> object: ...
    def __arrow_c_array__(
        self, requested_schema: Optional[object] = None
    ) -> tuple[object, object]: ...
    def __arrow_c_stream__(self, requested_schema: Optional[object] = None) -> object: ...

# ---------------------------------------------------------------- Channel

@final
class Channel:
    """Bounded multi-producer multi-consumer channel of Python objects.

    ``send`` blocks while full (backpressure), ``recv`` while empty; both release the
    GIL while blocked and are interruptible by Ctrl-C. After ``close()`` sends raise
    ``ChannelClosed``; receivers drain what is left, then ``recv`` raises
    ``ChannelClosed`` and iteration stops. Timeouts raise ``phasekit.errors.Timeout``
    (a ``TimeoutError``).
    """

    def __new__(cls, capacity: int = ...) -> Self: ...  # 1024
    @property
    def capacity(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def send(self, item: Any, timeout: Optional[float] = None) -> None: ...
    def recv(self, timeout: Optional[float] = None) -> Any: ...
    def try_send(self, item: Any) -> None:
        """Raises ``ChannelFull`` when at capacity, ``ChannelClosed`` when closed."""
    def try_recv(self) -> Any:
        """Raises ``ChannelEmpty`` when open and empty, ``ChannelClosed`` when closed and drained."""
    def send_many(self, items: Any, timeout: Optional[float] = None) -> int:
        """Send every item of an iterable in order, blocking as ``send`` does; returns the count.

        ``timeout`` bounds the whole call; on ``Timeout`` or ``ChannelClosed`` the items
        before the failing one were sent."""
    def recv_many(self, max_items: int, timeout: Optional[float] = None) -> list[Any]:
        """Block until at least one item is available, then return up to ``max_items``
        without further blocking. Raises ``ChannelClosed`` when closed and drained."""
    def close(self) -> None:
        """Idempotent. Wakes every blocked sender (they raise ``ChannelClosed``) and receiver."""
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __next__(self) -> Any: ...
    def stats(self) -> dict[str, Any]:
        """Keys: depth, capacity, high_water, sent, received, blocked_send_seconds, closed."""

def _bench_rust_channel(n_messages: int, capacity: int, batch: int = 1) -> float:
    """Seconds for one Rust thread to send ``n_messages`` integers to another, one by one
    or in runs of ``batch`` (benchmarks)."""

# ---------------------------------------------------------------- SpillLedger

def size_of(value: Any) -> int:
    """Estimated bytes held by ``value`` (the rules are in docs/primitives.md)."""

@final
class SpillLedger:
    """Byte accounting in least-recently-used order, with per-child budgets under a parent.

    Keys are ``str`` and unique within a tree of ledgers (a root and its children).
    A ledger's ``used`` includes the usage of its descendants.
    """

    def __new__(
        cls, budget_bytes: int, parent: Optional[SpillLedger] = None, name: str = ""
    ) -> Self: ...
    @property
    def budget(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def used(self) -> int: ...
    @property
    def peak(self) -> int: ...
    def track(self, key: str, nbytes: int) -> None:
        """Record (or re-size) ``key`` in this ledger and mark it most recently used."""
    def touch(self, key: str) -> None:
        """Mark ``key`` most recently used; ``UnknownKey`` if not in this ledger's tree."""
    def forget(self, key: str) -> int:
        """Stop tracking ``key`` (anywhere in this ledger's subtree); returns its bytes.
        ``UnknownKey`` if not there."""
    def over_budget(self) -> bool: ...
    def spill_candidates(self) -> list[str]:
        """Least recently used keys of this ledger's subtree, oldest first, whose release
        brings ``used`` to at most ``budget``; empty when within budget."""
    def child(self, budget_bytes: int, name: str = "") -> SpillLedger: ...
    def nbytes(self, key: str) -> int: ...
    def keys(self) -> list[str]:
        """Keys of this ledger's subtree, least recently used first."""
    def __contains__(self, key: object, /) -> bool: ...
    def __len__(self) -> int: ...
    def stats(self) -> dict[str, Any]:
        """Keys: name, budget, used, peak, items, over_budget."""

# ---------------------------------------------------------------- IpcWriter

COMPRESSIONS: tuple[Optional[str], ...]
TMP_SUFFIX: str
"""Suffix of in-progress files: ``.<final name>.<random>`` + TMP_SUFFIX in the final folder."""

@final
class IpcWriter:
    """Writes Arrow record batches to an Arrow IPC file (or stream) on a background thread.

    ``write`` returns once the batch is queued on a bounded queue. ``close`` drains the
    queue, fsyncs, renames the temporary file to ``path``, fsyncs the folder and returns
    ``{"path", "size_bytes", "checksum", "rows", "batches"}`` where checksum is
    ``"crc32:<8 hex digits>"`` of the whole file. An error in the background thread is
    raised (``WriterError``) at the next ``write`` or at ``close``. A writer dropped or
    aborted without ``close`` leaves no file at ``path``.
    """

    def __new__(
        cls,
        path: Any,
        schema: Optional[Any] = None,
        compression: Optional[str] = None,
        format: str = "file",
        queue_size: int = 8,
        overwrite: bool = True,
    ) -> Self: ...
    @property
    def path(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def rows_written(self) -> int: ...
    def write(self, batch: Any) -> None: ...
    def close(self) -> dict[str, Any]: ...
    def abort(self) -> None: ...
    def __enter__(self) -> IpcWriter: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None: ...

def crc32(data: Any, value: int = 0) -> int:
    """zlib's CRC-32 of a bytes-like object, continuing from ``value`` (GIL released
    for large buffers)."""

def file_checksum(path: Any) -> str:
    """``"crc32:<8 hex digits>"`` of a file's bytes (what IpcWriter.close reports)."""

# ---------------------------------------------------------------- encrypted chunks

@final
class AeadChunks:
    """AES-GCM over the chunks of one encrypted file: chunk ``i`` under the nonce
    ``nonce_prefix || i`` (4 bytes) with the associated data ``ad_prefix || i (8 bytes)
    || final flag``; ``key`` has 16 or 32 bytes. ``seal`` and ``open`` release the GIL
    and spread the chunks of a run over threads."""

    def __new__(
        cls, key: bytes, nonce_prefix: bytes, ad_prefix: bytes, chunk_bytes: int
    ) -> Self: ...
    def seal(self, first: int, last: bool, plain: Any, out: Any) -> int:
        """Seal ``plain`` as chunks ``first, first + 1, ...`` (the last one final when
        ``last``) into the writable ``out`` (exactly the sealed size); returns the
        number of chunks."""

    def open(self, first: int, last: bool, body: Any, out: Any) -> int | None:
        """Open the encrypted chunks ``first, first + 1, ...`` in ``body`` into the
        writable ``out`` (exactly the plaintext size): None when every chunk is
        authentic, else the index of the first that is not (``out`` is then zeroed)."""

# ---------------------------------------------------------------- backtest kernel

def sma_crossover_signals(bars: Any, fast: int, slow: int, long_short: bool = False) -> Any:
    """The int8 targets (-1, 0, 1) of an SMA crossover over the float64 ``close`` column of
    ``bars`` (an Arrow record batch or table), as a ``pyarrow.RecordBatch`` with one column
    ``target``. A cross needs the fast SMA strictly below the slow one on the previous bar
    and strictly above on this one; ``1 <= fast < slow`` or ``ConfigError``."""

def backtest(
    bars: Any,
    start: int = 0,
    stop: Optional[int] = None,
    *,
    sma: Optional[tuple[int, int, bool]] = None,
    initial_capital: float = 100000.0,
    fraction: float = 1.0,
    whole_units: bool = False,
    commission_bps: float = 0.0,
    slippage_bps: float = 0.0,
    symbol: int = 0,
    curves: bool = True,
) -> dict[str, Any]:
    """The reference backtest of one parameter set.

    ``bars``: an Arrow record batch or table with ``ts`` (int64 or timestamp[ns]), float64
    ``open`` and ``close``, and int8 ``target`` when ``sma`` is None. Signals are computed
    over ``bars[:stop]`` (an SMA crossover ``(fast, slow, long_short)`` or ``target``);
    positions are taken inside ``[start, stop)``: a target decided on the close of bar ``t``
    fills at the open of bar ``t + 1``. Returns ``bars`` (equity, position per bar; None
    unless ``curves``),
    ``trades`` (entry_ts, exit_ts, entry_price, exit_price, direction, quantity, pnl,
    return, bars_held), ``fills`` (bar, quantity, price, commission) and ``events`` (the
    event columns of FILL, POSITION_OPEN, POSITION_CLOSE) as ``pyarrow.RecordBatch``, and
    ``summary``, the ``equity_summary`` dict that ``StreamingMetrics.fold`` takes.
    ``ConfigError`` for bad settings or targets; ``InvalidArgument`` for bad columns or a
    window outside the bars."""

def backtest_block(
    bars: Any,
    kind: str,
    params: Any,
    start: int = 0,
    stop: Optional[int] = None,
    *,
    traced: Optional[list[bool]] = None,
    initial_capital: float = 100000.0,
    fraction: float = 1.0,
    whole_units: bool = False,
    commission_bps: float = 0.0,
    slippage_bps: float = 0.0,
    periods_per_year: float = 252.0,
    threads: Optional[int] = None,
) -> dict[str, Any]:
    """A block of parameter sets of one built-in strategy over one window, in one call
    with the GIL released.

    ``kind``: ``sma_crossover`` (``params`` columns int64 ``fast``, ``slow``),
    ``momentum`` (int64 ``lookback``, float64 ``threshold``) or ``mean_reversion``
    (int64 ``window``, float64 ``entry_z``, ``exit_z``); every kind also reads int8
    ``long_short`` (0: long_only, 1: long_short). A row of ``params`` is a set. Signals
    are computed over ``bars[:stop]``, positions inside ``[start, stop)`` as ``backtest``
    does; each distinct indicator is computed once for the block. ``traced[i]`` keeps set
    ``i``'s equity curve. ``threads`` (default: the machine's cores) run groups of sets.
    Returns ``results`` (``set``, ``bars`` and the metrics of ``StreamingMetrics``;
    ``profit_factor`` null where no trade lost), ``trades`` (``set`` and the trade
    columns of ``backtest``), ``curves`` (``set``, ``bar``, ``equity``, ``position``) as
    ``pyarrow.RecordBatch``, ``indicators`` (distinct indicators computed) and
    ``threads`` (threads that ran sets). A set that cannot run fails the block with a
    ``ConfigError`` whose ``set_index`` names it."""

def backtest_block_signals(
    bars: Any,
    signals: Any,
    sets: int,
    start: int = 0,
    stop: Optional[int] = None,
    *,
    traced: Optional[list[bool]] = None,
    initial_capital: float = 100000.0,
    fraction: float = 1.0,
    whole_units: bool = False,
    commission_bps: float = 0.0,
    slippage_bps: float = 0.0,
    periods_per_year: float = 252.0,
    threads: Optional[int] = None,
) -> dict[str, Any]:
    """A block of ``sets`` sets whose targets are given, in one call with the GIL
    released: the int8 column ``target`` of ``signals`` holds one row of ``stop``
    targets (-1, 0 or 1, decided on the closes of ``bars[:stop]``) per set, set after
    set. Fills, costs, positions, equity and metrics over ``bars[start:stop]`` are those
    of ``backtest_block`` for the same targets; returns what it returns (``indicators``
    0). Targets that are not ``sets`` rows of ``stop`` raise ``InvalidArgument``; a row
    with a value other than -1, 0, 1 fails the block with a ``ConfigError`` whose
    ``set_index`` names the set."""
