"""Keep the dynamic partitions in step with the store.

The pipeline partitions (``n4a_pipelines``, keys ``<dataset>/<label>/<pipeline key>``) and the
dataset partitions (``n4a_datasets``) are registered by the sweep job and ``sweep_plan``. This
module computes what the store holds so a sensor can

* delete the keys whose pipelines are gone from the store (``n4a delete``, ``delete_run``,
  ``delete_pipeline``) and that the configured sweep does not define, so a long-lived
  deployment does not pile up dead keys;
* register the keys of pipelines written outside Dagster (``n4a sweep``, ``run_sweep``) and
  report a materialization of each such pipeline partition, so those runs show up in the UI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dagster import AssetMaterialization, DagsterInstance, DagsterRunStatus, RunsFilter

from .keys import (
    DATASETS_PARTITIONS,
    META_CHAIN_ID,
    META_DATASET,
    META_PIPELINE_ID,
    META_RUN_ID,
    META_STATUS,
    META_WORKSPACE,
    PIPELINE,
    PIPELINE_PARTITIONS,
    label_of,
    parse_pipeline_partition,
    pipeline_partition_key,
)

if TYPE_CHECKING:
    import polars as pl

    from n4a_store import WorkspaceStore

#: Dagster runs in these states may still register partitions and write their pipelines.
IN_PROGRESS = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
               DagsterRunStatus.STARTED]


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def row_partition_key(row: dict[str, Any]) -> str | None:
    """The partition key of a stored pipeline row (None without a pipeline key)."""
    config = _json(row.get("expanded_config")) or {}
    key = config.get("key") if isinstance(config, dict) else None
    if not key:
        return None
    choices = _json(row.get("generator_choices")) or []
    return pipeline_partition_key(row["dataset_name"], key, label_of(row["name"], choices))


@dataclass
class PartitionPlan:
    """What one reconciliation does: keys to add and delete, materializations to report."""

    add_pipelines: list[str] = field(default_factory=list)
    delete_pipelines: list[str] = field(default_factory=list)
    add_datasets: list[str] = field(default_factory=list)
    delete_datasets: list[str] = field(default_factory=list)
    reports: list[AssetMaterialization] = field(default_factory=list)
    reported_runs: list[str] = field(default_factory=list)
    deferred: str = ""

    @property
    def empty(self) -> bool:
        """Nothing to add, delete or report."""
        return not (self.add_pipelines or self.delete_pipelines or self.add_datasets
                    or self.delete_datasets or self.reports)

    def summary(self) -> str:
        """One line for the sensor tick."""
        parts = [f"{len(self.add_pipelines)} pipeline partition(s) added",
                 f"{len(self.delete_pipelines)} deleted",
                 f"{len(self.add_datasets)} dataset partition(s) added",
                 f"{len(self.delete_datasets)} deleted",
                 f"{len(self.reports)} materialization(s) of runs made outside Dagster reported"]
        return ", ".join(parts) + (f"; {self.deferred}" if self.deferred else "")


def n4a_runs_in_progress(instance: DagsterInstance) -> int:
    """Dagster runs of this code location's jobs that have not finished yet."""
    return instance.get_runs_count(RunsFilter(statuses=IN_PROGRESS))


def plan_reconciliation(instance: DagsterInstance, store: WorkspaceStore,
                        configured_keys: set[str], configured_datasets: set[str],
                        reported_runs: set[str], workspace: str) -> PartitionPlan:
    """Compare the registered partitions with the store (and the configured sweep).

    Args:
        configured_keys / configured_datasets: the keys the configured sweep defines (kept even
            before they are trained: they can be materialized).
        reported_runs: store runs made outside Dagster already reported (the sensor's cursor).
        workspace: the store location shown in metadata (no password).
    """
    pipelines = store.list_pipelines()
    live: dict[str, dict[str, Any]] = {}
    for row in pipelines.iter_rows(named=True):
        key = row_partition_key(row)
        if key is not None:
            live[key] = row
    live_pairs = {parse_pipeline_partition(k) for k in live}
    registered = instance.get_dynamic_partitions(PIPELINE_PARTITIONS.name or "")
    registered_set = set(registered)
    datasets = set(instance.get_dynamic_partitions(DATASETS_PARTITIONS.name or ""))
    live_datasets = {row["dataset_name"] for row in live.values()}
    plan = PartitionPlan()

    dead = [k for k in registered if k not in configured_keys and not _is_live(k, live_pairs)]
    dead_datasets = sorted(datasets - live_datasets - configured_datasets)
    if (dead or dead_datasets) and n4a_runs_in_progress(instance):
        plan.deferred = "deletions deferred while Dagster runs are in progress"
    else:
        plan.delete_pipelines, plan.delete_datasets = dead, dead_datasets

    # a run's partitions are registered on one tick and its materializations reported on the
    # next (the daemon reports asset events before it applies partition requests)
    for run_id in _outside_runs(store, reported_runs):
        rows = [(row_partition_key(row), row) for row in
                pipelines.filter(pipelines["run_id"] == run_id).iter_rows(named=True)]
        rows = [(key, row) for key, row in rows if key is not None]
        missing = [key for key, _ in rows if key not in registered_set]
        if missing:
            plan.add_pipelines.extend(k for k in missing if k not in plan.add_pipelines)
            continue
        for key, row in rows:
            plan.reports.extend(_reports(store, row, key, workspace))
        plan.reported_runs.append(run_id)
    plan.add_datasets = sorted({parse_pipeline_partition(k)[0] for k in plan.add_pipelines}
                               - datasets)
    return plan


def _is_live(key: str, live_pairs: set[tuple[str, str]]) -> bool:
    try:
        return parse_pipeline_partition(key) in live_pairs
    except Exception:  # a key of an older layout (e.g. a bare pipeline hash): dead
        return False


def _outside_runs(store: WorkspaceStore, reported: set[str]) -> list[str]:
    """Finished store runs not driven by Dagster and not reported yet (oldest first)."""
    runs: pl.DataFrame = store.list_runs(limit=None)
    out = []
    for row in reversed(list(runs.iter_rows(named=True))):
        meta = _json(row.get("metadata")) or {}
        if row["run_id"] in reported or meta.get("dagster_run_id") or row["status"] == "running":
            continue
        out.append(row["run_id"])
    return out


def _reports(store: WorkspaceStore, row: dict[str, Any], key: str,
             workspace: str) -> list[AssetMaterialization]:
    """Reported materializations of a pipeline partition written outside Dagster: its
    ``pipeline``, and for a completed pipeline its ``chain`` and ``prediction_arrays``."""
    from .keys import CHAIN, PREDICTION_ARRAYS
    from .metadata import score_metadata
    from .sweep_steps import arrays_metadata, chain_metadata

    source = "reported by n4a_partitions_sensor: a run made outside Dagster (n4a sweep)"
    chains = store.get_chains_for_pipeline(row["pipeline_id"])
    chain_id = chains["chain_id"][0] if chains.height else None
    metadata: dict[str, Any] = {
        META_RUN_ID: row["run_id"], META_PIPELINE_ID: row["pipeline_id"],
        META_DATASET: row["dataset_name"], META_STATUS: row["status"], META_WORKSPACE: workspace,
        "pipeline_name": row["name"], "metric": row.get("metric") or "", "source": source,
        **score_metadata("best_val", row.get("best_val")),
        **score_metadata("best_test", row.get("best_test")),
    }
    if chain_id:
        metadata[META_CHAIN_ID] = chain_id
    description = f"{row['name']} on {row['dataset_name']} (run {row['run_id'][:8]}, outside Dagster)"
    events = [AssetMaterialization(asset_key=PIPELINE, partition=key, metadata=metadata,
                                   description=description)]
    if row["status"] == "completed" and chain_id:
        prediction_ids = store.query_predictions(
            pipeline_id=row["pipeline_id"])["prediction_id"].to_list()
        events.append(AssetMaterialization(
            asset_key=CHAIN, partition=key, description=description,
            metadata={**chain_metadata(store, chain_id), "source": source}))
        events.append(AssetMaterialization(
            asset_key=PREDICTION_ARRAYS, partition=key, description=description,
            metadata={**arrays_metadata(store, row["run_id"], row["dataset_name"], prediction_ids,
                                        row["pipeline_id"]), "source": source}))
    return events
