"""The meaning of "best": metric direction, mixed metrics, top n per group, filters."""

from __future__ import annotations

import pytest

from n4a_store import InvalidInputError, ranking


def _pipeline(store, run_id, name, dataset, metric, task, scores):
    pid = store.begin_pipeline(run_id, name, {}, [], dataset, "h")
    for fold, value in scores.items():
        store.save_prediction(pid, None, dataset, "M", "pkg.M", fold, "val", value, None, None,
                              metric, task, 10, 5, {}, {}, None, None, 0, 0.0)
    store.complete_pipeline(pid, scores.get("avg"), None, metric, 1)
    return pid


@pytest.fixture
def mixed(store):
    run_id = store.begin_run("exp", {}, [])
    ids = {
        "reg_good": _pipeline(store, run_id, "b_reg_good", "ferm", "rmse", "regression",
                              {"0": 1.0, "1": 3.0, "avg": 2.0}),
        "reg_bad": _pipeline(store, run_id, "a_reg_bad", "ferm", "rmse", "regression",
                             {"0": 5.0, "1": 7.0, "avg": 6.0}),
        "clf_good": _pipeline(store, run_id, "c_clf_good", "coffee", "accuracy", "classification",
                              {"0": 0.9, "1": 1.0, "avg": 0.95}),
        "clf_bad": _pipeline(store, run_id, "d_clf_bad", "coffee", "accuracy", "classification",
                             {"0": 0.7, "1": 0.9, "avg": 0.8}),
    }
    return run_id, ids


def test_direction_table():
    assert not ranking.higher_is_better("rmse") and not ranking.higher_is_better("mae")
    assert all(ranking.higher_is_better(m) for m in ("r2", "accuracy", "balanced_accuracy", "f1"))
    with pytest.raises(InvalidInputError, match="direction of metric 'auc'"):
        ranking.higher_is_better("auc")
    assert ranking.sort_key("accuracy", 0.9) < ranking.sort_key("accuracy", 0.8)
    assert ranking.sort_key("rmse", 0.8) < ranking.sort_key("rmse", 0.9) < ranking.sort_key("rmse", None)


def test_direction_follows_the_metric(store, mixed):
    _, ids = mixed
    clf = store.top_predictions(1, dataset_name="coffee", fold_id="avg")
    assert clf["pipeline_id"].to_list() == [ids["clf_good"]]  # accuracy: highest first
    reg = store.top_predictions(1, dataset_name="ferm", fold_id="avg")
    assert reg["pipeline_id"].to_list() == [ids["reg_good"]]  # rmse: lowest first
    assert store.top_predictions(1, dataset_name="coffee", ascending=True)["val_score"][0] == 0.7


def test_mixed_metrics_are_refused_or_ranked_within_each(store, mixed):
    _, ids = mixed
    with pytest.raises(InvalidInputError, match="mixes metrics.*rmse.*accuracy"):
        store.top_predictions(1)
    per_dataset = store.top_predictions(1, fold_id="avg", group_by="dataset_name")
    assert sorted(per_dataset["pipeline_id"]) == sorted([ids["reg_good"], ids["clf_good"]])
    per_metric = store.top_predictions(2, group_by="metric", fold_id="avg")
    assert per_metric.filter(metric="accuracy")["val_score"].to_list() == [0.95, 0.8]
    assert per_metric.filter(metric="rmse")["val_score"].to_list() == [2.0, 6.0]


def test_top_n_per_group_and_filters(store, mixed):
    run_id, ids = mixed
    per_pipeline = store.top_predictions(2, dataset_name="ferm", group_by="pipeline_id")
    assert per_pipeline.height == 4  # 2 rows of each of the 2 pipelines, not 2 pipelines
    assert per_pipeline["pipeline_id"].to_list() == [ids["reg_good"]] * 2 + [ids["reg_bad"]] * 2
    assert per_pipeline["val_score"].to_list() == [1.0, 2.0, 5.0, 6.0]
    assert store.top_predictions(5, dataset_name="ferm", run_id="other").height == 0
    assert store.top_predictions(9, dataset_name="ferm", run_id=run_id).height == 6


def test_ties_go_to_the_smaller_pipeline_name(store):
    run_id = store.begin_run("exp", {}, [])
    later = _pipeline(store, run_id, "0002_b", "ferm", "rmse", "regression", {"avg": 1.0})
    first = _pipeline(store, run_id, "0001_a", "ferm", "rmse", "regression", {"avg": 1.0})
    assert store.top_predictions(2, fold_id="avg")["pipeline_id"].to_list() == [first, later]
