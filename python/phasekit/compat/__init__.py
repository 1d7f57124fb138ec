"""The seeds' own Python interfaces as thin facades over phasekit (drop-in replacements).

One module per seed family; each class delegates to the real stores, catalog, tracer
and config layer, so changing an import is all a migration needs:

* :mod:`phasekit.compat.dataflow` (seed 000): ``DataFlowManager``, ``MemoryDataFlow``,
  ``FileDataFlow``, ``StreamingDataFlow``, ``HybridDataFlow``,
  ``create_data_flow_manager`` and the data-flow part of the ``Sequencer``.
* :mod:`phasekit.compat.datamanagers` (seed 001): ``MemoryDataManager``,
  ``StreamingDataManager``, ``FileDataManager``, ``HybridDataManager`` and
  ``DataFlowContainerMixin`` (``store_result``/``get_stored_result``).
* :mod:`phasekit.compat.tracing` (seed 002): ``MetricsEventTracer``,
  ``MetricsObserver``, ``BasicMetricsCalculator`` and ``StandardPhaseConfigs``;
  :mod:`phasekit.compat.containers`: the portfolio ``Container`` with its event bus and
  observer hooks, ``ContainerConfig``, ``Event``, ``EventType``.
* :mod:`phasekit.compat.stagedata` (seed 004): ``BaseDataContainer``.
* :mod:`phasekit.compat.market_data_pipeline` (seed 003): the DAG runtime of
  ``market-data-pipeline`` (``Dag``, ``Node``, ``DagRuntime``, ``Channel``,
  ``hash_partition``, windows, ``resample_ohlc``, ``build_dag_from_dict``) over
  ``phasekit.stream``.

See docs/migration.md.
"""

from __future__ import annotations
