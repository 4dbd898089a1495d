"""The sweep, step by step, shared by the sweep job's ops and the sweep assets.

Every function here works on an open store (the caller opens it for the step
and closes it after) and returns plain values plus the Dagster metadata that
describes them. Nothing here keeps state between steps: a step process can be
any process.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from dagster import DagsterInstance, MetadataValue

from n4a_store.errors import InvalidInputError

from .keys import (
    CHAIN,
    DATASETS_PARTITIONS,
    PIPELINE,
    PREDICTION_ARRAYS,
    SWEEP_RUN,
    META_CHAIN_ID,
    META_DATASET,
    META_KEPT_PREVIOUS,
    META_PIPELINE_ID,
    META_PREDICTION_IDS,
    META_RUN_ID,
    META_STATUS,
    META_WORKSPACE,
    PIPELINE_PARTITIONS,
    check_partition_name,
    spec_partition_key,
)
from .metadata import asset_link, display_board, frame_preview, score_metadata, table_metadata
from .values import PipelineOutcome

if TYPE_CHECKING:
    from n4a_store import WorkspaceStore
    from n4a_store.sweep import PipelineSpec, SpectraDataset, SweepConfig

    from .resources import N4ASweepResource


@dataclass
class SweepPlan:
    """The sweep to run: its config, its expanded pipelines and its loaded datasets."""

    source: str
    cfg: SweepConfig
    specs: list[PipelineSpec]
    datasets: list[SpectraDataset]

    @property
    def n_partitions(self) -> int:
        """(dataset, pipeline) partitions, i.e. pipelines to train."""
        return len(self.specs) * len(self.datasets)

    def pipelines_frame(self) -> pl.DataFrame:
        """One row per expanded pipeline: partition key, name, steps, generator choices."""
        return pl.DataFrame({
            "key": [s.key for s in self.specs],
            "name": [s.name for s in self.specs],
            "preprocessings": [s.preprocessings for s in self.specs],
            "model_class": [s.model.class_path for s in self.specs],
            "choices": [json.dumps([c.get("value") for c in s.generator_choices], default=str)
                        for s in self.specs],
        }, schema={"key": pl.String, "name": pl.String, "preprocessings": pl.String,
                   "model_class": pl.String, "choices": pl.String})

    def partition_keys(self) -> list[str]:
        """The pipeline partition key of every (dataset, expanded pipeline) of the sweep."""
        return [spec_partition_key(ds.name, spec) for ds in self.datasets for spec in self.specs]

    def metadata(self) -> dict[str, Any]:
        """UI metadata of the plan: the config, counts and the pipelines table."""
        frame = self.pipelines_frame()
        return {
            "sweep_config": self.source,
            "sweep_name": self.cfg.name,
            "n_pipelines": len(self.specs),
            "n_datasets": len(self.datasets),
            "n_partitions": self.n_partitions,
            "cv_folds": self.cfg.cv.n_splits,
            "pipelines": frame_preview(frame, n=50),
            **table_metadata(frame),
        }


def plan_sweep(sweep: N4ASweepResource) -> SweepPlan:
    """Load, expand and check the configured sweep, loading its datasets.

    Raises:
        InvalidInputError: a dataset name Dagster cannot use as a partition key.
        SweepConfigError / DatasetError: from the sweep runner.
    """
    cfg = sweep.load()
    specs = sweep.specs()
    datasets = [sweep.dataset(name) for name in sweep.dataset_names()]
    for ds in datasets:
        check_partition_name("dataset", ds.name)
    return SweepPlan(source=sweep.config, cfg=cfg, specs=specs, datasets=datasets)


def register_partitions(instance: DagsterInstance, plan: SweepPlan) -> tuple[list[str], list[str]]:
    """Add the plan's datasets and (dataset, pipeline) partitions; return the new ones."""
    added: list[list[str]] = []
    for partitions_def, keys in (
        (DATASETS_PARTITIONS, [ds.name for ds in plan.datasets]),
        (PIPELINE_PARTITIONS, plan.partition_keys()),
    ):
        name = partitions_def.name
        assert name is not None
        known = set(instance.get_dynamic_partitions(name))
        new = [k for k in keys if k not in known]
        if new:
            instance.add_dynamic_partitions(name, new)
        added.append(new)
    return added[0], added[1]


def dataset_metadata(ds: SpectraDataset) -> dict[str, Any]:
    """UI metadata of one loaded dataset (hash, shapes, wavelength range, target summary)."""
    info = ds.metadata()
    meta: dict[str, Any] = {
        META_DATASET: ds.name,
        "dataset_hash": ds.dataset_hash,
        "source": str(info.get("source", "")),
        "task_type": ds.task_type,
        "n_samples": int(info["n_samples"]),
        "n_features": int(info["n_features"]),
        "n_test": int(info.get("n_test", 0)),
        "wavelength_range": MetadataValue.json(info.get("wavelength_range")),
        "dagster/row_count": int(info["n_samples"]),
    }
    if ds.task_type == "regression":
        y = ds.y.astype(float)
        meta["target_mean"] = float(y.mean())
        meta["target_min"], meta["target_max"] = float(y.min()), float(y.max())
    elif ds.classes is not None:
        meta["classes"] = MetadataValue.json([str(c) for c in ds.classes])
    return meta


def class_labels(ds: SpectraDataset) -> list[str] | None:
    """Class names of a classification dataset, in label-code order (None for regression)."""
    return None if ds.classes is None else [str(c) for c in ds.classes]


def begin_store_run(store: WorkspaceStore, plan: SweepPlan, run_name: str,
                    dagster_run_id: str, job_name: str | None = None) -> str:
    """Open the store run of a sweep, recording the Dagster run that drives it."""
    metadata = {"dagster_run_id": dagster_run_id, "orchestrator": "dagster",
                "sweep_config": plan.source}
    if job_name:
        metadata["dagster_job"] = job_name
    return store.begin_run(run_name, plan.cfg.to_dict(), [ds.metadata() for ds in plan.datasets],
                           metadata=metadata)


def run_metadata(store: WorkspaceStore, run_id: str) -> dict[str, Any]:
    """UI metadata of a store run: ids, status, datasets and the Dagster run it records."""
    record = store.get_run(run_id)
    if record is None:
        raise InvalidInputError(f"run {run_id!r} does not exist in {store.workspace_path}")
    meta: dict[str, Any] = {
        META_RUN_ID: run_id,
        META_WORKSPACE: str(store.workspace_path),
        "run_name": record["name"],
        "status": record["status"],
        "datasets": MetadataValue.json(record.get("dataset_names") or []),
    }
    dagster_run_id = (record.get("metadata") or {}).get("dagster_run_id")
    if dagster_run_id:
        meta["dagster_run_id"] = MetadataValue.dagster_run(dagster_run_id)
    return meta


def _pipeline_key_of(expanded_config: Any) -> str | None:
    if isinstance(expanded_config, str):
        try:
            expanded_config = json.loads(expanded_config)
        except json.JSONDecodeError:
            return None
    return expanded_config.get("key") if isinstance(expanded_config, dict) else None


def partition_pipeline_ids(store: WorkspaceStore, run_id: str, dataset_name: str,
                           pipeline_key: str) -> list[str]:
    """Ids of the pipelines of ``run_id`` already written for one (dataset, pipeline) partition."""
    frame = store.list_pipelines(run_id=run_id, dataset_name=dataset_name)
    return [row["pipeline_id"] for row in frame.iter_rows(named=True)
            if _pipeline_key_of(row["expanded_config"]) == pipeline_key]


def run_partition(store: WorkspaceStore, run_id: str, cfg: SweepConfig, spec: PipelineSpec,
                  ds: SpectraDataset) -> PipelineOutcome:
    """Train one expanded pipeline on one dataset under ``run_id``, replacing earlier attempts.

    The run keeps one pipeline per partition:

    * the new attempt completed: the pipelines this partition wrote before in the same run (an
      earlier materialization or a retried step) are deleted, only now that the new one is
      recorded;
    * the new attempt failed and the partition has an earlier completed pipeline: that one
      stays (the outcome names it as ``kept_previous_pipeline_id``, with the new attempt's
      status and error) and the failed attempt is deleted;
    * the new attempt failed and nothing earlier completed: the failed attempt replaces the
      earlier failed ones.

    When the run was already completed (its leaderboard was materialized), its stored summary
    is recomputed so it never names a replaced pipeline.
    """
    from n4a_store.sweep import run_pipeline

    earlier = partition_pipeline_ids(store, run_id, ds.name, spec.key)
    result = run_pipeline(store, run_id, spec, ds, cfg)
    kept = None
    if result.status != "completed" and earlier:
        kept = _latest_completed(store, earlier)
    attempt_id = str(result.pipeline_id) if result.pipeline_id else None
    survivor = kept or attempt_id or ""
    replaced = [pid for pid in earlier if pid != survivor]
    for pipeline_id in [*replaced, *([attempt_id] if kept and attempt_id else [])]:
        store.delete_pipeline(pipeline_id)
    prediction_ids: list[str] = []
    chain_id = result.chain_id
    if result.status == "completed" and result.pipeline_id:
        prediction_ids = store.query_predictions(
            pipeline_id=result.pipeline_id)["prediction_id"].to_list()
    elif kept:
        chains = store.get_chains_for_pipeline(kept)
        chain_id = chains["chain_id"][0] if chains.height else None
    refresh_run_summary(store, run_id)
    return PipelineOutcome(
        run_id=run_id, dataset_name=ds.name, pipeline_key=spec.key, pipeline_name=spec.name,
        partition_key=spec_partition_key(ds.name, spec),
        pipeline_id=survivor, status=result.status, chain_id=chain_id,
        prediction_ids=prediction_ids, best_val=result.best_val, best_test=result.best_test,
        metric=result.metric, duration_ms=result.duration_ms, error=result.error,
        replaced_pipeline_ids=replaced, kept_previous_pipeline_id=kept,
        failed_attempt_pipeline_id=attempt_id if kept else None,
    )


def _latest_completed(store: WorkspaceStore, pipeline_ids: list[str]) -> str | None:
    """The last (creation order) of ``pipeline_ids`` whose pipeline completed, if any."""
    completed = [pid for pid in pipeline_ids
                 if (store.get_pipeline(pid) or {}).get("status") == "completed"]
    return completed[-1] if completed else None


def refresh_run_summary(store: WorkspaceStore, run_id: str) -> bool:
    """Recompute the stored summary of a run that is already completed; False if it is not.

    A partition re-materialized after the leaderboard closed the run changes its pipelines;
    this keeps ``get_run(run_id)["summary"]`` (counts, best pipeline per dataset) in step. The
    run's original ``duration_s`` is kept.
    """
    from n4a_store.sweep.runner import sweep_summary_dict

    record = store.get_run(run_id)
    if record is None or record.get("status") != "completed":
        return False
    previous = record.get("summary") or {}
    duration_s = float(previous.get("duration_s") or 0.0)
    store.complete_run(run_id, sweep_summary_dict(store_results(store, run_id), duration_s))
    return True


def failure_message(outcome: PipelineOutcome, pipeline_name: str) -> str:
    """The warning logged for a failed attempt, saying which earlier pipeline it kept."""
    message = f"pipeline {pipeline_name} failed on {outcome.dataset_name}: {outcome.error}"
    if outcome.kept_previous_pipeline_id:
        message += (f"; the partition keeps its earlier completed pipeline "
                    f"{outcome.kept_previous_pipeline_id}")
    return message


def pipeline_metadata(outcome: PipelineOutcome, workspace: str, store: WorkspaceStore | None = None,
                      spec: PipelineSpec | None = None,
                      labels: list[str] | None = None, *, plots: bool = True) -> dict[str, Any]:
    """UI metadata of a pipeline partition: store ids, status, scores.

    With ``spec``: its preprocessing string, expanded step parameters and generator choices.
    With ``store`` (and a completed pipeline): predicted-vs-true and residual plots, or a
    confusion matrix for classification (``labels``: the class names).
    """
    meta: dict[str, Any] = {
        META_RUN_ID: outcome.run_id,
        "sweep_run_asset": asset_link(SWEEP_RUN.path),
        META_PIPELINE_ID: outcome.pipeline_id,
        META_DATASET: outcome.dataset_name,
        META_STATUS: outcome.status,
        META_WORKSPACE: str(workspace),
        "pipeline_name": outcome.pipeline_name,
        "pipeline_key": outcome.pipeline_key,
        "metric": outcome.metric or "",
        "duration_ms": int(outcome.duration_ms or 0),
        "n_predictions": len(outcome.prediction_ids),
        **score_metadata("best_val", outcome.best_val),
        **score_metadata("best_test", outcome.best_test),
    }
    if outcome.metric:
        meta["score"] = score_text(outcome.metric, outcome.best_val, outcome.best_test)
    if outcome.partition_key:  # the ids below are held by these assets' partition
        for name, key in (("chain", CHAIN), ("prediction_arrays", PREDICTION_ARRAYS)):
            if outcome.status == "completed" or name == "chain" and outcome.chain_id:
                meta[f"{name}_asset"] = asset_link(key.path, outcome.partition_key)
    if spec is not None:
        meta["preprocessing"] = spec.preprocessings or "(none)"
        meta["model"] = spec.model.class_path
        meta["parameters"] = MetadataValue.json(
            {f"{i}:{step.class_path.rsplit('.', 1)[-1]}": step.params
             for i, step in enumerate(spec.steps)})
        if spec.generator_choices:
            meta["swept_choices"] = MetadataValue.json(
                {str(c.get("path")): c.get("value") for c in spec.generator_choices})
    if plots and store is not None and outcome.status == "completed" and outcome.pipeline_id:
        from .plots import pipeline_plots

        meta.update(pipeline_plots(store, outcome.pipeline_id,
                                   f"{outcome.pipeline_name} on {outcome.dataset_name}", labels))
    if outcome.chain_id:
        meta[META_CHAIN_ID] = outcome.chain_id
    if outcome.error:
        meta["error"] = MetadataValue.text(outcome.error[:2000])
    if outcome.replaced_pipeline_ids:
        meta["replaced_pipeline_ids"] = MetadataValue.json(outcome.replaced_pipeline_ids)
    if outcome.kept_previous_pipeline_id:
        meta[META_KEPT_PREVIOUS] = outcome.kept_previous_pipeline_id
        meta["failed_attempt_pipeline_id"] = outcome.failed_attempt_pipeline_id or ""
    return meta


def _rounded(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def chain_metadata(store: WorkspaceStore, chain_id: str) -> dict[str, Any]:
    """UI metadata of a stored chain: ids, model, preprocessing, artifact paths and sizes."""
    from n4a_store.bundles.layout import chain_artifact_ids

    chain = store.get_chain(chain_id)
    if chain is None:
        raise InvalidInputError(f"chain {chain_id!r} does not exist in {store.workspace_path}")
    paths: dict[str, str] = {}
    total = 0
    for artifact_id in sorted(chain_artifact_ids(chain)):
        path = Path(store.get_artifact_path(artifact_id))
        paths[artifact_id[:12]] = str(path)
        total += path.stat().st_size if path.is_file() else 0
    return {
        META_CHAIN_ID: chain_id,
        META_PIPELINE_ID: chain["pipeline_id"],
        META_WORKSPACE: str(store.workspace_path),
        "model_class": chain["model_class"],
        "preprocessings": chain.get("preprocessings") or "",
        "fold_strategy": chain["fold_strategy"],
        "n_folds": len(chain.get("fold_artifacts") or {}),
        "n_artifacts": len(paths),
        "artifact_bytes": total,
        "artifact_paths": MetadataValue.json(paths),
    }


def predictions_frame(store: WorkspaceStore, prediction_ids: list[str],
                      pipeline_id: str | None = None) -> pl.DataFrame:
    """The prediction rows (scores, no arrays) of ``prediction_ids``, in store order."""
    columns = ["prediction_id", "fold_id", "partition", "val_score", "test_score", "train_score",
               "metric", "n_samples", "has_arrays"]
    if not prediction_ids:
        return pl.DataFrame(schema={c: pl.String for c in columns})
    if pipeline_id is not None:  # one query for the whole partition
        frame = store.query_predictions(pipeline_id=pipeline_id)
        return frame.filter(pl.col("prediction_id").is_in(prediction_ids)).select(columns)
    rows = [store.get_prediction(pid) for pid in prediction_ids]
    return pl.DataFrame([{c: r.get(c) for c in columns} for r in rows if r is not None])


def arrays_metadata(store: WorkspaceStore, outcome_run_id: str, dataset_name: str,
                    prediction_ids: list[str], pipeline_id: str | None = None) -> dict[str, Any]:
    """UI metadata of a partition's prediction arrays: ids, row counts, a table preview."""
    frame = predictions_frame(store, prediction_ids, pipeline_id)
    meta: dict[str, Any] = {
        META_RUN_ID: outcome_run_id,
        META_DATASET: dataset_name,
        META_PREDICTION_IDS: MetadataValue.json(prediction_ids),
        META_WORKSPACE: str(store.workspace_path),
        "arrays_dir": MetadataValue.path(str(store.workspace_path / "arrays")),
        "preview": frame_preview(frame, n=20),
        **table_metadata(frame, table_name=f"arrays/{dataset_name}"),
    }
    if pipeline_id:
        meta[META_PIPELINE_ID] = pipeline_id
    return meta


def store_results(store: WorkspaceStore, run_id: str) -> list[Any]:
    """Rebuild the runner's :class:`PipelineResult` of every pipeline of ``run_id`` from the store."""
    from n4a_store.sweep import PipelineResult

    results = []
    pipelines = store.list_pipelines(run_id=run_id)
    counts: dict[str, int] = {}
    chains: dict[str, str] = {}
    predictions = store.query_predictions(run_id=run_id)
    for pid in predictions["pipeline_id"].to_list():
        counts[pid] = counts.get(pid, 0) + 1
    for row in predictions.select("pipeline_id", "chain_id").unique().iter_rows(named=True):
        if row["chain_id"]:
            chains[row["pipeline_id"]] = row["chain_id"]
    for row in pipelines.iter_rows(named=True):
        config = row["expanded_config"]
        if isinstance(config, str):
            config = json.loads(config)
        config = config or {}
        steps = config.get("pipeline") or []
        pid = row["pipeline_id"]
        chain_id = chains.get(pid)
        if chain_id is None and row["status"] == "completed":
            frame = store.get_chains_for_pipeline(pid)
            chain_id = frame["chain_id"][0] if frame.height else None
        results.append(PipelineResult(
            pipeline_id=pid, chain_id=chain_id, status=row["status"], best_val=row["best_val"],
            best_test=row["best_test"], metric=row["metric"] or (config.get("metric") or ""),
            error=row["error"], duration_ms=int(row["duration_ms"] or 0),
            n_predictions=counts.get(pid, 0), name=row["name"], key=config.get("key", ""),
            dataset_name=row["dataset_name"],
            preprocessings=">".join(s["class"].rsplit(".", 1)[-1] for s in steps[:-1]),
            model_class=steps[-1]["class"] if steps else "",
        ))
    return results


def finish_run(store: WorkspaceStore, run_id: str) -> tuple[dict[str, Any], pl.DataFrame]:
    """Complete the store run with the runner's summary; return (summary, leaderboard)."""
    from n4a_store.sweep.runner import leaderboard, sweep_summary_dict

    record = store.get_run(run_id)
    if record is None:
        raise InvalidInputError(f"run {run_id!r} does not exist in {store.workspace_path}")
    results = store_results(store, run_id)
    created = record.get("created_at")
    duration_s = 0.0
    if isinstance(created, datetime):
        start = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
        duration_s = max(0.0, (datetime.now(timezone.utc) - start).total_seconds())
    summary = sweep_summary_dict(results, duration_s)
    store.complete_run(run_id, summary)
    return summary, leaderboard(results)


def leaderboard_metadata(run_id: str, summary: dict[str, Any], board: pl.DataFrame,
                         workspace: str, store: WorkspaceStore | None = None) -> dict[str, Any]:
    """UI metadata of the leaderboard: the best pipelines, counts and a ranked table; with
    ``store``, the cross-validated score against each swept parameter (an image per dataset).

    Rank 1 of each dataset is the best model in the sense of :mod:`n4a_store.ranking`.
    """
    meta: dict[str, Any] = {
        META_RUN_ID: run_id,
        META_WORKSPACE: str(workspace),
        "n_pipelines": summary["n_pipelines"],
        "n_completed": summary["n_completed"],
        "n_failed": summary["n_failed"],
        "n_predictions": summary.get("n_predictions", 0),
        **table_metadata(board),
    }
    partition_keys: dict[str, str] = {}
    if store is not None:
        from .partition_sync import row_partition_key
        from .plots import parameter_plot

        pipelines = store.list_pipelines(run_id=run_id)
        for row in pipelines.iter_rows(named=True):
            partition_keys[row["pipeline_id"]] = row_partition_key(row) or ""
        datasets = pipelines["dataset_name"].unique(maintain_order=True).to_list()
        for name in datasets:
            for key, value in parameter_plot(pipelines, name).items():
                meta[key if len(datasets) == 1 else f"{key}/{name}"] = value
    meta["leaderboard"] = frame_preview(display_board(board, partition_keys), n=25)
    best = board.filter(pl.col("rank") == 1)
    if best.height:
        top = best.row(0, named=True)
        meta.update({
            "best_pipeline": top["name"], "best_metric": top["metric"],
            "best_score": score_text(top["metric"], top["best_val"], top["best_test"]),
            META_PIPELINE_ID: top["pipeline_id"], META_CHAIN_ID: top["chain_id"] or "",
            **score_metadata("best_val", top["best_val"]),
            **score_metadata("best_test", top["best_test"]),
        })
        if partition_keys.get(top["pipeline_id"]):
            meta["best_pipeline_partition"] = asset_link(
                PIPELINE.path, partition_keys[top["pipeline_id"]])
    return meta


def score_text(metric: str | None, best_val: Any, best_test: Any) -> str:
    """``val rmse 1.2560, test 8.4540 (lower is better)``: rounded, with the direction."""
    from n4a_store.ranking import direction_label, round_score

    return (f"val {metric} {_rounded(round_score(best_val))}, test "
            f"{_rounded(round_score(best_test))} ({direction_label(metric or '')})")


def elapsed(started: float) -> float:
    """Seconds since ``started`` (a ``time.perf_counter`` value), rounded to ms."""
    return round(time.perf_counter() - started, 3)
