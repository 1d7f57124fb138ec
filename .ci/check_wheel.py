"""Check a built wheel (and the sdist next to it) the way a user's pip would meet them.

The wheel: its tag is abi3 x86_64 manylinux with a glibc floor of at most 2.28, the
extension's newest GLIBC symbol version is within that floor, it holds the extension,
py.typed and the stub, and nothing of the repository besides the package (no tests,
benches, target/ or caches). The sdist: it holds what a source build needs.

usage: python .ci/check_wheel.py dist/phasekit-*.whl [dist/phasekit-*.tar.gz]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

GLIBC_FLOOR = (2, 28)
PACKAGE_FILES = ("phasekit/_core.abi3.so", "phasekit/py.typed", "phasekit/_core.pyi")
FORBIDDEN = re.compile(r"(^|/)(tests|benches|target|\.venv|__pycache__|\.git)/|\.pyc$")
SDIST_FILES = ("Cargo.toml", "Cargo.lock", "pyproject.toml", "rust/lib.rs", "rust/build.rs",
               "python/phasekit/__init__.py", "python/phasekit/py.typed", "README.md")  # fmt: skip


def fail(message: str) -> None:
    sys.exit(f"check-wheel: {message}")


def glibc_versions(so: Path) -> list[tuple[int, ...]]:
    out = subprocess.run(["objdump", "-T", str(so)], capture_output=True, text=True, check=True)
    found = {
        tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_([0-9.]+)", out.stdout)
    }
    return sorted(found)


def check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        tags = re.findall(r"^Tag: (\S+)$", zf.read(info).decode(), re.MULTILINE)
        with tempfile.TemporaryDirectory() as tmp:
            so = Path(zf.extract("phasekit/_core.abi3.so", tmp))
            versions = glibc_versions(so)
    if len(tags) != 1:
        fail(f"expected one tag, found {tags}")
    tag = tags[0]
    floor = re.fullmatch(r"cp311-abi3-manylinux_(\d+)_(\d+)_x86_64", tag)
    if floor is None:
        fail(f"tag {tag} is not cp311-abi3-manylinux_X_Y_x86_64")
    assert floor is not None
    tagged = (int(floor.group(1)), int(floor.group(2)))
    if tagged > GLIBC_FLOOR:
        fail(f"tag {tag} asks for glibc {tagged}, newer than {GLIBC_FLOOR}")
    if not versions or versions[-1] > tagged:
        fail(f"the extension needs GLIBC {versions[-1] if versions else '?'}, above its tag {tag}")
    for name in PACKAGE_FILES:
        if name not in names:
            fail(f"{name} is missing from {wheel.name}")
    outside = [n for n in names if not n.startswith(("phasekit/", "phasekit-"))]
    leftovers = [n for n in names if FORBIDDEN.search(n)]
    if outside or leftovers:
        fail(f"unexpected files in {wheel.name}: {sorted(outside + leftovers)[:10]}")
    newest = ".".join(map(str, versions[-1]))
    print(f"wheel {wheel.name}: tag {tag}, newest GLIBC symbol {newest}, "
          f"{wheel.stat().st_size / 1e6:.2f} MB, {len(names)} files")  # fmt: skip


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    missing = [n for n in SDIST_FILES if n not in names]
    if missing:
        fail(f"{sdist.name} lacks {missing}")
    leftovers = sorted(n for n in names if re.search(r"(^|/)(target|\.venv)/|\.so$", n))
    if leftovers:
        fail(f"build leftovers in {sdist.name}: {leftovers[:10]}")
    print(f"sdist {sdist.name}: {len(names)} files, {sdist.stat().st_size / 1e6:.2f} MB")


def main(paths: list[str]) -> None:
    for path in map(Path, paths):
        if path.suffix == ".whl":
            check_wheel(path)
        elif path.name.endswith(".tar.gz"):
            check_sdist(path)
        else:
            fail(f"not a wheel or sdist: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
