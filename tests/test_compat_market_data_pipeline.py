"""phasekit.compat.market_data_pipeline: the original's own DAG tests with only their
imports changed, and the facade's settings and differences, on both Channel backends.

The original's tests come from its pinned sdist (``.ci/run`` downloads it and sets
``PHASEKIT_MDP_SDIST``); they are extracted to a tmp folder, their imports rewritten,
and run by pytest in a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import phasekit
from _stream_support import stream_backend  # noqa: F401
from phasekit.compat import market_data_pipeline as mdp
from phasekit.errors import ChannelClosed, ConfigError, InvalidArgument, StreamError
from phasekit.stream import partition

SDIST_ENV = "PHASEKIT_MDP_SDIST"
SDIST_NAME = "market_data_pipeline-0.8.70"
PEER_TESTS = ("tests/unit/dag/", "tests/load/test_dag_perf_comparison.py")
PEER_TEST_COUNT = 13
_IMPORT = re.compile(
    r"^(\s*from\s+)market_data_pipeline\.orchestration\.dag(?:\.\w+)*(\s+import\b)"
)

# Runs the coroutine tests of the original (marked ``pytest.mark.asyncio``) on a fresh
# event loop each, which is what its pytest-asyncio configuration does.
_RUNNER = """\
import asyncio, inspect
import pytest

def pytest_configure(config):
    config.addinivalue_line("markers", "asyncio: a coroutine test")

@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        names = pyfuncitem._fixtureinfo.argnames
        asyncio.run(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
        return True
    return None
"""

BASE = datetime(2024, 1, 1, 9, 30, tzinfo=UTC)


def _sdist() -> Path:
    value = os.environ.get(SDIST_ENV, "")
    path = Path(value) if value else None
    if path is not None and path.is_dir():
        path = path / f"{SDIST_NAME}.tar.gz"
    if path is None or not path.is_file():
        why = f"{SDIST_ENV} does not name the {SDIST_NAME} sdist (got {value!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(why + "; .ci/run downloads it")
        pytest.skip(
            why + "; `pip download --no-deps --no-binary :all: market-data-pipeline==0.8.70`"
        )
    return path


def _rewrite(text: str) -> str:
    return "".join(_IMPORT.sub(r"\1phasekit.compat.market_data_pipeline\2", line)
                   for line in text.splitlines(keepends=True))  # fmt: skip


def _extract(sdist: Path, dest: Path) -> list[Path]:
    written = []
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            rel = member.name.split("/", 1)[-1]
            if not (member.isfile() and rel.endswith(".py") and "/test_" in f"/{rel}"):
                continue
            if not any(rel.startswith(p) for p in PEER_TESTS):
                continue
            source = tar.extractfile(member)
            assert source is not None
            original = source.read().decode()
            ported = _rewrite(original)
            changed = [(a, b) for a, b in zip(original.splitlines(), ported.splitlines()) if a != b]
            assert all(_IMPORT.match(a) and "import" in b for a, b in changed)
            assert len(original.splitlines()) == len(ported.splitlines())
            target = dest / Path(rel).name
            target.write_text(ported)
            written.append(target)
    return written


def test_the_originals_dag_tests_pass_with_only_their_imports_changed(
    backend_name: str, tmp_path: Path
) -> None:
    files = _extract(_sdist(), tmp_path)
    assert len(files) == 7
    assert not any("import market_data_pipeline" in f.read_text() for f in files)
    assert not any("from market_data_pipeline" in f.read_text() for f in files)
    (tmp_path / "conftest.py").write_text(_RUNNER)
    report = tmp_path / "report.xml"
    package_root = str(Path(phasekit.__file__).resolve().parent.parent)
    env = dict(os.environ, PHASEKIT_BACKEND=backend_name)
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         f"--junitxml={report}", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": PEER_TEST_COUNT, "failures": 0, "errors": 0, "skipped": 0}, (
        proc.stdout + proc.stderr
    )
    assert proc.returncode == 0


# ------------------------------------------------------------------ the facade itself

pytestmark_backend = pytest.mark.usefixtures("stream_backend")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _aiter(items: list[Any], pause: float = 0.0) -> Any:
    for it in items:
        await asyncio.sleep(pause)
        yield it


@pytestmark_backend
def test_channel_waits_when_full_and_signals_its_marks() -> None:
    async def main() -> tuple[list[int], list[str]]:
        events: list[str] = []

        async def high() -> None:
            events.append("high")

        async def low() -> None:
            events.append("low")

        ch: mdp.Channel[int] = mdp.Channel(4, watermark=mdp.Watermark(3, 1), on_high=high,
                                           on_low=low)  # fmt: skip
        got: list[int] = []

        async def consume() -> None:
            while True:
                try:
                    got.append(await ch.get())
                except ChannelClosed:
                    return
                await asyncio.sleep(0.001)

        async def produce() -> None:
            for i in range(20):
                await ch.put(i)
                assert ch.size() <= 4
            await ch.close()

        await asyncio.gather(produce(), consume())
        await asyncio.sleep(0.01)
        with pytest.raises(ChannelClosed):
            await ch.put(99)
        return got, events

    got, events = _run(main())
    assert got == list(range(20))
    assert events[:2] == ["high", "low"]
    with pytest.raises(InvalidArgument, match="low <= high"):
        mdp.Channel(4, watermark=mdp.Watermark(high=1, low=3))


def _linear(fail_in: str = "") -> mdp.Dag:
    async def src(_in: Any, out: Any) -> None:
        for i in range(50):
            for ch in out.values():
                await ch.put(i)

    async def dbl(ins: Any, out: Any) -> None:
        (src_ch,), (dst,) = ins.values(), out.values()
        while True:
            try:
                x = await src_ch.get()
            except ChannelClosed:
                return
            if fail_in == "dbl" and x == 7:
                raise KeyError("boom")
            await dst.put(2 * x)

    async def snk(ins: Any, _out: Any) -> None:
        (ch,) = ins.values()
        total = 0
        while True:
            try:
                total += await ch.get()
            except ChannelClosed:
                break
        snk.total = total  # type: ignore[attr-defined]

    dag = mdp.Dag()
    for name, fn in (("src", src), ("dbl", dbl), ("snk", snk)):
        dag.add_node(mdp.Node(name, fn))
    dag.add_edge("src", "dbl")
    dag.add_edge("dbl", "snk")
    return dag


@pytestmark_backend
def test_runtime_settings_take_effect() -> None:
    dag = _linear()
    stats = _run(mdp.DagRuntime(dag, mdp.RunConfig(channel_capacity=4)).start())
    assert stats.tasks_started == stats.tasks_completed == 3
    assert dag.nodes["snk"].fn.total == 2 * sum(range(50))  # type: ignore[attr-defined]
    assert stats.high_watermark_events >= 1
    quiet = _run(mdp.DagRuntime(_linear(), mdp.RunConfig(channel_capacity=512)).start())
    assert quiet.high_watermark_events == 0  # 50 items never fill 75% of 512
    with pytest.raises(StreamError, match="max_concurrency"):
        mdp.DagRuntime(_linear(), mdp.RunConfig(max_concurrency=2))
    with pytest.raises(InvalidArgument, match=r"low_watermark_pct.*must not exceed"):
        mdp.RunConfig(high_watermark_pct=0.2, low_watermark_pct=0.5)


@pytestmark_backend
def test_a_failing_node_fails_the_run_and_stop_cancels() -> None:
    with pytest.raises(StreamError, match="node 'dbl' failed with KeyError") as info:
        _run(mdp.DagRuntime(_linear(fail_in="dbl")).start())
    assert isinstance(info.value.__cause__, KeyError)

    async def forever(_in: Any, out: Any) -> None:
        while True:
            await asyncio.sleep(0.01)

    async def stop_it() -> mdp.DagRunStats:
        dag = mdp.Dag()
        dag.add_node(mdp.Node("f", forever))
        rt = mdp.DagRuntime(dag)
        task = asyncio.create_task(rt.start())
        await asyncio.sleep(0.05)
        await rt.stop()
        return await task

    stats = _run(stop_it())
    assert stats.cancelled and stats.tasks_completed == 0


def test_graph_validation_errors_are_value_errors() -> None:
    dag = mdp.Dag()
    dag.add_node(mdp.Node("a", _aiter))
    with pytest.raises(ValueError, match="duplicate node name 'a'"):
        dag.add_node(mdp.Node("a", _aiter))
    with pytest.raises(mdp.DagValidationError, match="unknown destination node 'zz'"):
        dag.add_edge("a", "zz")
    dag.add_node(mdp.Node("b", _aiter))
    dag.add_edge("a", "b")
    dag.add_edge("b", "a")
    with pytest.raises(ValueError, match="cycle"):
        dag.validate()


@pytestmark_backend
def test_hash_partition_default_custom_hasher_and_marks() -> None:
    items = [{"sym": f"S{i % 10}", "x": i} for i in range(200)]

    async def drain(parts: Any) -> list[list[dict[str, Any]]]:
        out: list[list[dict[str, Any]]] = [[] for _ in range(parts.partitions())]

        async def one(i: int) -> None:
            async for it in parts.stream_partition(i):
                out[i].append(it)

        await asyncio.gather(*(one(i) for i in range(parts.partitions())))
        return out

    async def main(**kw: Any) -> list[list[dict[str, Any]]]:
        parts = await mdp.hash_partition(_aiter(items), get_key=lambda x: x["sym"], **kw)
        return await drain(parts)

    spec = mdp.PartitioningSpec(partitions=4, capacity=8)
    default = _run(main(spec=spec))
    for i, part in enumerate(default):
        assert all(partition(it["sym"], 4) == i for it in part)
    custom = _run(main(spec=spec, hasher=lambda k: int(k[1:])))
    for i, part in enumerate(custom):
        assert all(int(it["sym"][1:]) % 4 == i for it in part)
        assert [it["x"] for it in part] == sorted(it["x"] for it in part)
    highs: list[int] = []

    async def on_high(i: int) -> None:
        highs.append(i)

    async def slow_drain() -> None:
        parts = await mdp.hash_partition(
            _aiter(items), get_key="sym", on_high=on_high,
            spec=mdp.PartitioningSpec(partitions=2, capacity=8, high_watermark=0.5),
        )  # fmt: skip
        await asyncio.sleep(0.05)
        await drain(parts)

    _run(slow_drain())
    assert sorted(set(highs)) == [0, 1]

    async def broken() -> Any:
        yield {"sym": "A"}
        raise OSError("feed lost")

    async def fails() -> None:
        parts = await mdp.hash_partition(broken(), get_key="sym", spec=spec)
        await drain(parts)

    with pytest.raises(StreamError, match="feed lost"):
        _run(fails())


def _window(items: list[Any], pause: float = 0.0, **kw: Any) -> list[mdp.WindowFrame[Any, Any]]:
    spec = kw.pop("spec", mdp.TumblingWindowSpec(size=timedelta(seconds=5)))

    async def main() -> list[mdp.WindowFrame[Any, Any]]:
        return [f async for f in mdp.tumbling_window_event_time(
            _aiter(items, pause), spec, get_event_time=lambda x: x["t"], **kw)]  # fmt: skip

    return _run(main())


def _t(s: float, v: int = 0) -> dict[str, Any]:
    return {"t": BASE + timedelta(seconds=s), "v": v}


def test_windows_lateness_lag_and_partial_frames() -> None:
    late: list[Any] = []
    policy = mdp.WatermarkPolicy(lag=timedelta(0), allowed_lateness=timedelta(0))
    frames = _window([_t(0, 1), _t(6, 2), _t(1, 3)], watermark_policy=policy, on_late=late.append)
    assert [len(f.items) for f in frames] == [1, 1]
    assert late == [_t(1, 3)]
    allowed = mdp.WatermarkPolicy(lag=timedelta(0), allowed_lateness=timedelta(seconds=5))
    frames = _window([_t(0, 1), _t(6, 2), _t(1, 3)], watermark_policy=allowed)
    assert [(f.start.second, len(f.items), f.firing) for f in frames] == [
        (0, 1, 0), (0, 2, 1), (5, 1, 0)]  # fmt: skip
    lagged = mdp.WatermarkPolicy(lag=timedelta(seconds=2))
    frames = _window([_t(0, 1), _t(6, 2), _t(1, 3)], watermark_policy=lagged)
    assert [len(f.items) for f in frames] == [2, 1]
    partial = _window(
        [_t(0, 1), _t(1, 2), _t(2, 3)], pause=0.06, flush_interval=0.02,
        spec=mdp.TumblingWindowSpec(size=timedelta(seconds=5), emit_partial=True),
    )  # fmt: skip
    assert any(f.partial for f in partial)
    assert not partial[-1].partial and len(partial[-1].items) == 3
    none_partial = _window([_t(0, 1), _t(1, 2)], pause=0.06, flush_interval=0.02)
    assert not any(f.partial for f in none_partial)
    with pytest.raises(InvalidArgument, match="flush_interval"):
        _window([_t(0)], flush_interval=0)


def test_resample_ohlc_orders_by_time_and_honours_lag() -> None:
    ticks = [
        {"s": "A", "t": BASE + timedelta(seconds=3), "p": 103},
        {"s": "A", "t": BASE + timedelta(seconds=0), "p": 100},  # earlier, arrives later
        {"s": "A", "t": BASE + timedelta(seconds=4), "p": 99},
        {"s": "A", "t": BASE + timedelta(seconds=7), "p": 50},
        {"s": "A", "t": BASE + timedelta(seconds=1), "p": 101},  # late unless lag >= 3 s
    ]

    def bars(lag: timedelta, **kw: Any) -> list[mdp.Bar]:
        async def main() -> list[mdp.Bar]:
            return [b async for b in mdp.resample_ohlc(
                _aiter(ticks), get_symbol="s", get_price=lambda x: x["p"], get_time="t",
                window=timedelta(seconds=5), watermark_lag=lag, **kw)]  # fmt: skip

        return _run(main())

    first, second = bars(timedelta(seconds=3))
    assert (first.open, first.high, first.low, first.close, first.count) == (100, 103, 99, 99, 4)
    assert (first.start, first.end) == (BASE, BASE + timedelta(seconds=5))
    assert (second.open, second.count, second.symbol) == (50, 1, "A")
    late: list[Any] = []
    strict = bars(timedelta(0), on_late=late.append)
    assert [b.count for b in strict] == [3, 1]
    assert late == [ticks[4]]


@pytestmark_backend
def test_dedupe_throttle_and_router() -> None:
    async def dedupe(ttl: float) -> list[Any]:
        items = [("A", 1), ("A", 1), ("A", 2), ("A", 1)]
        return [x async for x in mdp.deduplicate(_aiter(items, 0.02), key_fn=lambda x: x,
                                                 ttl=ttl)]  # fmt: skip

    assert _run(dedupe(1.0)) == [("A", 1), ("A", 2), ("A", 1)]
    assert _run(dedupe(0.01)) == [("A", 1), ("A", 1), ("A", 2), ("A", 1)]

    async def paced(rate: float) -> float:
        t0 = time.perf_counter()
        assert [x async for x in mdp.throttle(_aiter(list(range(5))), rate_limit=rate)] == [
            0, 1, 2, 3, 4]  # fmt: skip
        return time.perf_counter() - t0

    assert _run(paced(50)) >= 5 / 50 * 0.9
    assert _run(paced(10_000)) < 5 / 50 * 0.9

    async def route() -> tuple[list[Any], bool]:
        a: mdp.Channel[Any] = mdp.Channel()
        await mdp.router(_aiter([{"k": "a"}, {"k": "b"}, {"k": "a"}]), {"a": a}, route_key="k")
        got = [await a.get(), await a.get()]
        return got, a.closed()

    assert _run(route()) == ([{"k": "a"}, {"k": "a"}], True)


@pytestmark_backend
def test_channel_operators() -> None:
    async def main() -> tuple[list[Any], list[Any]]:
        src: mdp.Channel[int] = mdp.Channel()
        mid: mdp.Channel[int] = mdp.Channel()
        out: mdp.Channel[Any] = mdp.Channel()

        async def feed() -> None:
            for i in range(7):
                await src.put(i)
            await asyncio.sleep(0.08)
            await src.put(7)
            await src.close()

        async def odd(x: int) -> bool:
            return x % 2 == 1

        await asyncio.gather(
            feed(),
            mdp.filter_async(src, mid, odd),
            mdp.buffer_async(mid, out, max_items=2, flush_interval=0.04),
        )
        lists = []
        while True:
            try:
                lists.append(await out.get())
            except ChannelClosed:
                break
        a: mdp.Channel[int] = mdp.Channel()
        b: mdp.Channel[int] = mdp.Channel()
        for i in range(3):
            await a.put(i)
        await a.close()
        await mdp.map_async(a, b, lambda x: x * 10)
        return lists, [await b.get() for _ in range(3)]

    lists, mapped = _run(main())
    assert lists == [[1, 3], [5], [7]]
    assert mapped == [0, 10, 20]


@pytestmark_backend
def test_build_dag_from_dict_runs_registered_components() -> None:
    registry = mdp.default_registry()
    ticks = [{"sym": "A", "t": BASE + timedelta(seconds=i), "px": 100 + i} for i in range(12)]
    registry.register_provider("provider.list", lambda items: items)
    got: list[mdp.Bar] = []

    async def collect(items: Any) -> None:
        async for bar in items:
            got.append(bar)

    registry.register_operator("sink.collect", collect)
    config = {"dag": {
        "nodes": [
            {"id": "src", "type": "provider.list", "params": {"items": ticks}},
            {"id": "bars", "type": "operator.resample_ohlc", "params": {
                "get_symbol": "sym", "get_price": "px", "get_time": "t",
                "window": timedelta(seconds=5)}},
            {"id": "out", "type": "sink.collect"},
        ],
        "edges": [["src", "bars"], ["bars", "out"]],
    }}  # fmt: skip
    dag = mdp.build_dag_from_dict(config, registry)
    stats = _run(mdp.DagRuntime(dag).start())
    assert stats.tasks_completed == 3
    assert [(b.open, b.close, b.count) for b in got] == [
        (100, 104, 5),
        (105, 109, 5),
        (110, 111, 2),
    ]
    bad = {"dag": {"nodes": [{"id": "x", "type": "operator.nope"}], "edges": []}}
    with pytest.raises(ConfigError, match=r"dag.nodes\[0\].*'operator.nope' is not registered"):
        mdp.build_dag_from_dict(bad, registry)
    with pytest.raises(ValueError, match="must be"):
        mdp.build_dag_from_dict({"dag": {"nodes": config["dag"]["nodes"], "edges": [["src"]]}},
                                registry)  # fmt: skip


def test_resample_ohlc_emits_a_bar_before_the_feed_goes_on_and_raises_its_error() -> None:
    async def main() -> tuple[list[int], str]:
        got_bar = asyncio.Event()

        async def live() -> Any:
            for s in (0, 1, 2, 6):  # the tick at 6 s closes the bar [0, 5)
                await asyncio.sleep(0.001)
                yield {"s": "A", "t": BASE + timedelta(seconds=s), "p": 100 + s}
            await asyncio.wait_for(got_bar.wait(), 5)  # goes on only once the bar is out
            yield {"s": "A", "t": BASE + timedelta(seconds=7), "p": 1}
            raise OSError("feed lost")

        counts = []
        with pytest.raises(OSError, match="feed lost") as info:
            async for bar in mdp.resample_ohlc(live(), get_symbol="s", get_price="p",
                                               get_time="t", window=timedelta(seconds=5),
                                               watermark_lag=timedelta(0)):  # fmt: skip
                counts.append(bar.count)
                got_bar.set()
        return counts, str(info.value)

    counts, error = _run(main())
    assert counts == [3]
    assert error == "feed lost"
