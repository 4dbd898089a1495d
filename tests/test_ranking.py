"""The meaning of "best": metric direction, mixed metrics, top n per group, filters."""

from __future__ import annotations

import pytest

from n4a_store import InvalidInputError, ranking

RUN_ON_ALL_BACKENDS = True  # the top-N queries differ per catalog (bounded first on DuckDB)


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


def _random_predictions(store, seed: int, pipelines: int, names: int, folds, values, metric: str):
    """Validation predictions with many ties and missing scores, as row dicts (what was saved).

    ``folds(rng)`` gives a pipeline's fold count, ``values(rng, fold)`` a score (or None);
    with ``metric="mixed"`` pipelines alternate between rmse and accuracy.
    """
    import random

    rng = random.Random(seed)
    run_id = store.begin_run("exp", {}, [])
    rows = []
    for i in range(pipelines):
        name = f"p{rng.randrange(names):02d}_{i:02d}"
        row_metric = metric if metric != "mixed" else ("rmse" if i % 2 else "accuracy")
        pid = store.begin_pipeline(run_id, name, {}, [], "ds", "h")
        for fold in range(folds(rng)):
            value = values(rng, fold)
            prediction = store.save_prediction(
                pid, None, "ds", "M", "pkg.M", str(fold), "val", value, None, None, row_metric,
                "regression", 10, 5, {}, {}, None, None, 0, 0.0)
            rows.append({"value": value, "name": name, "prediction_id": prediction,
                         "metric": row_metric, "fold_id": str(fold), "pipeline_id": pid})
        store.complete_pipeline(pid, None, None, row_metric, 1)
    return rows


@pytest.mark.parametrize("metric,ascending", [("rmse", None), ("r2", None), ("rmse", False),
                                              ("rmse", True), ("mixed", None)])
def test_top_n_agrees_with_a_full_sort_through_ties_and_nulls(store, metric, ascending):
    """The top n (found on DuckDB by bounding the rows with the n-th best score first) is
    exactly the first n of a full sort: score, then pipeline name, then prediction id,
    ties at the boundary and missing scores included."""
    rows = _random_predictions(store, 7, 40, 10, lambda rng: 3,
                               lambda rng, fold: rng.choice([None, 0.5, 0.25, 0.75,
                                                             round(rng.random(), 1)]), metric)

    def sort_key(row):
        value, name, prediction = row["value"], row["name"], row["prediction_id"]
        if value is None:
            return (1, 0.0, name, prediction)
        if ascending is None:
            better_high = ranking.higher_is_better(row["metric"])
        else:
            better_high = not ascending
        return (0, -value if better_high else value, name, prediction)

    if metric == "mixed":  # one ranking cannot hold both directions
        with pytest.raises(InvalidInputError):
            store.top_predictions(5, ascending=ascending)
        return
    expected_all = [r["prediction_id"] for r in sorted(rows, key=sort_key)]
    for n in (1, 3, 7, 20, 119, 120, 200):
        got = store.top_predictions(n, ascending=ascending)["prediction_id"].to_list()
        assert got == expected_all[:n], n


@pytest.mark.parametrize("metric", ["rmse", "r2", "mixed"])
@pytest.mark.parametrize("group_by", ["fold_id", "pipeline_id", "metric"])
def test_top_n_per_group_agrees_with_a_full_sort(store, metric, group_by):
    """The top n per group (found on DuckDB from each group's n best keys first) is exactly
    the first n of each group's full sort, groups ordered by their best row; ties at a
    group's boundary, groups smaller than n and groups without any score included."""
    rows = _random_predictions(
        store, 11, 30, 8, lambda rng: rng.randrange(1, 5),
        lambda rng, fold: None if fold == 3 else rng.choice([None, 0.5, 0.25, round(rng.random(), 1)]),
        metric)

    def key(row):
        if row["value"] is None:
            return None
        return -row["value"] if ranking.higher_is_better(row["metric"]) else row["value"]

    if metric == "mixed" and group_by == "fold_id":  # a fold holds both directions
        with pytest.raises(InvalidInputError):
            store.top_predictions(2, group_by=group_by)
        return
    for n in (1, 2, 3, 50):
        groups: dict[str, list[dict]] = {}
        for row in rows:
            groups.setdefault(row[group_by], []).append(row)
        ranked = []
        for value, members in groups.items():
            members.sort(key=lambda r: (key(r) is None, key(r) or 0.0, r["name"], r["prediction_id"]))
            scored = [key(r) for r in members if key(r) is not None]
            best = min(scored) if scored else None
            ranked.append(((best is None, best or 0.0, value), members[:n]))
        expected = [r["prediction_id"] for _, top in sorted(ranked, key=lambda g: g[0]) for r in top]
        got = store.top_predictions(n, group_by=group_by)["prediction_id"].to_list()
        assert got == expected, (n, group_by)
