"""Maintenance sensors: request a compaction or a gc run when the workspace needs one.

Both sensors keep a JSON cursor holding the fingerprint of the store state they
last acted on and a request ``generation``. A state that was already requested
(or already found under the thresholds) is skipped without a new run. Each
request increments the generation and its run key is ``<kind>-<generation>-<state>``:
Dagster launches one run per run key for a sensor's lifetime, so the same state
coming back later (identical garbage after re-running the same sweep) still gets
its run, while a tick evaluated twice with the same cursor repeats its key and
is deduplicated. Without a cursor (first tick, or a reset) the generation starts
at the number of runs the sensor has launched.
"""

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from typing import Any

from dagster import (
    AddDynamicPartitionsRequest,
    DagsterInvariantViolationError,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    JobDefinition,
    RunConfig,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.tags import SENSOR_NAME_TAG
from dagster._utils.warnings import BetaWarning

from .maintenance import CompactConfig, GcConfig
from .resources import N4AStoreResource, N4ASweepResource

COMPACT_TOMBSTONES_ENV = "N4A_COMPACT_TOMBSTONES"
COMPACT_FILES_ENV = "N4A_COMPACT_FILES"
GC_UNREFERENCED_ENV = "N4A_GC_UNREFERENCED"
GC_BYTES_ENV = "N4A_GC_BYTES"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _quiet_sensor(**kwargs: Any) -> Callable[[Callable[..., Any]], SensorDefinition]:
    """``@sensor`` without the beta warning Dagster emits for its own internal arguments."""
    def decorate(fn: Callable[..., Any]) -> SensorDefinition:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=BetaWarning)
            return sensor(**kwargs)(fn)

    return decorate


def fingerprint(state: Any) -> str:
    """A short stable hash of a JSON-serialisable state."""
    payload = json.dumps(state, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_cursor(context: SensorEvaluationContext) -> dict[str, Any]:
    """The sensor's JSON cursor (empty on the first tick or after a reset)."""
    if not context.cursor:
        return {}
    try:
        value = json.loads(context.cursor)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def cursor_generation(context: SensorEvaluationContext, cursor: dict[str, Any],
                      sensor_name: str) -> int:
    """How many runs the sensor has requested: from the cursor, else from the instance's runs.

    With no cursor (first tick, or a cursor reset in the UI) the count of runs launched under
    ``sensor_name`` is used, so a new run key never repeats one Dagster already saw.
    """
    if "generation" in cursor:
        return int(cursor["generation"])
    try:
        instance = context.instance
    except DagsterInvariantViolationError:  # a context built without an instance
        return 0
    return instance.get_runs_count(RunsFilter(tags={SENSOR_NAME_TAG: sensor_name}))


def _write_cursor(context: SensorEvaluationContext, state: str, requested: bool, summary: str,
                  generation: int) -> None:
    context.update_cursor(json.dumps({"state": state, "requested": requested, "summary": summary,
                                      "generation": generation}))


def compaction_candidates(
    stats: dict[str, dict[str, int]], tombstone_threshold: int, file_threshold: int
) -> dict[str, dict[str, int]]:
    """Datasets whose tombstoned rows or array files reach a threshold.

    A dataset already compacted (one file, no tombstones) is never due, whatever the thresholds.
    """
    due = {}
    for name, entry in sorted(stats.items()):
        tombstoned, files = int(entry.get("tombstoned", 0)), int(entry.get("files", 0))
        if tombstoned == 0 and files <= 1:
            continue
        if tombstoned >= tombstone_threshold or files >= file_threshold:
            due[name] = entry
    return due


def build_compaction_sensor(
    job: JobDefinition,
    *,
    tombstone_threshold: int | None = None,
    file_threshold: int | None = None,
    minimum_interval_seconds: int = 300,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    name: str = "n4a_compaction_sensor",
) -> SensorDefinition:
    """A sensor requesting ``job`` (the compact job) for datasets over a threshold.

    Thresholds default to env ``N4A_COMPACT_TOMBSTONES`` (1000 rows) and
    ``N4A_COMPACT_FILES`` (20 Parquet files per dataset).
    """
    tombstones = tombstone_threshold if tombstone_threshold is not None else _env_int(
        COMPACT_TOMBSTONES_ENV, 1000)
    files = file_threshold if file_threshold is not None else _env_int(COMPACT_FILES_ENV, 20)

    @_quiet_sensor(name=name, job=job, minimum_interval_seconds=minimum_interval_seconds,
                   default_status=default_status,
                   description=f"Requests {job.name} when a dataset has >= {tombstones} tombstoned "
                               f"array rows or >= {files} array files.")
    def _compaction_sensor(context: SensorEvaluationContext, n4a_store: N4AStoreResource):
        if not n4a_store.exists():
            return SkipReason(f"no workspace catalog at {n4a_store.display_uri()} yet")
        with n4a_store.open_store() as store:
            stats = store.array_stats()
        due = compaction_candidates(stats, tombstones, files)
        cursor = read_cursor(context)
        generation = cursor_generation(context, cursor, name)
        if not due:
            total_t = sum(int(e.get("tombstoned", 0)) for e in stats.values())
            most_files = max((int(e.get("files", 0)) for e in stats.values()), default=0)
            summary = (f"{len(stats)} dataset(s), {total_t} tombstoned rows, at most {most_files} "
                       f"files per dataset: under thresholds ({tombstones} rows, {files} files)")
            _write_cursor(context, fingerprint(stats), False, summary, generation)
            return SkipReason(summary)
        state = fingerprint(due)
        if cursor.get("state") == state and cursor.get("requested"):
            return SkipReason(f"compaction of {sorted(due)} already requested for this state ({state})")
        summary = ", ".join(f"{n}: {e.get('tombstoned', 0)} tombstoned, {e.get('files', 0)} files"
                            for n, e in due.items())
        generation += 1
        _write_cursor(context, state, True, summary, generation)
        return RunRequest(
            run_key=f"compact-{generation}-{state}",
            run_config=RunConfig(ops={"compact_arrays_op": CompactConfig(datasets=sorted(due))}),
            tags={"n4a/reason": summary[:200]},
        )

    return _compaction_sensor


def build_gc_sensor(
    job: JobDefinition,
    *,
    unreferenced_threshold: int | None = None,
    bytes_threshold: int | None = None,
    minimum_interval_seconds: int = 600,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    name: str = "n4a_gc_sensor",
) -> SensorDefinition:
    """A sensor requesting ``job`` (the gc job) when unreferenced artifacts pile up.

    Thresholds default to env ``N4A_GC_UNREFERENCED`` (100 artifacts) and ``N4A_GC_BYTES``
    (100 MiB); either one reached triggers a run.
    """
    count_limit = unreferenced_threshold if unreferenced_threshold is not None else _env_int(
        GC_UNREFERENCED_ENV, 100)
    bytes_limit = bytes_threshold if bytes_threshold is not None else _env_int(
        GC_BYTES_ENV, 100 * 1024 * 1024)

    @_quiet_sensor(name=name, job=job, minimum_interval_seconds=minimum_interval_seconds,
                   default_status=default_status,
                   description=f"Requests {job.name} when >= {count_limit} artifacts or >= "
                               f"{bytes_limit} bytes are unreferenced.")
    def _gc_sensor(context: SensorEvaluationContext, n4a_store: N4AStoreResource):
        if not n4a_store.exists():
            return SkipReason(f"no workspace catalog at {n4a_store.display_uri()} yet")
        with n4a_store.open_store() as store:
            stats = store.artifact_stats()
        count = int(stats.get("unreferenced_count", 0))
        size = int(stats.get("unreferenced_bytes", 0))
        state = fingerprint({"count": count, "bytes": size})
        summary = f"{count} unreferenced artifact(s), {size} bytes"
        cursor = read_cursor(context)
        generation = cursor_generation(context, cursor, name)
        if count == 0 or (count < count_limit and size < bytes_limit):
            _write_cursor(context, state, False, summary, generation)
            return SkipReason(f"{summary}: under thresholds ({count_limit} artifacts, {bytes_limit} bytes)")
        if cursor.get("state") == state and cursor.get("requested"):
            return SkipReason(f"gc already requested for this state ({summary})")
        generation += 1
        _write_cursor(context, state, True, summary, generation)
        return RunRequest(
            run_key=f"gc-{generation}-{state}",
            run_config=RunConfig(ops={"gc_artifacts_op": GcConfig()}),
            tags={"n4a/reason": summary},
        )

    return _gc_sensor


PARTITIONS_SENSOR = "n4a_partitions_sensor"
PARTITIONS_INTERVAL_ENV = "N4A_PARTITIONS_INTERVAL"


def configured_partitions(sweep: N4ASweepResource) -> tuple[set[str], set[str]] | None:
    """The pipeline and dataset partition keys the configured sweep defines (None when the
    config cannot be loaded: then nothing is deleted)."""
    from .keys import spec_partition_key

    try:
        names = sweep.dataset_names()
        specs = sweep.specs()
    except Exception:  # a config that does not load must not make every key look dead
        return None
    return {spec_partition_key(n, s) for n in names for s in specs}, set(names)


def build_partitions_sensor(
    *,
    minimum_interval_seconds: int | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    name: str = PARTITIONS_SENSOR,
) -> SensorDefinition:
    """A sensor keeping the dynamic partitions in step with the store (running by default).

    Each tick deletes the pipeline and dataset partitions whose pipelines are no longer in
    the store and that the configured sweep does not define (deferred while Dagster runs are
    in progress), registers the partitions of runs made outside Dagster and, on the next tick,
    reports a materialization of each of their pipelines. The cursor lists the store runs
    already reported. Ticks are ``minimum_interval_seconds`` apart (env
    ``N4A_PARTITIONS_INTERVAL``, default 60).
    """
    from .keys import DATASETS_PARTITIONS, PIPELINE_PARTITIONS
    from .partition_sync import plan_reconciliation

    interval = (minimum_interval_seconds if minimum_interval_seconds is not None
                else _env_int(PARTITIONS_INTERVAL_ENV, 60))

    @_quiet_sensor(name=name, minimum_interval_seconds=interval, default_status=default_status,
                   description="Deletes partitions whose pipelines are gone from the store; "
                               "registers and reports pipelines of runs made outside Dagster.")
    def _partitions_sensor(context: SensorEvaluationContext, n4a_store: N4AStoreResource,
                           n4a_sweep: N4ASweepResource):
        if not n4a_store.exists():
            return SkipReason(f"no workspace catalog at {n4a_store.display_uri()} yet")
        cursor = read_cursor(context)
        reported = set(cursor.get("reported_runs") or [])
        configured = configured_partitions(n4a_sweep)
        with n4a_store.open_store() as store:
            plan = plan_reconciliation(context.instance, store,
                                       configured[0] if configured else set(),
                                       configured[1] if configured else set(),
                                       reported, n4a_store.display_uri())
        if configured is None:
            plan.delete_pipelines, plan.delete_datasets = [], []
            plan.deferred = f"deletions skipped: sweep config {n4a_sweep.config!r} does not load"
        if plan.empty:
            return SkipReason(f"partitions match the store; {plan.summary()}")
        requests: list[Any] = []
        for partitions_def, add, delete in (
            (PIPELINE_PARTITIONS, plan.add_pipelines, plan.delete_pipelines),
            (DATASETS_PARTITIONS, plan.add_datasets, plan.delete_datasets),
        ):
            if add:
                requests.append(AddDynamicPartitionsRequest(partitions_def.name, add))
            if delete:
                requests.append(DeleteDynamicPartitionsRequest(partitions_def.name, delete))
        context.log.info(plan.summary())
        return SensorResult(
            dynamic_partitions_requests=requests, asset_events=plan.reports,
            cursor=json.dumps({"reported_runs": sorted(reported | set(plan.reported_runs)),
                               "summary": plan.summary()}))

    return _partitions_sensor
