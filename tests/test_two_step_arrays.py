"""Defect 1 of issue 9: arrays saved through ``store.array_store.save_batch`` (the seed's
two-step path) survive a ``compact_arrays()`` run by another process before the
writer's ``complete_pipeline``, and come back from ``get_prediction(load_arrays=True)``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from n4a_store import InvalidInputError, WorkspaceStore

RUN_ON_ALL_BACKENDS = True


def _compact_elsewhere(location: str) -> None:
    """compact_arrays() in another process (what the Dagster compaction sensor runs)."""
    code = ("import sys; from n4a_store import WorkspaceStore\n"
            "s = WorkspaceStore(sys.argv[1], lock_timeout=30); s.compact_arrays(); s.close()\n")
    subprocess.run([sys.executable, "-c", code, location], check=True, timeout=120)


def _prediction(store: WorkspaceStore, pid: str, dataset: str = "wheat") -> str:
    return store.save_prediction(pid, None, dataset, "PLS", "PLSRegression", "0", "val",
                                 0.1, 0.2, 0.05, "rmse", "regression", 5, 3, {}, {},
                                 None, None, 0, 0.0)


def test_two_step_arrays_survive_compaction_in_another_process(store: WorkspaceStore,
                                                                 location: str) -> None:
    run = store.begin_run("r", {}, [{"name": "wheat"}])
    pid = store.begin_pipeline(run, "p", {}, [], "wheat", "h")
    ids = [_prediction(store, pid) for _ in range(3)]
    y = np.arange(5, dtype=float)
    store.array_store.save_batch([{"prediction_id": i, "dataset_name": "wheat", "y_true": y,
                                   "y_pred": y + k} for k, i in enumerate(ids)])
    _compact_elsewhere(location)
    store.complete_pipeline(pid, 0.1, 0.2, "rmse", 10)
    _compact_elsewhere(location)
    with WorkspaceStore(location) as other:
        for k, i in enumerate(ids):
            got = other.get_prediction(i, load_arrays=True)
            assert got is not None and got["has_arrays"]
            np.testing.assert_array_equal(got["y_pred"], y + k)
    report = store.verify()
    assert report.ok, report.summary()


def test_two_step_arrays_of_a_committed_prediction_are_written_at_once(store: WorkspaceStore,
                                                                         location: str) -> None:
    run = store.begin_run("r", {}, [])
    pid = store.begin_pipeline(run, "p", {}, [], "wheat", "h")
    pred = _prediction(store, pid)
    store.complete_pipeline(pid, 0.1, 0.2, "rmse", 10)
    y = np.ones(4)
    store.array_store.save_batch([{"prediction_id": pred, "dataset_name": "wheat",
                                   "y_true": y, "y_pred": y}])
    _compact_elsewhere(location)
    np.testing.assert_array_equal(store.get_prediction(pred, load_arrays=True)["y_true"], y)
    assert store.array_store.load(pred, "wheat") is not None


def test_two_step_arrays_must_use_the_predictions_dataset(store: WorkspaceStore) -> None:
    run = store.begin_run("r", {}, [])
    pid = store.begin_pipeline(run, "p", {}, [], "wheat", "h")
    pred = _prediction(store, pid)
    with pytest.raises(InvalidInputError):
        store.array_store.save_batch([{"prediction_id": pred, "dataset_name": "corn",
                                       "y_true": [1.0], "y_pred": [1.0]}])
    store.complete_pipeline(pid, 0.1, 0.2, "rmse", 10)
    assert store.get_prediction(pred, load_arrays=True)["y_true"] is None
