"""ChainBuilder: trace validation, save_chain arguments, artifact saving and ref counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import Ridge
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from n4a_store import ChainBuilder, ExecutionTrace, TraceStep, WorkspaceStore
from n4a_store.errors import InvalidInputError

SCALER = "sklearn.preprocessing.StandardScaler"
PLS = "sklearn.cross_decomposition.PLSRegression"


@pytest.fixture()
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(30, 12))
    y = X[:, 0] * 2.0 + rng.normal(scale=0.1, size=30)
    return X, y


@pytest.fixture()
def store(tmp_path):
    with WorkspaceStore(tmp_path / "ws") as s:
        yield s


def _folds(n, k=3):
    return {str(i): np.arange(n) % k != i for i in range(k)}


def _per_fold_trace(X, y, k=3):
    folds = _folds(len(X), k)
    scalers = {f: StandardScaler().fit(X[m]) for f, m in folds.items()}
    models = {f: PLSRegression(2).fit(scalers[f].transform(X[m]), y[m]) for f, m in folds.items()}
    return ExecutionTrace([
        TraceStep(0, SCALER, {"with_mean": True}, per_fold=scalers),
        TraceStep(1, PLS, {"n_components": np.int64(2), "tol": np.float32(1e-6)},
                  per_fold=models, is_model=True),
    ])


def _pipeline(store):
    run_id = store.begin_run("run", {}, [])
    return run_id, store.begin_pipeline(run_id, "p", {}, [], "synthetic", "hash")


def test_build_returns_save_chain_arguments(store, data):
    X, y = data
    kwargs = ChainBuilder(_per_fold_trace(X, y), store).build()
    assert set(kwargs) == {"steps", "model_step_idx", "model_class", "preprocessings",
                           "fold_strategy", "fold_artifacts", "shared_artifacts",
                           "branch_path", "source_index"}
    assert kwargs["model_step_idx"] == 1
    assert kwargs["model_class"] == PLS
    assert kwargs["preprocessings"] == "StandardScaler"
    assert list(kwargs["fold_artifacts"]) == ["0", "1", "2"]
    assert kwargs["shared_artifacts"] == {}
    scaler_step, model_step = kwargs["steps"]
    assert scaler_step["artifact_id"] is None and len(scaler_step["fold_artifacts"]) == 3
    assert scaler_step["n_features_in"] == 12
    assert model_step["is_model"] and model_step["task_type"] == "regression"
    assert model_step["fold_artifacts"] == kwargs["fold_artifacts"]
    # numpy parameter values become plain JSON values
    assert model_step["params"] == {"n_components": 2, "tol": pytest.approx(1e-6)}
    assert type(model_step["params"]["n_components"]) is int

    _, pipeline_id = _pipeline(store)
    chain_id = store.save_chain(pipeline_id, **kwargs)
    chain = store.get_chain(chain_id)
    assert chain["steps"] == kwargs["steps"]
    for fold, artifact_id in kwargs["fold_artifacts"].items():
        model = store.load_artifact(artifact_id)
        assert isinstance(model, PLSRegression)
        assert store.get_artifact(artifact_id)["artifact_type"] == "model"


def test_shared_steps_go_to_shared_artifacts(store, data):
    X, y = data
    scaler = StandardScaler().fit(X)
    trace = ExecutionTrace([
        TraceStep(0, SCALER, shared=scaler),
        TraceStep(1, "sklearn.linear_model.Ridge", shared=Ridge().fit(scaler.transform(X), y),
                  is_model=True),
    ], fold_strategy="shared", branch_path=[0, 2], source_index=1)
    kwargs = ChainBuilder(trace, store).build()
    assert kwargs["fold_artifacts"] == {}
    assert set(kwargs["shared_artifacts"]) == {"0", "1"}
    assert kwargs["steps"][0]["artifact_id"] == kwargs["shared_artifacts"]["0"]
    assert kwargs["branch_path"] == [0, 2] and kwargs["source_index"] == 1


def test_unpicklable_by_joblib_falls_back_to_cloudpickle(store, data):
    X, y = data
    log1p = FunctionTransformer(lambda a: np.log1p(np.abs(a))).fit(X)
    trace = ExecutionTrace([
        TraceStep(0, "sklearn.preprocessing.FunctionTransformer", shared=log1p, stateless=True),
        TraceStep(1, "sklearn.linear_model.Ridge", per_fold={"0": Ridge().fit(log1p.transform(X), y)},
                  is_model=True),
    ])
    kwargs = ChainBuilder(trace, store).build()
    artifact_id = kwargs["shared_artifacts"]["0"]
    assert store.get_artifact(artifact_id)["format"] == "cloudpickle"
    restored = store.load_artifact(artifact_id)
    np.testing.assert_array_equal(restored.transform(X), log1p.transform(X))


def test_ref_counts_are_released_when_the_run_is_deleted(store, data):
    X, y = data
    run_id, pipeline_id = _pipeline(store)
    store.save_chain(pipeline_id, **ChainBuilder(_per_fold_trace(X, y), store).build())
    store.complete_pipeline(pipeline_id, 0.1, 0.2, "rmse", 1)
    stats = store.artifact_stats()
    assert stats["count"] > 0 and stats["unreferenced_count"] == 0
    store.delete_run(run_id)
    store.gc_artifacts()
    assert store.artifact_stats()["count"] == 0


def _model(X, y):
    return PLSRegression(2).fit(X, y)


@pytest.mark.parametrize("mutate, message", [
    (lambda t: setattr(t, "steps", []), "no steps"),
    (lambda t: setattr(t.steps[1], "is_model", False), "exactly one model step"),
    (lambda t: setattr(t.steps[0], "is_model", True), "exactly one model step"),
    (lambda t: t.steps.reverse(), "must be the last step"),
    (lambda t: setattr(t, "fold_strategy", "bagged"), "unknown fold_strategy"),
    (lambda t: setattr(t, "task_type", "ranking"), "unknown task_type"),
    (lambda t: t.steps[0].per_fold.pop("2"), "do not match the model's fold ids"),
    (lambda t: setattr(t.steps[0], "per_fold", {}), "has no fitted object"),
    (lambda t: setattr(t.steps[0], "shared", StandardScaler()), "both a shared fitted object"),
    (lambda t: setattr(t, "fold_strategy", "shared"), "fold_strategy is 'shared'"),
    (lambda t: setattr(t.steps[1], "step_idx", 0), "strictly increasing"),
    (lambda t: setattr(t.steps[0], "per_fold", {f: object() for f in "012"}), "no transform()"),
])
def test_invalid_traces_are_refused(store, data, mutate, message):
    X, y = data
    trace = _per_fold_trace(X, y)
    mutate(trace)
    with pytest.raises(InvalidInputError, match=message):
        ChainBuilder(trace, store).build()


def test_per_fold_transformer_needs_per_fold_model(store, data):
    X, y = data
    scalers = {f: StandardScaler().fit(X[m]) for f, m in _folds(len(X)).items()}
    trace = ExecutionTrace([TraceStep(0, SCALER, per_fold=scalers),
                            TraceStep(1, PLS, shared=_model(X, y), is_model=True)])
    with pytest.raises(InvalidInputError, match="model step is shared"):
        ChainBuilder(trace, store).build()


def test_classifier_without_predict_proba_is_accepted(store):
    from sklearn.linear_model import RidgeClassifier

    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 6))
    y = np.where(X[:, 0] > 0, "high", "low")
    models = {f: RidgeClassifier().fit(X[m], y[m]) for f, m in _folds(len(X)).items()}
    trace = ExecutionTrace([TraceStep(0, "sklearn.linear_model.RidgeClassifier", per_fold=models,
                                      is_model=True)], task_type="classification")
    kwargs = ChainBuilder(trace, store).build()
    assert kwargs["steps"][0]["task_type"] == "classification"
    assert sorted(kwargs["fold_artifacts"]) == ["0", "1", "2"]


def test_trace_wavelengths_are_stored_on_the_first_step(store, data):
    X, y = data
    trace = _per_fold_trace(X, y)
    trace.wavelengths = np.linspace(900.0, 1700.0, X.shape[1])
    steps = ChainBuilder(trace, store).build()["steps"]
    assert steps[0]["input_wavelengths"] == pytest.approx(list(np.linspace(900.0, 1700.0, 12)))
    assert "input_wavelengths" not in steps[1]
    trace.wavelengths = [1.0, 2.0]
    with pytest.raises(InvalidInputError, match="2 wavelengths but the first step was fitted on 12"):
        ChainBuilder(trace, store).build()
