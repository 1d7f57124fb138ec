"""The pure-Python backend: the same primitives as ``phasekit._core``, same behaviour.

It is the reference implementation; ``phasekit._core`` is the drop-in fast one.
"""

from __future__ import annotations

from phasekit._pure.aead import AeadChunks
from phasekit._pure.backtest import (
    backtest,
    backtest_block,
    backtest_block_signals,
    sma_crossover_signals,
)
from phasekit._pure.channel import Channel
from phasekit._pure.checksum import crc32, file_checksum
from phasekit._pure.ipc import COMPRESSIONS, TMP_SUFFIX, IpcWriter
from phasekit._pure.ledger import SpillLedger
from phasekit._pure.ring import (
    EVENT_BYTES,
    EVENT_FIELDS,
    FLAT_TOLERANCE,
    POLICIES,
    POSITION_FIELDS,
    REALIZED_FIELDS,
    TRADE_BYTES,
    TRADE_FIELDS,
    EventRing,
)
from phasekit._pure.sizeof import size_of

__all__ = [
    "COMPRESSIONS",
    "EVENT_BYTES",
    "EVENT_FIELDS",
    "FLAT_TOLERANCE",
    "POLICIES",
    "POSITION_FIELDS",
    "REALIZED_FIELDS",
    "TMP_SUFFIX",
    "TRADE_BYTES",
    "TRADE_FIELDS",
    "AeadChunks",
    "Channel",
    "EventRing",
    "IpcWriter",
    "SpillLedger",
    "backtest",
    "backtest_block",
    "backtest_block_signals",
    "crc32",
    "file_checksum",
    "size_of",
    "sma_crossover_signals",
]
