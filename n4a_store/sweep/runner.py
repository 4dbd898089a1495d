"""Run expanded pipelines on datasets and write everything through a WorkspaceStore.

:func:`run_pipeline` trains one pipeline with cross-validation and records it:
``begin_pipeline``; per step a ``log_step`` with durations; the chain (fitted
objects per fold) through :class:`~n4a_store.chains.builder.ChainBuilder`;
one prediction (scores + arrays) per fold and partition plus the pooled
out-of-fold / fold-averaged records (``fold_id="avg"``); ``complete_pipeline``.
Any exception inside becomes ``fail_pipeline(error)`` and a failed
:class:`PipelineResult`; it never stops a sweep.

:func:`run_sweep` runs every pipeline of a config on every dataset, in this
process or in worker processes (``jobs > 1``), and closes the run with a summary.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from n4a_store.sweep.config import SweepConfig, import_class, load_sweep_config
from n4a_store.sweep.datasets import SpectraDataset, load_dataset
from n4a_store.sweep.errors import SweepConfigError
from n4a_store.sweep.expansion import PipelineSpec, expand_pipelines
from n4a_store import ranking
from n4a_store.sweep.scoring import METRICS, score_partition
from n4a_store.sweep.training import TrainingOutcome, fit_folds

if TYPE_CHECKING:
    from n4a_store.chains.trace import ExecutionTrace

AVG_FOLD = "avg"
MAX_ERROR_CHARS = 4000
MAX_LOGGED_WARNINGS = 20


@dataclass
class PipelineResult:
    """Outcome of one pipeline on one dataset.

    ``best_val`` is the ranking metric on the pooled out-of-fold validation predictions;
    ``best_test`` is the ranking metric of the fold-averaged model on the held-out test set
    (``None`` without a test set). Lower is better for rmse/mae, higher for the others.
    """

    pipeline_id: str | None
    chain_id: str | None
    status: str
    best_val: float | None
    best_test: float | None
    metric: str
    error: str | None
    duration_ms: int
    n_predictions: int
    name: str = ""
    key: str = ""
    dataset_name: str = ""
    preprocessings: str = ""
    model_class: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict form."""
        return dict(self.__dict__)


@dataclass
class SweepSummary:
    """Outcome of a sweep.

    Attributes:
        run_id: The store's run id.
        n_pipelines: Pipelines run (expanded pipelines x datasets).
        n_completed: Pipelines that completed.
        n_failed: Pipelines that failed (recorded with ``fail_pipeline``).
        duration_s: Wall time of the sweep.
        leaderboard: One row per pipeline, best first within each dataset (see :func:`leaderboard`).
        results: Every :class:`PipelineResult`.
        workspace_path: The workspace written to.
    """

    run_id: str
    n_pipelines: int
    n_completed: int
    n_failed: int
    duration_s: float
    leaderboard: pl.DataFrame
    results: list[PipelineResult] = field(default_factory=list)
    workspace_path: Path | None = None

    @property
    def failures(self) -> list[PipelineResult]:
        """The failed pipelines."""
        return [r for r in self.results if r.status == "failed"]


def run_pipeline(
    store: Any,
    run_id: str,
    spec: PipelineSpec,
    ds: SpectraDataset,
    cfg: SweepConfig,
    *,
    on_begin: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Train ``spec`` on ``ds`` with cross-validation and record everything under ``run_id``.

    ``on_begin(pipeline_id)`` is called right after the pipeline record is created.

    Never raises for a failure of the pipeline itself (bad params, a model that raises, a
    fitted object that cannot be saved): the pipeline is marked failed with the error and a
    failed :class:`PipelineResult` is returned. Errors of the store (e.g. the workspace lock
    timing out at ``begin_pipeline``) propagate.
    """
    metric = cfg.metric_for(ds.task_type)
    _check_metric(metric, ds)
    started = time.perf_counter()
    pipeline_id = store.begin_pipeline(
        run_id, spec.name, spec.expanded_config, spec.generator_choices, ds.name, ds.dataset_hash,
    )
    if on_begin is not None:
        on_begin(pipeline_id)
    base = {
        "pipeline_id": pipeline_id, "metric": metric, "name": spec.name, "key": spec.key,
        "dataset_name": ds.name, "preprocessings": spec.preprocessings,
        "model_class": spec.model.class_path,
    }
    try:
        chain_id, best_val, best_test, n_predictions = _train_and_record(
            store, pipeline_id, spec, ds, cfg, metric)
        duration_ms = _elapsed_ms(started)
        store.complete_pipeline(pipeline_id, _finite_or_nan(best_val), _finite_or_nan(best_test),
                                metric, duration_ms)
    except KeyboardInterrupt:
        _fail_quietly(store, pipeline_id, "interrupted")
        raise
    except Exception as exc:  # one pipeline failing must not stop the sweep
        error = _format_error(exc)
        store.fail_pipeline(pipeline_id, error)
        return PipelineResult(chain_id=None, status="failed", best_val=None, best_test=None,
                              error=error, duration_ms=_elapsed_ms(started), n_predictions=0, **base)
    return PipelineResult(chain_id=chain_id, status="completed", best_val=_none_if_nan(best_val),
                          best_test=_none_if_nan(best_test), error=None, duration_ms=duration_ms,
                          n_predictions=n_predictions, **base)


def run_sweep(
    cfg: SweepConfig | str | Path | dict[str, Any],
    workspace_path: str | Path,
    jobs: int = 1,
    progress: bool = False,
    run_name: str | None = None,
    metadata: dict[str, Any] | None = None,
    *,
    on_result: Callable[[PipelineResult], None] | None = None,
    mp_context: str = "spawn",
    commit_interval: float = 2.0,
) -> SweepSummary:
    """Run every expanded pipeline of ``cfg`` on every dataset into the workspace.

    Args:
        cfg: A :class:`SweepConfig`, a config file path, ``"builtin:<name>"`` or a config dict.
        workspace_path: Workspace directory (created if needed).
        jobs: Worker processes; ``1`` runs in this process. Each worker opens its own
            ``WorkspaceStore`` on the same workspace.
        progress: Draw a progress bar (rich, on stderr).
        run_name: Name of the run (default: the config's name).
        metadata: Stored with the run (e.g. ``{"dagster_run_id": ...}``).
        on_result: Called in this process with each :class:`PipelineResult` as it arrives.
        mp_context: Multiprocessing start method for workers (``"spawn"`` or ``"forkserver"``).
        commit_interval: Seconds during which consecutive pipelines of a process are committed
            together (``store.batch()``); other processes see a completed pipeline at most
            about this long after it finished. ``0`` commits every pipeline on its own. Each
            pipeline stays atomic either way.

    Returns:
        A :class:`SweepSummary`. The run is completed with a summary dict (counts, failures,
        best pipeline) even when pipelines failed; it is marked failed only when the sweep
        itself breaks (then the exception propagates).
    """
    from n4a_store import WorkspaceStore

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    started = time.perf_counter()
    cfg = load_sweep_config(cfg)
    specs = expand_pipelines(cfg)
    datasets = load_sweep_datasets(cfg, specs)
    tasks = [(spec, ds) for ds in datasets for spec in specs]
    if not isinstance(workspace_path, str) or "://" not in workspace_path:
        workspace_path = Path(workspace_path)  # a directory; URIs go to the store as they are
    results: list[PipelineResult] = []
    with WorkspaceStore(workspace_path) as store:
        run_id = store.begin_run(run_name or cfg.name, cfg.to_dict(),
                                 [ds.metadata() for ds in datasets], metadata=metadata)
        report = _reporter(progress, len(tasks), on_result)
        try:
            if jobs == 1 or len(tasks) <= 1:
                with CommitWindow(store, commit_interval) as window:
                    for spec, ds in tasks:
                        result = run_pipeline(store, run_id, spec, ds, cfg)
                        results.append(result)
                        report(result)
                        window.tick()
            else:
                from n4a_store.sweep.parallel import run_parallel

                for result in run_parallel(workspace_path, run_id, cfg, specs, datasets,
                                           jobs=jobs, mp_context=mp_context,
                                           commit_interval=commit_interval, store=store):
                    results.append(result)
                    report(result)
                _reconcile(store, run_id, results)
        except BaseException as exc:
            report.close()
            with contextlib.suppress(Exception):  # the original error matters more
                store.fail_run(run_id, _format_error(exc) if isinstance(exc, Exception)
                               else f"{type(exc).__name__}: sweep interrupted")
            raise
        report.close()
        duration_s = time.perf_counter() - started
        summary = sweep_summary_dict(results, duration_s)
        store.complete_run(run_id, summary)
    board = leaderboard(results)
    return SweepSummary(run_id=run_id, n_pipelines=len(results),
                        n_completed=summary["n_completed"], n_failed=summary["n_failed"],
                        duration_s=duration_s, leaderboard=board, results=results,
                        workspace_path=workspace_path)


def load_sweep_datasets(cfg: SweepConfig, specs: list[PipelineSpec]) -> list[SpectraDataset]:
    """Load every dataset of ``cfg`` (task type hinted by the models) and check the metric fits."""
    hint = model_task_hint(specs)
    datasets = [load_dataset(dc, task_type=cfg.task_type, model_task_hint=hint, seed=cfg.seed)
                for dc in cfg.datasets]
    for ds in datasets:
        _check_metric(cfg.metric_for(ds.task_type), ds)
    return datasets


def model_task_hint(specs: list[PipelineSpec]) -> str | None:
    """``"classification"``/``"regression"`` when every model of the sweep agrees, else None."""
    kinds = set()
    for path in {s.model.class_path for s in specs}:
        kind = getattr(import_class(path), "_estimator_type", None)
        if kind is None:
            try:
                kind = import_class(path)().__sklearn_tags__().estimator_type
            except Exception:
                kind = None
        kinds.add({"classifier": "classification", "regressor": "regression"}.get(kind))
    return kinds.pop() if len(kinds) == 1 else None


def leaderboard(results: Iterable[PipelineResult]) -> pl.DataFrame:
    """One row per pipeline: rank within its dataset (best first), scores, ids, status.

    Failed pipelines come last with null scores and null rank.
    """
    rows = [r.to_dict() for r in results]
    schema = {
        "rank": pl.Int64, "dataset_name": pl.String, "name": pl.String, "best_val": pl.Float64,
        "best_test": pl.Float64, "metric": pl.String, "preprocessings": pl.String,
        "model_class": pl.String, "status": pl.String, "duration_ms": pl.Int64,
        "pipeline_id": pl.String, "chain_id": pl.String, "key": pl.String, "error": pl.String,
    }
    if not rows:
        return pl.DataFrame(schema=schema)
    ordered: list[dict[str, Any]] = []
    for dataset in dict.fromkeys(r["dataset_name"] for r in rows):
        group = [r for r in rows if r["dataset_name"] == dataset]
        good = [r for r in group if r["status"] == "completed" and _is_finite(r["best_val"])]
        bad = [r for r in group if r not in good]
        good.sort(key=lambda r: ranking.sort_key(r["metric"], r["best_val"], r["name"]))
        for rank, r in enumerate(good, start=1):
            ordered.append({**r, "rank": rank})
        ordered.extend({**r, "rank": None} for r in sorted(bad, key=lambda r: r["name"]))
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in ordered], schema=schema)


def sweep_summary_dict(results: list[PipelineResult], duration_s: float) -> dict[str, Any]:
    """The summary stored with ``complete_run``: counts, failures, best pipeline per dataset."""
    failed = [r for r in results if r.status == "failed"]
    best: dict[str, Any] = {}
    board = leaderboard(results)
    for row in board.filter(pl.col("rank") == 1).iter_rows(named=True):
        best[row["dataset_name"]] = {
            "pipeline_id": row["pipeline_id"], "chain_id": row["chain_id"], "name": row["name"],
            "metric": row["metric"], "best_val": row["best_val"], "best_test": row["best_test"],
        }
    return {
        "n_pipelines": len(results),
        "n_completed": len(results) - len(failed),
        "n_failed": len(failed),
        "n_predictions": sum(r.n_predictions for r in results),
        "duration_s": round(duration_s, 3),
        "best": best,
        "failures": [{"name": r.name, "dataset_name": r.dataset_name, "pipeline_id": r.pipeline_id,
                      "error": (r.error or "")[:300]} for r in failed[:50]],
    }


# --------------------------------------------------------------------------- internals


def _train_and_record(store: Any, pipeline_id: str, spec: PipelineSpec, ds: SpectraDataset,
                      cfg: SweepConfig, metric: str) -> tuple[str, float, float | None, int]:
    from n4a_store.chains.builder import ChainBuilder

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome = fit_folds(spec, ds, cfg.cv, cfg.seed)
        finally:  # a failed pipeline keeps its log: the warnings often explain the failure
            _log_warnings(store, pipeline_id, caught)
    _log_steps(store, pipeline_id, outcome)
    chain_kwargs = ChainBuilder(_trace(outcome, ds.task_type, ds.wavelengths), store).build()
    chain_id = store.save_chain(pipeline_id, **chain_kwargs)
    preprocessings = chain_kwargs.get("preprocessings", spec.preprocessings)
    best_val, best_test, n = _save_predictions(store, pipeline_id, chain_id, spec, ds, outcome,
                                               metric, preprocessings)
    return chain_id, best_val, best_test, n


def _trace(outcome: TrainingOutcome, task_type: str,
           wavelengths: np.ndarray | None = None) -> ExecutionTrace:
    from n4a_store.chains.trace import ExecutionTrace, TraceStep

    steps = []
    for rec in outcome.steps:
        shared = None
        per_fold = dict(rec.per_fold)
        if rec.stateless and not rec.is_model:
            shared, per_fold = next(iter(rec.per_fold.values())), {}
        steps.append(TraceStep(step_idx=rec.step_idx, operator_class=rec.spec.class_path,
                               params=rec.params, shared=shared, per_fold=per_fold,
                               stateless=rec.stateless, is_model=rec.is_model,
                               uses_wavelengths=rec.uses_wavelengths))
    axis = None if wavelengths is None else [float(v) for v in np.asarray(wavelengths)]
    return ExecutionTrace(steps=steps, fold_strategy="per_fold", task_type=task_type,
                          wavelengths=axis)


def _log_steps(store: Any, pipeline_id: str, outcome: TrainingOutcome) -> None:
    for rec in outcome.steps:
        details = {"folds": len(rec.fit_ms), "fit_ms": [round(v, 3) for v in rec.fit_ms],
                   "stateless": rec.stateless, "uses_wavelengths": rec.uses_wavelengths,
                   "process": os.getpid()}
        if rec.is_model:
            details["predict_ms"] = [round(v, 3) for v in rec.predict_ms]
            total = sum(rec.fit_ms) + sum(rec.predict_ms)
        else:
            details["transform_ms"] = [round(v, 3) for v in rec.transform_ms]
            total = sum(rec.fit_ms) + sum(rec.transform_ms)
        store.log_step(pipeline_id, rec.step_idx, rec.spec.class_path, "fit",
                       duration_ms=int(round(total)), details=details,
                       message=f"fitted on {len(rec.fit_ms)} folds")


def _log_warnings(store: Any, pipeline_id: str, caught: list[warnings.WarningMessage]) -> None:
    """Record the distinct warnings raised while training (at most 20) as warning log entries."""
    seen: dict[str, int] = {}
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        seen[text] = seen.get(text, 0) + 1
    for text, count in list(seen.items())[:MAX_LOGGED_WARNINGS]:
        store.log_step(pipeline_id, None, None, "warning", message=text[:1000],
                       details={"count": count}, level="warning")


def _save_predictions(store: Any, pipeline_id: str, chain_id: str, spec: PipelineSpec,
                      ds: SpectraDataset, outcome: TrainingOutcome, metric: str,
                      preprocessings: str) -> tuple[float, float | None, int]:
    task = ds.task_type
    model_rec = outcome.steps[-1]
    common = {
        "pipeline_id": pipeline_id, "chain_id": chain_id, "dataset_name": ds.name,
        "model_name": spec.model.short_name, "model_class": spec.model.class_path,
        "metric": metric, "task_type": task, "n_features": ds.n_features,
        "best_params": _json_params(model_rec.params), "branch_id": None, "branch_name": None,
        "exclusion_count": 0, "exclusion_rate": 0.0, "preprocessings": preprocessings,
    }
    n_saved = 0
    n = ds.n_samples
    oof_pred = np.empty(n, dtype=ds.y.dtype if task == "classification" else np.float64)
    has_proba = task == "classification" and all(
        "val" in fold.y_proba for fold in outcome.folds)  # False: classifier without predict_proba
    oof_proba = np.zeros((n, len(ds.classes))) if has_proba else None
    test_preds, test_probas = [], []
    for fold in outcome.folds:
        truths = {"train": ds.y[fold.train_idx], "val": ds.y[fold.val_idx]}
        rows = {"train": ds.train_rows[fold.train_idx], "val": ds.train_rows[fold.val_idx]}
        if ds.X_test is not None:
            truths["test"] = ds.y_test
            rows["test"] = ds.test_rows
        scores = {p: score_partition(task, truths[p], fold.y_pred[p]) for p in truths}
        headline = {p: scores[p][metric] for p in scores}
        for partition in truths:
            _save_one(store, ds, common, fold.fold_id, partition, headline, scores, truths[partition],
                      fold.y_pred[partition], fold.y_proba.get(partition), rows[partition])
            n_saved += 1
        oof_pred[fold.val_idx] = fold.y_pred["val"]
        if oof_proba is not None and "val" in fold.y_proba:
            oof_proba[fold.val_idx] = fold.y_proba["val"]
        if ds.X_test is not None:
            test_preds.append(fold.y_pred["test"])
            if "test" in fold.y_proba:
                test_probas.append(fold.y_proba["test"])
    avg_scores = {"val": score_partition(task, ds.y, oof_pred)}
    avg_truths = {"val": ds.y}
    avg_preds: dict[str, np.ndarray] = {"val": oof_pred}
    avg_probas: dict[str, np.ndarray | None] = {"val": oof_proba}
    avg_rows = {"val": ds.train_rows}
    if ds.X_test is not None:
        if task == "regression":
            test_pred = np.mean(test_preds, axis=0)
            test_proba = None
        elif has_proba:
            test_proba = np.mean(test_probas, axis=0)
            test_pred = np.asarray(ds.classes, dtype=object)[np.argmax(test_proba, axis=1)]
            test_pred = test_pred.astype(ds.y.dtype) if ds.y.dtype.kind != "O" else test_pred
        else:  # the folds vote, exactly as replay does
            from n4a_store.chains.engine import majority_vote

            test_proba = None
            test_pred = majority_vote(test_preds)
        avg_scores["test"] = score_partition(task, ds.y_test, test_pred)
        avg_truths["test"], avg_preds["test"] = ds.y_test, test_pred
        avg_probas["test"], avg_rows["test"] = test_proba, ds.test_rows
    headline = {p: avg_scores[p][metric] for p in avg_scores}
    for partition in avg_truths:
        _save_one(store, ds, common, AVG_FOLD, partition, headline, avg_scores, avg_truths[partition],
                  avg_preds[partition], avg_probas[partition], avg_rows[partition])
        n_saved += 1
    return headline["val"], headline.get("test"), n_saved


def _save_one(store: Any, ds: SpectraDataset, common: dict[str, Any], fold_id: str, partition: str,
              headline: dict[str, float], scores: dict[str, dict[str, float]], y_true: np.ndarray,
              y_pred: np.ndarray, y_proba: np.ndarray | None, rows: np.ndarray) -> str:
    if ds.task_type == "classification":
        y_true_arr = ds.encode_labels(np.asarray(y_true)).astype(np.float64)
        y_pred_arr = ds.encode_labels(np.asarray(y_pred)).astype(np.float64)
    else:
        y_true_arr = np.asarray(y_true, dtype=np.float64)
        y_pred_arr = np.asarray(y_pred, dtype=np.float64)
    return store.save_prediction(
        fold_id=fold_id, partition=partition,
        val_score=_finite_or_nan(headline.get("val")),
        test_score=_finite_or_nan(headline.get("test")),
        train_score=_finite_or_nan(headline.get("train")),
        n_samples=int(len(y_true_arr)),
        scores={p: {k: _none_if_nan(v) for k, v in s.items()} for p, s in scores.items()},
        y_true=y_true_arr, y_pred=y_pred_arr, y_proba=y_proba,
        sample_indices=np.asarray(rows, dtype=np.int64),
        **common,
    )


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    from n4a_store.chains.builder import json_safe

    return json_safe(params)


def _check_metric(metric: str, ds: SpectraDataset) -> None:
    spec = METRICS.get(metric)
    if spec is None or spec.task_type != ds.task_type:
        raise SweepConfigError(
            f"metric {metric!r} does not apply to dataset {ds.name!r}, a {ds.task_type} task",
            key="metric")


def _reporter(progress: bool, total: int,
              on_result: Callable[[PipelineResult], None] | None) -> _Reporter:
    return _Reporter(progress, total, on_result)


class _Reporter:
    """Calls ``on_result`` and advances an optional rich progress bar (on stderr)."""

    def __init__(self, progress: bool, total: int,
                 on_result: Callable[[PipelineResult], None] | None) -> None:
        self.on_result = on_result
        self.failed = 0
        self._progress = None
        if progress:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(
                TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("sweep", total=total, failed=0)

    def __call__(self, result: PipelineResult) -> None:
        if result.status == "failed":
            self.failed += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1, failed=self.failed)
        if self.on_result is not None:
            self.on_result(result)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class CommitWindow:
    """Group the commits of consecutive pipelines for up to ``seconds`` (``store.batch()``).

    Call :meth:`tick` after each pipeline: once the window is older than ``seconds`` its
    buffered pipelines are committed in one transaction and a new window opens. With
    ``seconds <= 0``, or a store without ``batch()``, every pipeline commits on its own.
    ``commit_s`` accumulates the time spent committing windows.
    """

    def __init__(self, store: Any, seconds: float) -> None:
        self.store = store
        self.seconds = seconds
        self.commit_s = 0.0
        self._ctx: Any = None
        self._since = 0.0

    def __enter__(self) -> CommitWindow:
        self._open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def tick(self) -> None:
        """Commit the window if it is older than ``seconds``, then open a new one."""
        if self._ctx is not None and time.perf_counter() - self._since >= self.seconds:
            self.close()
            self._open()

    def close(self) -> None:
        """Commit what the window holds."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            t0 = time.perf_counter()
            try:
                ctx.__exit__(None, None, None)
            finally:
                self.commit_s += time.perf_counter() - t0

    def _open(self) -> None:
        batch = getattr(self.store, "batch", None)
        if self.seconds > 0 and callable(batch):
            self._ctx = batch()
            self._ctx.__enter__()
            self._since = time.perf_counter()


def _reconcile(store: Any, run_id: str, results: list[PipelineResult]) -> None:
    """Make the results agree with what the workers committed.

    A pipeline left 'running' (its worker died mid-pipeline) is failed in the store; a
    result reported completed whose pipeline is not committed as completed (its worker
    died before committing its last window) is counted as failed.
    """
    frame = store.list_pipelines(run_id=run_id)
    status = dict(zip(frame["pipeline_id"].to_list(), frame["status"].to_list(), strict=True))
    for pipeline_id, state in status.items():
        if state == "running":
            store.fail_pipeline(pipeline_id, "worker process stopped before finishing")
            status[pipeline_id] = "failed"
    for r in results:
        if r.status == "completed" and status.get(r.pipeline_id) != "completed":
            r.status, r.error = "failed", "worker process stopped before committing this pipeline"
            r.best_val = r.best_test = None
            r.n_predictions = 0


def _format_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if not _has_own_prefix(exc) else str(exc)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
    out = f"{text}\n{tb}"
    return out if len(out) <= MAX_ERROR_CHARS else out[:MAX_ERROR_CHARS] + "..."


def _has_own_prefix(exc: BaseException) -> bool:
    from n4a_store.sweep.training import PipelineStepError

    return isinstance(exc, PipelineStepError)


def _fail_quietly(store: Any, pipeline_id: str, error: str) -> None:
    try:
        store.fail_pipeline(pipeline_id, error)
    except Exception:
        pass


def _elapsed_ms(started: float) -> int:
    return int(round((time.perf_counter() - started) * 1000))


def _is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _finite_or_nan(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def _none_if_nan(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
