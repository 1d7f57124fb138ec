"""``phasekit.run``: load and resolve a configuration, run its phases, record everything.

The run is recorded in the catalog (``processes``) with its resolved configuration and
backend; every stored item gets an ``intermediate_data`` row. ``resume=RUN_ID``
continues a run whose earlier attempt stopped: windows it completed (their
``window_complete`` item and aggregate verify) are not computed again.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import pyarrow as pa

import phasekit
from phasekit.catalog.liveness import RunLock, sweep_dead_files
from phasekit.catalog.publish import PublishingCatalog
from phasekit.errors import CatalogError, ConfigError, InvalidArgument, UnknownKey
from phasekit.objstore import ObjectRoot, is_storage_url, not_storage, refuse, url_scheme
from phasekit.stores.sealed import read_plain
from phasekit.workflow.admf import check_admf_target
from phasekit.workflow.builtin import (
    CUSTOM_WORKFLOW,
    check_workflow,
    phase_aliases,
    workflow_defaults,
)
from phasekit.workflow.executor import DataSpec
from phasekit.workflow.executors import BatchExecutor, ExecutorSpec, make_executor
from phasekit.workflow.results import read_arrow, read_json, run_encryption
from phasekit.workflow.sequencer import Observer, PhaseOutcome, Sequencer

log = logging.getLogger(__name__)

ConfigSource = Union[str, os.PathLike, Mapping[str, Any]]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run: it is recorded ``interrupted`` and ``resume=run_id`` continues
    it (the windows it completed are kept)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} interrupted")
        self.run_id = run_id


@dataclass
class LazyRef:
    """A stored item of a run, loaded only when asked (``load()``)."""

    entity: str
    uri: Optional[str]
    window_id: Optional[str]
    format: Optional[str]
    size_bytes: int
    _catalog: Any = field(repr=False)
    _item: Any = field(repr=False)
    _encryption: Any = field(default=None, repr=False)

    def load(self) -> Any:
        """The item's value: a pyarrow Table for Arrow files, parsed JSON for JSON
        (decrypted when the run encrypted it: with the run's key, or, for a reader that
        has none, the key source its run recorded, ``encryption.key``)."""
        item = self._catalog.verify_item(self._item)
        if item.inline_data is not None:
            return item.inline_data
        if self._catalog.item_object(item) is not None:
            with tempfile.TemporaryDirectory(prefix="phasekit-object-") as cache:
                return self._read(item, self._catalog.item_local(item, Path(cache)))
        return self._read(item, item.path)

    def _read(self, item: Any, path: Optional[Path]) -> Any:
        if path is None:
            raise UnknownKey(
                f"{self.entity}: {self.uri} is not a file; it lived in memory during the run"
            )
        encryption = self._encryption
        if encryption is None and item.key_id is not None:
            encryption = recorded_encryption(self._catalog, item.process_id, item.key_id)
        if self.format == "arrow":
            return read_arrow(Path(path), encryption)
        if self.format == "json":
            return read_json(Path(path), encryption)
        import pyarrow.parquet as pq

        plain = read_plain(Path(path), encryption, f"item {self.entity}")
        if plain is not None:
            return pq.read_table(pa.BufferReader(plain))
        return pq.read_table(path)


def recorded_encryption(catalog: Any, run_id: str, key_id: Optional[str] = None) -> Any:
    """The encryption a run recorded in its configuration (its key loaded from the
    recorded ``env:``/``file:`` source), or None when the run did not encrypt."""
    from phasekit.crypt import recorded_encryption as of_config

    return of_config(catalog.get_process(run_id).config, key_id)


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    catalog_url: str
    status: str
    phases: dict[str, PhaseOutcome]
    _catalog: Any = field(repr=False)
    _encryption: Any = field(default=None, repr=False)

    def outputs(self, phase: str) -> list[LazyRef]:
        """The items a phase stored, as lazy refs."""
        items = self._catalog.list_items(self.run_id, stage=phase)
        return [
            LazyRef(
                i.entity_name,
                i.data_reference,
                i.window_id,
                i.format,
                i.size_bytes,
                self._catalog,
                i,
                self._encryption,
            )
            for i in items
        ]

    def metrics(self, phase: str, window: Optional[str] = None) -> pa.Table:
        """The ranked container metrics of a phase's window as an Arrow table
        (parameters as ``param.<name>`` columns); ``polars.from_arrow`` takes it.
        ``window`` may be left out only where the phase has one window."""
        self._check_phase(phase)
        refs = {r.window_id: r for r in self.outputs(phase) if r.entity == "aggregate_results"}
        names = ", ".join(str(w) for w in refs) or "none"
        if window is None and len(refs) > 1:
            raise InvalidArgument(
                f"phase {phase!r} of run {self.run_id} has windows {names}: give window="
            )
        ref = next(iter(refs.values()), None) if window is None else refs.get(window)
        if ref is None:
            what = "aggregate results" if window is None else f"window {window!r}"
            raise UnknownKey(
                f"phase {phase!r} of run {self.run_id} has no {what}; "
                f"its windows with results: {names}"
            )
        rows = []
        for r in ref.load()["ranking"]:
            row = {"container_id": r["container_id"]}
            row.update({f"param.{k}": v for k, v in r.get("parameters", {}).items()})
            row.update(r["metrics"])
            rows.append(row)
        return pa.Table.from_pylist(rows)

    def best(self, phase: str) -> Optional[dict[str, Any]]:
        """The best set of the phase's own ranking (its container, parameters, metrics
        and objective); None for a phase that ranks nothing of its own (a validation of
        another phase's sets: see ``phases[phase].best_out_of_sample``)."""
        self._check_phase(phase)
        return self.phases[phase].best

    def _check_phase(self, phase: str) -> None:
        if phase not in self.phases:
            raise UnknownKey(
                f"run {self.run_id} has no phase {phase!r}; its phases: {', '.join(self.phases)}"
            )

    def close(self) -> None:
        self._catalog.close()


def load_and_resolve(
    config: ConfigSource,
    runtime: Optional[Mapping[str, Any]] = None,
    results_dir: Optional[str] = None,
) -> Any:
    """Load, validate and resolve a configuration: every check ``run`` makes before it
    starts (``phasekit config show`` makes the same ones)."""
    return resolve_target(config, runtime, results_dir)[0]


def resolve_target(
    config: ConfigSource,
    runtime: Optional[Mapping[str, Any]] = None,
    results_dir: Optional[str] = None,
    local_dir: Optional[str] = None,
) -> tuple[Any, Optional[ObjectRoot]]:
    """:func:`load_and_resolve`, and the object storage root when ``results_dir`` is an
    object URL (``s3://bucket/prefix``): the run then resolves its folders under
    ``local_dir`` (its catalog by default, spills, stream buffers, files before upload)."""
    from phasekit.config import load_config, resolve

    cfg = load_config(config if isinstance(config, Mapping) else os.fspath(config))
    check_workflow(cfg.workflow, bool(cfg.phases))
    runtime = dict(runtime or {})
    if results_dir is not None:
        runtime["results_dir"] = str(results_dir)
    target = runtime.get("results_dir", cfg.results_dir)
    root: Optional[ObjectRoot] = None
    if is_storage_url(target):
        root = ObjectRoot.from_url(str(target))
        if local_dir is None:
            raise ConfigError(
                f"results_dir {target!r} is on object storage; give a local folder for the "
                "catalog (unless catalog: names one), spills and files before upload "
                "(--local-dir, run(local_dir=...))"
            )
        runtime["results_dir"] = str(local_dir)
    elif url_scheme(str(target or "")) is not None:
        raise ConfigError(not_storage(str(target)))
    elif local_dir is not None:
        raise ConfigError(
            f"local_dir {local_dir!r} is only used with results_dir on object storage "
            f"(s3://...), not with {target!r}"
        )
    resolved = resolve(
        cfg,
        workflow_defaults=workflow_defaults(cfg.workflow),
        runtime=runtime or None,
        phase_aliases=phase_aliases(cfg.workflow),
    )
    check_resolved(resolved)
    if root is not None:
        check_object_storage(resolved)
    return resolved, root


def check_object_storage(resolved: Any) -> None:
    """Settings object storage cannot honour: folders of files (``partition_by``), HDF5
    files (written in place) and ``results.layout: admf`` (its run-name folders are written
    over by the next run of the name) are refused (:func:`phasekit.objstore.refuse`).
    Encryption is honoured: files are sealed locally and uploaded sealed, with their
    wrapped data keys (:mod:`phasekit.crypt.objects`)."""
    if resolved.results_layout == "admf":
        raise refuse("results.layout: admf", "it writes over the folders of a run name")
    for name in resolved.phase_names:
        file = resolved.phase(name).data_flow.file
        where = f"phases.{name}.data_flow.file_settings"
        if file.partition_by:
            raise refuse(f"{where}.partition_by", "it writes a folder of files, not one object")
        if file.format == "hdf5":
            raise refuse(f"{where}.format: hdf5", "HDF5 files are updated in place")


@dataclass(frozen=True)
class ShownConfig:
    """What ``phasekit config show`` prints: the resolved settings, the sections phasekit
    does not support (set aside, each with what phasekit offers instead) and, when the
    configuration defines no workflow phasekit can run, why (``run`` refuses it)."""

    resolved: Any
    unsupported: tuple[Any, ...]
    no_workflow: Optional[str]


def resolve_shown(config: ConfigSource, runtime: Optional[Mapping[str, Any]] = None) -> ShownConfig:
    """Load and resolve a configuration as :func:`load_and_resolve` does, except that the
    sections phasekit does not support are listed instead of refused and a configuration
    without a workflow or phases (a fragment) resolves to its run-wide settings."""
    from phasekit.config import resolve
    from phasekit.config.load import load_config_shown

    cfg, unsupported, positions = load_config_shown(
        config if isinstance(config, Mapping) else os.fspath(config)
    )
    no_workflow: Optional[str] = None
    try:
        check_workflow(cfg.workflow, bool(cfg.phases))
    except ConfigError as exc:
        no_workflow = str(exc)
    name = cfg.workflow if no_workflow is None else None
    resolved = resolve(
        cfg,
        workflow_defaults=workflow_defaults(name),
        runtime=dict(runtime) if runtime else None,
        phase_aliases=phase_aliases(name),
        phase_positions=positions,
    )
    if no_workflow is None:
        check_resolved(resolved)
    return ShownConfig(resolved, unsupported, no_workflow)


def check_resolved(resolved: Any) -> None:
    """What only the merged settings of a phase show: its data (a bar count the run can
    hold, one regular data file), the size of its parameter grid and where its files go
    (``file_settings.base_path`` under ``results_dir``)."""
    from phasekit.config.limits import MAX_GRID
    from phasekit.config.params import grid_size
    from phasekit.workflow.plans import check_analysis_flow, check_base_path, check_topology

    for name in resolved.phase_names:
        phase = resolved.phase(name)
        check_base_path(phase, resolved.results_dir)
        check_analysis_flow(phase)
        check_topology(phase)
        params = phase.params
        data = params.data.model_dump(exclude_none=True) if params.data else {}
        if phase.topology not in ("stream", "analysis"):
            try:
                DataSpec.from_config(data).check()
            except ConfigError as exc:
                raise ConfigError(f"phase {name!r}: {exc}") from None
        space = params.parameter_space
        if space and grid_size(space) > MAX_GRID:
            raise ConfigError(
                f"phase {name!r}: parameter_space: the grid holds {grid_size(space):,} "
                f"parameter sets; a grid may hold at most {MAX_GRID:,}"
            )


def run(
    config: ConfigSource,
    *,
    workers: Optional[int] = None,
    results_dir: Optional[str] = None,
    backend: Optional[str] = None,
    resume: Optional[str] = None,
    observer: Optional[Observer] = None,
    executor: Optional[ExecutorSpec] = None,
    local_dir: Optional[str] = None,
    **overrides: Any,
) -> RunResult:
    """Run a workflow from a YAML path, YAML text or a dict.

    ``overrides`` are runtime settings by dotted path with ``__`` for dots (e.g.
    ``data_flow__mode="file"``) and win over everything in the config. ``executor``
    (``"local"``, ``{"dask": "tcp://host:8786"}`` or ``{"ray": "host:6379"}``) replaces the
    config's ``executor``; an ``observer`` with a ``worker_batch_done(worker, containers)``
    method hears of each batch a Dask or Ray worker finished.
    With ``results_dir`` on object storage (``s3://bucket/prefix``), ``local_dir`` is the
    local folder of the run's catalog (by default), spills and files before their upload.
    """
    from phasekit.catalog import open_catalog

    runtime = {key.replace("__", "."): value for key, value in overrides.items()}
    if executor is not None:
        runtime["executor"] = executor
    resolved, root = resolve_target(config, runtime, results_dir, local_dir)
    _check_workers(workers)
    check_admf_target(resolved, resume is not None)
    if backend is not None:
        phasekit.set_backend(backend)
    pool = make_executor(
        resolved.executor,
        workers or resolved.workers,
        phasekit.get_backend(),
        getattr(observer, "worker_batch_done", None),
    )
    try:
        _preflight(resolved, pool)
        catalog = open_catalog(resolved.catalog.location, results_dir=resolved.results_dir)
    except BaseException:
        pool.close()
        raise
    try:
        run_id, lock = _start(catalog, resolved, resume, root)
    except BaseException:
        pool.close()
        catalog.close()
        raise
    run_dir = Path(resolved.results_dir) / run_id
    publisher = None if root is None else PublishingCatalog(catalog, run_dir.parent, root)
    writer = catalog if publisher is None else publisher
    status = "failed"
    try:
        _sweep_interrupted(catalog, resolved)
        sequencer = Sequencer(
            resolved, run_id, run_dir, writer, pool, observer, resume=resume is not None
        )
        phases = sequencer.run()
        status = "completed"
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through `phasekit run`
        status = "interrupted"
    finally:
        pool.close(abort=status != "completed")
        try:
            catalog.finish_process(run_id, status)
        finally:
            lock.release()
            if status != "completed":
                catalog.close()
    if status == "interrupted":
        raise RunInterrupted(run_id)
    if publisher is not None:
        publisher.remove_local(run_id)  # every file of the run is an object now
    _cleanup(catalog, resolved, run_id)
    encryption = sequencer.encryption
    return RunResult(run_id, run_dir, catalog.url, status, phases, catalog, encryption)


def _preflight(resolved: Any, executor: BatchExecutor) -> None:
    """What must work before the run is recorded: the master key loads (with encryption
    on), every phase's bars load, its windows fit them (the run's plan,
    :mod:`phasekit.workflow.plan`) and the worker processes start (with ``engine: container``;
    else when a phase first runs containers). A run that fails here
    leaves nothing in the catalog."""
    run_encryption(resolved.encryption)
    from phasekit.workflow.plan import plan_run

    plan_run(resolved)
    # with the block engine a local run's windows run in this process: no worker
    # process is started unless a phase runs containers one at a time
    executor.start(containers=resolved.engine == "container")


def _cleanup(catalog: Any, resolved: Any, run_id: str) -> None:
    """Apply the configured ``storage_strategy.cleanup_policy`` once the run completed:
    ``keep_latest`` removes the items of runs of this run's name but the latest completed
    one (this one), ``keep_none`` those of this run too; stages in ``stages_to_persist``
    are kept."""
    policy = resolved.cleanup_policy
    if policy == "keep_all":
        return
    row = catalog.resolve_run(run_id)
    report = catalog.cleanup(
        policy,
        list(resolved.stages_to_persist),
        workflow=row.workflow,
        run_name=row.run_name,
    )
    removal = report.removal
    if removal is not None:
        log.info(
            "cleanup_policy %s: removed %d items (%d bytes)",
            policy,
            len(removal.removed),
            removal.freed_bytes,
        )


def _check_workers(workers: Optional[int]) -> None:
    """The ``workers`` argument (``--workers``) within the range the config allows."""
    from phasekit.config.limits import MAX_WORKERS

    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(
            f"workers: must be an integer >= 1 and <= {MAX_WORKERS:,}, got {str(workers)[:40]}"
        )


def _sweep_interrupted(catalog: Any, resolved: Any) -> None:
    """Remove the temporary files of runs found dead when the catalog opened (those in
    this results folder whose lock is free)."""
    for run_id in catalog.interrupted_on_open:
        folder = Path(resolved.results_dir) / run_id
        if not folder.is_dir():
            continue
        try:
            lock = catalog.lock_run(run_id, folder)
        except CatalogError:
            continue  # resumed meanwhile by another process
        try:
            sweep_dead_files(folder)
        finally:
            lock.release()


def _start(
    catalog: Any, resolved: Any, resume: Optional[str], root: Optional[ObjectRoot] = None
) -> tuple[str, RunLock]:
    """The run id and its lock: a new run, or ``resume`` (refused while another process
    runs it), running again by this process, its dead attempt's temporary files removed."""
    if resume is not None:
        run_id = str(catalog.resolve_run(resume).process_id)
        run_dir = Path(resolved.results_dir) / run_id
        lock = catalog.lock_run(run_id, run_dir)
        try:
            catalog.reopen_process(run_id)
            sweep_dead_files(run_dir)
        except BaseException:
            lock.release()
            raise
        log.info("resuming run %s", run_id)
        return run_id, lock
    workflow = resolved.workflow or CUSTOM_WORKFLOW
    run_id = str(
        catalog.start_process(
            workflow,
            run_name=resolved.run_name or workflow,
            config=resolved.to_dict(),
            backend=phasekit.get_backend(),
            results_dir=resolved.results_dir if root is None else root.url,
        )
    )
    return run_id, catalog.lock_run(run_id, Path(resolved.results_dir) / run_id)
