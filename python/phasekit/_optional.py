"""Optional dependencies: which extra installs each, and one way to import them.

A feature that needs a package outside the core dependencies imports it with
:func:`require`; when it is missing the caller gets
:class:`~phasekit.errors.MissingDependency` naming the feature and the extra to
install (``pip install 'phasekit[postgresql]'``).

To add an extra: declare it in ``pyproject.toml`` under
``[project.optional-dependencies]`` and add one row per module it provides to
:data:`OPTIONAL`; ``tests/test_packaging.py`` checks every row against the
installed distribution's extras and every extra against the rows.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

from phasekit.errors import MissingDependency, UnknownKey


@dataclass(frozen=True)
class OptionalDependency:
    """A module outside the core dependencies and the extra that installs it."""

    module: str  # the import name
    extra: str  # the extra in pyproject.toml that installs it
    requirement: str  # the distribution it comes from, as the extra names it


OPTIONAL: Mapping[str, OptionalDependency] = {
    dep.module: dep
    for dep in (
        OptionalDependency("psycopg", extra="postgresql", requirement="psycopg[binary]"),
        OptionalDependency("h5py", extra="hdf5", requirement="h5py"),
        OptionalDependency("fastapi", extra="serve", requirement="fastapi"),
        OptionalDependency("uvicorn", extra="serve", requirement="uvicorn"),
        OptionalDependency("plotly", extra="report", requirement="plotly"),
        OptionalDependency("cryptography", extra="crypto", requirement="cryptography"),
        OptionalDependency("distributed", extra="dask", requirement="distributed"),
        OptionalDependency("ray", extra="ray", requirement="ray"),
        OptionalDependency("boto3", extra="s3", requirement="boto3"),
        OptionalDependency("fsspec", extra="fsspec", requirement="fsspec"),
    )
}


def require(module: str, *, feature: str, alternatives: str = "") -> ModuleType:
    """Import ``module`` (a key of :data:`OPTIONAL`) for ``feature``.

    Raises MissingDependency naming ``feature``, the package and the extra when the
    import fails; ``alternatives`` (e.g. "other formats: arrow, parquet") is appended.
    """
    dep = OPTIONAL.get(module)
    if dep is None:
        raise UnknownKey(
            f"{module!r} is not a known optional dependency; known: {', '.join(sorted(OPTIONAL))}"
        )
    try:
        __import__(module)  # through builtins.__import__, so tests can make it fail
    except ImportError as exc:
        hint = f"; {alternatives}" if alternatives else ""
        raise MissingDependency(
            f"{feature} needs the optional {dep.requirement} package "
            f"(pip install 'phasekit[{dep.extra}]'), which is not installed ({exc}){hint}"
        ) from exc
    return sys.modules[module]


__all__ = ["OPTIONAL", "OptionalDependency", "require"]
