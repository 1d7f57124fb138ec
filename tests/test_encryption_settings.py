"""The ``encryption`` setting and the storage side of access control, observed in runs.

Each setting changes what a run writes: ``encryption.enabled`` with ``key: env:NAME``
or ``key: file:PATH`` encrypts every data file (and records the key id in the catalog);
without it files are plain. Every file and folder a run creates is 0600/0700 (the
catalog too), and cleanup removes manifests, inline rows and data keys with the items.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from phasekit.catalog import open_catalog
from phasekit.cli import main as cli_main
from phasekit.crypt import generate_key, key_files, load_master_key
from phasekit.errors import ConfigError, KeyUnavailable
from phasekit.workflow import run

sys.path.insert(0, str(Path(__file__).parent))
from test_settings_effect import config

MAGIC = b"PKCRYPT"


def data_files(root: Path) -> list[Path]:
    """The data files of a results folder (not the catalog, manifests, keys, locks)."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file()
        and ".phasekit" not in p.parts
        and not p.name.startswith(("catalog.sqlite", ".phasekit"))
        and p.name != "manifest.json"
    ]


def catalog_key_ids(res: Any) -> set[Any]:
    with open_catalog(res.catalog_url) as catalog:
        return {
            i.key_id
            for i in catalog.list_items(res.run_id)
            if (i.data_reference or "").startswith("file:")
        }


def test_encryption_enabled_with_an_env_key_encrypts_every_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PK_ENV_KEY", generate_key())
    enc = {"enabled": True, "key": "env:PK_ENV_KEY"}
    res = run(config(tmp_path / "on", **{"data_flow.mode": "file", "encryption": enc}))
    files = data_files(tmp_path / "on")
    assert len(files) > 6 and all(p.read_bytes().startswith(MAGIC) for p in files)
    assert catalog_key_ids(res) == {load_master_key("env:PK_ENV_KEY").key_id}
    res.close()
    off = run(config(tmp_path / "off", **{"data_flow.mode": "file"}))
    files = data_files(tmp_path / "off")
    assert files and not any(p.read_bytes().startswith(MAGIC) for p in files)
    assert catalog_key_ids(off) == {None}
    assert not key_files(tmp_path / "off")
    off.close()


def test_encryption_key_from_a_file(tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    key.write_text(generate_key())
    enc = {"enabled": True, "key": f"file:{key}"}
    res = run(config(tmp_path / "r", **{"data_flow.mode": "streaming", "encryption": enc}))
    parts = list((tmp_path / "r").rglob("part-*.arrow"))
    assert parts and all(p.read_bytes().startswith(MAGIC) for p in parts)
    assert catalog_key_ids(res) == {load_master_key(f"file:{key}").key_id}
    res.close()


def test_encryption_of_a_hybrid_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from phasekit.workflow.results import read_json, run_encryption

    monkeypatch.setenv("PK_ENV_KEY", generate_key())
    enc = {"enabled": True, "key": "env:PK_ENV_KEY"}
    flow = {"mode": "hybrid", "memory_limit_mb": 0.001}
    res = run(config(tmp_path / "r", data_flow=flow, encryption=enc))
    path = res.run_dir / "parameter_search" / "phase_summary.json"
    assert path.read_bytes().startswith(MAGIC)
    summary = read_json(path, run_encryption(enc))
    assert summary["store_stats"]["-/hybrid"]["items_on_disk"] > 0  # it spilled, encrypted
    assert res.metrics("parameter_search").num_rows == 6
    res.close()


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"enabled": True}, "enabled: true needs a key"),
        ({"key": "env:X"}, "a key is given but enabled is not true"),
        ({"enabled": True, "key": "vault:x"}, "is not a key source; allowed: env:..., file:..."),
        ({"enabled": "yes", "key": "env:X"}, "expected true or false"),
        ({"enabled": True, "key": "env:X", "cipher": "aes"}, "cipher"),
    ],
)
def test_bad_encryption_settings_are_refused(
    tmp_path: Path, block: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        run(config(tmp_path / "r", encryption=block))


def test_a_missing_master_key_fails_before_the_run_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PK_ABSENT", raising=False)
    with pytest.raises(KeyUnavailable, match="PK_ABSENT is not set"):
        run(config(tmp_path / "r", encryption={"enabled": True, "key": "env:PK_ABSENT"}))
    assert not list((tmp_path / "r").rglob("*.arrow"))


def test_config_show_tells_where_encryption_comes_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    path = tmp_path / "wf.yaml"
    cfg = config(tmp_path / "r", encryption={"enabled": True, "key": "env:PK_SHOWN"})
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["config", "show", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["encryption"]
    assert shown["enabled"] is True and shown["key"] == "env:PK_SHOWN"
    assert shown["source"]["level"] == "user global"
    monkeypatch.setenv("COLUMNS", "200")  # the row on one line
    assert cli_main(["config", "show", str(path)]) == 0
    table = capsys.readouterr().out
    assert "on, key env:PK_SHOWN (user global: encryption)" in " ".join(table.split())
    path.write_text(yaml.safe_dump(config(tmp_path / "r")))
    assert cli_main(["config", "show", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["encryption"]
    assert shown["enabled"] is False and shown["source"]["path"] == "default"


def modes_of(root: Path) -> list[tuple[str, str]]:
    """Every file not 0600 and folder not 0700 under ``root`` (itself included)."""
    bad = []
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        if (p.is_dir() and mode != 0o700) or (p.is_file() and mode != 0o600):
            bad.append((oct(mode), str(p)))
    return bad


@pytest.mark.parametrize("mode", ["file", "streaming", "hybrid"])
@pytest.mark.parametrize("encrypted", [False, True])
def test_everything_a_run_creates_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, encrypted: bool
) -> None:
    monkeypatch.setenv("PK_ENV_KEY", generate_key())
    extra: dict[str, Any] = {"data_flow": {"mode": mode, "memory_limit_mb": 0.001}}
    if encrypted:
        extra["encryption"] = {"enabled": True, "key": "env:PK_ENV_KEY"}
    res = run(config(tmp_path / "results", **extra))
    root = tmp_path / "results"
    assert (root / "catalog.sqlite").exists()
    assert len(list(root.rglob("*"))) > 10
    assert modes_of(root) == []
    res.close()


def test_cleanup_removes_manifests_inline_rows_and_data_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PK_ENV_KEY", generate_key())
    root = tmp_path / "results"
    enc = {"enabled": True, "key": "env:PK_ENV_KEY"}
    res = run(config(root, **{"data_flow.mode": "file", "encryption": enc}))
    res.close()
    manifests = [p for p in root.rglob(".phasekit/*.json")]
    assert manifests and key_files(root)
    with open_catalog(str(root / "catalog.sqlite"), results_dir=str(root)) as catalog:
        assert catalog.list_items(res.run_id)
    assert cli_main(["cleanup", "--policy", "keep_none", "--results-dir", str(root)]) == 0
    assert not list(root.rglob(".phasekit/*.json"))
    assert not key_files(root)
    assert not data_files(root)
    with open_catalog(str(root / "catalog.sqlite"), results_dir=str(root)) as catalog:
        states = ("present", "deleting", "missing", "corrupt", "released")
        assert catalog.list_items(res.run_id, states=states) == []


def test_a_stream_dags_ipc_sink_file_is_private(tmp_path: Path) -> None:
    import pyarrow.feather as feather

    from phasekit.stream import Dag
    from phasekit.stream.connectors import ipc_sink

    path = tmp_path / "out.arrow"
    dag = Dag("t")
    dag.add_source("src", ({"x": i} for i in range(10)))
    dag.add_sink("sink", ipc_sink(str(path), rows_per_batch=4))
    dag.chain("src", "sink")
    dag.run()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert feather.read_table(path).column("x").to_pylist() == list(range(10))
