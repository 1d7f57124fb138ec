"""Sequences: how a phase is cut into execution windows over the bars.

* ``single_pass``: one window over all bars.
* ``train_test``: a train window and a test window, split by ``data_split`` (a fraction
  of the bars, or a date).
* ``walk_forward``: ``train`` and ``test`` lengths in bars, moved by ``step`` (default
  ``test``); ``rolling`` (fixed train length) or ``expanding`` (train from the start).
* ``monte_carlo``: ``n`` simulations in ``batch`` sized groups, seeded; a window per batch.

Windows are positions into the bars, half open ``[start, stop)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from phasekit.errors import ConfigError
from phasekit.registry import (
    DEFAULT_BATCH,
    DEFAULT_DATA_SPLIT,
    DEFAULT_SIMULATIONS,
    DEFAULT_WALK_FORWARD_MODE,
    SEQUENCES,
    WALK_FORWARD_MODES,
)


def default_lengths(n_bars: int) -> dict[str, int]:
    """Walk-forward train and test lengths when the configuration sets none: half the
    bars to train, a tenth to test."""
    return {"train": max(2, n_bars // 2), "test": max(1, n_bars // 10)}


@dataclass(frozen=True)
class Span:
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Window:
    """One execution window. ``role`` is ``full``, ``train``, ``test`` or ``simulation``."""

    window_id: str
    role: str
    span: Span
    train: Span | None = None
    test: Span | None = None
    simulations: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _split_index(n_bars: int, split: Any, index_of: Any) -> int:
    if isinstance(split, (int, float)) and not isinstance(split, bool):
        if not 0 < float(split) < 1:
            raise ConfigError(f"data_split: {split} must be a fraction between 0 and 1 or a date")
        idx = round(n_bars * float(split))
    else:
        idx = int(index_of(split))
    if not 1 < idx < n_bars - 1:
        raise ConfigError(
            f"data_split: {split!r} falls outside the data ({n_bars} bars); both the train "
            "and the test part need at least two bars"
        )
    return idx


def train_test_spans(n_bars: int, split: Any, index_of: Any = None) -> tuple[Span, Span]:
    idx = _split_index(n_bars, split, index_of)
    return Span(0, idx), Span(idx, n_bars)


def walk_forward_windows(
    n_bars: int,
    train: int,
    test: int,
    step: int | None = None,
    mode: str = DEFAULT_WALK_FORWARD_MODE,
) -> list[Window]:
    if mode not in WALK_FORWARD_MODES:
        raise ConfigError(
            f"walk_forward.mode: {mode!r} is not allowed; use {' or '.join(WALK_FORWARD_MODES)}"
        )
    step = int(step or test)
    if train < 2 or test < 1 or step < 1:
        raise ConfigError(f"walk_forward: train={train}, test={test}, step={step} must be positive")
    if train + test > n_bars:
        raise ConfigError(
            f"walk_forward: train ({train}) + test ({test}) bars exceed the data ({n_bars} bars)"
        )
    windows, i, start = [], 0, 0
    while start + train + test <= n_bars:
        tr = Span(0 if mode == "expanding" else start, start + train)
        te = Span(start + train, start + train + test)
        windows.append(Window(f"w{i:04d}", "walk_forward", Span(tr.start, te.stop), tr, te))
        i += 1
        start += step
    return windows


def monte_carlo_windows(n_bars: int, n: int, batch: int) -> list[Window]:
    if n < 1 or batch < 1:
        raise ConfigError(f"monte_carlo: n={n} and batch={batch} must be at least 1")
    return [
        Window(
            f"mc{b:04d}",
            "simulation",
            Span(0, n_bars),
            simulations=tuple(range(b * batch, min((b + 1) * batch, n))),
        )
        for b in range((n + batch - 1) // batch)
    ]


def windows_for(
    sequence: str, n_bars: int, settings: dict[str, Any], index_of: Any = None
) -> list[Window]:
    """The execution windows of ``sequence`` over ``n_bars`` bars."""
    if sequence == "single_pass":
        return [Window("full", "full", Span(0, n_bars))]
    if sequence == "train_test":
        tr, te = train_test_spans(n_bars, settings.get("data_split", DEFAULT_DATA_SPLIT), index_of)
        return [Window("train", "train", tr, tr, te), Window("test", "test", te, tr, te)]
    if sequence == "walk_forward":
        wf = settings.get("walk_forward") or settings
        return walk_forward_windows(
            n_bars,
            int(wf.get("train", wf.get("train_bars", 0))),
            int(wf.get("test", wf.get("test_bars", 0))),
            wf.get("step"),
            str(wf.get("mode", DEFAULT_WALK_FORWARD_MODE)),
        )
    if sequence == "monte_carlo":
        mc = settings.get("monte_carlo") or settings
        n, batch = mc.get("n", DEFAULT_SIMULATIONS), mc.get("batch", DEFAULT_BATCH)
        return monte_carlo_windows(n_bars, int(n), int(batch))
    raise ConfigError(f"sequence: {sequence!r} is not allowed; use one of {', '.join(SEQUENCES)}")
