from __future__ import annotations

import subprocess
import sys

import pytest

import phasekit
from phasekit import backend
from phasekit.errors import BackendUnavailable, InvalidArgument


def test_set_backend_switches_primitives() -> None:
    before = phasekit.get_backend()
    try:
        assert phasekit.set_backend("python") == "python"
        assert phasekit.get_backend() == "python"
        assert phasekit.Channel.__module__.startswith("phasekit._pure")
        assert phasekit.set_backend("rust") == "rust"
        assert phasekit.Channel.__module__.startswith("phasekit._core")
    finally:
        phasekit.set_backend(before)


def test_unknown_backend_is_named() -> None:
    with pytest.raises(
        InvalidArgument, match="unknown backend 'fortran'; allowed: auto, rust, python"
    ):
        phasekit.set_backend("fortran")


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        phasekit.NoSuchThing  # noqa: B018


def _run(code: str, env_backend: str) -> subprocess.CompletedProcess[str]:
    env = {"PHASEKIT_BACKEND": env_backend, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env
    )


BLOCK_CORE = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'phasekit._core':\n"
    "            raise ImportError('blocked for the test')\n"
    "sys.meta_path.insert(0, Block())\n"
)


def test_forcing_rust_without_extension_fails_loudly() -> None:
    proc = _run(BLOCK_CORE + "import phasekit\nphasekit.get_backend()\n", "rust")
    assert proc.returncode != 0
    assert "BackendUnavailable" in proc.stderr
    assert "rust backend is not available" in proc.stderr


def test_auto_falls_back_with_warning() -> None:
    proc = _run(BLOCK_CORE + "import phasekit\nprint(phasekit.get_backend())\n", "auto")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "python"
    assert "falls back to the pure-Python backend" in proc.stderr


def test_env_selects_python() -> None:
    proc = _run("import phasekit\nprint(phasekit.get_backend())\n", "python")
    assert proc.stdout.strip() == "python", proc.stderr


def test_rust_available() -> None:
    assert backend.rust_available()
    assert isinstance(BackendUnavailable("x"), ImportError)
