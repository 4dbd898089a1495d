"""Predictions: saving with arrays, queries, ranking, NaN handling, filters."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

RUN_ON_ALL_BACKENDS = True  # a contract module: every test runs on each catalog backend

from n4a_store import InvalidInputError

from conftest import write_pipeline

ARGS = ("wheat", "PLS", "sklearn.cross_decomposition.PLSRegression")


def _save(store, pid, chain_id, fold, partition, val, **kw):
    return store.save_prediction(pid, chain_id, *ARGS, fold, partition, val, 0.0, 0.0, "rmse",
                                 "regression", 10, 5, {"rmse": val}, {}, kw.pop("branch_id", None),
                                 None, 0, 0.0, **kw)


@pytest.fixture
def filled(store, fitted, regression_data):
    run_id = store.begin_run("exp", {}, [{"name": "wheat"}])
    a = write_pipeline(store, run_id, fitted, regression_data, name="a", scores=(0.30, 0.20, 0.10))
    b = write_pipeline(store, run_id, fitted, regression_data, name="b", scores=(0.25, 0.15, 0.05),
                       dataset="corn")
    return {"run_id": run_id, "a": a, "b": b}


def test_query_filters_and_pagination(store, filled):
    assert store.query_predictions().height == 18
    assert store.query_predictions(dataset_name="corn").height == 9
    assert store.query_predictions(partition="val", fold_id="0").height == 2
    assert store.query_predictions(pipeline_id=filled["a"]["pipeline_id"], partition="test").height == 3
    assert store.query_predictions(run_id=filled["run_id"], dataset_name="wheat").height == 9
    assert store.query_predictions(model_class="nope").height == 0
    page1 = store.query_predictions(limit=5)
    page2 = store.query_predictions(limit=5, offset=5)
    assert page1.height == page2.height == 5
    assert set(page1["prediction_id"]).isdisjoint(page2["prediction_id"])
    assert store.query_predictions(chain_id=filled["b"]["chain_id"]).height == 9
    with pytest.raises(InvalidInputError, match="prediction filter 'color'"):
        store.query_predictions(color="red")


def test_top_predictions_ranks_and_groups(store, filled):
    top = store.top_predictions(3)
    assert top["val_score"].to_list() == pytest.approx([0.05, 0.10, 0.15])
    assert set(top["partition"]) == {"val"}
    worst = store.top_predictions(1, ascending=False)
    assert worst["val_score"].to_list() == pytest.approx([0.30])
    by_dataset = store.top_predictions(1, group_by="dataset_name")  # top 1 per group
    assert by_dataset["dataset_name"].to_list() == ["corn", "wheat"]
    assert by_dataset["val_score"].to_list() == pytest.approx([0.05, 0.10])
    assert store.top_predictions(5, dataset_name="wheat")["dataset_name"].unique().to_list() == ["wheat"]
    test_rank = store.top_predictions(2, metric="test_score", partition="test")
    assert test_rank["test_score"].to_list() == pytest.approx([0.15, 0.20])
    assert store.top_predictions(0).height == 0


@pytest.mark.parametrize("bad", ["val_score; DROP TABLE runs", "scores", "nope"])
def test_top_predictions_refuses_unknown_metric(store, filled, bad):
    with pytest.raises(InvalidInputError, match="ranking metric"):
        store.top_predictions(3, metric=bad)
    assert store.query_predictions().height == 18


def test_top_predictions_refuses_unknown_group(store, filled):
    with pytest.raises(InvalidInputError, match="group_by"):
        store.top_predictions(3, group_by="1; DELETE FROM predictions")
    assert store.query_predictions().height == 18


def test_nan_and_inf_scores_are_null_and_rank_last(store):
    run_id = store.begin_run("exp", {}, [])
    pid = store.begin_pipeline(run_id, "p", {}, [], "wheat", "h")
    ids = [_save(store, pid, None, str(i), "val", v)
           for i, v in enumerate([float("nan"), 0.5, float("inf"), -math.inf, 0.2])]
    store.complete_pipeline(pid, 0.2, 0.2, "rmse", 1)  # visible once complete
    top = store.top_predictions(5)
    assert top["val_score"].to_list()[:2] == [0.2, 0.5]
    assert top["val_score"].to_list()[2:] == [None, None, None]
    desc = store.top_predictions(5, ascending=False)
    assert desc["val_score"].to_list()[:2] == [0.5, 0.2]
    record = store.get_prediction(ids[0])
    assert record["val_score"] is None and record["scores"] == {"rmse": None}


def test_get_prediction_with_arrays(store, filled, regression_data):
    _, y = regression_data
    pid = filled["a"]["prediction_ids"][1]
    record = store.get_prediction(pid, load_arrays=True)
    assert record["partition"] == "val" and record["scores"]["rmse"] == pytest.approx(0.3)
    np.testing.assert_array_equal(record["y_true"], y)
    assert record["y_pred"].shape == y.shape
    np.testing.assert_array_equal(record["sample_indices"], np.arange(len(y)))
    assert record["y_proba"] is None and record["weights"] is None
    assert "y_true" not in store.get_prediction(pid)
    assert store.get_prediction("missing", load_arrays=True) is None


def test_classification_arrays_keep_shape_and_labels(store):
    run_id = store.begin_run("exp", {}, [])
    pid = store.begin_pipeline(run_id, "p", {}, [], "coffee", "h")
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    labels = np.array(["Brazil", "Ethiopia"])
    prediction_id = store.save_prediction(
        pid, None, "coffee", "LR", "LogisticRegression", "0", "val", 0.9, 0.9, 0.9, "accuracy",
        "classification", 2, 10, {}, {}, None, None, 0, 0.0,
        y_true=labels, y_pred=np.array(["Brazil", "Brazil"]), y_proba=proba,
        weights=np.array([1.0, 2.0]))
    record = store.get_prediction(prediction_id, load_arrays=True)
    np.testing.assert_array_equal(record["y_proba"], proba)
    assert record["y_true"].tolist() == ["Brazil", "Ethiopia"]
    assert record["weights"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("arrays, message", [
    ({"y_true": np.zeros(3), "y_pred": np.zeros(4)}, "y_true has 3 values but y_pred has 4"),
    ({"y_true": np.zeros(3), "y_pred": np.zeros(3), "sample_indices": np.arange(2)}, "sample_indices has 2"),
    ({"y_true": np.zeros(3), "y_pred": np.zeros(3), "y_proba": np.zeros((2, 2))}, "y_proba must have shape"),
    ({"y_true": np.zeros(3)}, "y_true and y_pred are both required"),
    ({"y_true": np.zeros((3, 2)), "y_pred": np.zeros(3)}, "must be 1-D"),
])
def test_inconsistent_arrays_are_rejected_before_writing(store, arrays, message):
    run_id = store.begin_run("exp", {}, [])
    pid = store.begin_pipeline(run_id, "p", {}, [], "wheat", "h")
    with pytest.raises(InvalidInputError, match=message):
        _save(store, pid, None, "0", "val", 0.1, **arrays)
    store.flush()
    assert store.query_predictions().height == 0
    assert store.array_store.list_datasets() == []


def test_delete_prediction(store, filled):
    pid = filled["a"]["prediction_ids"][0]
    assert store.delete_prediction(pid) is True
    assert store.get_prediction(pid) is None
    assert store.array_store.load(pid, "wheat") is None
    assert store.delete_prediction(pid) is False
    assert store.query_predictions().height == 17


def test_compact_arrays_removes_deleted_and_orphan_rows(store, filled):
    store.delete_prediction(filled["a"]["prediction_ids"][0])
    # an orphan: arrays written by a process that died before its commit
    store.array_store.save_batch([{"prediction_id": "orphan", "dataset_name": "wheat",
                                   "y_true": np.zeros(2), "y_pred": np.zeros(2)}])
    assert store.compact_arrays() == 2
    stats = store.array_store.stats()
    assert stats["wheat"]["files"] == 1 and stats["wheat"]["rows"] == 8
    assert stats["corn"]["files"] == 1
    remaining = store.query_predictions(dataset_name="wheat")["prediction_id"].to_list()
    assert len(store.array_store.load_batch(remaining, "wheat")) == 8


def test_dataframes_are_polars(store, filled):
    assert isinstance(store.list_runs(), pl.DataFrame)
    assert isinstance(store.list_pipelines(), pl.DataFrame)
    assert isinstance(store.query_predictions(), pl.DataFrame)


@pytest.mark.parametrize("ascending", [True, False])
def test_group_by_matches_a_reference_computation(store, ascending):
    rng = np.random.default_rng(3)
    run_id = store.begin_run("exp", {}, [])
    with store.batch():
        for p in range(12):
            pid = store.begin_pipeline(run_id, f"p{p}", {}, [], "wheat", "h")
            for fold in range(4):
                value = float("nan") if (p == 5 or rng.random() < 0.1) else float(rng.integers(0, 20))
                _save(store, pid, None, str(fold), "val", value)
            store.complete_pipeline(pid, 0, 0, "rmse", 1)
    got = store.top_predictions(2, ascending=ascending, group_by="pipeline_id")  # 2 per group
    frame = store.query_predictions(partition="val")
    ranked = frame.sort(["val_score", "prediction_id"], descending=[not ascending, False],
                        nulls_last=True)
    best = ranked.group_by("pipeline_id", maintain_order=True).head(2)
    assert got.height == best.height == 24
    assert sorted(got["prediction_id"]) == sorted(best["prediction_id"])
    assert got["pipeline_id"].n_unique() == 12
    for pid, rows in got.group_by("pipeline_id"):  # each pipeline's rows are its best two
        mine = ranked.filter(pipeline_id=pid[0])["val_score"].head(2).to_list()
        assert rows["val_score"].to_list() == mine


def test_point_read_uses_location_hint_then_survives_compaction(workspace, fitted, regression_data, monkeypatch):
    from n4a_store import WorkspaceStore
    from n4a_store.arrays.index import DatasetIndex

    with WorkspaceStore(workspace) as store:
        run_id = store.begin_run("exp", {}, [])
        ids = [write_pipeline(store, run_id, fitted, regression_data, name=f"p{i}")["prediction_ids"]
               for i in range(4)]
    refreshes = []
    original = DatasetIndex.refresh
    monkeypatch.setattr(DatasetIndex, "refresh", lambda self: (refreshes.append(1), original(self)))
    with WorkspaceStore(workspace) as fresh:  # a new process: no index built yet
        record = fresh.get_prediction(ids[2][4], load_arrays=True)
        np.testing.assert_array_equal(record["y_true"], regression_data[1])
        assert refreshes == []  # read straight from the hinted file and row
        assert "array_file" not in record and "array_file" not in fresh.query_predictions().columns
        fresh.compact_arrays()
        again = fresh.get_prediction(ids[2][4], load_arrays=True)  # hint is stale now
        np.testing.assert_array_equal(again["y_pred"], record["y_pred"])
        fresh.delete_prediction(ids[1][0])
        assert fresh.array_store.load_at(ids[1][0], "wheat", "gone.parquet", 0) is None
