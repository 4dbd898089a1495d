"""export_pipeline_config (JSON), export_run (YAML), export_predictions_parquet."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.linear_model import Ridge

from n4a_store import ChainBuilder, ExecutionTrace, TraceStep, WorkspaceStore
from n4a_store.errors import InvalidInputError, MissingParentError


@pytest.fixture()
def filled(tmp_path):
    """A run with two pipelines (one chain each) and val/test predictions with arrays."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(20, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0])
    store = WorkspaceStore(tmp_path / "ws")
    run_id = store.begin_run("sweep", {"cv": 3}, [{"name": "wheat", "hash": "w1"}],
                             metadata={"dagster_run_id": "abc"})
    pipelines = {}
    for name, alpha, val in (("0001_ridge", 1.0, 0.30), ("0002_ridge", 10.0, 0.20)):
        config = {"model": {"class": "Ridge", "alpha": alpha}, "steps": ["SNV"]}
        pipeline_id = store.begin_pipeline(run_id, name, config, [{"alpha": alpha}], "wheat", "w1")
        model = Ridge(alpha=alpha).fit(X, y)
        trace = ExecutionTrace([TraceStep(0, "sklearn.linear_model.Ridge", {"alpha": alpha},
                                          per_fold={"0": model}, is_model=True)])
        chain_id = store.save_chain(pipeline_id, **ChainBuilder(trace, store).build())
        for partition, score in (("val", val), ("test", val + 0.05)):
            store.save_prediction(
                pipeline_id, chain_id, "wheat", "Ridge", "sklearn.linear_model.Ridge", "0",
                partition, val, val + 0.05, 0.1, "rmse", "regression", len(X), X.shape[1],
                {"rmse": score}, {"alpha": alpha}, None, None, 0, 0.0,
                y_true=y, y_pred=model.predict(X), sample_indices=np.arange(len(X)))
        store.complete_pipeline(pipeline_id, val, val + 0.05, "rmse", 12)
        pipelines[name] = (pipeline_id, chain_id, config)
    store.complete_run(run_id, {"total_pipelines": 2})
    yield store, run_id, pipelines, y
    store.close()


def test_export_pipeline_config_writes_the_expanded_config(filled, tmp_path):
    store, _, pipelines, _ = filled
    pipeline_id, _, config = pipelines["0001_ridge"]
    path = store.export_pipeline_config(pipeline_id, tmp_path / "exports" / "config.json")
    assert json.loads(path.read_text()) == config
    with pytest.raises(MissingParentError):
        store.export_pipeline_config("missing", tmp_path / "x.json")


def test_export_run_yaml_has_run_pipelines_chains_and_best(filled, tmp_path):
    store, run_id, pipelines, _ = filled
    doc = yaml.safe_load(store.export_run(run_id, tmp_path / "run.yaml").read_text())
    assert doc["run"]["run_id"] == run_id and doc["run"]["status"] == "completed"
    assert doc["run"]["metadata"] == {"dagster_run_id": "abc"}
    assert [p["name"] for p in sorted(doc["pipelines"], key=lambda p: p["name"])] == ["0001_ridge", "0002_ridge"]
    by_name = {p["name"]: p for p in doc["pipelines"]}
    assert by_name["0002_ridge"]["best_val"] == pytest.approx(0.20)
    assert by_name["0002_ridge"]["expanded_config"] == pipelines["0002_ridge"][2]
    (chain,) = by_name["0001_ridge"]["chains"]
    assert chain["chain_id"] == pipelines["0001_ridge"][1]
    assert chain["model_class"] == "sklearn.linear_model.Ridge" and chain["n_folds"] == 1
    assert doc["best"]["name"] == "0002_ridge"  # rmse: lower is better
    with pytest.raises(MissingParentError):
        store.export_run("missing", tmp_path / "x.yaml")


def test_export_predictions_parquet_uses_query_filters(filled, tmp_path):
    store, run_id, pipelines, _ = filled
    path = store.export_predictions_parquet(tmp_path / "val.parquet", dataset_name="wheat", partition="val")
    frame = pl.read_parquet(path)
    expected = store.query_predictions(dataset_name="wheat", partition="val")
    assert frame.height == expected.height == 2
    assert sorted(frame["prediction_id"].to_list()) == sorted(expected["prediction_id"].to_list())
    assert "y_pred" not in frame.columns
    only = store.export_predictions_parquet(tmp_path / "one.parquet",
                                            pipeline_id=pipelines["0001_ridge"][0], partition="test")
    assert pl.read_parquet(only).height == 1
    with pytest.raises(InvalidInputError, match="unknown prediction filter"):
        store.export_predictions_parquet(tmp_path / "bad.parquet", datset_name="wheat")
    assert not (tmp_path / "bad.parquet").exists()


def test_export_predictions_parquet_with_arrays(filled, tmp_path):
    store, run_id, _, y = filled
    from n4a_store.exports import export_predictions_parquet

    path = export_predictions_parquet(store, tmp_path / "arrays.parquet", with_arrays=True, run_id=run_id)
    frame = pl.read_parquet(path)
    assert frame.height == 4
    for row in frame.iter_rows(named=True):
        np.testing.assert_allclose(row["y_true"], y)
        assert len(row["y_pred"]) == len(y)
        assert row["sample_indices"] == list(range(len(y)))
        assert row["y_proba"] is None
