"""A catalog that checks itself (issue 15, point 2).

The corruption test damages a real ``catalog.sqlite`` (made by two small memory-mode
``phasekit run``) at least 300 times: random bit flips, byte runs, zeroed ranges and
truncations. After each damage the read paths of ``runs``, ``ls``, ``du`` and
``compare`` must either give the undamaged answers or raise ``CatalogError`` (never a
traceback, never a different answer), and ``doctor`` must flag every damaged file whose
answers differ.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hardening_util import run_tiny
from phasekit.catalog import open_catalog
from phasekit.errors import CatalogError, PhasekitError


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    folder = tmp_path_factory.mktemp("tiny")
    results = folder / "results"
    run_tiny(folder, results)
    return results, (results / "catalog.sqlite").read_bytes()


def answers(results: Path) -> dict[str, Any]:
    """What runs, ls, du and compare print (as data), read in-process."""
    with open_catalog(results, create=False) as cat:
        runs = cat.list_processes()
        ids = sorted(p.process_id for p in runs)
        out: dict[str, Any] = {
            "runs": [p.to_dict() for p in runs],
            "latest": cat.resolve_run("latest").process_id,
            "du": [u.to_dict() for u in cat.usage()],
            "ls": {run: [i.to_dict() for i in cat.list_items(run)] for run in ids},
        }
        if len(ids) >= 2:
            out["compare"] = cat.compare(ids[0], ids[1]).to_dict()
    return json.loads(json.dumps(out, default=str))


def _flip_bit(data: bytearray, rng: random.Random) -> str:
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    return f"bit flip at {i}"


def _flip_bytes(data: bytearray, rng: random.Random) -> str:
    i = rng.randrange(len(data))
    n = rng.randint(2, 16)
    for j in range(i, min(i + n, len(data))):
        data[j] = rng.randrange(256)
    return f"{n} random bytes at {i}"


def _zero(data: bytearray, rng: random.Random) -> str:
    i = rng.randrange(len(data))
    n = rng.choice([1, 8, 64, 512, 4096])
    data[i : i + n] = bytes(len(data[i : i + n]))
    return f"{n} zero bytes at {i}"


def _truncate(data: bytearray, rng: random.Random) -> str:
    n = rng.randrange(len(data))
    del data[n:]
    return f"truncated to {n}"


DAMAGES: list[Callable[[bytearray, random.Random], str]] = [
    _flip_bit,
    _flip_bit,
    _flip_bytes,
    _zero,
    _truncate,
]


def _clear(results: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        (results / f"catalog.sqlite{suffix}").unlink(missing_ok=True)


def _doctor_flags(results: Path) -> bool:
    """True when doctor reports a problem (or refuses the file with a CatalogError)."""
    from phasekit.catalog.doctor import doctor_location

    report = doctor_location(str(results), results_dir=results)
    return not report.ok


def test_corruption_of_the_catalog_is_never_silent(made: tuple[Path, bytes]) -> None:
    results, pristine = made
    _clear(results)
    expected = answers(results)
    assert not _doctor_flags(results)
    rng = random.Random(15)
    trials = 320
    tally = {"equal": 0, "refused": 0, "silent": 0, "traceback": 0, "doctor_missed": 0}
    failures: list[str] = []
    for trial in range(trials):
        data = bytearray(pristine)
        what = rng.choice(DAMAGES)(data, rng)
        _clear(results)
        (results / "catalog.sqlite").write_bytes(bytes(data))
        try:
            got: Any = answers(results)
        except CatalogError as exc:
            got = exc
        except Exception as exc:  # a traceback a user would see
            tally["traceback"] += 1
            failures.append(f"trial {trial} ({what}): {type(exc).__name__}: {exc}")
            continue
        if isinstance(got, CatalogError):
            tally["refused"] += 1
        elif got == expected:
            tally["equal"] += 1
            continue
        else:
            tally["silent"] += 1
            failures.append(f"trial {trial} ({what}): a different answer")
        _clear(results)
        (results / "catalog.sqlite").write_bytes(bytes(data))
        try:
            flagged = _doctor_flags(results)
        except PhasekitError as exc:
            flagged, failures = False, [*failures, f"trial {trial} ({what}): doctor raised {exc}"]
        if not flagged:
            tally["doctor_missed"] += 1
            failures.append(f"trial {trial} ({what}): doctor says healthy")
    _clear(results)
    (results / "catalog.sqlite").write_bytes(pristine)
    print(f"catalog corruption: {trials} trials, {tally}")
    assert tally["equal"] + tally["refused"] == trials, failures[:10]
    assert tally["doctor_missed"] == 0, failures[:10]
    assert tally["refused"] > 50  # most damage changes an answer; it is refused, not hidden


def test_empty_or_missing_catalog_next_to_results_is_reported(
    made: tuple[Path, bytes], tmp_path: Path
) -> None:
    results, pristine = made
    _clear(results)
    (results / "catalog.sqlite").write_bytes(b"")
    try:
        with pytest.raises(CatalogError, match="empty"):
            open_catalog(results, create=False)
        with pytest.raises(CatalogError, match="empty"):
            open_catalog(results)  # a run must not start a fresh catalog over old results
        assert _doctor_flags(results)
        (results / "catalog.sqlite").unlink()
        with pytest.raises(CatalogError, match="run folders"):
            open_catalog(results, create=False)
        assert _doctor_flags(results)
    finally:
        (results / "catalog.sqlite").write_bytes(pristine)
    empty = tmp_path / "fresh"
    with pytest.raises(CatalogError, match="no catalog"):
        open_catalog(empty, create=False)


def test_doctor_runs_integrity_and_schema_checks(made: tuple[Path, bytes]) -> None:
    results, pristine = made
    _clear(results)
    try:
        _sql(
            results / "catalog.sqlite", "ALTER TABLE intermediate_data RENAME COLUMN format TO fmt"
        )
        report = doctor_report(results)
        assert any(f.kind == "schema" for f in report.findings), report.findings
        _clear(results)
        (results / "catalog.sqlite").write_bytes(pristine)
        _sql(
            results / "catalog.sqlite",
            "UPDATE intermediate_data SET metadata = '{not json' WHERE id = 3",
            "UPDATE processes SET started_at = 'yesterday'",
        )
        report = doctor_report(results)
        kinds = {(f.kind, f.item_id) for f in report.findings}
        assert ("bad_row", 3) in kinds, report.findings
        assert any(f.kind == "bad_run" for f in report.findings), report.findings
        with open_catalog(results, create=False) as cat, pytest.raises(CatalogError, match="3"):
            cat.list_items()
    finally:
        _clear(results)
        (results / "catalog.sqlite").write_bytes(pristine)


def _sql(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            for statement in statements:
                conn.execute(statement)
    finally:
        conn.close()


def doctor_report(results: Path) -> Any:
    from phasekit.catalog.doctor import doctor_location

    return doctor_location(str(results), results_dir=results)


def test_doctor_repair_rebuilds_a_lost_catalog_from_the_results(
    made: tuple[Path, bytes], tmp_path: Path
) -> None:
    results, pristine = made
    _clear(results)
    with open_catalog(results, create=False) as cat:
        files = {
            (i.process_id, i.stage_name, i.entity_name, i.checksum)
            for i in cat.list_items()
            if i.data_reference and i.data_reference.startswith("file://")
        }
        runs = {p.process_id for p in cat.list_processes()}
    (results / "catalog.sqlite").write_bytes(b"")
    try:
        cli = [sys.executable, "-m", "phasekit.cli", "doctor", "--results-dir", str(results)]
        seen = subprocess.run(cli, capture_output=True, text=True)
        assert seen.returncode == 1 and "catalog_unreadable" in seen.stdout, seen
        assert "Traceback" not in seen.stderr
        fixed = subprocess.run([*cli, "--repair", "--json"], capture_output=True, text=True)
        assert fixed.returncode == 0, fixed
        (finding,) = json.loads(fixed.stdout)["findings"]
        assert finding["kind"] == "catalog_unreadable" and finding["repaired"]
        assert finding["action"].startswith("rebuilt 2 runs")
        kept = list(results.glob("catalog.sqlite.damaged-*"))
        assert [p.stat().st_size for p in kept] == [0]
        with open_catalog(results, create=False) as cat:
            assert {p.process_id for p in cat.list_processes()} == runs
            assert {p.status for p in cat.list_processes()} == {"completed"}
            rebuilt = {
                (i.process_id, i.stage_name, i.entity_name, i.checksum) for i in cat.list_items()
            }
            assert cat.doctor().ok
        assert files <= rebuilt  # every file item is back, with its checksum
        for path in kept:
            path.unlink()
    finally:
        _clear(results)
        (results / "catalog.sqlite").write_bytes(pristine)


def test_the_check_option_chooses_the_open_time_check(made: tuple[Path, bytes]) -> None:
    """``?check=off`` opens a file whose b-tree is damaged; the default refuses it."""
    results, pristine = made
    db = results / "catalog.sqlite"
    rng = random.Random(7)
    try:
        for _ in range(500):
            data = bytearray(pristine)
            _flip_bit(data, rng)
            _clear(results)
            db.write_bytes(bytes(data))
            try:
                open_catalog(f"sqlite://{db}?check=off", create=False).close()
            except CatalogError:
                continue
            try:
                open_catalog(db, create=False).close()
            except CatalogError as exc:
                assert "quick_check" in str(exc)
                break
        else:
            pytest.fail("no flip found that only the open-time check refuses")
        with pytest.raises(CatalogError, match="integrity_check"):
            open_catalog(f"sqlite://{db}?check=full", create=False)
        with pytest.raises(CatalogError, match="check 'sometimes' is not valid"):
            open_catalog(f"sqlite://{db}?check=sometimes", create=False)
    finally:
        _clear(results)
        db.write_bytes(pristine)


def test_doctor_repairs_a_damaged_index(made: tuple[Path, bytes]) -> None:
    results, pristine = made
    db = results / "catalog.sqlite"
    _clear(results)
    try:
        _sql(
            db,
            "PRAGMA writable_schema = ON",
            "UPDATE sqlite_master SET sql = replace(sql, '(created_at)', '(size_bytes)') "
            "WHERE name = 'ix_items_created'",
        )
        before = doctor_report(results)
        assert any(f.kind == "integrity" for f in before.findings), before.findings
        _clear(results)
        from phasekit.catalog.doctor import doctor_location

        fixed = doctor_location(str(results), results_dir=results, repair=True)
        assert all(f.repaired for f in fixed.findings if f.kind == "integrity")
        assert doctor_report(results).ok
    finally:
        _clear(results)
        db.write_bytes(pristine)


def _damage_text(data: bytearray, rng: random.Random) -> str:
    return rng.choice([_flip_bit, _flip_bit, _flip_bytes, _zero, _truncate])(data, rng)


def test_doctor_flags_every_damaged_store_manifest(tmp_path: Path) -> None:
    """Random flips, byte runs, zeroings and truncations of FileStore and stream manifests
    under a run folder: doctor flags each (corrupt_manifest) and the store refuses it with
    a phasekit error (never an AssertionError, a binascii.Error or a different value)."""
    from phasekit.stores import FileStore, StreamStore

    results = tmp_path / "results"
    run = results / "r1" / "optimize" / "containers"
    files = FileStore(run)
    for i in range(3):
        files.put(f"k{i}", {"i": i, "metrics": {"sharpe": 0.5 + i}})
    streams = StreamStore(run / ".stream", buffer_size=2)
    for i in range(5):
        streams.put("s", {"i": i})
    streams.finish("s")
    with open_catalog(results) as cat:
        cat.start_process("wf", process_id="r1")
        cat.finish_process("r1")
        assert cat.doctor().ok
    manifests = [run / ".phasekit" / "k1.json", run / ".stream" / "s.stream" / "manifest.json"]
    rng = random.Random(29)
    flagged = refused = 0
    trials = 60
    for trial in range(trials):
        target = manifests[trial % 2]
        pristine = target.read_bytes()
        data = bytearray(pristine)
        what = _damage_text(data, rng)
        if bytes(data) == pristine:
            continue
        target.write_bytes(bytes(data))
        try:
            with open_catalog(results, create=False) as cat:
                report = cat.doctor()
            kinds = {f.kind for f in report.findings}
            assert "corrupt_manifest" in kinds, (trial, what, report.findings)
            flagged += 1
            try:
                if target.name == "k1.json":
                    got = FileStore(run).get("k1")
                else:
                    got = StreamStore(run / ".stream").get("s")
                raise AssertionError(f"trial {trial} ({what}): read {got!r}")
            except PhasekitError:
                refused += 1
        finally:
            target.write_bytes(pristine)
    print(f"store manifests: {trials} damages, {flagged} flagged by doctor, {refused} refused")
    assert flagged == refused == trials


def test_a_rebuild_takes_keys_and_metadata_from_store_manifests(tmp_path: Path) -> None:
    from phasekit.catalog import CatalogRecorder
    from phasekit.catalog.doctor import doctor_location
    from phasekit.stores import FileStore

    results = tmp_path / "results"
    with open_catalog(results) as cat:
        cat.start_process("wf", process_id="r1")
        recorder = CatalogRecorder(cat, "r1", "optimize")
        store = FileStore(results / "r1" / "optimize" / "containers", recorder=recorder)
        for i in range(3):
            store.put(f"portfolio_{i}", {"i": i}, {"metrics": {"sharpe": 0.25 * i}})
        cat.finish_process("r1")
        before = {
            (i.entity_name, i.checksum, i.metadata["metrics"]["sharpe"]) for i in cat.list_items()
        }
    (results / "catalog.sqlite").unlink()
    report = doctor_location(str(results), results_dir=results, repair=True)
    assert [f.kind for f in report.findings] == ["catalog_unreadable"]
    assert report.findings[0].repaired
    with open_catalog(results, create=False) as cat:
        rows = cat.list_items()
        after = {(i.entity_name, i.checksum, i.metadata["metrics"]["sharpe"]) for i in rows}
        assert all(i.metadata["rebuilt"] for i in rows)
    assert after == before
