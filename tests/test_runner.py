"""The sweep runner end to end on real chemotools spectra, written through a real workspace."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from n4a_store import WorkspaceStore
from n4a_store.sweep import (
    PipelineResult,
    expand_pipelines,
    load_sweep_config,
    load_sweep_datasets,
    run_pipeline,
    run_sweep,
)

PLS = "sklearn.cross_decomposition.PLSRegression"
RANGE_CUT = {"class": "chemotools.feature_selection.RangeCut",
             "params": {"start": 950, "end": 1550, "x_axis": "$wavelengths"}}
SG = {"class": "chemotools.derivative.SavitzkyGolay",
      "params": {"window_length": 15, "polyorder": 2, "deriv": 1}}

REGRESSION = {
    "name": "reg-small",
    "datasets": ["chemotools:fermentation"],
    "cv": {"n_splits": 2, "seed": 0},
    "pipeline": [
        RANGE_CUT,
        {"_or_": [None, SG]},
        {"class": PLS, "params": {"n_components": {"_range_": [2, 3]}, "scale": False}},
    ],
}
CLASSIFICATION = {
    "name": "cls-small",
    "datasets": [{"chemotools": "coffee", "test_fraction": 0.25}],
    "cv": {"n_splits": 2, "seed": 0},
    "seed": 7,
    "pipeline": [
        {"class": "chemotools.scatter.StandardNormalVariate"},
        {"class": "sklearn.linear_model.LogisticRegression",
         "params": {"C": {"_or_": [0.1, 1.0]}, "max_iter": 2000}},
    ],
}
# one good model, one that raises while fitting, one with a parameter its class does not take
WITH_FAILURES = {
    "name": "failures",
    "datasets": ["chemotools:fermentation"],
    "cv": {"n_splits": 2, "seed": 0},
    "pipeline": [
        {"class": "chemotools.scatter.StandardNormalVariate"},
        {"_or_": [
            {"class": PLS, "params": {"n_components": {"_or_": [2, 50]}}},
            {"class": "sklearn.linear_model.Ridge", "params": {"alpah": 1.0}},
        ]},
    ],
}

PER_PIPELINE = 2 * 3 + 2  # folds x (train, val, test) + pooled out-of-fold val + averaged test


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def test_regression_sweep_end_to_end(tmp_path: Path):
    ws = tmp_path / "ws"
    summary = run_sweep(REGRESSION, ws)
    assert (summary.n_pipelines, summary.n_completed, summary.n_failed) == (4, 4, 0)
    board = summary.leaderboard
    assert board["rank"].to_list() == [1, 2, 3, 4]
    assert board["best_val"].to_list() == sorted(board["best_val"].to_list())  # rmse: lower first

    cfg = load_sweep_config(REGRESSION)
    specs = {s.name: s for s in expand_pipelines(cfg)}
    ds = load_sweep_datasets(cfg, list(specs.values()))[0]
    with WorkspaceStore(ws) as store:
        run = store.get_run(summary.run_id)
        assert run["status"] == "completed"
        assert run["summary"]["n_pipelines"] == 4 and run["summary"]["n_failed"] == 0
        assert run["datasets"][0]["hash"] == ds.dataset_hash
        pipelines = store.list_pipelines(run_id=summary.run_id)
        assert pipelines["status"].to_list() == ["completed"] * 4
        assert set(pipelines["metric"]) == {"rmse"}
        preds = store.query_predictions(run_id=summary.run_id)
        assert preds.height == 4 * PER_PIPELINE and preds["has_arrays"].all()
        store.flush()
        assert store.array_store.stats()["fermentation"]["rows"] == 4 * PER_PIPELINE

        best = board.row(0, named=True)
        spec = specs[best["name"]]
        stored = store.get_pipeline(best["pipeline_id"])
        assert stored["generator_choices"] == spec.generator_choices
        assert stored["expanded_config"]["pipeline"] == [s.to_dict() for s in spec.steps]
        assert stored["dataset_hash"] == ds.dataset_hash

        # pooled out-of-fold predictions agree with scikit-learn's own cross-validation
        from sklearn.base import clone
        from sklearn.model_selection import KFold, cross_val_predict
        from sklearn.pipeline import make_pipeline

        from n4a_store.sweep.training import resolve_params
        from n4a_store.sweep.config import import_class

        estimators = [import_class(s.class_path)(**resolve_params(s.params, ds.wavelengths))
                      for s in spec.steps]
        oof = cross_val_predict(clone(make_pipeline(*estimators)), ds.X, ds.y,
                                cv=KFold(2, shuffle=True, random_state=0)).ravel()
        assert best["best_val"] == pytest.approx(_rmse(oof, ds.y), rel=1e-9)

        mine = preds.filter(pl.col("pipeline_id") == best["pipeline_id"])
        avg_val = mine.filter((pl.col("fold_id") == "avg") & (pl.col("partition") == "val"))
        rec = store.get_prediction(avg_val["prediction_id"][0], load_arrays=True)
        assert np.allclose(rec["y_pred"], oof) and np.allclose(rec["y_true"], ds.y)
        assert rec["sample_indices"].tolist() == list(range(21))
        assert rec["val_score"] == pytest.approx(_rmse(rec["y_pred"], rec["y_true"]))
        assert set(rec["scores"]["val"]) == {"rmse", "r2", "mae"}

        # every fold: val parts are disjoint and cover the training set
        val_rows = []
        for row in mine.filter((pl.col("partition") == "val") & (pl.col("fold_id") != "avg")).iter_rows(named=True):
            val_rows += store.get_prediction(row["prediction_id"], load_arrays=True)["sample_indices"].tolist()
        assert sorted(val_rows) == list(range(21))

        # the chain replays to the stored fold-averaged test predictions
        avg_test = mine.filter((pl.col("fold_id") == "avg") & (pl.col("partition") == "test"))
        test_rec = store.get_prediction(avg_test["prediction_id"][0], load_arrays=True)
        replayed = store.replay_chain(best["chain_id"], ds.X_test, wavelengths=ds.wavelengths)
        assert np.allclose(replayed, test_rec["y_pred"])
        assert best["best_test"] == pytest.approx(_rmse(replayed, ds.y_test))

        chain = store.get_chain(best["chain_id"])
        assert chain["fold_strategy"] == "per_fold" and len(chain["fold_artifacts"]) == 2
        assert chain["steps"][0]["params"]["x_axis"] == "$wavelengths"
        log = store.get_pipeline_log(best["pipeline_id"]).filter(pl.col("event") == "fit")
        assert log["step_idx"].to_list() == list(range(len(spec.steps)))
        assert log["duration_ms"].is_not_null().all()


def test_classification_sweep_end_to_end(tmp_path: Path):
    summary = run_sweep(CLASSIFICATION, tmp_path / "ws")
    assert (summary.n_pipelines, summary.n_completed, summary.n_failed) == (2, 2, 0)
    board = summary.leaderboard
    assert board["best_val"].to_list() == sorted(board["best_val"].to_list(), reverse=True)
    assert set(board["metric"]) == {"accuracy"}

    cfg = load_sweep_config(CLASSIFICATION)
    ds = load_sweep_datasets(cfg, expand_pipelines(cfg))[0]
    assert ds.task_type == "classification"
    best = board.row(0, named=True)
    with WorkspaceStore(tmp_path / "ws") as store:
        preds = store.query_predictions(pipeline_id=best["pipeline_id"])
        assert preds.height == PER_PIPELINE and set(preds["task_type"]) == {"classification"}
        test_id = preds.filter((pl.col("fold_id") == "avg") & (pl.col("partition") == "test"))[
            "prediction_id"][0]
        rec = store.get_prediction(test_id, load_arrays=True)
        assert rec["y_proba"].shape == (15, 3)
        assert np.allclose(rec["y_proba"].sum(axis=1), 1.0)
        assert set(np.unique(rec["y_true"])) <= {0.0, 1.0, 2.0}
        labels = np.array(ds.classes, dtype=object)[rec["y_pred"].astype(int)]
        replayed = store.replay_chain(best["chain_id"], ds.X_test)
        assert list(replayed) == list(labels)
        assert set(rec["scores"]["test"]) == {"accuracy", "balanced_accuracy", "f1"}
        assert rec["test_score"] == pytest.approx(float(np.mean(replayed == ds.y_test)))
        # stratified folds: each validation fold holds every class
        for row in preds.filter((pl.col("partition") == "val") & (pl.col("fold_id") != "avg")).iter_rows(named=True):
            fold = store.get_prediction(row["prediction_id"], load_arrays=True)
            assert set(np.unique(fold["y_true"])) == {0.0, 1.0, 2.0}
        model_params = store.get_chain(best["chain_id"])["steps"][-1]["params"]
        assert model_params["random_state"] == 7  # the sweep seed, injected for determinism


def test_failing_pipelines_are_isolated(tmp_path: Path):
    summary = run_sweep(WITH_FAILURES, tmp_path / "ws")
    assert (summary.n_pipelines, summary.n_completed, summary.n_failed) == (3, 1, 2)
    errors = {r.name: r.error for r in summary.failures}
    assert any("step 1 (sklearn.cross_decomposition.PLSRegression) failed in fit on fold 0" in e
               and "n_components" in e for e in errors.values())
    assert any("step 1 (sklearn.linear_model.Ridge) failed in construction" in e
               and "alpah" in e for e in errors.values())
    with WorkspaceStore(tmp_path / "ws") as store:
        run = store.get_run(summary.run_id)
        assert run["status"] == "completed"
        assert run["summary"]["n_failed"] == 2 and len(run["summary"]["failures"]) == 2
        pipelines = store.list_pipelines(run_id=summary.run_id)
        failed = pipelines.filter(pl.col("status") == "failed")
        assert failed.height == 2 and failed["error"].is_not_null().all()
        for pid in failed["pipeline_id"]:
            assert store.query_predictions(pipeline_id=pid).height == 0
            assert store.get_chains_for_pipeline(pid).height == 0
        ok = pipelines.filter(pl.col("status") == "completed")["pipeline_id"][0]
        assert store.query_predictions(pipeline_id=ok).height == PER_PIPELINE


def test_training_warnings_are_logged_not_lost(tmp_path: Path):
    raw = CLASSIFICATION | {"pipeline": [
        {"class": "chemotools.scatter.StandardNormalVariate"},
        {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 1}}]}
    summary = run_sweep(raw, tmp_path / "ws")
    assert summary.n_completed == 1
    with WorkspaceStore(tmp_path / "ws") as store:
        log = store.get_pipeline_log(summary.results[0].pipeline_id)
        warned = log.filter(pl.col("event") == "warning")
        assert warned.height >= 1 and set(warned["level"]) == {"warning"}
        assert any("ConvergenceWarning" in m for m in warned["message"])


def test_run_pipeline_on_an_open_store(tmp_path: Path):
    cfg = load_sweep_config(REGRESSION)
    specs = expand_pipelines(cfg)
    ds = load_sweep_datasets(cfg, specs)[0]
    with WorkspaceStore(tmp_path / "ws") as store:
        run_id = store.begin_run("manual", cfg.to_dict(), [ds.metadata()])
        result = run_pipeline(store, run_id, specs[1], ds, cfg)
        assert isinstance(result, PipelineResult)
        assert result.status == "completed" and result.error is None
        assert result.metric == "rmse" and result.n_predictions == PER_PIPELINE
        assert result.best_val > 0 and result.best_test > 0 and result.duration_ms >= 0
        assert store.get_pipeline(result.pipeline_id)["best_val"] == pytest.approx(result.best_val)
        assert store.get_chain(result.chain_id)["pipeline_id"] == result.pipeline_id


def test_parallel_workers_exact_counts_and_determinism(tmp_path: Path):
    parallel = run_sweep(parallel_config(), tmp_path / "par", jobs=2)
    serial = run_sweep(parallel_config(), tmp_path / "ser", jobs=1)
    assert (parallel.n_pipelines, parallel.n_completed, parallel.n_failed) == (8, 6, 2)
    with WorkspaceStore(tmp_path / "par") as store:
        pipelines = store.list_pipelines(run_id=parallel.run_id)
        assert pipelines.height == 8
        assert pipelines["status"].value_counts().sort("status").rows() == [
            ("completed", 6), ("failed", 2)]
        assert store.query_predictions(run_id=parallel.run_id).height == 6 * PER_PIPELINE
        assert sum(store.get_chains_for_pipeline(p).height for p in pipelines["pipeline_id"]) == 6
        assert store.array_store.stats()["fermentation"]["rows"] == 6 * PER_PIPELINE
        assert store.get_run(parallel.run_id)["summary"]["n_completed"] == 6
        processes = {json.loads(d)["process"] for p in pipelines["pipeline_id"]
                     for d in store.get_pipeline_log(p).filter(pl.col("event") == "fit")["details"]}
        assert processes and os.getpid() not in processes  # worker processes did the work
    by_name = {r.name: r.best_val for r in serial.results}
    assert {r.name: r.best_val for r in parallel.results} == by_name  # same numbers, any worker


def parallel_config() -> dict:
    return WITH_FAILURES | {"pipeline": REGRESSION["pipeline"][:-1] + [
        {"_or_": [{"class": PLS, "params": {"n_components": {"_or_": [2, 3, 50]}}},
                  {"class": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}}]}]}


def test_parallel_worker_that_dies_fails_only_its_pipeline(tmp_path: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned workers inherit sys.path
    config = {"name": "crash", "datasets": ["chemotools:fermentation"], "cv": {"n_splits": 2},
              "pipeline": [{"class": "sweep_crash_model.CrashPLS",
                            "params": {"n_components": {"_or_": [1, 2, 3, 4, 5]}}}]}
    summary = run_sweep(config, tmp_path / "ws", jobs=2, commit_interval=0)
    assert (summary.n_pipelines, summary.n_completed, summary.n_failed) == (5, 4, 1)
    [dead] = summary.failures
    assert dead.name.startswith("0003_") and dead.pipeline_id is not None
    assert "worker process died (exit code 1)" in dead.error and dead.name in dead.error
    with WorkspaceStore(tmp_path / "ws") as store:
        pipelines = store.list_pipelines(run_id=summary.run_id)
        assert pipelines.height == 5  # one record per pipeline, none left running
        assert sorted(pipelines["status"].to_list()) == ["completed"] * 4 + ["failed"]
        assert store.get_pipeline(dead.pipeline_id)["error"] == dead.error
        assert set(pipelines["pipeline_id"]) == {r.pipeline_id for r in summary.results}
        assert store.get_run(summary.run_id)["summary"]["n_failed"] == 1


def test_classifier_without_predict_proba_completes_and_votes(tmp_path: Path):
    config = CLASSIFICATION | {"cv": {"n_splits": 3, "seed": 0}, "pipeline": [
        {"class": "chemotools.scatter.StandardNormalVariate"},
        {"class": "sklearn.linear_model.RidgeClassifier", "params": {"alpha": 1.0}}]}
    summary = run_sweep(config, tmp_path / "ws")
    assert (summary.n_completed, summary.n_failed) == (1, 0), summary.failures
    [result] = summary.results
    cfg = load_sweep_config(config)
    ds = load_sweep_datasets(cfg, expand_pipelines(cfg))[0]
    with WorkspaceStore(tmp_path / "ws") as store:
        preds = store.query_predictions(pipeline_id=result.pipeline_id)
        avg = preds.filter(pl.col("fold_id") == "avg")
        records = {row["partition"]: store.get_prediction(row["prediction_id"], load_arrays=True)
                   for row in avg.iter_rows(named=True)}
        assert records["val"]["y_proba"] is None and records["test"]["y_proba"] is None
        stored = np.array(ds.classes, dtype=object)[records["test"]["y_pred"].astype(int)]
        replayed = store.replay_chain(result.chain_id, ds.X_test)
        assert list(replayed) == list(stored)  # the stored fold vote is what replay returns
        assert records["test"]["test_score"] == pytest.approx(float(np.mean(replayed == ds.y_test)))
