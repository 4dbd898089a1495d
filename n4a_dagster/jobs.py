"""Jobs: the sweep (steps of pipeline partitions, in parallel) and the maintenance jobs.

``n4a_sweep`` fans out with a dynamic output: ``plan_sweep_op`` registers the
partitions and begins the store run, each ``train_pipeline_op`` step trains and records
one or more (dataset, pipeline) partitions (``pipelines_per_step`` in the plan op's config;
automatic by default, see :func:`auto_pipelines_per_step`), and ``finish_sweep_op``
completes the run and publishes the leaderboard. Each train step logs the
materializations of the sweep assets (``n4a/pipeline``, ``n4a/chain``,
``n4a/prediction_arrays`` for its partition) and both asset checks of that
partition, so the asset graph shows the sweep job's results with their store ids.

The job's executor is chosen by run config (:mod:`n4a_dagster.executors`): Dagster's
multiprocess executor on one host (the default; ``N4A_MAX_CONCURRENT``, default 4, sets how
many steps run at once) or dagster-celery's across hosts. Every step opens the store for its
own duration and closes it; the store (file lock on DuckDB, transactions on PostgreSQL)
arbitrates between the steps. The training steps belong to the Dagster concurrency pool
``n4a_train`` (:data:`TRAIN_POOL`), which an instance can limit across all runs and hosts.
"""


import json
import os
import warnings
from dataclasses import asdict
from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetMaterialization,
    AssetObservation,
    Config,
    DynamicOut,
    DynamicOutput,
    HookContext,
    In,
    JobDefinition,
    OpExecutionContext,
    define_asset_job,
    failure_hook,
    job,
    op,
)

from pydantic import Field

from .checks import (
    partition_check_evaluations,
    report_outcome,
    verify_prediction_arrays,
    verify_run_artifacts,
)
from .keys import (
    CHAIN,
    DATASET,
    LEADERBOARD,
    MODEL_BUNDLE,
    PIPELINE,
    PREDICTION_ARRAYS,
    SWEEP_PLAN,
    SWEEP_RUN,
    mapping_key,
)
from .executors import celery_executor_config, n4a_executor
from .maintenance import compact_arrays_op, export_op, gc_artifacts_op, replay_op, verify_op
from .resources import N4AStoreResource, N4ASweepResource
from .sweep_steps import (
    arrays_metadata,
    class_labels,
    begin_store_run,
    chain_metadata,
    dataset_metadata,
    failure_message,
    finish_run,
    leaderboard_metadata,
    pipeline_metadata,
    plan_sweep,
    register_partitions,
    run_metadata,
    run_partition,
)

SWEEP_JOB = "n4a_sweep"
#: Dagster concurrency pool of the training steps (limit: ``dagster instance concurrency set``).
TRAIN_POOL = "n4a_train"
MAX_CONCURRENT_ENV = "N4A_MAX_CONCURRENT"
DEFAULT_MAX_CONCURRENT = 4
#: Imported once in the forkserver, so each step process starts warm.
PRELOAD_MODULES = ["n4a_dagster.definitions", "n4a_store.sweep.runner", "n4a_store.workspace",
                   "sklearn.cross_decomposition", "chemotools"]


def default_max_concurrent() -> int:
    """Concurrent sweep steps: env ``N4A_MAX_CONCURRENT``, else 4."""
    raw = os.environ.get(MAX_CONCURRENT_ENV)
    if not raw:
        return DEFAULT_MAX_CONCURRENT
    value = int(raw)
    if value < 1:
        raise ValueError(f"{MAX_CONCURRENT_ENV} must be >= 1, got {raw!r}")
    return value


def multiprocess_run_config(max_concurrent: int, forkserver: bool = True,
                            pipelines_per_step: int | None = None) -> dict[str, Any]:
    """Run config of the sweep job on one host: ``max_concurrent`` parallel steps
    (forkserver-started, with the heavy modules preloaded, unless ``forkserver`` is False),
    optionally ``pipelines_per_step`` partitions per step."""
    config: dict[str, Any] = {"max_concurrent": max_concurrent}
    if forkserver:
        config["start_method"] = {"forkserver": {"preload_modules": PRELOAD_MODULES}}
    return _with_plan({"execution": {"config": {"multiprocess": config}}}, pipelines_per_step)


def celery_run_config(pipelines_per_step: int | None = None,
                      celery: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run config of the sweep job across hosts: every step a task for the celery workers.

    ``celery`` overrides fields of dagster-celery's executor config; by default the broker and
    backend are named by env (``N4A_CELERY_BROKER``, ``N4A_CELERY_BACKEND``).
    """
    config = {**celery_executor_config(), **(celery or {})}
    return _with_plan({"execution": {"config": {"celery": config}}}, pipelines_per_step)


def run_config_for(executor: str, max_concurrent: int,
                   pipelines_per_step: int | None = None) -> dict[str, Any]:
    """Run config of the sweep job for an executor kind (``multiprocess``, ``in_process``,
    ``celery``)."""
    if executor == "celery":
        return celery_run_config(pipelines_per_step)
    if executor == "in_process":
        return _with_plan({"execution": {"config": {"in_process": {}}}}, pipelines_per_step)
    if executor == "multiprocess":
        return multiprocess_run_config(max_concurrent, pipelines_per_step=pipelines_per_step)
    raise ValueError(f"unknown executor {executor!r}; one of multiprocess, in_process, celery")


def _with_plan(run_config: dict[str, Any], pipelines_per_step: int | None) -> dict[str, Any]:
    if pipelines_per_step is not None:
        run_config["ops"] = {"plan_sweep_op": {"config": {"pipelines_per_step": pipelines_per_step}}}
    return run_config


#: Automatic batching aims at this many steps per parallel slot (enough to balance the load)...
AUTO_STEPS_PER_SLOT = 3
#: ... and never puts more pipelines than this in one step (a killed step loses no more).
AUTO_MAX_PIPELINES_PER_STEP = 10


def step_slots(run_config: Mapping[str, Any] | None) -> int:
    """How many steps of a run execute at once: the multiprocess executor's ``max_concurrent``,
    1 in process, else (celery, or no executor config) ``N4A_MAX_CONCURRENT`` / 4."""
    execution = ((run_config or {}).get("execution") or {}).get("config") or {}
    if "in_process" in execution:
        return 1
    multiprocess = execution.get("multiprocess")
    if isinstance(multiprocess, dict) and multiprocess.get("max_concurrent"):
        return max(1, int(multiprocess["max_concurrent"]))
    return default_max_concurrent()


def auto_pipelines_per_step(n_partitions: int, slots: int) -> int:
    """Pipelines per step when the config leaves it unset: the fewest steps that still give
    each parallel slot :data:`AUTO_STEPS_PER_SLOT` of them, at most
    :data:`AUTO_MAX_PIPELINES_PER_STEP` pipelines each (1 for a sweep of up to
    ``3 x slots`` pipelines)."""
    if n_partitions < 1:
        return 1
    per_step = -(-n_partitions // (max(1, slots) * AUTO_STEPS_PER_SLOT))
    return max(1, min(AUTO_MAX_PIPELINES_PER_STEP, per_step))


class SweepPlanConfig(Config):
    """How the sweep fans out: ``pipelines_per_step`` (dataset, pipeline) partitions per step.

    Unset (the default), it is chosen from the sweep's size and the executor's parallel
    slots (:func:`auto_pipelines_per_step`): one pipeline per step for small sweeps, up to 10
    for large ones, so Dagster's per-step cost (a process start and its events, 0.5-1 s) is
    amortised while every slot still gets several steps. 1 gives each pipeline its own step
    (own logs, own retry). Every pipeline is always its own partition materialization.
    """

    pipelines_per_step: int | None = Field(default=None, ge=1)


@op(out=DynamicOut(dict), description="Expand the sweep, register partitions, begin the store run.")
def plan_sweep_op(context: OpExecutionContext, config: SweepPlanConfig,
                  n4a_store: N4AStoreResource, n4a_sweep: N4ASweepResource):
    """Materialize sweep_plan, dataset partitions and sweep_run; fan out the partitions."""
    plan = plan_sweep(n4a_sweep)
    register_partitions(context.instance, plan)
    context.log_event(AssetMaterialization(asset_key=SWEEP_PLAN, metadata=plan.metadata()))
    for ds in plan.datasets:
        context.log_event(AssetMaterialization(asset_key=DATASET, partition=ds.name,
                                               metadata=dataset_metadata(ds)))
    with n4a_store.open_store() as store:
        run_id = begin_store_run(store, plan, n4a_sweep.name(), context.run.run_id, context.job_name)
        meta = run_metadata(store, run_id)
    context.log_event(AssetMaterialization(asset_key=SWEEP_RUN, metadata=meta))
    items = [(index, ds.name, spec.key) for index, ds in enumerate(plan.datasets)
             for spec in plan.specs]
    size = config.pipelines_per_step or auto_pipelines_per_step(
        len(items), step_slots(context.run_config))
    how = "" if config.pipelines_per_step else " (automatic; set pipelines_per_step to choose)"
    context.log.info(f"store run {run_id}: {plan.n_partitions} pipeline(s) to train, "
                     f"{size} per step{how}")
    for start in range(0, len(items), size):
        batch = items[start:start + size]
        key = mapping_key(*batch[0]) + (f"_x{len(batch)}" if len(batch) > 1 else "")
        yield DynamicOutput(
            {"run_id": run_id,
             "partitions": [{"dataset": name, "pipeline_key": pkey} for _, name, pkey in batch]},
            mapping_key=key,
        )


@op(ins={"task": In(dict)}, pool=TRAIN_POOL,
    description="Train pipelines (one by default) into the store.")
def train_pipeline_op(context: OpExecutionContext, task: dict, n4a_store: N4AStoreResource,
                      n4a_sweep: N4ASweepResource) -> dict:
    """Run the task's partitions; materialize each one's pipeline, chain and prediction arrays."""
    cfg = n4a_sweep.load()
    outcomes = []
    with n4a_store.open_store() as store:
        for item in task["partitions"]:
            spec = n4a_sweep.spec(item["pipeline_key"])
            ds = n4a_sweep.dataset(item["dataset"])
            outcome = run_partition(store, task["run_id"], cfg, spec, ds)
            for event in partition_events(store, outcome, spec, class_labels(ds),
                                          plots=n4a_sweep.plots):
                context.log_event(event)
            for evaluation in partition_check_evaluations(store, outcome):
                context.log_event(evaluation)
            if outcome.status != "completed":
                context.log.warning(failure_message(outcome, spec.name))
            outcomes.append(asdict(outcome))
    return {"run_id": task["run_id"], "outcomes": outcomes}


def partition_events(store: Any, outcome: Any, spec: Any = None,
                     labels: list[str] | None = None, *,
                     plots: bool = True) -> list[AssetMaterialization]:
    """Materializations of one partition: its pipeline, and its chain and arrays if it completed.

    A failed attempt that kept an earlier completed pipeline materializes the pipeline only (naming
    the kept one); the chain and arrays keep their latest materializations, which name it too.
    """
    partition = outcome.partition_key
    events = [AssetMaterialization(asset_key=PIPELINE, partition=partition,
                                   metadata=pipeline_metadata(outcome, store.uri, store,
                                                              spec, labels, plots=plots))]
    if outcome.status == "completed" and outcome.chain_id:
        events.append(AssetMaterialization(asset_key=CHAIN, partition=partition,
                                           metadata=chain_metadata(store, outcome.chain_id)))
        events.append(AssetMaterialization(
            asset_key=PREDICTION_ARRAYS, partition=partition,
            metadata=arrays_metadata(store, outcome.run_id, outcome.dataset_name,
                                     outcome.prediction_ids, outcome.pipeline_id)))
    return events


@op(ins={"outcomes": In(list)},
    description="Complete the store run and publish the leaderboard.")
def finish_sweep_op(context: OpExecutionContext, outcomes: list,
                    n4a_store: N4AStoreResource) -> dict:
    """Close the run with its summary; materialize the leaderboard; log the run-wide checks
    (the asset checks themselves are recorded per partition by the train steps)."""
    run_ids = {o["run_id"] for o in outcomes}  # one entry per step
    if len(run_ids) != 1:
        raise RuntimeError(f"sweep steps reported {len(run_ids)} store runs, expected one")
    run_id = run_ids.pop()
    with n4a_store.open_store() as store:
        summary, board = finish_run(store, run_id)
        board_meta = leaderboard_metadata(run_id, summary, board, n4a_store.display_uri(), store)
        arrays_check = verify_prediction_arrays(store, run_id)
        artifacts_check = verify_run_artifacts(store, run_id)
        workspace_check = report_outcome(store.verify())
        run_meta = run_metadata(store, run_id)
    context.log_event(AssetObservation(asset_key=SWEEP_RUN, metadata=run_meta))
    context.log_event(AssetMaterialization(asset_key=LEADERBOARD, metadata=board_meta))
    context.log.info(f"run {run_id}: {summary['n_completed']} completed, {summary['n_failed']} "
                     f"failed; checks: arrays {arrays_check.passed}, artifacts "
                     f"{artifacts_check.passed}, workspace {workspace_check.passed}")
    return {"run_id": run_id, **summary}


def fail_store_runs_of(store: Any, dagster_run_ids: set[str], error: str) -> list[str]:
    """Mark failed every running store run recorded as driven by one of ``dagster_run_ids``."""
    failed = []
    for row in store.list_runs(status="running", limit=None).iter_rows(named=True):
        meta = row.get("metadata")
        if isinstance(meta, str):
            meta = json.loads(meta or "{}")
        if (meta or {}).get("dagster_run_id") in dagster_run_ids:
            store.fail_run(row["run_id"], error)
            failed.append(row["run_id"])
    return failed


@failure_hook(required_resource_keys={"n4a_store"})
def fail_store_run_hook(context: HookContext) -> None:
    """When a sweep step fails outright, mark the store run this Dagster run drives as failed.

    Pipeline failures never get here (the runner records them and the step succeeds); this
    covers the step itself breaking, e.g. the workspace lock timing out.
    """
    store_resource: N4AStoreResource = context.resources.n4a_store
    dagster_ids = {context.run_id}
    dagster_run = context.instance.get_run_by_id(context.run_id)
    if dagster_run is not None:  # a re-execution drives the store run of its parent
        dagster_ids |= {i for i in (dagster_run.parent_run_id, dagster_run.root_run_id) if i}
    error = f"a Dagster step of run {context.run_id} failed: {context.op_exception!r}"[:2000]
    with store_resource.open_store() as store:
        fail_store_runs_of(store, dagster_ids, error)


def build_sweep_job(max_concurrent: int | None = None) -> JobDefinition:
    """The ``n4a_sweep`` job; by default on the multiprocess executor (``max_concurrent``
    parallel steps), any executor of :func:`~n4a_dagster.executors.n4a_executor` by run config."""
    concurrent = max_concurrent or default_max_concurrent()

    @job(name=SWEEP_JOB, executor_def=n4a_executor,
         config=multiprocess_run_config(concurrent), hooks={fail_store_run_hook},
         tags={"n4a/kind": "sweep"},
         description="Run the configured sweep: steps of (dataset, pipeline) partitions, "
                     f"{concurrent} at a time on one host by default (or on celery workers: "
                     "execution.config.celery), recorded in the n4a store.")
    def n4a_sweep():
        tasks = plan_sweep_op()
        finish_sweep_op(tasks.map(train_pipeline_op).collect())

    return n4a_sweep


@job(name="n4a_compact", description="Compact prediction-array Parquet files (drop tombstones).",
     tags={"n4a/kind": "maintenance"})
def compact_job():
    compact_arrays_op()


@job(name="n4a_gc", description="Delete unreferenced artifacts.", tags={"n4a/kind": "maintenance"})
def gc_job():
    gc_artifacts_op()


@job(name="n4a_verify", description="Verify the workspace (artifacts, claims, arrays, strays); "
                                    "config repair=true fixes what can be fixed.",
     tags={"n4a/kind": "maintenance"})
def verify_job():
    verify_op()


@job(name="n4a_export",
     description="Export a chain, run, pipeline config or predictions. Config (required): "
                 "ops: {export_op: {config: {subject: <chain|run|pipeline id, latest or "
                 "predictions>, format: ''}}}",
     tags={"n4a/kind": "export"})
def export_job():
    export_op()


@job(name="n4a_replay",
     description="Replay a stored chain on a CSV/Parquet file of spectra. Config (required): "
                 "ops: {replay_op: {config: {chain_id: <id>, input_path: new.csv}}}",
     tags={"n4a/kind": "replay"})
def replay_job():
    replay_op()


model_bundle_job = define_asset_job(
    "n4a_model_bundle", selection=[MODEL_BUNDLE],
    description="Export the best chain of the latest run as a .n4a bundle (on demand).")

def _partition_checks_job() -> Any:
    from dagster import AssetSelection

    from .checks import ASSET_CHECKS

    return define_asset_job(
        "n4a_partition_checks", selection=AssetSelection.checks(*ASSET_CHECKS),
        description="Run both asset checks (arrays present, artifacts intact) on pipeline "
                    "partitions, without re-training them.")


partition_checks_job = _partition_checks_job()

pipeline_partition_job = define_asset_job(
    "n4a_pipeline_partition", selection=[PIPELINE, CHAIN, PREDICTION_ARRAYS],
    description="(Re)materialize pipeline partitions (dataset|pipeline key) one run each.")


def sweep_job_for(workspace: str, sweep_config: str, max_concurrent: int | None = None) -> JobDefinition:
    """The resolved sweep job bound to a workspace and sweep config (for ``build_reconstructable_job``)."""
    from dagster._utils.warnings import BetaWarning

    from .definitions import build_definitions

    defs = build_definitions(workspace=workspace, sweep_config=sweep_config,
                             max_concurrent=max_concurrent)
    with warnings.catch_warnings():  # Dagster re-creates the sensors with a beta argument
        warnings.simplefilter("ignore", category=BetaWarning)
        return defs.resolve_job_def(SWEEP_JOB)
