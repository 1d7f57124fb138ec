"""ohlc_resample against polars group_by_dynamic and pandas resample().ohlc() on random ticks."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from _stream_support import polars_ohlc_aggs, stream_backend  # noqa: F401
from phasekit.stream import Dag, Out
from phasekit.stream.connectors import collect
from phasekit.stream.ohlc import ohlc_resample

S = 1_000_000_000
T0 = 1_700_000_123 * S  # not aligned to any bar


def _ticks(
    n: int, seed: int, symbols: tuple[str, ...] = ("A",), span_s: int = 2 * 86400
) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = T0 + np.sort(rng.choice(span_s * 1000, size=n, replace=False)) * 1_000_000  # unique ms
    return pa.table(
        {
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ns")),
            "symbol": rng.choice(symbols, n),
            "price": 100 + np.cumsum(rng.normal(0, 0.05, n)),
            "volume": rng.random(n) * 10,
        }
    )


def _stream(op: Any, table: pa.Table, seed: int) -> tuple[pl.DataFrame, list[Any]]:
    """Feed ``table`` in random-sized batches; return the bars and the late outputs."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, table.num_rows), size=25, replace=False))
    bounds = [0, *cuts.tolist(), table.num_rows]
    outs: list[Any] = []
    for a, b in itertools.pairwise(bounds):
        outs += op.process_batch([table.slice(a, b - a)])
    outs += op.close()
    late = [o for o in outs if type(o) is Out]
    bars = [o for o in outs if type(o) is not Out]
    return pl.from_arrow(pa.Table.from_batches(bars)), late


def _polars(table: pa.Table, every: str, by: Any = None) -> pl.DataFrame:
    df = pl.from_arrow(table)
    if by is not None:
        df = df.sort(by, "ts", maintain_order=True)
    return df.group_by_dynamic("ts", every=every, group_by=by).agg(*polars_ohlc_aggs())


def _assert_frames(mine: pl.DataFrame, ref: pl.DataFrame) -> None:
    assert mine.columns == ref.columns
    assert mine.height == ref.height
    for col in mine.columns:
        a, b = mine[col], ref[col]
        if a.dtype == pl.Float64:
            np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-12)
        else:
            assert a.to_list() == b.to_list(), col


@pytest.mark.parametrize("every", ["1m", "5m", "7m", "1h"])
def test_matches_polars_group_by_dynamic(every: str) -> None:
    table = _ticks(20_000, seed=len(every))
    mine, late = _stream(ohlc_resample(every), table.drop(["symbol"]), seed=1)
    assert late == []
    _assert_frames(mine, _polars(table.drop(["symbol"]), every))


@pytest.mark.parametrize(("every", "rule", "origin"), [("1m", "1min", "start_day"),
                         ("5m", "5min", "start_day"), ("1h", "1h", "start_day"),
                         ("7m", "7min", "epoch")])  # fmt: skip
def test_matches_pandas_resample_ohlc(every: str, rule: str, origin: str) -> None:
    table = _ticks(20_000, seed=7)
    mine, _ = _stream(ohlc_resample(every), table, seed=2)
    frame = table.to_pandas().set_index("ts")
    resampled = frame["price"].resample(rule, origin=origin).ohlc()
    resampled["volume"] = frame["volume"].resample(rule, origin=origin).sum()
    resampled["trades"] = frame["price"].resample(rule, origin=origin).count()
    ref = resampled[resampled["trades"] > 0].reset_index()
    got = mine.to_pandas()
    assert got["ts"].tolist() == ref["ts"].tolist()
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-12)
    assert got["trades"].tolist() == ref["trades"].tolist()


def test_keyed_bars_match_polars_per_symbol() -> None:
    table = _ticks(30_000, seed=3, symbols=("AAPL", "MSFT", "XOM"))
    mine, _ = _stream(ohlc_resample("5m", by="symbol"), table, seed=3)
    ref = _polars(table, "5m", by="symbol")
    _assert_frames(mine.sort("symbol", "ts"), ref.sort("symbol", "ts"))


def test_single_dict_ticks_give_the_same_bars_as_batches() -> None:
    table = _ticks(3_000, seed=4, symbols=("A", "B"))
    rows = table.to_pylist()
    for row in rows:
        row["ts"] = int(pd.Timestamp(row["ts"]).value)
    op = ohlc_resample("1m", by="symbol")
    outs = []
    for i in range(0, len(rows), 37):
        outs += op.process_batch(rows[i : i + 37])
    outs += op.close()
    assert all(isinstance(o, dict) for o in outs)
    batch_bars, _ = _stream(ohlc_resample("1m", by="symbol"), table, seed=4)
    ref = batch_bars.with_columns(pl.col("ts").cast(pl.Int64))
    _assert_frames(pl.DataFrame(outs), ref)


def test_bars_resample_into_coarser_bars() -> None:
    table = _ticks(20_000, seed=5).drop(["symbol"])
    minute, _ = _stream(ohlc_resample("1m"), table, seed=5)
    five_from_bars, _ = _stream(ohlc_resample("5m"), minute.to_arrow(), seed=6)
    five_from_ticks, _ = _stream(ohlc_resample("5m"), table, seed=7)
    _assert_frames(five_from_bars, five_from_ticks)


def test_out_of_order_ticks_within_max_delay_give_sorted_results() -> None:
    table = _ticks(10_000, seed=8, span_s=6 * 3600)
    rng = np.random.default_rng(8)
    order = np.argsort(
        np.arange(table.num_rows) + rng.integers(0, 40, table.num_rows), kind="stable"
    )
    shuffled = table.take(order)  # rows displaced by < 40 positions (< 60 s of data here)
    mine, late = _stream(ohlc_resample("1m", max_delay="5m"), shuffled, seed=9)
    assert late == []
    _assert_frames(mine, _stream(ohlc_resample("1m"), table, seed=9)[0])


def test_late_ticks_go_to_the_late_port_and_are_counted() -> None:
    op = ohlc_resample("1m", volume=None)
    m = 60 * S
    first = op.process_batch([{"ts": 10 * S, "price": 1.0}, {"ts": m + S, "price": 2.0}])
    assert first == [{"ts": 0, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                      "volume": 0.0, "trades": 1}]  # fmt: skip
    late_tick = {"ts": 30 * S, "price": 9.0}
    out = op.process_batch([late_tick, {"ts": m + 2 * S, "price": 3.0}])
    assert out == [Out("late", late_tick)]
    assert op.counters["late"] == 1
    assert op.close() == [{"ts": m, "open": 2.0, "high": 3.0, "low": 2.0, "close": 3.0,
                           "volume": 0.0, "trades": 2}]  # fmt: skip


@pytest.mark.usefixtures("stream_backend")
def test_ohlc_in_a_dag_with_arrow_batches() -> None:
    table = _ticks(50_000, seed=10, symbols=("A", "B"))
    dag = Dag("bars", capacity=4)
    dag.add_source("ticks", table.to_batches(max_chunksize=5_000))
    dag.add_node("bars", ohlc_resample("15m", by="symbol"))
    dag.add_sink("out", collect())
    dag.chain("ticks", "bars", "out")
    result = dag.run()
    mine = pl.from_arrow(pa.Table.from_batches(result.results["out"]))
    _assert_frames(
        mine.sort("symbol", "ts"), _polars(table, "15m", by="symbol").sort("symbol", "ts")
    )
    assert result.nodes["bars"]["counters"]["ticks"] == 50_000
