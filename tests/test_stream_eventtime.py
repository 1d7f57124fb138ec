"""Event time that does not depend on batching: bars and windows are the same whatever the
batch sizes, channel capacities and partitions, equal polars ``group_by_dynamic`` for input
in order or out of order within ``max_delay``; calendar intervals in a time zone. Tests that
run a Dag run on both Channel backends (``backend_name``)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _stream_support import polars_ohlc_aggs
from phasekit.errors import InvalidArgument
from phasekit.stream import Dag, Out
from phasekit.stream import operators as ops
from phasekit.stream.connectors import collect
from phasekit.stream.ohlc import ohlc_resample

S = 1_000_000_000
T0 = 1_700_000_000 * S
BAR_COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume", "trades"]


def _ticks(n: int, seed: int, span_s: int, symbols: str = "AB") -> list[dict[str, Any]]:
    """n ticks with unique timestamps over span_s seconds, in timestamp order."""
    rng = random.Random(seed)
    times = sorted(rng.sample(range(span_s * 1000), n))
    return [
        {"ts": T0 + t * 1_000_000, "symbol": rng.choice(symbols), "price": 100.0 + i % 17,
         "volume": float(1 + i % 5)}
        for i, t in enumerate(times)
    ]  # fmt: skip


def _disorder(ticks: list[dict[str, Any]], within_ns: int, seed: int) -> list[dict[str, Any]]:
    """Reorder ticks so that none arrives more than ``within_ns`` after a later timestamp:
    sort by timestamp plus a random delay below ``within_ns``."""
    rng = random.Random(seed)
    return sorted(ticks, key=lambda t: t["ts"] + rng.randrange(within_ns))


def _feed(op: Any, ticks: list[Any], cuts: list[int]) -> tuple[list[Any], list[Any]]:
    """Feed ``ticks`` to an operator in batches of the given sizes (cycled); (bars, late)."""
    outs: list[Any] = []
    i = k = 0
    while i < len(ticks):
        size = cuts[k % len(cuts)]
        outs += op.process_batch(ticks[i : i + size])
        i, k = i + size, k + 1
    outs += op.close()
    return [o for o in outs if type(o) is not Out], [o.value for o in outs if type(o) is Out]


def _dag_bars(
    ticks: list[Any], op: Any, *, batch_size: int, capacity: int, parallelism: int = 1
) -> tuple[list[Any], list[Any]]:
    dag = Dag("bars", batch_size=batch_size, capacity=capacity)
    dag.add_source("ticks", ticks, chunk=max(1, batch_size // 2))
    key = "symbol" if parallelism > 1 else None
    dag.add_node("bars", op, parallelism=parallelism, key=key)
    dag.add_sink("out", collect())
    dag.add_sink("late", collect())
    dag.chain("ticks", "bars", "out")
    dag.connect("bars", "late", port="late")
    result = dag.run()
    return result.results["out"], result.results["late"]


def _frame(bars: list[dict[str, Any]], tz: str = "UTC") -> pl.DataFrame:
    df = pl.DataFrame(bars).select(BAR_COLUMNS)
    df = df.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")).dt.convert_time_zone(tz))
    return df.sort("symbol", "ts")


def _polars(ticks: list[dict[str, Any]], every: str, tz: str = "UTC") -> pl.DataFrame:
    df = pl.DataFrame(ticks).with_columns(
        pl.col("ts").cast(pl.Datetime("ns", "UTC")).dt.convert_time_zone(tz)
    )
    df = df.sort("symbol", "ts", maintain_order=True)
    ref = df.group_by_dynamic("ts", every=every, group_by="symbol").agg(*polars_ohlc_aggs())
    return ref.select(BAR_COLUMNS).sort("symbol", "ts")


def _key(bar: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(bar[c] for c in BAR_COLUMNS)


# ------------------------------------------------------------------ the reproduced defects


def test_a_slightly_late_tick_is_late_whether_fed_as_one_list_or_one_by_one() -> None:
    ticks = [
        {"ts": 0, "price": 1.0, "volume": 1.0},
        {"ts": 61 * S, "price": 2.0, "volume": 1.0},
        {"ts": 59 * S, "price": 3.0, "volume": 1.0},  # its bar [0, 60 s) has ended
        {"ts": 62 * S, "price": 4.0, "volume": 1.0},
    ]
    whole = _feed(ohlc_resample("1m"), ticks, [len(ticks)])
    single = _feed(ohlc_resample("1m"), ticks, [1])
    assert whole == single
    bars, late = whole
    assert late == [ticks[2]]
    assert [(b["ts"], b["trades"]) for b in bars] == [(0, 1), (60 * S, 2)]


@pytest.mark.usefixtures("backend_name")
def test_shuffled_ticks_give_the_same_bars_for_every_batch_size() -> None:
    ticks = _ticks(10_000, seed=11, span_s=86_400)
    random.Random(3).shuffle(ticks)
    results = {
        bs: _dag_bars(ticks, ohlc_resample("1m", by="symbol"), batch_size=bs, capacity=64)
        for bs in (1, 7, 256)
    }
    assert results[1] == results[7] == results[256]
    bars, late = results[1]
    assert bars and late  # max_delay 0 and shuffled: many ticks are late
    assert sum(b["trades"] for b in bars) + len(late) == 10_000


@pytest.mark.usefixtures("backend_name")
def test_shuffled_ticks_within_max_delay_equal_polars() -> None:
    ticks = _ticks(10_000, seed=12, span_s=86_400)
    shuffled = ticks[:]
    random.Random(4).shuffle(shuffled)
    for bs in (1, 256):
        bars, late = _dag_bars(
            shuffled, ohlc_resample("1m", by="symbol", max_delay="2d"), batch_size=bs, capacity=64
        )
        assert late == []
        mine = _frame(bars)
        ref = _polars(ticks, "1m")
        assert mine.height == ref.height
        assert mine.equals(ref)


# ------------------------------------------------------------------ properties


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 300),
    seed=st.integers(0, 10_000),
    delay_s=st.sampled_from([0, 5, 30]),
    disorder_s=st.sampled_from([1, 5, 30, 120]),
    lateness_s=st.sampled_from([0, 20]),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=5),
)
def test_bars_do_not_depend_on_batch_cuts(
    n: int, seed: int, delay_s: int, disorder_s: int, lateness_s: int, cuts: list[int]
) -> None:
    ticks = _disorder(_ticks(n, seed, span_s=900), disorder_s * S, seed)
    options = {"by": "symbol", "max_delay": delay_s * S, "allowed_lateness": lateness_s * S}
    one_by_one = _feed(ohlc_resample("1m", **options), ticks, [1])
    assert _feed(ohlc_resample("1m", **options), ticks, cuts) == one_by_one
    assert _feed(ohlc_resample("1m", **options), ticks, [n]) == one_by_one
    bars, late = one_by_one
    if disorder_s <= delay_s:  # disorder within max_delay: nothing late, equal polars
        assert late == []
        assert _frame(bars).equals(_polars(ticks, "1m"))


@pytest.mark.usefixtures("backend_name")  # the backend is chosen once per test, not per example
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 10_000),
    batch_size=st.integers(1, 64),
    capacity=st.integers(1, 64),
    parallelism=st.integers(1, 3),
    disorder_s=st.sampled_from([5, 60]),
)
def test_bars_in_a_dag_do_not_depend_on_batches_capacities_or_partitions(
    seed: int, batch_size: int, capacity: int, parallelism: int, disorder_s: int
) -> None:
    ticks = _disorder(_ticks(400, seed, span_s=1800, symbols="ABCDE"), disorder_s * S, seed)
    options = {"by": "symbol", "max_delay": 10 * S}
    ref_bars, ref_late = _feed(ohlc_resample("1m", **options), ticks, [1])
    bars, late = _dag_bars(
        ticks, ohlc_resample("1m", **options), batch_size=batch_size, capacity=capacity,
        parallelism=parallelism,
    )  # fmt: skip
    assert sorted(bars, key=_key) == sorted(ref_bars, key=_key)
    assert sorted(late, key=lambda t: t["ts"]) == sorted(ref_late, key=lambda t: t["ts"])
    if disorder_s <= 10:
        assert late == [] and _frame(bars).equals(_polars(ticks, "1m"))


_WINDOWS = {
    "tumbling": lambda **kw: ops.tumbling("1m", **kw),
    "sliding": lambda **kw: ops.sliding("1m", "20s", **kw),
    "session": lambda **kw: ops.session("8s", **kw),
}


@pytest.mark.usefixtures("backend_name")
@pytest.mark.parametrize("kind", sorted(_WINDOWS))
def test_partitioned_windows_equal_one_instance(kind: str) -> None:
    events = _disorder(_ticks(2000, 5, span_s=3600, symbols="ABCDEFG"), 80 * S, 5)

    def run(parallelism: int, batch_size: int) -> tuple[list[Any], list[Any]]:
        dag = Dag("w", batch_size=batch_size, capacity=8)
        dag.add_source("src", events)
        window = _WINDOWS[kind](
            timestamp="ts", key="symbol", max_delay="10s", allowed_lateness="15s",
            aggregate=lambda items: sum(i["volume"] for i in items),
        )  # fmt: skip
        dag.add_node("win", window, parallelism=parallelism, key="symbol")
        dag.add_sink("out", collect())
        dag.add_sink("late", collect())
        dag.chain("src", "win", "out")
        dag.connect("win", "late", port="late")
        result = dag.run()
        return sorted(result.results["out"]), sorted(e["ts"] for e in result.results["late"])

    reference = run(1, 256)
    assert reference[1]  # some events are late: the comparison covers lateness
    assert any(r.firing > 0 for r in reference[0])  # and updates within allowed_lateness
    for parallelism, batch_size in ((1, 1), (3, 1), (3, 256), (4, 17)):
        assert run(parallelism, batch_size) == reference


@pytest.mark.usefixtures("backend_name")
def test_two_inputs_hold_the_watermark_at_their_minimum() -> None:
    fast = [{"ts": t * S, "symbol": "A", "price": 1.0, "volume": 1.0} for t in range(0, 600, 10)]
    slow = [{"ts": t * S, "symbol": "B", "price": 1.0, "volume": 1.0} for t in range(0, 600, 60)]
    dag = Dag("two", batch_size=4, capacity=2)
    dag.add_source("fast", fast, chunk=4)
    dag.add_source("slow", lambda: iter(slow))
    dag.add_node("bars", ohlc_resample("1m", by="symbol"))
    dag.add_sink("out", collect())
    dag.add_sink("late", collect())
    dag.connect("fast", "bars")
    dag.connect("slow", "bars")
    dag.connect("bars", "out")
    dag.connect("bars", "late", port="late")
    result = dag.run()
    # each input is in order: with the watermark the minimum of the two, nothing is late,
    # however the runtime interleaves them
    assert result.results["late"] == []
    assert len(result.results["out"]) == 20


# ------------------------------------------------------------------ allowed_lateness


def test_ohlc_allowed_lateness_updates_an_emitted_bar() -> None:
    ticks = [
        {"ts": 0, "price": 1.0, "volume": 1.0},
        {"ts": 70 * S, "price": 2.0, "volume": 1.0},  # bar 0 is due
        {"ts": 30 * S, "price": 5.0, "volume": 1.0},  # within allowed_lateness: update
        {"ts": 200 * S, "price": 3.0, "volume": 1.0},
        {"ts": 40 * S, "price": 6.0, "volume": 1.0},  # past end + allowed_lateness: late
    ]
    bars, late = _feed(ohlc_resample("1m", allowed_lateness="30s"), ticks, [1])
    assert [(b["ts"], b["high"], b["trades"], b["firing"]) for b in bars] == [
        (0, 1.0, 1, 0),
        (0, 5.0, 2, 1),
        (60 * S, 2.0, 1, 0),
        (180 * S, 3.0, 1, 0),
    ]
    assert late == [ticks[4]]
    strict_bars, strict_late = _feed(ohlc_resample("1m"), ticks, [1])
    assert "firing" not in strict_bars[0] and strict_late == [ticks[2], ticks[4]]


def test_window_max_out_of_orderness_is_the_former_name_of_max_delay() -> None:
    events = [(0,), (14,), (5,), (30,)]
    new = ops.tumbling(10, timestamp=lambda e: e[0], max_delay=3)
    old = ops.tumbling(10, timestamp=lambda e: e[0], max_out_of_orderness=3)
    assert [new.process(e) for e in events] == [old.process(e) for e in events]
    assert new.counters["late"] == 1  # 5 after 14 with max_delay 3: its window [0, 10) ended
    with pytest.raises(InvalidArgument, match="not both"):
        ops.tumbling(10, timestamp=lambda e: e[0], max_delay=1, max_out_of_orderness=1)


# ------------------------------------------------------------------ calendar intervals


def _calendar_ticks(start: dt.datetime, days: int, n: int, seed: int) -> list[dict[str, Any]]:
    base = int(start.timestamp()) * S
    rng = random.Random(seed)
    times = sorted(rng.sample(range(days * 86_400), n))
    return [
        {"ts": base + t * S, "symbol": rng.choice("XY"), "price": float(i % 13),
         "volume": 1.0}
        for i, t in enumerate(times)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("every", "tz"),
    [
        ("1d", "America/New_York"),  # across the change to daylight-saving time
        ("1d", "Europe/London"),
        ("2d", "Asia/Kolkata"),
        ("1w", "UTC"),
        ("1w", "America/New_York"),
        ("1mo", "Europe/Berlin"),
        ("1q", "UTC"),
    ],
)
def test_calendar_bars_equal_polars(every: str, tz: str) -> None:
    ticks = _calendar_ticks(dt.datetime(2024, 2, 20, tzinfo=dt.UTC), 120, 3000, seed=7)
    bars, late = _feed(ohlc_resample(every, by="symbol", time_zone=tz), ticks, [97])
    assert late == []
    mine, ref = _frame(bars, tz), _polars(ticks, every, tz)
    assert mine.equals(ref)


def test_a_calendar_day_across_the_dst_change_lasts_23_hours() -> None:
    ticks = _calendar_ticks(dt.datetime(2024, 3, 9, tzinfo=dt.UTC), 3, 500, seed=8)
    bars, _ = _feed(ohlc_resample("1d", time_zone="America/New_York"), ticks, [50])
    starts = [b["ts"] for b in bars]
    ny = ZoneInfo("America/New_York")
    local = [dt.datetime.fromtimestamp(t // S, ny) for t in starts]
    assert all((d.hour, d.minute) == (0, 0) for d in local)  # local midnights
    hours = {d.date().isoformat(): (b - a) // (3600 * S)
             for d, a, b in zip(local, starts, starts[1:])}  # fmt: skip
    assert hours["2024-03-09"] == 24 and hours["2024-03-10"] == 23  # the clocks go forward
    fixed, _ = _feed(ohlc_resample("1d"), ticks, [50])
    assert [b["ts"] for b in fixed] != starts  # UTC days start elsewhere


def test_calendar_bars_from_arrow_batches_keep_the_time_zone() -> None:
    ticks = _calendar_ticks(dt.datetime(2024, 10, 20, tzinfo=dt.UTC), 20, 800, seed=9)
    frame = pl.DataFrame(ticks).with_columns(
        pl.col("ts").cast(pl.Datetime("ns", "UTC")).dt.convert_time_zone("Europe/Paris")
    )
    op = ohlc_resample("1d", by="symbol", time_zone="Europe/Paris")
    outs = op.process_batch([frame.slice(0, 300).to_arrow()]) + op.process_batch(
        [frame.slice(300).to_arrow()]
    )
    outs += op.close()
    mine = pl.concat([pl.from_arrow(b) for b in outs]).select(BAR_COLUMNS).sort("symbol", "ts")
    assert mine["ts"].dtype == pl.Datetime("ns", "Europe/Paris")
    assert mine.equals(_polars(ticks, "1d", "Europe/Paris"))


def test_calendar_tumbling_windows_equal_polars() -> None:
    ticks = _calendar_ticks(dt.datetime(2024, 3, 1, tzinfo=dt.UTC), 60, 1000, seed=10)
    op = ops.tumbling("1w", timestamp="ts", time_zone="America/New_York", aggregate=len)
    results = [r for t in ticks for r in (op.process(t) or [])] + op.close()
    counts = [(r.start, r.n_items) for r in results]
    ref = (
        pl.DataFrame(ticks)
        .with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")).dt.convert_time_zone(
            "America/New_York"))
        .group_by_dynamic("ts", every="1w")
        .agg(pl.len())
    )  # fmt: skip
    expected = list(zip(ref["ts"].dt.convert_time_zone("UTC").cast(pl.Int64).to_list(),
                        ref["len"].to_list()))  # fmt: skip
    assert counts == expected
    assert all(r.end - r.start == 7 * 86_400 * S for r in results[:1])


@pytest.mark.parametrize(
    ("size", "slide", "tz"),
    [
        ("1w", "1d", "America/New_York"),  # across the March daylight-saving change
        ("2d", "1d", "Europe/London"),
        ("1mo", "1w", "UTC"),
        ("3q", "1mo", "Asia/Kolkata"),
    ],
)
def test_calendar_sliding_windows_equal_polars(size: str, slide: str, tz: str) -> None:
    days = 400 if size == "3q" else 60
    ticks = _calendar_ticks(dt.datetime(2024, 2, 20, tzinfo=dt.UTC), days, 1500, seed=11)
    op = ops.sliding(size, slide, timestamp="ts", time_zone=tz, aggregate=len)
    results = [r for t in ticks for r in (op.process(t) or [])] + op.close()
    ref = (
        pl.DataFrame(ticks)
        .with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")).dt.convert_time_zone(tz))
        .group_by_dynamic("ts", every=slide, period=size)
        .agg(pl.len())
    )
    expected = sorted(
        zip(ref["ts"].dt.convert_time_zone("UTC").cast(pl.Int64).to_list(), ref["len"].to_list())
    )
    # polars starts at the first item's own window (start_by="window"); phasekit also
    # opens the earlier windows that contain the first items
    first = expected[0][0]
    mine = sorted((r.start, r.n_items) for r in results if r.start >= first)
    assert mine == expected
    assert len({r.start for r in results}) == len(results)  # each window fires once


def test_calendar_sliding_window_lasts_wall_clock_time_across_dst() -> None:
    new_york = 3_600 * S * 5  # EST is UTC-5
    start = int(dt.datetime(2024, 3, 9, tzinfo=dt.UTC).timestamp()) * S + new_york
    op = ops.sliding("2d", "1d", timestamp="ts", time_zone="America/New_York", aggregate=len)
    results = (op.process({"ts": start + 3_600 * S}) or []) + op.close()
    lengths = {r.start: r.end - r.start for r in results}
    assert lengths == {start - 86_400 * S: 48 * 3_600 * S, start: 47 * 3_600 * S}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ohlc_resample("1 fortnight"), "interval.*'1 fortnight'.*units.*calendar.*mo"),
        (lambda: ohlc_resample("1d", time_zone="Mars/Olympus"), "time_zone.*Mars/Olympus.*IANA"),
        (lambda: ohlc_resample("5m", time_zone="Europe/London"), "calendar intervals only"),
        (lambda: ohlc_resample("1mo", offset="1h"), "offset applies to fixed"),
        (
            lambda: ops.tumbling("1mo", timestamp="ts", time_zone=3),
            "tumbling window size.*time_zone",
        ),
        (
            lambda: ops.sliding("1mo", "5w", timestamp="ts", time_zone="UTC"),
            "slide.*'5w'.*must not exceed.*size.*'1mo'",
        ),
        (
            lambda: ops.sliding("25h", "1d", timestamp="ts", time_zone="Europe/Paris"),
            "need calendar intervals for both size and slide.*'25h'",
        ),
        (
            lambda: ops.sliding("2h", "1h", timestamp="ts", time_zone="UTC"),
            "need calendar intervals for both",
        ),
    ],
)
def test_bad_intervals_and_time_zones_say_what_is_allowed(make: Any, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        make()


def test_calendar_interval_numbers_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="positive"):
        ohlc_resample("0mo")


def test_bar_length_is_fixed_or_read_per_bar() -> None:
    assert ohlc_resample("5m").interval == 300 * S
    monthly = ohlc_resample("1mo", time_zone="UTC")
    feb = int(dt.datetime(2024, 2, 1, tzinfo=dt.UTC).timestamp()) * S
    assert monthly.bar_end(feb) - feb == 29 * 86_400 * S  # a leap year's February
    with pytest.raises(InvalidArgument, match="bar_end"):
        monthly.interval  # noqa: B018


@pytest.mark.usefixtures("backend_name")
def test_two_columnar_inputs_give_the_bars_of_polars() -> None:
    ticks = _ticks(4000, seed=21, span_s=7200)
    frame = pl.DataFrame(ticks).with_columns(pl.col("ts").cast(pl.Datetime("ns")))
    per_symbol = {s: frame.filter(pl.col("symbol") == s).to_arrow() for s in "AB"}
    dag = Dag("cols", capacity=2)
    for s, table in per_symbol.items():
        dag.add_source(s, table.to_batches(max_chunksize=97), chunk=1)
    dag.add_node("bars", ohlc_resample("1m", by="symbol"))
    dag.add_sink("out", collect())
    dag.add_sink("late", collect())
    for s in per_symbol:
        dag.connect(s, "bars")
    dag.chain("bars", "out")
    dag.connect("bars", "late", port="late")
    result = dag.run()
    assert result.results["late"] == []
    mine = pl.concat([pl.from_arrow(b) for b in result.results["out"]])
    mine = mine.with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.cast_time_unit("ns"))
    assert mine.select(BAR_COLUMNS).sort("symbol", "ts").equals(_polars(ticks, "1m"))
