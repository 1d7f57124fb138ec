"""Every exception phasekit raises, shared by the Rust and the pure-Python backend.

The Rust extension imports this module and raises these classes, so
``except phasekit.errors.ChannelClosed`` works the same whichever backend runs.
Each class also derives from the closest builtin (``ValueError``, ``KeyError``,
``TimeoutError``, ``OSError``) so generic handlers keep working.
"""

from __future__ import annotations


class PhasekitError(Exception):
    """Base class of every phasekit error."""


class InvalidArgument(PhasekitError, ValueError):
    """A call got a value it cannot accept; the message names it and what is allowed."""


class ConfigError(PhasekitError, ValueError):
    """A configuration is invalid; the message names the path, the value and what is allowed."""


class BackendUnavailable(PhasekitError, ImportError):
    """The requested backend cannot be loaded (e.g. ``rust`` without the compiled extension)."""


class CoreVersionMismatch(BackendUnavailable):
    """The compiled core (``phasekit._core``) is of another version than the Python layer."""


class MissingDependency(PhasekitError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class UnknownKey(PhasekitError, KeyError):
    """A key, item or reference is not known where it was looked up."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class ChannelClosed(PhasekitError):
    """Sending on a closed channel, or receiving from a closed and drained one."""


class ChannelFull(PhasekitError):
    """``try_send`` on a channel that is at capacity."""


class ChannelEmpty(PhasekitError):
    """``try_recv`` on an open channel that holds no item."""


class Timeout(PhasekitError, TimeoutError):
    """A blocking call did not complete within its timeout."""


class WriterError(PhasekitError, OSError):
    """Writing a file failed (in the background writer or while finishing the file)."""


class StorageError(PhasekitError, OSError):
    """A store could not write, read or delete an item."""


class CorruptDataError(PhasekitError):
    """A stored file is missing, truncated or fails its checksum."""


class CatalogError(PhasekitError):
    """The catalog could not record or find an item."""


class WorkflowError(PhasekitError):
    """A workflow failed while running."""


class StreamError(PhasekitError, ValueError):
    """A streaming DAG is invalid or one of its nodes failed."""


class UnsafePath(PhasekitError, ValueError):
    """A path from a manifest, a catalog row or a name would leave its root."""


class AccessDenied(PhasekitError, PermissionError):
    """A request is outside what its API token allows, or a server would be open to others."""


class NotAuthenticated(AccessDenied):
    """A request to a server that requires API tokens carries no valid token."""


class KeyUnavailable(PhasekitError):
    """Encrypted data cannot be read: its master key is missing or another one is
    configured (the message names the key id), or its data key was destroyed."""


__all__ = [
    "AccessDenied",
    "BackendUnavailable",
    "CatalogError",
    "ChannelClosed",
    "ChannelEmpty",
    "ChannelFull",
    "ConfigError",
    "CoreVersionMismatch",
    "CorruptDataError",
    "InvalidArgument",
    "KeyUnavailable",
    "MissingDependency",
    "NotAuthenticated",
    "PhasekitError",
    "StorageError",
    "StreamError",
    "Timeout",
    "UnknownKey",
    "UnsafePath",
    "WorkflowError",
    "WriterError",
]
