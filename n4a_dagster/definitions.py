"""The code location: every asset, check, job, sensor, schedule and resource in one Definitions.

``defs`` is built from the environment:

* ``N4A_WORKSPACE``: the workspace location (default ``./workspace``);
* ``N4A_SWEEP_CONFIG``: the sweep config (default ``builtin:nirs-regression``);
* ``N4A_MAX_CONCURRENT``: parallel sweep steps (default 4);
* ``N4A_SWEEP_CRON`` / ``N4A_SWEEP_TIMEZONE``: the nightly sweep schedule (default
  ``0 2 * * *`` UTC, stopped until switched on);
* ``N4A_COMPACT_TOMBSTONES``, ``N4A_COMPACT_FILES``, ``N4A_GC_UNREFERENCED``, ``N4A_GC_BYTES``:
  sensor thresholds.

:func:`build_definitions` builds the same thing with explicit values (tests, scripts).
"""

from __future__ import annotations

from dagster import Definitions

from .assets import ALL_ASSETS
from .checks import ASSET_CHECKS
from .io_managers import N4AChainIOManager, N4APredictionArraysIOManager, N4ARecordIOManager
from .jobs import (
    build_sweep_job,
    compact_job,
    export_job,
    gc_job,
    model_bundle_job,
    partition_checks_job,
    pipeline_partition_job,
    replay_job,
    verify_job,
)
from .resources import (
    N4AStoreResource,
    N4ASweepResource,
    default_sweep_config,
    default_workspace,
)
from .schedules import build_sweep_schedule
from .sensors import build_compaction_sensor, build_gc_sensor, build_partitions_sensor


def build_definitions(
    workspace: str | None = None,
    sweep_config: str | None = None,
    *,
    max_concurrent: int | None = None,
    sweep_cron: str | None = None,
) -> Definitions:
    """All n4a Dagster definitions bound to one workspace and one sweep config.

    Args:
        workspace: Workspace location (default: env ``N4A_WORKSPACE`` or ``./workspace``).
        sweep_config: Sweep config path or ``builtin:<name>`` (default: env
            ``N4A_SWEEP_CONFIG`` or ``builtin:nirs-regression``).
        max_concurrent: Parallel steps of the sweep job (default: env or 4).
        sweep_cron: Cron of the nightly sweep schedule (default: env or ``0 2 * * *``).
    """
    store = N4AStoreResource(workspace=workspace or default_workspace())
    sweep = N4ASweepResource(config=sweep_config or default_sweep_config())
    sweep_job = build_sweep_job(max_concurrent)
    return Definitions(
        assets=ALL_ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=[sweep_job, compact_job, gc_job, verify_job, export_job, replay_job, model_bundle_job,
              pipeline_partition_job, partition_checks_job],
        sensors=[build_compaction_sensor(compact_job), build_gc_sensor(gc_job),
                 build_partitions_sensor()],
        schedules=[build_sweep_schedule(sweep_job, cron=sweep_cron)],
        resources={
            "n4a_store": store,
            "n4a_sweep": sweep,
            "n4a_record_io_manager": N4ARecordIOManager(n4a_store=store),
            "n4a_chain_io_manager": N4AChainIOManager(n4a_store=store),
            "n4a_arrays_io_manager": N4APredictionArraysIOManager(n4a_store=store),
        },
    )


defs = build_definitions()
