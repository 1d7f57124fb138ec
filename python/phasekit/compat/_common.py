"""What the seed facades share: seed defaults resolved through the config layer, and the
link to a catalog (opened, a run started, recorders made per phase or container)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from phasekit.catalog import Catalog, CatalogRecorder, open_catalog
from phasekit.config import ResolvedDataFlow, resolve
from phasekit.errors import InvalidArgument, UnsafePath
from phasekit.paths import contained
from phasekit.stores import Ref
from phasekit.stores.formats import FORMAT_DEFAULT

log = logging.getLogger("phasekit.compat")

MB = 1024 * 1024
SEED_PHASE = "compat"
"""The phase name under which a bare ``data_flow`` dict is resolved."""

CatalogSource = Union[Catalog, str, "os.PathLike[str]", None]


def mb_to_bytes(memory_limit_mb: Any, field: str = "memory_limit_mb") -> int:
    """``memory_limit_mb`` (an int or float >= 0) as bytes."""
    if isinstance(memory_limit_mb, bool) or not isinstance(memory_limit_mb, (int, float)):
        raise InvalidArgument(f"{field} must be a number of MB >= 0, got {memory_limit_mb!r}")
    if memory_limit_mb < 0:
        raise InvalidArgument(f"{field} must be >= 0, got {memory_limit_mb!r}")
    return int(memory_limit_mb * MB)


@dataclass(frozen=True)
class FileSettings:
    """File settings of a facade (the factory's ``FileSettings``): the seed classes'
    ``format``, ``compression`` (``"default"``: the format's own) and ``partition_by``."""

    format: str = "parquet"
    compression: Optional[str] = FORMAT_DEFAULT
    partition_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamingSettings:
    buffer_size: int = 1000
    flush_interval: float = 60.0


@dataclass(frozen=True)
class PersistenceSettings:
    format: str = "arrow"
    formats: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FacadeFlow:
    """The data flow a facade class was constructed with (its keyword arguments, which
    the seeds' classes take instead of a configuration), in the shape the store factory
    (:func:`phasekit.stores.factory.open_store`) reads: the factory, not the facade,
    turns its ``mode`` into a store."""

    mode: str
    memory_limit_bytes: int = 0
    file: FileSettings = FileSettings()
    streaming: StreamingSettings = StreamingSettings()
    persistence: PersistenceSettings = PersistenceSettings()


def resolve_flow(
    data_flow: Optional[Mapping[str, Any]], seed_defaults: Mapping[str, Any]
) -> ResolvedDataFlow:
    """A seed's ``data_flow`` dict resolved by the config layer (validation, aliases such as
    ``memory_settings.max_size_mb`` and ``default_mode``), with ``seed_defaults`` (a
    ``data_flow`` dict of the seed's own defaults) below the user's values."""
    config = {"data_flow": dict(data_flow)} if data_flow else {}
    defaults = {SEED_PHASE: {"data_flow": dict(seed_defaults)}}
    return resolve(config, workflow_defaults=defaults).phase(SEED_PHASE).data_flow


def resolve_container_flow(
    config: Any,
    container_id: str,
    seed_defaults: Mapping[str, Any],
    phase: Optional[str] = None,
) -> ResolvedDataFlow:
    """The data flow of ``container_id`` in a whole configuration (YAML path or text, or a
    mapping with ``data_flow`` and ``containers.<pattern>``), the most specific pattern
    winning; ``seed_defaults`` lie below everything the configuration sets."""
    name = phase or SEED_PHASE
    defaults = {name: {"data_flow": dict(seed_defaults)}}
    resolved = resolve(config, workflow_defaults=defaults)
    return resolved.phase(name).container(container_id).data_flow


def wait_received(store: Any, key: str, timeout: float = 30.0) -> None:
    """Wait until the background thread of stream ``key`` of a StreamStore has taken every
    item sent so far, so that a read sees the caller's own writes (the store reads its
    parts and unflushed tail, not what still sits in its channel)."""
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        per = store.stats()["per_stream"].get(key)
        if per is None or per["items"] >= per["sent"] or per["error"] is not None:
            return
        if time.monotonic() >= deadline:
            log.warning(
                "stream %r: %d items still queued after %.0f s",
                key,
                per["sent"] - per["items"],
                timeout,
            )
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


class CatalogLink:
    """A catalog and one run in it: opened from a location when given one, the run started
    when no ``process_id`` is given (and finished by :meth:`close`)."""

    def __init__(
        self,
        catalog: CatalogSource,
        process_id: Optional[str] = None,
        *,
        workflow: str = "compat",
        results_dir: Union[str, os.PathLike[str], None] = None,
        config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if catalog is None:
            raise InvalidArgument("a catalog link needs a catalog (a Catalog, path or URL)")
        self._owns_catalog = not isinstance(catalog, Catalog)
        self.catalog: Catalog = (
            open_catalog(catalog, results_dir=results_dir)
            if not isinstance(catalog, Catalog)
            else catalog
        )
        self._owns_process = process_id is None
        if process_id is None:
            import phasekit

            process_id = self.catalog.start_process(
                workflow,
                config=config,
                backend=phasekit.get_backend(),
                results_dir=None if results_dir is None else os.fspath(results_dir),
            )
        self.process_id: str = process_id

    def recorder(
        self, phase: str, *, stage_name: Optional[str] = None, container_id: Optional[str] = None
    ) -> Any:
        """A CatalogRecorder of this run (typed Any: it returns the row id where the stores'
        ItemRecorder protocol says None)."""
        return CatalogRecorder(
            self.catalog,
            self.process_id,
            phase,
            stage_name=stage_name,
            container_id=container_id,
        )

    def finish(self, status: str = "completed") -> None:
        """Finish the run this link started (a run given by id is left as it is)."""
        if self._owns_process:
            self.catalog.finish_process(self.process_id, status)
            self._owns_process = False

    def close(self, status: str = "completed") -> None:
        """Finish the run this link started, and close the catalog it opened."""
        self.finish(status)
        if self._owns_catalog:
            self.catalog.close()
            self._owns_catalog = False


class ViewRecorder:
    """Records each item of a HybridStore's container views under the view's name as the
    phase and stage (``memory://<run>/<phase>/<view>/<key>``); views share one recorder."""

    def __init__(self, link: CatalogLink) -> None:
        self.link = link

    def record_item(self, ref: Ref) -> None:
        self.link.recorder(ref.names[2]).record_item(ref)

    def forget_item(self, ref: Ref) -> None:
        self.link.recorder(ref.names[2]).forget_item(ref)


def catalog_link(
    catalog: CatalogSource,
    process_id: Optional[str],
    workflow: str,
    files: Union[str, os.PathLike[str], None] = None,
) -> Optional[CatalogLink]:
    """A :class:`CatalogLink`, or None when no catalog is given.

    ``files``: the folder the facade writes the files it records. A catalog given by its
    location is opened with that folder as its results folder (the root its rows must
    lie under); a Catalog object must already have it under its results folder, else
    ``InvalidArgument`` before anything is written."""
    if catalog is None:
        if process_id is not None:
            raise InvalidArgument("process_id needs a catalog (catalog=path, URL or Catalog)")
        return None
    if files is None:
        return CatalogLink(catalog, process_id, workflow=workflow)
    folder = Path(os.path.abspath(os.fspath(files)))
    if not isinstance(catalog, Catalog):
        return CatalogLink(catalog, process_id, workflow=workflow, results_dir=folder)
    check_under_results(catalog, folder)
    return CatalogLink(catalog, process_id, workflow=workflow)


def check_under_results(catalog: Catalog, folder: Path) -> None:
    """``InvalidArgument`` unless ``folder`` lies under the catalog's results folder (the
    only place the catalog records files from)."""
    root = catalog.results_dir
    where = f"the files of this data flow ({folder})"
    if root is None:
        raise InvalidArgument(
            f"{where} cannot be recorded in catalog {catalog.url}: it was opened without a "
            "results folder; open it with results_dir= a folder holding them"
        )
    try:
        contained(folder, root, where, allow_root=True)
    except UnsafePath:
        raise InvalidArgument(
            f"{where} lie outside the results folder {root} of catalog {catalog.url}, "
            "which records files only from under it; allowed: a folder under it (or open "
            "the catalog with results_dir= a folder holding them)"
        ) from None


__all__ = [
    "MB",
    "CatalogLink",
    "FacadeFlow",
    "FileSettings",
    "PersistenceSettings",
    "StreamingSettings",
    "ViewRecorder",
    "catalog_link",
    "check_under_results",
    "mb_to_bytes",
    "resolve_container_flow",
    "resolve_flow",
    "wait_received",
]
