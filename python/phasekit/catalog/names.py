"""Name checks of the catalog: the package-wide rule of :mod:`phasekit.names`."""

from __future__ import annotations

from phasekit.names import MAX_NAME_LENGTH, TMP_SUFFIX, check_name, check_optional_name

__all__ = ["MAX_NAME_LENGTH", "TMP_SUFFIX", "check_name", "check_optional_name"]
