"""The sweep as assets, for the asset graph, lineage and per-partition materialization.

Asset graph (group ``n4a``)::

    sweep_plan ─> dataset[ds] ─> sweep_run ─> pipeline[p] ─> chain[p] ─> prediction_arrays[p]
                                               └──> leaderboard ─> model_bundle (on demand)

* ``sweep_plan`` expands the configured sweep and registers the dynamic partitions:
  one ``dataset`` partition per dataset, one pipeline partition ``p`` per (dataset, expanded
  pipeline) the sweep defines, keyed ``<dataset>/<label>/<PipelineSpec.key>``.
* ``pipeline``/``chain``/``prediction_arrays`` are one multi-asset on those partitions: each
  partition trains one pipeline on one dataset. Materializing a
  partition again replaces what it wrote before in the same run once the new pipeline has
  completed; a failed attempt keeps the earlier completed pipeline.
* ``leaderboard`` completes the store run and ranks its pipelines; ``model_bundle`` exports
  the best chain (or a configured one) as a ``.n4a`` bundle, only when asked.

The sweep job (``n4a_sweep``, see :mod:`n4a_dagster.jobs`) materializes the same assets
with steps of one or more partitions running in parallel.
"""


from pathlib import Path
from typing import Any

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)
from pydantic import Field

from n4a_store.errors import InvalidInputError

from .keys import (
    CHAIN,
    DATASET,
    DATASETS_PARTITIONS,
    EXPORTS,
    GROUP,
    LEADERBOARD,
    META_CHAIN_ID,
    META_PIPELINE_ID,
    META_RUN_ID,
    META_WORKSPACE,
    MODEL_BUNDLE,
    PIPELINE,
    PIPELINE_PARTITIONS,
    PREDICTION_ARRAYS,
    REPLAY_PREDICTIONS,
    SWEEP_PLAN,
    SWEEP_RUN,
    parse_pipeline_partition,
)
from .maintenance import file_sha256
from .metadata import score_metadata
from .resources import N4AStoreResource, N4ASweepResource
from .sweep_steps import (
    begin_store_run,
    class_labels,
    dataset_metadata,
    failure_message,
    finish_run,
    leaderboard_metadata,
    pipeline_metadata,
    plan_sweep,
    register_partitions,
    run_partition,
    store_results,
)
from .values import PredictionArraysRef, StoredChain

RECORD_IO = "n4a_record_io_manager"


CHAIN_IO = "n4a_chain_io_manager"
ARRAYS_IO = "n4a_arrays_io_manager"


@asset(key=SWEEP_PLAN, group_name=GROUP, kinds={"python"},
       description="The configured sweep, expanded: registers one dataset partition per dataset "
                   "and one pipeline partition per expanded pipeline.")
def sweep_plan(context: AssetExecutionContext, n4a_sweep: N4ASweepResource) -> MaterializeResult:
    """Expand the sweep config and register the dynamic partitions."""
    plan = plan_sweep(n4a_sweep)
    new_datasets, new_pipelines = register_partitions(context.instance, plan)
    context.log.info(f"sweep {plan.cfg.name}: {len(plan.specs)} pipelines x {len(plan.datasets)} "
                     f"dataset(s); {len(new_pipelines)} new pipeline partition(s)")
    return MaterializeResult(metadata={
        **plan.metadata(),
        "new_dataset_partitions": MetadataValue.json(new_datasets),
        "new_pipeline_partitions": len(new_pipelines),
    })


@asset(key=DATASET, deps=[SWEEP_PLAN], partitions_def=DATASETS_PARTITIONS, group_name=GROUP,
       kinds={"polars"},
       description="One sweep dataset (spectra, target, wavelengths): content hash and shape.")
def dataset(context: AssetExecutionContext, n4a_sweep: N4ASweepResource) -> MaterializeResult:
    """Load one dataset of the sweep and describe it."""
    ds = n4a_sweep.dataset(context.partition_key)
    return MaterializeResult(metadata=dataset_metadata(ds))


@asset(key=SWEEP_RUN, deps=[SWEEP_PLAN, DATASET], group_name=GROUP, io_manager_key=RECORD_IO,
       kinds={"duckdb"},
       description="A store run for the sweep; its record holds the Dagster run id.")
def sweep_run(context: AssetExecutionContext, n4a_store: N4AStoreResource,
              n4a_sweep: N4ASweepResource) -> dict[str, Any]:
    """Begin a store run (``begin_run`` with ``metadata={"dagster_run_id": ...}``)."""
    plan = plan_sweep(n4a_sweep)
    register_partitions(context.instance, plan)
    with n4a_store.open_store() as store:
        run_id = begin_store_run(store, plan, n4a_sweep.name(), context.run.run_id, context.job_name)
        record = store.get_run(run_id)
    assert record is not None
    return record


@multi_asset(
    outs={
        "pipeline": AssetOut(key=PIPELINE, io_manager_key=RECORD_IO, kinds={"duckdb"},
                             description="A pipeline record: status, scores, expanded config."),
        "chain": AssetOut(key=CHAIN, io_manager_key=CHAIN_IO, is_required=False,
                          kinds={"sklearn"},
                          description="The fitted preprocessing-to-model chain (artifacts + row)."),
        "prediction_arrays": AssetOut(key=PREDICTION_ARRAYS, io_manager_key=ARRAYS_IO,
                                      is_required=False, kinds={"parquet"},
                                      description="y_true/y_pred arrays of every fold and "
                                                  "partition, in the ArrayStore."),
    },
    ins={"sweep_run": AssetIn(key=SWEEP_RUN)},
    internal_asset_deps={
        "pipeline": {SWEEP_RUN},
        "chain": {PIPELINE},
        "prediction_arrays": {CHAIN},
    },
    partitions_def=PIPELINE_PARTITIONS,
    group_name=GROUP,
    name="pipeline_partition",
    description="Train one expanded pipeline on one dataset (cross-validation, chain, "
                "predictions with arrays) under the current sweep run.",
)
def pipeline_partition(context: AssetExecutionContext, sweep_run: dict[str, Any],
                       n4a_store: N4AStoreResource, n4a_sweep: N4ASweepResource):
    """Run the partition's pipeline through the sweep runner, replacing its earlier records.

    A failed attempt keeps the partition's earlier completed pipeline (if any): only the
    ``pipeline`` output is materialized, with ``n4a/status=failed`` and
    ``n4a/kept_previous_pipeline_id``.
    """
    dataset_name, pipeline_key = parse_pipeline_partition(context.partition_key)
    cfg = n4a_sweep.load()
    spec = n4a_sweep.spec(pipeline_key)
    ds = n4a_sweep.dataset(dataset_name)
    workspace = n4a_store.display_uri()
    with n4a_store.open_store() as store:
        outcome = run_partition(store, sweep_run["run_id"], cfg, spec, ds)
        meta = pipeline_metadata(outcome, workspace, store, spec, class_labels(ds),
                                 plots=n4a_sweep.plots)
    yield Output({"pipeline_id": outcome.pipeline_id, "run_id": outcome.run_id},
                 output_name="pipeline", metadata=meta)
    if outcome.status != "completed" or not outcome.chain_id:
        # chain and prediction_arrays are not re-materialized: their latest materializations
        # still name the kept earlier pipeline's chain and arrays (or none), which exist.
        context.log.warning(failure_message(outcome, spec.name))
        return
    yield Output(StoredChain(outcome.chain_id, n4a_store.workspace), output_name="chain")
    yield Output(PredictionArraysRef(dataset_name=ds.name, prediction_ids=outcome.prediction_ids,
                                     pipeline_id=outcome.pipeline_id, run_id=outcome.run_id),
                 output_name="prediction_arrays")


@asset(key=LEADERBOARD, ins={"sweep_run": AssetIn(key=SWEEP_RUN)}, deps=[PIPELINE],
       group_name=GROUP, kinds={"polars"},
       description="Completes the store run and ranks its pipelines per dataset.")
def leaderboard(context: AssetExecutionContext, sweep_run: dict[str, Any],
                n4a_store: N4AStoreResource) -> MaterializeResult:
    """Close the run with the runner's summary and publish the ranked table."""
    with n4a_store.open_store() as store:
        summary, board = finish_run(store, sweep_run["run_id"])
        meta = leaderboard_metadata(sweep_run["run_id"], summary, board,
                                    n4a_store.display_uri(), store)
    context.log.info(f"run {sweep_run['run_id']}: {summary['n_completed']} completed, "
                     f"{summary['n_failed']} failed")
    return MaterializeResult(metadata=meta)


class ModelBundleConfig(Config):
    """Which chain to export: ``chain_id``, else the best pipeline of ``dataset`` (else of the
    first dataset) in the latest run. ``format``: ``n4a`` (bundle) or ``n4a.py`` (script).
    ``output_dir``: empty means ``<workspace>/exports``."""

    chain_id: str = ""
    dataset: str = ""
    format: str = "n4a"
    output_dir: str = Field(default="")


def best_chain(board: pl.DataFrame, dataset_name: str = "") -> dict[str, Any]:
    """The rank-1 leaderboard row of ``dataset_name`` (first dataset when empty).

    Raises:
        InvalidInputError: no completed pipeline (for that dataset).
    """
    ranked = board.filter(pl.col("rank") == 1)
    if dataset_name:
        ranked = ranked.filter(pl.col("dataset_name") == dataset_name)
    if ranked.height == 0 or not ranked["chain_id"][0]:
        where = f" on dataset {dataset_name!r}" if dataset_name else ""
        raise InvalidInputError(f"the run has no completed pipeline{where} to export")
    return ranked.row(0, named=True)


@asset(key=MODEL_BUNDLE, ins={"sweep_run": AssetIn(key=SWEEP_RUN)}, deps=[LEADERBOARD, CHAIN],
       group_name=GROUP, kinds={"file"},
       description="On demand: the best chain of the latest run (or a chosen chain) exported "
                   "as a self-contained .n4a bundle. Not part of the sweep job.")
def model_bundle(context: AssetExecutionContext, config: ModelBundleConfig,
                 sweep_run: dict[str, Any], n4a_store: N4AStoreResource) -> MaterializeResult:
    """Export a chain as a bundle and record its path and hash."""
    from n4a_store.sweep.runner import leaderboard as rank_results

    if config.format not in ("n4a", "n4a.py"):
        raise InvalidInputError(f"bundle format must be 'n4a' or 'n4a.py', got {config.format!r}")
    workspace = n4a_store.workspace_path()
    out_dir = Path(config.output_dir).expanduser().resolve() if config.output_dir else workspace / "exports"
    out_dir.mkdir(parents=True, exist_ok=True)
    with n4a_store.open_store() as store:
        if config.chain_id:
            chain = store.get_chain(config.chain_id)
            if chain is None:
                raise InvalidInputError(f"chain {config.chain_id!r} does not exist in {workspace}")
            row = {"chain_id": config.chain_id, "pipeline_id": chain["pipeline_id"],
                   "name": f"chain_{config.chain_id[:12]}", "best_val": None, "metric": None,
                   "model_class": chain["model_class"]}
        else:
            row = best_chain(rank_results(store_results(store, sweep_run["run_id"])), config.dataset)
        suffix = ".n4a" if config.format == "n4a" else ".n4a.py"
        path = Path(store.export_chain(row["chain_id"], out_dir / f"{row['name']}{suffix}",
                                       format=config.format))
    context.log.info(f"exported chain {row['chain_id']} to {path}")
    return MaterializeResult(metadata={
        "bundle_path": MetadataValue.path(str(path)),
        "format": config.format,
        "size_bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        META_CHAIN_ID: row["chain_id"],
        META_PIPELINE_ID: row["pipeline_id"],
        META_RUN_ID: sweep_run["run_id"],
        META_WORKSPACE: n4a_store.display_uri(),
        "pipeline_name": row["name"],
        "model_class": row.get("model_class") or "",
        **({"metric": row["metric"]} if row.get("metric") else {}),
        **score_metadata("best_val", row.get("best_val")),
    })


#: Files written by the export and replay jobs, recorded as materializations of these keys.
replay_predictions_spec = AssetSpec(
    key=REPLAY_PREDICTIONS, deps=[CHAIN], group_name=GROUP, kinds={"file"},
    description="Predictions files written by the n4a_replay job (chain replayed on new spectra).")
exports_spec = AssetSpec(
    key=EXPORTS, deps=[SWEEP_RUN, CHAIN], group_name=GROUP, kinds={"file"},
    description="Files written by the n4a_export job (bundles, run YAML, prediction Parquet).")

SWEEP_ASSETS = [sweep_plan, dataset, sweep_run, pipeline_partition, leaderboard]
ALL_ASSETS = [*SWEEP_ASSETS, model_bundle, replay_predictions_spec, exports_spec]
