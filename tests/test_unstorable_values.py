"""A value the catalog cannot store is refused by the call that gives it.

Each case buffers a complete, valid pipeline first, then makes one call with a
value no column can hold (an integer wider than its column, a lone surrogate,
a NUL, an integer JSON cannot carry, ...). The call must raise
InvalidInputError at once; afterwards the valid pipeline still commits, other
writes still commit, and a fresh process sees everything intact.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from conftest import write_pipeline
from n4a_store import InvalidInputError, WorkspaceStore

SURROGATE = "\ud800"


def _prediction(store: WorkspaceStore, ids: dict, **overrides: Any) -> str:
    args: dict[str, Any] = dict(
        pipeline_id=ids["pipeline_id"], chain_id=ids["chain_id"], dataset_name="wheat",
        model_name="PLS", model_class="sklearn.cross_decomposition.PLSRegression", fold_id="0",
        partition="val", val_score=0.1, test_score=0.2, train_score=0.05, metric="rmse",
        task_type="regression", n_samples=3, n_features=4, scores={"rmse": 0.1},
        best_params={}, branch_id=None, branch_name=None, exclusion_count=0,
        exclusion_rate=0.0, preprocessings="", y_true=[1.0, 2.0, 3.0], y_pred=[1.0, 2.0, 2.5],
    )
    args.update(overrides)
    return store.save_prediction(**args)


def _log(store: WorkspaceStore, ids: dict, **overrides: Any) -> None:
    args: dict[str, Any] = dict(pipeline_id=ids["pipeline_id"], step_idx=0,
                                operator_class="x.Y", event="fit")
    args.update(overrides)
    store.log_step(**args)


def _chain(store: WorkspaceStore, ids: dict, **overrides: Any) -> str:
    steps = [{"step_idx": 0, "operator_class": "sklearn.cross_decomposition.PLSRegression",
              "params": {}, "artifact_id": None, "stateless": False}]
    args: dict[str, Any] = dict(pipeline_id=ids["pipeline_id"], steps=steps, model_step_idx=0,
                                model_class="m.M", preprocessings="", fold_strategy="per_fold",
                                fold_artifacts=dict(ids["model_ids"]), shared_artifacts={})
    args.update(overrides)
    return store.save_chain(**args)


def _deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


CASES: dict[str, Callable[[WorkspaceStore, dict], Any]] = {
    "n_samples 2**63": lambda s, i: _prediction(s, i, n_samples=2**63),
    "n_features -2**63-1": lambda s, i: _prediction(s, i, n_features=-2**63 - 1),
    "n_features 1e30": lambda s, i: _prediction(s, i, n_features=1e30),
    "branch_id 2**63": lambda s, i: _prediction(s, i, branch_id=2**63),
    "exclusion_count numpy uint64": lambda s, i: _prediction(s, i, exclusion_count=np.uint64(2**63)),
    "model_name surrogate": lambda s, i: _prediction(s, i, model_name=SURROGATE),
    "model_name not a string": lambda s, i: _prediction(s, i, model_name=123),
    "branch_name NUL": lambda s, i: _prediction(s, i, branch_name="a\x00b"),
    "model_class NUL": lambda s, i: _prediction(s, i, model_class="m.\x00M"),
    "task_type not a string": lambda s, i: _prediction(s, i, task_type=b"regression"),
    "metric not a string": lambda s, i: _prediction(s, i, metric=1),
    "chain_id surrogate": lambda s, i: _prediction(s, i, chain_id=SURROGATE),
    "branch_name not a string": lambda s, i: _prediction(s, i, branch_name=3),
    "metric surrogate": lambda s, i: _prediction(s, i, metric="r" + SURROGATE),
    "fold_id surrogate": lambda s, i: _prediction(s, i, fold_id=SURROGATE),
    "preprocessings list": lambda s, i: _prediction(s, i, preprocessings=["SNV"]),
    "scores value surrogate": lambda s, i: _prediction(s, i, scores={"rmse": SURROGATE}),
    "scores key surrogate": lambda s, i: _prediction(s, i, scores={SURROGATE: 1.0}),
    "best_params int 2**64": lambda s, i: _prediction(s, i, best_params={"seed": 2**64}),
    "best_params int 10**5000": lambda s, i: _prediction(s, i, best_params={"seed": 10**5000}),
    "scores nested 100k deep": lambda s, i: _prediction(s, i, scores={"x": _deep(100_000)}),
    "label surrogate": lambda s, i: _prediction(s, i, y_true=["a", "b", SURROGATE],
                                                y_pred=["a", "b", "b"]),
    "labels of objects": lambda s, i: _prediction(s, i, y_true=np.array([{}, 1, 2], dtype=object)),
    "dataset name too long for a directory": lambda s, i: _prediction(s, i, dataset_name="d" * 300),
    "step_idx 2**31": lambda s, i: _log(s, i, step_idx=2**31),
    "log duration_ms 2**63": lambda s, i: _log(s, i, duration_ms=2**63),
    "log message surrogate": lambda s, i: _log(s, i, message=SURROGATE),
    "log operator_class NUL": lambda s, i: _log(s, i, operator_class="a\x00"),
    "log details surrogate in list": lambda s, i: _log(s, i, details={"x": ["\udfff"]}),
    "log level unhashable": lambda s, i: _log(s, i, level=["info"]),
    "chain source_index 2**31": lambda s, i: _chain(s, i, source_index=2**31),
    "chain preprocessings surrogate": lambda s, i: _chain(s, i, preprocessings=SURROGATE),
    "chain model_class surrogate": lambda s, i: _chain(s, i, model_class=SURROGATE),
    "chain branch_path int 2**70": lambda s, i: _chain(s, i, branch_path=[2**70]),
    "artifact operator_class surrogate": lambda s, i: s.save_artifact_bytes(b"x", SURROGATE, "model", "joblib"),
    "artifact format unhashable": lambda s, i: s.save_artifact_bytes(b"x", "a", "model", ["joblib"]),
    "fail_pipeline error surrogate": lambda s, i: s.fail_pipeline(i["pipeline_id"], SURROGATE),
    "begin_run name surrogate": lambda s, i: s.begin_run(SURROGATE, {}, []),
    "begin_run config int 2**64": lambda s, i: s.begin_run("r", {"n": -2**64}, []),
    "begin_pipeline config surrogate": lambda s, i: s.begin_pipeline(
        i["run_id"], "p", {"a": SURROGATE}, [], "wheat", "h"),
    "begin_pipeline dataset_hash surrogate": lambda s, i: s.begin_pipeline(
        i["run_id"], "p", {}, [], "wheat", SURROGATE),
    "complete_pipeline duration_ms 2**63": lambda s, i: s.complete_pipeline(
        i["pipeline_id"], 0.1, 0.2, "rmse", 2**63),
    "complete_pipeline metric surrogate": lambda s, i: s.complete_pipeline(
        i["pipeline_id"], 0.1, 0.2, SURROGATE, 5),
}


def _check_intact(workspace, ids: dict) -> None:
    with WorkspaceStore(workspace) as fresh:
        assert fresh.get_pipeline(ids["pipeline_id"])["status"] == "completed"
        assert len(fresh.query_predictions(pipeline_id=ids["pipeline_id"])) == len(ids["prediction_ids"])
        assert fresh.get_chain(ids["chain_id"]) is not None
        assert len(fresh.get_pipeline_log(ids["pipeline_id"])) == 2
        record = fresh.get_prediction(ids["prediction_ids"][0], load_arrays=True)
        assert record["y_true"] is not None and len(record["y_true"]) == 60


@pytest.mark.parametrize("batch", [False, True], ids=["plain", "batch"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_unstorable_value_is_refused_by_its_call(workspace, fitted, regression_data, case, batch):
    store = WorkspaceStore(workspace)
    try:
        run_id = store.begin_run("run", {}, [])
        if batch:
            block = store.batch()
            block.__enter__()
        ids = write_pipeline(store, run_id, fitted, regression_data, complete=False)
        ids["run_id"] = run_id
        with pytest.raises(InvalidInputError):
            CASES[case](store, ids)
        # nothing else is lost: the valid pipeline and unrelated writes still commit
        store.complete_pipeline(ids["pipeline_id"], 0.1, 0.2, "rmse", 120)
        if batch:
            block.__exit__(None, None, None)
        store.flush()
        other = store.begin_run("another run", {"ok": True}, [])
        store.complete_run(other, {})
    finally:
        store.close()
    _check_intact(workspace, ids)


def test_widest_storable_values_are_kept_exactly(store, fitted, regression_data):
    """The bounds are the columns' own: the extreme values that fit are stored unchanged."""
    run_id = store.begin_run("run", {"big": 2**64 - 1, "small": -2**63}, [])
    ids = write_pipeline(store, run_id, fitted, regression_data, complete=False)
    prediction_id = _prediction(store, ids, n_samples=2**63 - 1, branch_id=-2**63,
                                model_name="naïve ✓ 模型", branch_name="")
    _log(store, ids, step_idx=2**31 - 1, duration_ms=2**63 - 1, message="tab\there")
    store.complete_pipeline(ids["pipeline_id"], 0.1, 0.2, "rmse", 2**63 - 1)
    row = store.get_prediction(prediction_id)
    assert (row["n_samples"], row["branch_id"], row["model_name"]) == (2**63 - 1, -2**63, "naïve ✓ 模型")
    log = store.get_pipeline_log(ids["pipeline_id"]).to_dicts()[-1]
    assert (log["step_idx"], log["duration_ms"]) == (2**31 - 1, 2**63 - 1)
    assert store.get_run(run_id)["config"] == {"big": 2**64 - 1, "small": -2**63}


def test_new_ids_are_random_version_4_uuids() -> None:
    import uuid

    from n4a_store.workspace.writes import new_id

    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_buffered_rows_become_columns_with_absent_keys_null() -> None:
    from n4a_store.columnar import transpose

    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert transpose(rows, ("b", "a")) == [("x", "y"), (1, 2)]
    assert transpose(rows + [{"a": 3}], ("a", "b")) == [(1, 2, 3), ("x", "y", None)]
    assert transpose([], ("a", "b")) == [(), ()]
