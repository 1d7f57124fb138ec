"""Each list of allowed values has one owner; config takes it from there, and where a copy
must stay (the Rust ring's policies and event codes) this file checks the copy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from phasekit import registry
from phasekit.backtest.metrics import compute_metrics
from phasekit.backtest.strategies import STRATEGIES
from phasekit.catalog import open_catalog
from phasekit.config import resolve
from phasekit.errors import ConfigError, InvalidArgument
from phasekit.events import RETENTION_POLICIES, EventType
from phasekit.workflow.params import ParameterSpace
from phasekit.workflow.sequences import default_lengths, windows_for

RUST = Path(__file__).resolve().parents[1] / "rust"


def test_config_imports_neither_backtest_nor_workflow() -> None:
    code = (
        "import sys, phasekit.config\n"
        "up = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['phasekit', 'backtest'], ['phasekit', 'workflow'], ['phasekit', 'tracing']))\n"
        "print(','.join(up))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- strategies and metrics (registry <- backtest) ------------------------------------------


def test_every_registered_strategy_is_implemented() -> None:
    assert tuple(STRATEGIES) == registry.STRATEGY_NAMES
    for name in registry.STRATEGY_NAMES:
        cfg = resolve({"phases": [{"name": "a", "strategy": {"type": name}}]})
        assert cfg.phase("a").params.strategy is not None
    with pytest.raises(ConfigError, match="sma_crossover, momentum, mean_reversion"):
        resolve({"phases": [{"name": "a", "strategy": {"type": "nope"}}]})


def test_every_metric_name_is_computed() -> None:
    equity = np.linspace(100_000.0, 101_000.0, 50)
    metrics = compute_metrics(equity, 100_000.0, 252.0, np.array([10.0, -5.0]))
    assert set(metrics) == set(registry.METRIC_NAMES)
    for name in registry.METRIC_NAMES:
        assert resolve({"objective_function": name}).base is not None


# --- retention policies and event kinds (events <- _pure, _core, config) ---------------------


@pytest.mark.parametrize("policy", RETENTION_POLICIES)
def test_each_retention_policy_builds_a_ring(backend: ModuleType, policy: str) -> None:
    ring = backend.EventRing(policy=policy, capacity=10)
    assert ring.policy == policy
    assert resolve({"retention_policy": policy}).base.retention_policy == policy


def test_ring_policy_lists_agree(backend: ModuleType) -> None:
    with pytest.raises(InvalidArgument) as err:
        backend.EventRing(policy="nope")
    assert f"one of {', '.join(RETENTION_POLICIES)};" in str(err.value)
    with pytest.raises(ConfigError, match=", ".join(RETENTION_POLICIES)):
        resolve({"retention_policy": "nope"})


def test_rust_event_codes_match_event_type() -> None:
    consts = [
        (path.name, name, int(code))
        for path in sorted(RUST.rglob("*.rs"))
        for name, code in re.findall(r"pub const ([A-Z_]+): u16 = (\d+);", path.read_text())
        if name in EventType.__members__
    ]
    assert consts, "no event code constants found under rust/"
    for where, name, code in consts:
        assert code == EventType[name], (
            f"{where}: {name} = {code}, EventType says {EventType[name]}"
        )


# --- cleanup policies (catalog <- config) ----------------------------------------------------


@pytest.mark.parametrize("policy", registry_policies := ("keep_all", "keep_latest", "keep_none"))
def test_each_cleanup_policy_config_accepts_runs(tmp_path: Path, policy: str) -> None:
    r = resolve({"results_dir": str(tmp_path), "storage_strategy": {"cleanup_policy": policy}})
    catalog = open_catalog(r.catalog.location, results_dir=tmp_path)
    try:
        report = catalog.cleanup(r.cleanup_policy, dry_run=True)
        assert (report.policy, report.selected) == (policy, [])
    finally:
        catalog.close()


def test_cleanup_policy_lists_agree(tmp_path: Path) -> None:
    from phasekit.catalog.cleanup import POLICIES

    assert POLICIES == registry_policies
    with pytest.raises(ConfigError, match=", ".join(POLICIES)):
        resolve({"storage_strategy": {"cleanup_policy": "keep_some"}})
    catalog = open_catalog(tmp_path / "c.sqlite", results_dir=tmp_path)
    try:
        with pytest.raises(InvalidArgument, match=", ".join(POLICIES)):
            catalog.cleanup("keep_some")
    finally:
        catalog.close()


# --- sequences and their defaults (registry <- workflow.sequences, config) -------------------


@pytest.mark.parametrize("sequence", registry.SEQUENCES)
def test_each_sequence_config_accepts_cuts_windows(sequence: str) -> None:
    phase = resolve({"phases": [{"name": "a", "sequence": sequence}]}).phase("a")
    settings: dict[str, Any] = phase.params.model_dump(exclude_none=True)
    settings.setdefault("walk_forward", default_lengths(1000))
    assert windows_for(phase.sequence, 1000, settings)


def test_sequence_defaults_come_from_one_place() -> None:
    params = resolve({"phases": [{"name": "a", "sequence": "train_test"}]}).phase("a").params
    assert params.data_split == registry.DEFAULT_DATA_SPLIT
    cfg = resolve({"phases": [{"name": "m", "sequence": "monte_carlo", "monte_carlo": {}}]})
    model = cfg.phase("m").params.monte_carlo
    assert model is not None
    assert (model.n, model.batch, model.seed, model.method) == (
        registry.DEFAULT_SIMULATIONS,
        registry.DEFAULT_BATCH,
        registry.DEFAULT_SEED,
        registry.DEFAULT_MONTE_CARLO_METHOD,
    )
    windows = windows_for("monte_carlo", 500, {})
    assert sum(len(w.simulations) for w in windows) == registry.DEFAULT_SIMULATIONS
    assert len(windows[0].simulations) == registry.DEFAULT_BATCH
    wf_cfg = resolve({"phases": [{"name": "w", "walk_forward": {"train": 10}}]})
    wf = wf_cfg.phase("w").params.walk_forward
    assert wf is not None and wf.mode == registry.DEFAULT_WALK_FORWARD_MODE


# --- one parser for parameter-space constraints and ranges ----------------------------------


def test_float_range_includes_the_last_value_below_stop() -> None:
    space = {"strategy.fast": {"range": [0, 1.05, 0.25]}}
    resolve({"parameter_space": space})  # config accepts it
    values = [s["strategy.fast"] for s in ParameterSpace.from_config(space)]
    assert values == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("text", ["fast <", "strategy.fast <> 3", "strategy.fast =< 3"])
def test_config_and_workflow_refuse_the_same_constraints(text: str) -> None:
    space = {"strategy.fast": [1, 2], "constraints": [text]}
    with pytest.raises(ConfigError, match="is not a constraint") as config_err:
        resolve({"parameter_space": space})
    with pytest.raises(ConfigError, match="is not a constraint") as workflow_err:
        ParameterSpace.from_config(space)
    tail = str(workflow_err.value).split(": ", 1)[1]
    assert tail in str(config_err.value)


# --- _pure is self-contained; one checksum module, one fsync helper ---------------------------

# the sources of the package under test: the checkout's, or the installed wheel's
PACKAGE = Path(registry.__file__).resolve().parent
# _optional owns the extras table (which extra a missing package comes from); it imports
# only errors, so _pure's AeadChunks names the `crypto` extra through it
PURE_MAY_IMPORT = ("phasekit._pure", "phasekit.errors", "phasekit.events", "phasekit.checksum",
                   "phasekit.fsync", "phasekit._optional")  # fmt: skip


def _phasekit_imports(path: Path) -> list[str]:
    """Every ``phasekit...`` module a file imports, function-local imports included."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
    return [m for m in out if m == "phasekit" or m.startswith("phasekit.")]


def test_pure_imports_only_errors_and_low_level_owners() -> None:
    files = sorted((PACKAGE / "_pure").glob("*.py"))
    assert files
    for path in files:
        for module in _phasekit_imports(path):
            assert module.startswith(PURE_MAY_IMPORT), f"_pure/{path.name} imports {module}"


@pytest.mark.parametrize(
    "name", ["checksum.py", "fsync.py", "events.py", "registry.py", "space.py"]
)
def test_low_level_owners_import_only_errors(name: str) -> None:
    assert set(_phasekit_imports(PACKAGE / name)) <= {"phasekit.errors"}


def test_one_folder_fsync_helper() -> None:
    """No module but phasekit/fsync.py opens a folder to fsync it."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "fsync.py" and path.parent == PACKAGE:
            continue
        text = path.read_text()
        assert "O_DIRECTORY" not in text, path
        assert not re.search(r"def _?fsync_dir\b", text), path


def test_checksums_agree_across_backends_and_layers(tmp_path: Path, backend: ModuleType) -> None:
    from phasekit import checksum
    from phasekit.catalog import reference_checksum
    from phasekit.stores import durable

    data = bytes(range(256)) * 4099
    file = tmp_path / "f.bin"
    file.write_bytes(data)
    expected = checksum.bytes_checksum(data)
    assert backend.file_checksum(str(file)) == expected
    assert reference_checksum(file) == durable.path_checksum(file) == expected
    folder = tmp_path / "d"
    (folder / "a=1").mkdir(parents=True)
    (folder / "a=1" / "p.bin").write_bytes(data[:100])
    (folder / "b.bin").write_bytes(data[100:300])
    crc = backend.crc32(b"a=1/p.bin\x00" + data[:100])
    crc = backend.crc32(b"b.bin\x00" + data[100:300], crc)
    assert reference_checksum(folder) == durable.path_checksum(folder) == checksum.format_crc32(crc)


# --- docs/config.md names every value the owners allow -----------------------------------------


def test_docs_config_lists_every_allowed_value() -> None:
    from phasekit.catalog.cleanup import POLICIES
    from phasekit.config import admf, vocab
    from phasekit.stores.formats import FORMATS

    docs = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    prose = re.sub(r"```.*?```", "", docs, flags=re.S)
    quoted = {q for line in prose.splitlines() for q in re.findall(r"`([^`]+)`", line)}
    lists: dict[str, Any] = {
        "modes": vocab.MODES,
        "formats": tuple(FORMATS),
        "compressions": {c for f in FORMATS.values() for c in f.compressions if c},
        "retention policies": RETENTION_POLICIES,
        "cleanup policies": POLICIES,
        "sequences": registry.SEQUENCES,
        "walk-forward modes": registry.WALK_FORWARD_MODES,
        "monte carlo methods": registry.MONTE_CARLO_METHODS,
        "strategies": registry.STRATEGY_NAMES,
        "metrics": registry.METRIC_NAMES,
        "calendars": registry.DATA_CALENDARS,
        "event kinds": tuple(EventType.__members__),
        "topologies": vocab.TOPOLOGIES,
        "output kinds": vocab.OUTPUT_KINDS,
        "data sources": vocab.DATA_SOURCES,
        "results layouts": registry.RESULTS_LAYOUTS,
        "trace levels": tuple(admf.TRACE_LEVELS),
        "results storage modes": tuple(admf.STORAGE_MODES),
        "event kind aliases": tuple(vocab.EVENT_KIND_ALIASES),
    }
    for what, values in lists.items():
        missing = sorted(str(v) for v in values if str(v) not in quoted)
        assert not missing, f"docs/config.md does not name these {what}: {missing}"


def test_arrow_compressions_are_the_ipc_writers(backend: ModuleType, tmp_path: Path) -> None:
    import pyarrow as pa

    from phasekit.stores.formats import FORMATS

    assert tuple(backend.COMPRESSIONS) == FORMATS["arrow"].compressions
    for codec in backend.COMPRESSIONS:
        with backend.IpcWriter(str(tmp_path / f"{codec}.arrow"), compression=codec) as writer:
            writer.write(pa.record_batch({"x": [1, 2, 3]}))
