"""Reports (``phasekit report``): real runs of small workflows rendered to one HTML file,
loaded by a headless Chromium over the DevTools protocol (no console messages, no
network request, every chart drawn with its traces, a screenshot that is not blank);
the memory timeline the run records; sections the run has no data for; the CLI flags."""

from __future__ import annotations

import builtins
import io
import json
import os
import stat
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from browser_util import Browser, find_browser
from phasekit.catalog import open_catalog
from phasekit.cli import main
from phasekit.errors import MissingDependency, UnknownKey
from phasekit.report import render_report, write_report
from phasekit.report.data import read_run
from phasekit.report.sections import build_sections
from phasekit.workflow import run
from phasekit.workflow import timeline as timeline_mod

SECTIONS = ("equity", "heatmap", "scatter", "walk_forward", "monte_carlo", "memory")
DATA = {"n_bars": 3000, "frequency": "1h", "seed": 5, "volatility": 0.004}
GRID = {
    "strategy.fast": [3, 5, 8, 13],
    "strategy.slow": [20, 40, 60],
    "constraints": ["strategy.fast < strategy.slow"],
}
EQUITY_EVENTS = ["POSITION_OPEN", "POSITION_CLOSE", "FILL", "PORTFOLIO_UPDATE"]


def full_config(results: Path) -> dict[str, Any]:
    """A search (train/test, file results with equity curves), a walk-forward of its
    best sets and a Monte Carlo of the best; hybrid results under a small budget spill."""
    return {
        "run_name": "report",
        "results_dir": str(results),
        "data": DATA,
        "strategy": {"type": "sma_crossover"},
        "parameter_space": GRID,
        "portfolio": {"commission_bps": 2, "slippage_bps": 1},
        "top_k": 3,
        "data_flow": {"mode": "hybrid", "memory_settings": {"max_size_mb": 0.02}},
        "phases": [
            {
                "name": "search",
                "sequence": "train_test",
                "topology": "backtest",
                "data_flow": {"mode": "file"},
                "event_tracing": EQUITY_EVENTS,
            },
            {
                "name": "wf",
                "sequence": "walk_forward",
                "topology": "backtest",
                "depends_on": ["search"],
                "walk_forward": {"train": 1000, "test": 500},
                "data_flow": {"mode": "file"},
            },
            {
                "name": "mc",
                "sequence": "monte_carlo",
                "topology": "backtest",
                "depends_on": ["search"],
                "monte_carlo": {"n": 200, "batch": 40, "seed": 3},
            },
        ],
    }


def plain_config(results: Path, run_name: str = "plain") -> dict[str, Any]:
    """One single-pass phase over a one-parameter grid, results in memory."""
    return {
        "workflow": "optimization",
        "run_name": run_name,
        "results_dir": str(results),
        "data": DATA,
        "strategy": {"type": "sma_crossover", "slow": 60},
        "parameter_space": {"strategy.fast": [3, 5, 8]},
        "results_storage": "memory",
    }


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    results = tmp_path_factory.mktemp("report-full")
    res = run(full_config(results), workers=1)
    try:
        assert res.status == "completed"
        yield results, res.run_id
    finally:
        res.close()


@pytest.fixture(scope="module")
def full_html(full_run: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    results, run_id = full_run
    out = tmp_path_factory.mktemp("report-html") / "report.html"
    out.write_text(render_report(results, run_id), encoding="utf-8")
    return out


def _expected(results: Path, run_id: str) -> dict[str, list[int]]:
    """Per section, the traces of each of its charts as the report builds them."""
    with open_catalog(results, create=False) as catalog:
        sections = build_sections(read_run(catalog, run_id))
    return {s.key: [len(f["data"]) for f in s.figures] for s in sections}


# ------------------------------------------------------------------ the page offline


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.csp: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "data", "poster", "srcset"):
                self.refs.append((tag, name, value or ""))
        meta = dict(attrs)
        if tag == "meta" and meta.get("http-equiv") == "Content-Security-Policy":
            self.csp.append(meta.get("content") or "")


def test_page_references_no_other_address(full_html: Path) -> None:
    text = full_html.read_text(encoding="utf-8")
    refs = _Refs()
    refs.feed(text)
    remote = [r for r in refs.refs if r[2].strip().lower().startswith(("http:", "https:", "//"))]
    assert remote == []
    # and the browser is told to fetch nothing
    assert refs.csp and "default-src 'none'" in refs.csp[0]
    # Plotly is inlined, not loaded
    assert "<script src" not in text.lower() and "Plotly.newPlot" in text


def test_every_section_has_charts_for_the_full_run(full_run: tuple[Path, str]) -> None:
    expected = _expected(*full_run)
    assert {k for k, charts in expected.items() if charts} == set(SECTIONS)
    # search: in and out of sample curves; wf: 4 test parts and the stitched curve
    assert sum(expected["equity"]) == 2 + 4 + 1
    assert expected["monte_carlo"] == [1, 1, 1]  # sharpe_ratio, total_return, max_drawdown


# ------------------------------------------------------------------ in Chromium

READY = (
    "document.querySelectorAll('.chart').length > 0 && "
    "[...document.querySelectorAll('.chart')].every(d => d.querySelector('.main-svg'))"
)
TRACES = """JSON.stringify([...document.querySelectorAll('section')].map(s => [s.id,
  [...s.querySelectorAll('.chart')].map(d => d.querySelectorAll('g.trace, g.hm').length)]))"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    executable = find_browser()
    if executable is None:
        if os.environ.get("PHASEKIT_TEST_INSTALLED"):
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("chromium is not installed here (apt-get install chromium)")
    b = Browser(executable, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


def _variance(png: bytes) -> tuple[float, int]:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(img.var()), int(np.unique(img).size)


def test_chromium_draws_every_chart(
    full_run: tuple[Path, str], full_html: Path, browser: Browser
) -> None:
    events = browser.load(full_html.as_uri(), READY)
    assert events.console == [] and events.exceptions == []
    assert [e for e in events.log_entries if e.get("level") in ("error", "warning")] == []
    # the page itself, and the images Plotly makes in the page (data: URLs) only
    others = [u for u in events.requests if u != full_html.as_uri()]
    assert all(u.startswith(("data:", "blob:")) for u in others), others
    drawn = dict(json.loads(browser.evaluate(TRACES)))
    expected = _expected(*full_run)
    assert {k: drawn.get(k) for k in expected} == expected
    variance, levels = _variance(browser.screenshot())
    assert variance > 500 and levels > 50, (variance, levels)


def test_blank_page_screenshot_fails_the_check(browser: Browser, tmp_path: Path) -> None:
    """The screenshot check can fail: an empty page is blank by it."""
    page = tmp_path / "blank.html"
    page.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    browser.load(page.as_uri(), "document.readyState === 'complete'")
    variance, levels = _variance(browser.screenshot())
    assert variance < 1 and levels <= 2


# ------------------------------------------------------------------ sections without data


def test_sections_without_data_are_a_note(tmp_path: Path) -> None:
    res = run(plain_config(tmp_path), workers=1)
    try:
        with open_catalog(tmp_path, create=False) as catalog:
            sections = {s.key: s for s in build_sections(read_run(catalog, res.run_id))}
        html = render_report(tmp_path, res.run_id)
    finally:
        res.close()
    empty = ("equity", "heatmap", "scatter", "walk_forward", "monte_carlo")
    for key in empty:
        assert sections[key].figures == [] and sections[key].note, key
        assert "\n" not in sections[key].note
    assert sections["memory"].figures and sections["memory"].note is None
    # a note, no chart, in the page
    assert html.count('class="note"') == len(empty)
    assert html.count('class="chart"') == 1


def test_a_damaged_equity_file_is_left_out_and_counted(tmp_path: Path) -> None:
    cfg = plain_config(tmp_path)
    cfg.update(results_storage="disk", event_tracing=EQUITY_EVENTS)
    res = run(cfg, workers=1)
    try:
        best = res.phases["parameter_search"].best
        assert best is not None
        html = render_report(tmp_path, res.run_id)
        assert html.count('class="chart"') == 2  # the best set's curve, the memory timeline
        # the block window's equity table holds the best set's curve
        path = next(tmp_path.rglob("equity.arrow"))
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        html = render_report(tmp_path, res.run_id)
    finally:
        res.close()
    assert html.count('class="chart"') == 1
    assert "1 stored item(s) could not be read" in html
    assert "The run kept no equity curve" in html


def test_heatmap_needs_two_varying_parameters(full_run: tuple[Path, str]) -> None:
    results, run_id = full_run
    with open_catalog(results, create=False) as catalog:
        data = read_run(catalog, run_id)
    heatmaps = {s.key: s for s in build_sections(data)}["heatmap"].figures
    search = heatmaps[0]["data"][0]
    assert search["x"] == ["3", "5", "8", "13"] and search["y"] == ["20", "40", "60"]
    # fast < slow leaves every cell of this grid; each is the train window's sharpe ratio
    train = {
        (r["parameters"]["strategy.fast"], r["parameters"]["strategy.slow"]): r["metrics"]
        for r in data.phases["search"].aggregates["train"]["ranking"]
    }
    assert search["z"][1][2] == train[(8, 40)]["sharpe_ratio"]


# ------------------------------------------------------------------ the memory timeline


def test_run_records_its_memory_and_spill_timeline(full_run: tuple[Path, str]) -> None:
    results, run_id = full_run
    with open_catalog(results, create=False) as catalog:
        data = read_run(catalog, run_id)
    summary = data.phases["mc"].summary
    samples = summary["memory_timeline"]
    stats = summary["store_stats"]["-/hybrid"]
    assert len(samples) >= 2
    times = [s["t"] for s in samples]
    assert times == sorted(times) and times[0] < times[-1]
    # the last sample is taken as the phase ends: its counters are the store's
    assert samples[-1]["window"] == "mc0004"
    assert samples[-1]["spills"] == stats["spills"] > 0
    assert samples[-1]["spilled_bytes"] == stats["spilled_bytes"]
    budget = stats["budget_bytes"]
    assert all(s["budget_bytes"] == budget for s in samples)
    assert max(s["bytes_in_memory"] for s in samples) <= stats["peak_bytes_in_memory"]
    assert all(s["rss_bytes"] and s["rss_bytes"] > 0 for s in samples)
    # a file-mode phase holds nothing in memory and has no budget
    wf = data.phases["wf"].summary["memory_timeline"]
    assert wf and all(s["bytes_in_memory"] == 0 and s["budget_bytes"] is None for s in wf)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def phase_started(self, phase: str, windows: int, containers: int) -> None:
        self.calls.append(("started", phase, windows, containers))

    def containers_done(self, phase: str, count: int) -> None:
        self.calls.append(("containers", phase, count))

    def window_done(self, phase: str, window_id: str, resumed: bool) -> None:
        self.calls.append(("window", phase, window_id, resumed))

    def phase_done(self, phase: str, outcome: Any) -> None:
        self.calls.append(("done", phase, outcome))


def test_timeline_observer_passes_calls_on_and_counts_memory_stores() -> None:
    stats = {
        "-/hybrid": {"store": "hybrid", "bytes_in_memory": 100, "budget_bytes": 150, "spills": 2},
        "train/hybrid": {"store": "hybrid", "bytes_in_memory": 60, "budget_bytes": 150},
        "test/memory": {"store": "memory", "bytes_in_memory": 7},
        "test/file": {"store": "file", "bytes_in_memory": 0, "bytes_on_disk": 999},
    }
    inner = _Recorder()
    obs = timeline_mod.TimelineObserver(inner, lambda: stats)
    obs.phase_started("p", 2, 3)
    obs.containers_done("p", 3)
    obs.window_done("p", "train", False)
    obs.phase_done("p", "outcome")
    assert inner.calls == [
        ("started", "p", 2, 3),
        ("containers", "p", 3),
        ("window", "p", "train", False),
        ("done", "p", "outcome"),
    ]
    last = obs.finish()[-1]
    # the hybrid root (its window view is part of it) and the memory store
    assert last["bytes_in_memory"] == 107 and last["budget_bytes"] == 150
    assert last["spills"] == 2 and last["window"] == "train"


def test_timeline_keeps_a_bounded_number_of_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline_mod, "MAX_SAMPLES", 8)
    tl = timeline_mod.Timeline()
    for i in range(40):
        tl.add([{"bytes_in_memory": i, "spills": i}], f"w{i}")
    assert 4 <= len(tl.samples) <= 8
    kept = [s["bytes_in_memory"] for s in tl.samples]
    assert kept[0] == 0 and kept == sorted(kept) and kept[-1] >= 32  # spans the whole run


# ------------------------------------------------------------------ errors


def test_unknown_run_names_it_and_how_to_list_runs(full_run: tuple[Path, str]) -> None:
    results, _ = full_run
    with pytest.raises(UnknownKey) as info:
        render_report(results, "no-such-run")
    assert "'no-such-run'" in str(info.value) and "phasekit runs" in str(info.value)


def test_without_plotly_the_report_names_its_extra(
    full_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = builtins.__import__

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "plotly" or name.startswith("plotly."):
            raise ImportError("No module named 'plotly'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(MissingDependency, match=r"pip install 'phasekit\[report\]'"):
        render_report(full_run[0], full_run[1])


def test_an_open_catalog_stays_open(full_run: tuple[Path, str]) -> None:
    results, run_id = full_run
    with open_catalog(results, create=False) as catalog:
        assert run_id in render_report(catalog, run_id)
        assert catalog.resolve_run(run_id).process_id == run_id  # still usable


# ------------------------------------------------------------------ the command


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    results = tmp_path_factory.mktemp("report-cli")
    ids = []
    for name in ("first", "second"):
        res = run(plain_config(results, run_name=name), workers=1)
        ids.append(res.run_id)
        res.close()
    return results, ids[0], ids[1]


def test_cli_run_argument_picks_the_run(
    two_runs: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, first, second = two_runs
    for arg, want in ((first, first), ("latest", second)):
        out = tmp_path / f"{arg}.html"
        code, stdout, _ = _cli(
            ["report", arg, "--results-dir", str(results), "-o", str(out)], capsys
        )
        assert code == 0 and want in stdout
        text = out.read_text(encoding="utf-8")
        assert f"phasekit report: {want}" in text
    code, _, err = _cli(["report", "nope", "--results-dir", str(results)], capsys)
    assert code == 1 and "'nope'" in err and "phasekit runs" in err


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder is ``tmp_path`` (its ./results holds no catalog), and no
    environment variable names a catalog."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PHASEKIT_CATALOG", raising=False)
    monkeypatch.delenv("PHASEKIT_RESULTS_DIR", raising=False)
    return tmp_path


def test_cli_output_flag_and_its_default(
    two_runs: tuple[Path, str, str], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, first, _ = two_runs
    tmp_path = in_tmp
    assert _cli(["report", first, "--results-dir", str(results)], capsys)[0] == 0
    assert [p.name for p in tmp_path.iterdir()] == [f"report-{first}.html"]
    target = tmp_path / "elsewhere.html"
    assert (
        _cli(["report", first, "--results-dir", str(results), "--output", str(target)], capsys)[0]
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.html", f"report-{first}.html"]


def test_report_files_are_mode_0600_whatever_the_umask(
    two_runs: tuple[Path, str, str], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, first, _ = two_runs
    existing = in_tmp / "existing.html"
    existing.write_text("old")
    existing.chmod(0o644)  # a file that is there is made private too
    old = os.umask(0o022)
    try:
        assert _cli(["report", first, "--results-dir", str(results)], capsys)[0] == 0
        assert (
            _cli(["report", first, "--results-dir", str(results), "-o", str(existing)], capsys)[0]
            == 0
        )
        write_report(results, first, in_tmp / "api.html")
    finally:
        os.umask(old)
    for name in (f"report-{first}.html", "existing.html", "api.html"):
        path = in_tmp / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert "phasekit report" in path.read_text(encoding="utf-8")


def test_cli_catalog_and_results_dir_flags(
    two_runs: tuple[Path, str, str], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, first, _ = two_runs
    out = str(in_tmp / "r.html")
    code, _, err = _cli(["report", first, "-o", out], capsys)
    assert "catalog" in err
    assert code == 1 and not Path(out).exists()
    code, _, _ = _cli(
        ["report", first, "--catalog", str(results / "catalog.sqlite"), "-o", out], capsys
    )
    assert code == 0 and first in Path(out).read_text(encoding="utf-8")
    Path(out).unlink()
    code, _, _ = _cli(["report", first, "--results-dir", str(results), "-o", out], capsys)
    assert code == 0 and first in Path(out).read_text(encoding="utf-8")
