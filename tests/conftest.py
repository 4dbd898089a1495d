"""Shared fixtures: a fresh workspace, real fitted scikit-learn objects, a helper
that writes a complete pipeline (chain, artifacts, predictions with arrays)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from n4a_store import WorkspaceStore
from pg_support import BACKENDS, postgres_database


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Contract modules (``RUN_ON_ALL_BACKENDS = True``) run once per catalog backend."""
    if getattr(metafunc.module, "RUN_ON_ALL_BACKENDS", False) and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The catalog backend a test runs on ("duckdb" unless the module runs on all)."""
    return getattr(request, "param", "duckdb")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A path for a new workspace (its files; the DuckDB catalog too on the default backend)."""
    return tmp_path / "ws"


@pytest.fixture
def location(backend: str, workspace: Path) -> Iterator[str]:
    """The store location of a fresh store on ``backend``: a path or a postgresql:// URI."""
    if backend == "duckdb":
        yield str(workspace)
        return
    with postgres_database() as url:
        yield f"{url}?file_root={workspace}"


@pytest.fixture
def store(location: str) -> Iterator[WorkspaceStore]:
    """An open WorkspaceStore on a fresh store, closed after the test."""
    s = WorkspaceStore(location)
    yield s
    s.close()


@pytest.fixture(scope="session")
def regression_data() -> tuple[np.ndarray, np.ndarray]:
    """A small spectra-like regression problem."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 30)).cumsum(axis=1)
    y = X[:, 5] * 0.5 - X[:, 20] * 0.2 + rng.normal(scale=0.1, size=60)
    return X, y


@pytest.fixture(scope="session")
def fitted(regression_data: tuple[np.ndarray, np.ndarray]) -> dict:
    """A fitted StandardScaler and PLSRegression per fold (real scikit-learn objects)."""
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.preprocessing import StandardScaler

    X, y = regression_data
    scaler = StandardScaler().fit(X)
    models = {str(f): PLSRegression(n_components=2 + f).fit(scaler.transform(X), y) for f in range(3)}
    return {"scaler": scaler, "models": models}


def write_pipeline(
    store: WorkspaceStore, run_id: str, fitted: dict, data: tuple[np.ndarray, np.ndarray],
    name: str = "0001_pls", dataset: str = "wheat", scores: tuple[float, ...] = (0.3, 0.2, 0.1),
    complete: bool = True,
) -> dict:
    """Write one pipeline the way a sweep does; return its ids."""
    X, y = data
    pid = store.begin_pipeline(run_id, name, {"steps": ["StandardScaler", "PLS"]}, [], dataset, "h")
    scaler_id = store.save_artifact(fitted["scaler"], "sklearn.preprocessing.StandardScaler", "transformer", "joblib")
    fold_ids = {
        fold: store.save_artifact(model, "sklearn.cross_decomposition.PLSRegression", "model", "joblib")
        for fold, model in fitted["models"].items()
    }
    steps = [
        {"step_idx": 0, "operator_class": "sklearn.preprocessing.StandardScaler", "params": {},
         "artifact_id": scaler_id, "stateless": False},
        {"step_idx": 1, "operator_class": "sklearn.cross_decomposition.PLSRegression",
         "params": {"n_components": 2}, "artifact_id": None, "stateless": False},
    ]
    chain_id = store.save_chain(pid, steps, 1, "sklearn.cross_decomposition.PLSRegression",
                                "StandardScaler", "per_fold", fold_ids, {"0": scaler_id})
    prediction_ids = []
    for fold, score in zip(fitted["models"], scores):
        y_pred = fitted["models"][fold].predict(fitted["scaler"].transform(X)).ravel()
        for partition, offset in (("train", -0.05), ("val", 0.0), ("test", 0.05)):
            prediction_ids.append(store.save_prediction(
                pid, chain_id, dataset, "PLS", "sklearn.cross_decomposition.PLSRegression",
                fold, partition, score + offset, score + 0.1, score - 0.1, "rmse", "regression",
                len(y), X.shape[1], {"rmse": score, "r2": 0.9}, {"n_components": 2},
                None, None, 0, 0.0, "StandardScaler",
                y_true=y, y_pred=y_pred, sample_indices=np.arange(len(y)),
            ))
    store.log_step(pid, 0, "sklearn.preprocessing.StandardScaler", "fit", duration_ms=4)
    store.log_step(pid, 1, "sklearn.cross_decomposition.PLSRegression", "fit", duration_ms=9)
    if complete:
        store.complete_pipeline(pid, min(scores), min(scores) + 0.1, "rmse", 120)
    return {"pipeline_id": pid, "chain_id": chain_id, "prediction_ids": prediction_ids,
            "scaler_id": scaler_id, "model_ids": fold_ids}
