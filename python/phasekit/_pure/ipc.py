"""Arrow IPC writer (being written)."""

COMPRESSIONS = (None, "lz4", "zstd")
TMP_SUFFIX = ".phasekit-tmp"


class IpcWriter:
    pass
