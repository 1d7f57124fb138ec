"""Containment: every path phasekit reads, writes or deletes lies under its root.

A path that comes from a manifest, a catalog row or a name is input, not truth. Before
it is used, :func:`contained` resolves it (symlinks, ``..``, absolute components) and
checks that it lies under the root it belongs to (a store folder, a results folder, an
export folder), raising :class:`phasekit.errors.UnsafePath` naming both otherwise.
Data files are opened with :func:`open_nofollow`, which refuses a symlink as the final
component where the platform has ``O_NOFOLLOW``.
"""

from __future__ import annotations

import os
from pathlib import Path

from phasekit.errors import UnsafePath

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
"""``os.O_NOFOLLOW`` where the platform has it, else 0 (no effect)."""


def _real(path: str | os.PathLike[str]) -> Path:
    try:
        return Path(os.path.realpath(os.fspath(path)))
    except (OSError, ValueError) as exc:  # a NUL byte, a symlink loop
        raise UnsafePath(f"path {os.fspath(path)!r} cannot be resolved: {exc}") from None


def contained(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    what: str = "path",
    *,
    allow_root: bool = False,
    allow_symlink: bool = False,
) -> Path:
    """``path`` (joined to ``root`` when relative) if it lies under ``root`` once resolved.

    Symlinks, ``..`` and absolute components are resolved first (a path that does not
    exist yet is resolved as far as it exists). The final component may not itself be a
    symlink unless ``allow_symlink``; ``root`` itself is refused unless ``allow_root``.
    Returns the absolute path with ``..`` removed (the name phasekit then uses: the
    one that was checked), never a path outside.
    Raises :class:`UnsafePath` naming ``what``, the path and the root.
    """
    raw = os.fspath(path)
    if "\x00" in str(raw):
        raise UnsafePath(f"{what} {raw!r} contains a NUL character")
    full = Path(os.path.abspath(os.path.join(os.fspath(root), raw)))
    real_root = _real(root)
    real = _real(full)
    inside = real == real_root or real_root in real.parents
    if not inside or (real == real_root and not allow_root):
        raise UnsafePath(
            f"{what} {raw!r} resolves to {real}, outside its root {real_root}; phasekit "
            "reads, writes and deletes only under the root a path belongs to"
        )
    if not allow_symlink and os.path.islink(full):
        raise UnsafePath(f"{what} {full} is a symbolic link; phasekit does not follow links there")
    return full


def check_not_symlink(path: str | os.PathLike[str], what: str) -> None:
    """Refuse ``path`` when it is a symbolic link (a folder phasekit writes into, say)."""
    if os.path.islink(path):
        raise UnsafePath(
            f"{what} {os.fspath(path)} is a symbolic link; phasekit writes only into real folders"
        )


def open_nofollow(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """``os.open`` with ``O_NOFOLLOW`` (and ``O_CLOEXEC``) where the platform has them."""
    return os.open(path, flags | O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)


PRIVATE_DIR_MODE = 0o700
"""Folders phasekit creates: only their owner may list or enter them."""
PRIVATE_FILE_MODE = 0o600
"""Files phasekit creates: only their owner may read or write them."""


def make_private_dir(path: str | os.PathLike[str]) -> None:
    """Create ``path`` and any missing parent folder with mode 0700 (existing folders are
    left as they are)."""
    missing = []
    current = os.path.abspath(os.fspath(path))
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
        else:
            os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask


def make_private(path: str | os.PathLike[str]) -> None:
    """Give a file phasekit wrote mode 0600 (a folder 0700, with what is inside it)."""
    if os.path.isdir(path) and not os.path.islink(path):
        for folder, _dirs, files in os.walk(path):
            os.chmod(folder, PRIVATE_DIR_MODE)
            for name in files:
                full = os.path.join(folder, name)
                if not os.path.islink(full):
                    os.chmod(full, PRIVATE_FILE_MODE)
        return
    if not os.path.islink(path):
        os.chmod(path, PRIVATE_FILE_MODE)


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to the file ``path`` with mode 0600 whatever the umask (a file that is
    there is replaced in place and made 0600; a symbolic link is refused)."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), PRIVATE_FILE_MODE)  # the open mode is masked by the umask
        fh.write(data)


def read_bytes_nofollow(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file, refusing a symlink as its final component."""
    fd = open_nofollow(path)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


__all__ = [
    "O_NOFOLLOW",
    "check_not_symlink",
    "contained",
    "make_private",
    "make_private_dir",
    "open_nofollow",
    "read_bytes_nofollow",
    "write_private_file",
]
