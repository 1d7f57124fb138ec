"""Annualisation from the bars' calendar, its override in the config, and synthetic
default data that looks like a market (weekday sessions, about 20% a year)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phasekit.backtest.bars import infer_periods_per_year, synthetic_bars
from phasekit.errors import ConfigError
from phasekit.workflow import run

DAY = 86_400 * 10**9
MINUTE = 60 * 10**9


def _weekdays(first: str, count: int) -> np.ndarray:
    """``count`` weekdays from ``first`` as ns at midnight, computed with numpy's busday."""
    days = np.busday_offset(np.datetime64(first, "D"), np.arange(count), roll="forward")
    return days.astype("datetime64[ns]").astype(np.int64)


def test_minute_bars_of_a_six_and_a_half_hour_session() -> None:
    open_ = (9 * 60 + 30) * MINUTE
    minutes = np.arange(390, dtype=np.int64) * MINUTE
    ts = (_weekdays("2024-03-01", 30)[:, None] + open_ + minutes[None, :]).ravel()
    assert infer_periods_per_year(ts) == 252 * 390


def test_daily_weekday_bars_and_around_the_clock_minutes() -> None:
    assert infer_periods_per_year(_weekdays("2024-01-01", 300)) == 252
    every_minute = np.datetime64("2024-01-01", "ns").astype(np.int64) + MINUTE * np.arange(
        20 * 1440, dtype=np.int64
    )
    assert infer_periods_per_year(every_minute) == 365 * 1440
    every_day = np.datetime64("2024-01-01", "ns").astype(np.int64) + DAY * np.arange(400)
    assert infer_periods_per_year(every_day) == 365


def test_default_synthetic_bars_look_like_a_market() -> None:
    bars = synthetic_bars(n_bars=20_000, frequency="1min", seed=42, start="2024-01-01")["SYN"]
    ts = bars.ts.astype("datetime64[ns]")
    minute_of_day = (bars.ts % DAY) // MINUTE
    assert minute_of_day.min() == 9 * 60 + 30 and minute_of_day.max() == 16 * 60 - 1
    assert np.is_busday(ts.astype("datetime64[D]")).all()
    assert bars.periods_per_year == 252 * 390
    rets = np.diff(np.log(bars.close))
    annual_vol = rets.std(ddof=1) * math.sqrt(bars.periods_per_year)
    assert 0.18 < annual_vol < 0.22
    # buy and hold over the 51 sessions: a Sharpe a market can show
    simple = np.diff(bars.close) / bars.close[:-1]
    sharpe = simple.mean() / simple.std(ddof=1) * math.sqrt(bars.periods_per_year)
    assert abs(sharpe) < 5


def test_calendar_24_7_trades_weekends() -> None:
    bars = synthetic_bars(n_bars=3 * 1440 * 7, frequency="1min", calendar="24/7")["SYN"]
    days = bars.ts.astype("datetime64[ns]").astype("datetime64[D]")
    assert not np.is_busday(days).all()
    assert bars.periods_per_year == 365 * 1440


def _config(tmp_path: Path, **data: Any) -> dict[str, Any]:
    return {
        "workflow": "optimization",
        "run_name": "ppy",
        "results_dir": str(tmp_path / "results"),
        "data": {"n_bars": 2000, "frequency": "1h", "seed": 3, **data},
        "parameter_space": {"strategy.fast": [3, 5], "strategy.slow": [20]},
    }


def _sharpes(tmp_path: Path, **data: Any) -> dict[str, float]:
    res = run(_config(tmp_path, **data), workers=1)
    try:
        table = res.metrics("parameter_search").to_pylist()
        return {r["container_id"]: r["sharpe_ratio"] for r in table}
    finally:
        res.close()


def test_periods_per_year_in_the_config_changes_the_sharpe(tmp_path: Path) -> None:
    inferred = _sharpes(tmp_path / "a")
    given = _sharpes(tmp_path / "b", periods_per_year=252)
    assert inferred.keys() == given.keys()
    for cid, sharpe in inferred.items():
        assert sharpe != 0
        # hourly session bars are inferred at 252 x 7 a year
        assert given[cid] == pytest.approx(sharpe * math.sqrt(252 / (252 * 7)), rel=1e-9)


def test_calendar_in_the_config_changes_the_bars(tmp_path: Path) -> None:
    session = _sharpes(tmp_path / "a", volatility=0.004)
    clock = _sharpes(tmp_path / "b", calendar="24/7", volatility=0.004)
    assert session.keys() == clock.keys()
    # the same random walk per bar (volatility given), annualised with 8760 hours instead of 1764 session hours
    for cid, sharpe in session.items():
        assert clock[cid] == pytest.approx(sharpe * math.sqrt(8760 / 1764), rel=1e-9)


def test_calendar_with_a_file_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "bars.csv"
    csv.write_text("date,open,high,low,close\n2024-01-02,1,1,1,1\n2024-01-03,1,1,1,1\n")
    cfg = _config(tmp_path)
    cfg["data"] = {"path": [str(csv)], "calendar": "24/7"}
    with pytest.raises(ConfigError, match="calendar"):
        run(cfg, workers=1)
