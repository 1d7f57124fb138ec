"""The package as users install it: one version, a core of that version, the build report
of ``phasekit --version`` and extras that name themselves when missing.

CI runs this file against the installed wheel with ``PHASEKIT_TEST_INSTALLED=1`` (the
package must then come from site-packages) and ``PHASEKIT_TEST_ALL_EXTRAS=1`` (every
extra installed).
"""

from __future__ import annotations

import builtins
import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phasekit
from phasekit import _core, _optional, backend
from phasekit.catalog import open_catalog
from phasekit.cli import main
from phasekit.errors import (
    BackendUnavailable,
    CoreVersionMismatch,
    MissingDependency,
    PhasekitError,
    UnknownKey,
)

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = os.environ.get("PHASEKIT_TEST_INSTALLED") == "1"
ALL_EXTRAS = os.environ.get("PHASEKIT_TEST_ALL_EXTRAS") == "1"
# extras of tooling, not of a feature of the package
TOOLING_EXTRAS = {"test", "bench"}


def _toml(name: str) -> dict[str, Any]:
    with open(ROOT / name, "rb") as f:
        return tomllib.load(f)


def _extras() -> dict[str, list[str]]:
    extras: dict[str, list[str]] = _toml("pyproject.toml")["project"]["optional-dependencies"]
    return extras


def _requirement_name(requirement: str, *, with_extras: bool = False) -> str:
    """``psycopg[binary]>=3.1`` -> ``psycopg`` (``psycopg[binary]`` with extras)."""
    name = re.match(r"[A-Za-z0-9._-]+(\[[^\]]*\])?", requirement)
    assert name is not None, requirement
    return name.group(0) if with_extras else name.group(0).split("[")[0]


@pytest.fixture
def restore_backend() -> Iterator[None]:
    before = backend._active, backend._active_name
    yield
    backend._active, backend._active_name = before


# ------------------------------------------------------------------ one version


def test_version_is_defined_once_in_cargo_toml() -> None:
    project = _toml("pyproject.toml")["project"]
    assert "version" not in project and "version" in project["dynamic"]
    cargo = _toml("Cargo.toml")["package"]["version"]
    assert _core.__version__ == cargo
    assert phasekit.__version__ == backend.cargo_to_pep440(cargo)


@pytest.mark.parametrize(
    ("cargo", "pep440"),
    [("0.2.0", "0.2.0"), ("1.0.0-alpha.1", "1.0.0a1"), ("1.0.0-beta.2", "1.0.0b2"),
     ("1.0.0-rc.3", "1.0.0rc3"), ("1.0.0-dev", "1.0.0-dev")],
)  # fmt: skip
def test_cargo_version_as_python_writes_it(cargo: str, pep440: str) -> None:
    assert backend.cargo_to_pep440(cargo) == pep440


@pytest.mark.skipif(not INSTALLED, reason="runs against the installed wheel in CI")
def test_installed_package_is_the_wheel() -> None:
    here = Path(phasekit.__file__).resolve().parent
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    assert here.parent in site, f"phasekit imported from {here}, not from {site}"
    assert backend.installed_version() == importlib.metadata.version("phasekit")
    assert phasekit.__version__ == backend.installed_version()
    for name in ("py.typed", "_core.pyi"):
        assert (here / name).is_file(), name
    assert Path(_core.__file__).parent == here
    assert _core.BUILD_PROFILE == "release"


def _expect_installed(monkeypatch: pytest.MonkeyPatch) -> str:
    """The installed version the check compares against (the core's own in a checkout)."""
    expected = backend.installed_version()
    if expected is None:  # a source checkout: pretend these files were installed
        expected = backend.cargo_to_pep440(_core.__version__)
        monkeypatch.setattr(backend, "installed_version", lambda: expected)
    return expected


def test_core_of_another_version_is_refused_when_forced(
    monkeypatch: pytest.MonkeyPatch, restore_backend: None
) -> None:
    expected = _expect_installed(monkeypatch)
    backend.set_backend("rust")  # the real core passes
    monkeypatch.setattr(_core, "__version__", "0.0.1")
    with pytest.raises(CoreVersionMismatch, match=r"is version 0\.0\.1") as info:
        backend.set_backend("rust")
    assert f"phasekit {expected} cannot use its compiled core" in str(info.value)
    assert "PHASEKIT_BACKEND=python" in str(info.value)
    assert isinstance(info.value, BackendUnavailable)
    assert not backend.rust_available()


def test_core_of_another_version_makes_auto_fall_back(
    monkeypatch: pytest.MonkeyPatch, restore_backend: None
) -> None:
    _expect_installed(monkeypatch)
    monkeypatch.setattr(_core, "__version__", "0.0.1")
    with pytest.warns(RuntimeWarning, match=r"falls back .* is version 0\.0\.1"):
        assert backend.set_backend("auto") == "python"
    assert phasekit.Channel.__module__.startswith("phasekit._pure")


def test_source_checkout_does_not_check(
    monkeypatch: pytest.MonkeyPatch, restore_backend: None
) -> None:
    monkeypatch.setattr(backend, "installed_version", lambda: None)
    monkeypatch.setattr(_core, "__version__", "0.0.1")
    assert backend.set_backend("rust") == "rust"
    assert phasekit.__version__ == "0.0.1"  # the core's, when nothing was installed


def test_mismatched_core_in_a_fresh_interpreter() -> None:
    code = (
        "import phasekit._core as core, phasekit.backend as b\n"
        "expected = b.installed_version() or core.__version__\n"
        "b.installed_version = lambda: expected\n"
        "core.__version__ = '0.0.1'\n"
        "b.get_backend()\n"
    )
    env = {**os.environ, "PHASEKIT_BACKEND": "rust", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 1
    assert "phasekit.errors.CoreVersionMismatch" in proc.stderr
    assert "is version 0.0.1" in proc.stderr


# ------------------------------------------------------------------ phasekit --version


def _version(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    return int(exit_info.value.code or 0), capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("name", ["rust", "python"])
def test_version_flag_reports_backend_and_build(
    name: str, capsys: pytest.CaptureFixture[str], restore_backend: None
) -> None:
    backend.set_backend(name)
    code, lines = _version(capsys)
    assert code == 0
    assert lines[0].startswith(f"phasekit {phasekit.__version__} (")
    assert lines[1] == f"backend: {name}"
    features = ", ".join(_core.BUILD_FEATURES)
    assert lines[2].startswith(
        f"core: phasekit._core {_core.__version__}, {_core.BUILD_PROFILE} build, "
        f"features: {features}, target {_core.BUILD_TARGET}, {_core.BUILD_RUSTC}"
    )
    assert "python" in _core.BUILD_FEATURES
    assert _core.BUILD_PROFILE in ("release", "debug")
    assert _core.BUILD_RUSTC.startswith("rustc ")


def test_version_flag_with_a_forced_core_that_cannot_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_backend: None
) -> None:
    _expect_installed(monkeypatch)
    monkeypatch.setattr(_core, "__version__", "0.0.1")
    monkeypatch.setenv("PHASEKIT_BACKEND", "rust")
    backend._active = backend._active_name = None
    code, lines = _version(capsys)
    assert code == 1
    assert lines[1] == "backend: rust (requested, not available)"
    assert lines[2].startswith("core: not available: phasekit ")
    assert "is version 0.0.1" in lines[2]


def test_version_flag_from_the_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "phasekit.cli", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PHASEKIT_BACKEND": "python", "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == "backend: python"


# ------------------------------------------------------------------ extras


def test_every_optional_module_names_a_declared_extra() -> None:
    extras = _extras()
    for dep in _optional.OPTIONAL.values():
        assert dep.extra in extras, dep
        names = [_requirement_name(r, with_extras=True) for r in extras[dep.extra]]
        assert dep.requirement in names, (dep, names)


def test_every_feature_extra_is_used_by_a_feature() -> None:
    used = {dep.extra for dep in _optional.OPTIONAL.values()}
    assert set(_extras()) - TOOLING_EXTRAS == used


@pytest.mark.parametrize("extra", sorted(_extras()))
def test_extra_installs_importable_packages(extra: str) -> None:
    """Every package an extra names is installed and imports.

    The test extra and extras within it must be installed wherever the tests run; CI
    installs every extra (PHASEKIT_TEST_ALL_EXTRAS=1), elsewhere the others may be absent.
    """
    modules = importlib.metadata.packages_distributions()
    missing = []
    for requirement in _extras()[extra]:
        name = _requirement_name(requirement)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        top = sorted(m for m, dists in modules.items() if dist.metadata["Name"] in dists)
        module = name.lower().replace("-", "_")
        if module not in top:
            public = [m for m in top if not m.startswith("_")]
            assert public, f"{name} provides no importable module"
            module = public[0]
        importlib.import_module(module)
    in_test_extra = {_requirement_name(r) for r in _extras()["test"]}
    optional_here = not ALL_EXTRAS and not set(missing) <= in_test_extra
    if missing and optional_here:
        pytest.skip(f"extra {extra!r} is not installed here ({', '.join(missing)})")
    assert not missing, f"extra {extra!r}: not installed: {', '.join(missing)}"


@pytest.mark.parametrize("module", sorted(_optional.OPTIONAL))
def test_require_returns_the_module(module: str) -> None:
    assert _optional.require(module, feature="a feature") is importlib.import_module(module)


def _fail_import(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    real_import = builtins.__import__

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == module or name.startswith(module + "."):
            raise ImportError(f"No module named {module!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


@pytest.mark.parametrize("module", sorted(_optional.OPTIONAL))
def test_missing_module_names_its_extra(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    dep = _optional.OPTIONAL[module]
    _fail_import(monkeypatch, module)
    with pytest.raises(MissingDependency) as info:
        _optional.require(module, feature="the feature X", alternatives="use Y instead")
    message = str(info.value)
    assert message.startswith(f"the feature X needs the optional {dep.requirement} package")
    assert f"pip install 'phasekit[{dep.extra}]'" in message
    assert message.endswith("; use Y instead")
    assert isinstance(info.value, ImportError) and isinstance(info.value, PhasekitError)


def test_postgresql_catalog_without_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_import(monkeypatch, "psycopg")
    url = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(MissingDependency, match=re.escape("pip install 'phasekit[postgresql]'")):
        open_catalog(url)


def test_unknown_optional_module() -> None:
    with pytest.raises(UnknownKey, match="'numpyy' is not a known optional dependency"):
        _optional.require("numpyy", feature="x")


# ------------------------------------------------------------------ the second CI run


def _collect(path: Path = Path(__file__), **env: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
    )  # fmt: skip
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr  # 5: every test deselected
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_deselect_env_drops_tests_run_on_both_backends() -> None:
    everything = _collect(PHASEKIT_TEST_DESELECT_BOTH_BACKENDS="0")
    second_run = _collect(PHASEKIT_TEST_DESELECT_BOTH_BACKENDS="1")
    both = [t for t in everything if t.endswith(("[rust]", "[python]"))]
    assert len(both) == 2  # test_version_flag_reports_backend_and_build, once per backend
    assert sorted(second_run) == sorted(set(everything) - set(both))


@pytest.mark.parametrize("name", ["test_executor_dask.py", "test_executor_ray.py"])
def test_deselect_env_drops_one_pass_tests(name: str) -> None:
    # the Dask and Ray cluster tests are marked one_pass: the first CI run only
    path = Path(__file__).parent / name
    assert len(_collect(path, PHASEKIT_TEST_DESELECT_BOTH_BACKENDS="0")) > 10
    assert _collect(path, PHASEKIT_TEST_DESELECT_BOTH_BACKENDS="1") == []
