"""Content-addressed artifacts: dedup, ref counts, formats, integrity, gc."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

RUN_ON_ALL_BACKENDS = True  # a contract module: every test runs on each catalog backend

from n4a_store import ArtifactIntegrityError, ArtifactNotFoundError, InvalidInputError, WorkspaceStore

from conftest import write_pipeline


def test_identical_content_is_deduplicated(store, fitted):
    scaler = fitted["scaler"]
    first = store.save_artifact(scaler, "sklearn.preprocessing.StandardScaler", "transformer", "joblib")
    second = store.save_artifact(scaler, "sklearn.preprocessing.StandardScaler", "transformer", "joblib")
    assert first == second
    path = store.get_artifact_path(first)
    assert path == store.workspace_path / "artifacts" / first[:2] / f"{first}.joblib"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first
    row = store.get_artifact(first)
    # claims are the references committed chains hold: none yet
    assert row["ref_count"] == 0 and row["format"] == "joblib" and row["size_bytes"] == path.stat().st_size
    run_id = store.begin_run("exp", {}, [])
    pid = store.begin_pipeline(run_id, "p", {}, [], "wheat", "h")
    store.save_chain(pid, [{"step_idx": 0, "operator_class": "m"}], 0, "m", "", "per_fold",
                     {"0": first, "1": second}, {})
    assert store.get_artifact(first)["ref_count"] == 0  # in flight: no claim yet
    store.complete_pipeline(pid, 0.1, 0.1, "rmse", 1)
    assert store.get_artifact(first)["ref_count"] == 2
    third = store.save_artifact(scaler, "sklearn.preprocessing.StandardScaler", "transformer", "joblib")
    assert third == first and store.get_artifact(first)["ref_count"] == 2
    assert len(list((store.workspace_path / "artifacts").rglob("*.joblib"))) == 1


def test_round_trip_joblib_and_cloudpickle(store, regression_data):
    X, y = regression_data
    for fmt, ext, alpha in (("joblib", "joblib", 0.5), ("cloudpickle", "pkl", 0.7)):
        model = Ridge(alpha=alpha).fit(X, y)
        artifact_id = store.save_artifact(model, "sklearn.linear_model.Ridge", "model", fmt)
        assert store.get_artifact_path(artifact_id).read_bytes()[:1] == b"\x80"  # a pickle
        loaded = store.load_artifact(artifact_id)  # from the buffer
        np.testing.assert_allclose(loaded.predict(X), model.predict(X))
        store.flush()
        with WorkspaceStore(store.config) as other:  # from disk, another store
            np.testing.assert_allclose(other.load_artifact(artifact_id).predict(X), model.predict(X))
            assert other.get_artifact_path(artifact_id).suffix == f".{ext}"
            if fmt == "joblib":  # readable by plain joblib, as the standalone scripts do
                import joblib

                restored = joblib.load(other.get_artifact_path(artifact_id))
                np.testing.assert_allclose(restored.predict(X), model.predict(X))


def test_unknown_format_refused(store):
    with pytest.raises(InvalidInputError, match="artifact format 'pickle5'"):
        store.save_artifact(StandardScaler(), "x", "transformer", "pickle5")


def test_corrupted_and_missing_files_are_detected(store, fitted):
    artifact_id = store.save_artifact(fitted["scaler"], "StandardScaler", "transformer", "joblib")
    path = store.get_artifact_path(artifact_id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=artifact_id):
        store.load_artifact(artifact_id)
    path.unlink()
    with pytest.raises(ArtifactNotFoundError, match="missing"):
        store.load_artifact(artifact_id)
    with pytest.raises(ArtifactNotFoundError, match="not in the workspace catalog"):
        store.load_artifact("0" * 64)
    with pytest.raises(KeyError):
        store.get_artifact_path("0" * 64)


def test_gc_after_delete_without_artifacts(store, fitted, regression_data):
    run_id = store.begin_run("exp", {}, [])
    write_pipeline(store, run_id, fitted, regression_data)
    assert store.artifact_stats()["count"] == 4
    store.delete_run(run_id, delete_artifacts=False)
    stats = store.artifact_stats()
    assert stats["count"] == 4 and stats["unreferenced_count"] == 4 and stats["unreferenced_bytes"] > 0
    assert len(list((store.workspace_path / "artifacts").rglob("*.joblib"))) == 4
    assert store.gc_artifacts() == 4
    assert store.artifact_stats()["count"] == 0
    assert not list((store.workspace_path / "artifacts").rglob("*.joblib"))
    assert store.gc_artifacts() == 0


def test_shared_artifact_survives_until_last_chain(store, fitted, regression_data):
    first = store.begin_run("one", {}, [])
    second = store.begin_run("two", {}, [])
    ids = write_pipeline(store, first, fitted, regression_data)
    write_pipeline(store, second, fitted, regression_data)
    assert store.get_artifact(ids["scaler_id"])["ref_count"] == 2
    store.delete_run(first)
    assert store.get_artifact(ids["scaler_id"])["ref_count"] == 1
    assert store.load_artifact(ids["scaler_id"]) is not None
    store.delete_run(second)
    assert store.get_artifact(ids["scaler_id"]) is None
    assert not store.workspace_path.joinpath("artifacts", ids["scaler_id"][:2]).exists()


def test_vacuum_keeps_data(store, fitted, regression_data):
    run_id = store.begin_run("exp", {}, [])
    write_pipeline(store, run_id, fitted, regression_data)
    keep = store.begin_run("keep", {}, [])
    write_pipeline(store, keep, fitted, regression_data)
    store.delete_run(run_id)
    store.vacuum()
    assert store.query_predictions().height == 9


def test_backup_is_a_working_workspace(store, fitted, regression_data, tmp_path):
    run_id = store.begin_run("exp", {}, [])
    ids = write_pipeline(store, run_id, fitted, regression_data)
    store.delete_prediction(ids["prediction_ids"][0])
    target = store.backup(tmp_path / "backup")
    with WorkspaceStore(target) as copy:
        assert copy.query_predictions().height == 8
        record = copy.get_prediction(ids["prediction_ids"][1], load_arrays=True)
        np.testing.assert_array_equal(record["y_true"], regression_data[1])
        assert copy.get_prediction(ids["prediction_ids"][0]) is None
        assert copy.load_artifact(ids["scaler_id"]) is not None
    with pytest.raises(InvalidInputError, match="not empty"):
        store.backup(target)
    with pytest.raises(InvalidInputError, match="outside the workspace"):
        store.backup(store.workspace_path / "inner")


def test_verify_artifacts_names_each_problem(store, fitted, regression_data):
    run_id = store.begin_run("exp", {}, [])
    ids = write_pipeline(store, run_id, fitted, regression_data)
    models = sorted(ids["model_ids"].values())
    assert store.verify_artifacts([ids["scaler_id"], *models]) == {}
    store.get_artifact_path(models[0]).write_bytes(b"tampered")
    store.get_artifact_path(models[1]).unlink()
    problems = store.verify_artifacts([ids["scaler_id"], *models, "f" * 64])
    assert set(problems) == {models[0], models[1], "f" * 64}
    assert "corrupted" in problems[models[0]] and "missing" in problems[models[1]]
    assert problems["f" * 64] == "not in the catalog"
    assert store.artifact_stats([ids["scaler_id"]])["count"] == 1
