"""Bars as users have them: CSV and Parquet written by pandas (named or unnamed index),
polars and DuckDB, a column of dates of any name, errors that list the columns."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phasekit.backtest.bars import load_bars
from phasekit.cli import main
from phasekit.errors import ConfigError

DAYS = pd.bdate_range("2024-01-01", periods=300, name=None)


def frame(index: pd.Index = DAYS) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(index))))
    return pd.DataFrame(
        {
            "Open": close * 0.999,
            "High": close * 1.01,
            "Low": close * 0.99,
            "Close": close,
            "Volume": rng.integers(1_000, 2_000, len(index)),
        },
        index=index,
    )


def expected_ns(index: pd.Index) -> np.ndarray:
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.values.astype("datetime64[ns]").astype(np.int64)


def _pandas_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path)


def _pandas_csv_named(df: pd.DataFrame, path: Path) -> None:
    df.rename_axis("Date").to_csv(path)


def _pandas_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path)


def _pandas_parquet_named(df: pd.DataFrame, path: Path) -> None:
    df.rename_axis("when").to_parquet(path)


def _polars(kind: str) -> Callable[[pd.DataFrame, Path], None]:
    def write(df: pd.DataFrame, path: Path) -> None:
        import polars as pl

        out = pl.from_pandas(df.reset_index(names="bar_time"))
        out.write_csv(path) if kind == "csv" else out.write_parquet(path)

    return write


def _duckdb(kind: str) -> Callable[[pd.DataFrame, Path], None]:
    def write(df: pd.DataFrame, path: Path) -> None:
        import duckdb

        flat = df.reset_index(names="t")  # noqa: F841 (read by the SQL)
        con = duckdb.connect()
        try:
            con.execute(f"COPY (SELECT * FROM flat) TO '{path}' (FORMAT {kind})")
        finally:
            con.close()

    return write


WRITERS: dict[str, tuple[str, Callable[[pd.DataFrame, Path], None]]] = {
    "pandas-csv-unnamed-index": ("csv", _pandas_csv),
    "pandas-csv-named-index": ("csv", _pandas_csv_named),
    "pandas-parquet-unnamed-index": ("parquet", _pandas_parquet),
    "pandas-parquet-named-index": ("parquet", _pandas_parquet_named),
    "polars-csv": ("csv", _polars("csv")),
    "polars-parquet": ("parquet", _polars("parquet")),
    "duckdb-csv": ("csv", _duckdb("csv")),
    "duckdb-parquet": ("parquet", _duckdb("parquet")),
}


@pytest.mark.parametrize("tz", [None, "America/New_York"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_files_as_libraries_write_them(tmp_path: Path, writer: str, tz: str | None) -> None:
    ext, write = WRITERS[writer]
    index = pd.date_range("2024-03-04 09:30", periods=390 * 3, freq="min", tz=tz)
    index = index[index.indexer_between_time("09:30", "15:59")]
    df = frame(index)
    path = tmp_path / f"bars.{ext}"
    write(df, path)
    bars = load_bars(str(path))
    np.testing.assert_array_equal(bars.ts, expected_ns(index))
    np.testing.assert_allclose(bars.close, df["Close"].to_numpy())
    np.testing.assert_allclose(bars.volume, df["Volume"].to_numpy())
    assert bars.periods_per_year == 252 * 390


def test_dates_as_text_in_a_column_of_any_name(tmp_path: Path) -> None:
    df = frame().reset_index(names="Trading Day")
    df["Trading Day"] = df["Trading Day"].dt.strftime("%m/%d/%Y")
    path = tmp_path / "us.csv"
    df.to_csv(path, index=False)
    bars = load_bars(str(path))
    np.testing.assert_array_equal(bars.ts, expected_ns(DAYS))


def test_without_dates_the_error_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "nodates.csv"
    frame().to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"no column of dates.*'Open', 'High', 'Low', 'Close'"):
        load_bars(str(path))
    path.write_text("day,price\n2024-01-02,1\n")
    with pytest.raises(ConfigError, match=r"lacks column.*found columns 'day', 'price'"):
        load_bars(str(path))


def test_a_pandas_csv_of_daily_bars_runs_through_phasekit_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "spy.csv"
    frame().to_csv(csv)
    config = tmp_path / "run.yaml"
    config.write_text(
        "workflow: optimization\n"
        "run_name: pandas_csv\n"
        f"results_dir: {tmp_path / 'results'}\n"
        f"data: {{path: [{csv}]}}\n"
        "parameter_space:\n"
        "  strategy.fast: [3, 5]\n"
        "  strategy.slow: [20, 30]\n"
    )
    assert main(["run", str(config), "--workers", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "completed"
    search = out["phases"]["parameter_search"]
    assert search["containers"] == 4
    assert search["best"]["metrics"]["trade_count"] > 0
