"""replay_chain on real chemotools / scikit-learn chains stored in a real workspace."""

from __future__ import annotations

import numpy as np
import pytest
from chemotools.datasets import load_coffee, load_fermentation_train
from chemotools.derivative import SavitzkyGolay
from chemotools.scatter import StandardNormalVariate
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from n4a_store import ChainBuilder, ExecutionTrace, TraceStep, WorkspaceStore, replay_chain
from n4a_store.chains.replay import clear_replay_cache, load_chain_plan
from n4a_store.errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    InvalidInputError,
    MissingParentError,
)

SNV = "chemotools.scatter.StandardNormalVariate"
SAVGOL = "chemotools.derivative.SavitzkyGolay"
SCALER = "sklearn.preprocessing.StandardScaler"
PLS = "sklearn.cross_decomposition.PLSRegression"
LOGREG = "sklearn.linear_model.LogisticRegression"


class BandSelect(TransformerMixin, BaseEstimator):
    """Keep the features whose wavelength lies in [low, high]; needs wavelengths at transform."""

    def __init__(self, low: float = 0.0, high: float = np.inf) -> None:
        self.low = low
        self.high = high

    def fit(self, X, y=None, wavelengths=None):
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X, wavelengths=None):
        if wavelengths is None:
            raise ValueError("BandSelect needs wavelengths")
        keep = (wavelengths >= self.low) & (wavelengths <= self.high)
        return np.asarray(X)[:, keep]


@pytest.fixture(scope="module")
def fermentation():
    X, y = load_fermentation_train(set_output="polars")
    wavelengths = np.array([float(c) for c in X.columns])
    return X.to_numpy(), y.to_numpy().ravel(), wavelengths


@pytest.fixture(scope="module")
def coffee():
    X, y = load_coffee(set_output="polars")
    return X.to_numpy()[:, ::4].copy(), y.to_series().to_numpy()


@pytest.fixture()
def store(tmp_path):
    clear_replay_cache()
    with WorkspaceStore(tmp_path / "ws") as s:
        yield s
    clear_replay_cache()


def folds_of(n: int, k: int = 3) -> dict[str, np.ndarray]:
    return {str(i): np.arange(n) % k != i for i in range(k)}


def save(store, trace) -> str:
    run_id = store.begin_run("replay", {}, [])
    pipeline_id = store.begin_pipeline(run_id, "p", {}, [], "data", "hash")
    chain_id = store.save_chain(pipeline_id, **ChainBuilder(trace, store).build())
    store.complete_pipeline(pipeline_id, 0.0, 0.0, "rmse", 1)
    return chain_id


def regression_chain(X, y):
    """SNV and Savitzky-Golay shared, StandardScaler and PLS per fold."""
    snv = StandardNormalVariate().fit(X)
    savgol = SavitzkyGolay(window_length=11, polyorder=2, deriv=1).fit(snv.transform(X))
    Z = savgol.transform(snv.transform(X))
    scalers, models = {}, {}
    for fold, mask in folds_of(len(X)).items():
        scalers[fold] = StandardScaler().fit(Z[mask])
        models[fold] = PLSRegression(n_components=3).fit(scalers[fold].transform(Z[mask]), y[mask])
    trace = ExecutionTrace([
        TraceStep(0, SNV, {}, shared=snv, stateless=True),
        TraceStep(1, SAVGOL, {"window_length": 11, "polyorder": 2, "deriv": 1}, shared=savgol,
                  stateless=True),
        TraceStep(2, SCALER, {}, per_fold=scalers),
        TraceStep(3, PLS, {"n_components": 3}, per_fold=models, is_model=True),
    ])

    def direct(X_new):
        Z_new = savgol.transform(snv.transform(X_new))
        preds = [models[f].predict(scalers[f].transform(Z_new)) for f in sorted(models)]
        return np.mean(np.stack(preds), axis=0).ravel()

    return trace, direct


def test_regression_replay_equals_fold_average(store, fermentation):
    X, y, _ = fermentation
    trace, direct = regression_chain(X, y)
    chain_id = save(store, trace)
    out = replay_chain(store, chain_id, X)
    assert out.shape == (len(X),)
    np.testing.assert_allclose(out, direct(X), rtol=0, atol=1e-12)
    # The store's method delegates to the same function; warm calls give identical results.
    np.testing.assert_array_equal(store.replay_chain(chain_id, X), out)
    plan = load_chain_plan(store, chain_id)
    assert plan.fold_ids == ["0", "1", "2"] and plan.n_features_in == X.shape[1]
    assert len(plan.prefix) == 2  # SNV and Savitzky-Golay run once, not once per fold


def test_shared_fold_strategy(store, fermentation):
    X, y, _ = fermentation
    snv = StandardNormalVariate().fit(X)
    Z = snv.transform(X)
    models = {f: PLSRegression(2).fit(Z[m], y[m]) for f, m in folds_of(len(X), 4).items()}
    trace = ExecutionTrace([TraceStep(0, SNV, shared=snv, stateless=True),
                            TraceStep(1, PLS, per_fold=models, is_model=True)],
                           fold_strategy="shared")
    chain_id = save(store, trace)
    expected = np.mean(np.stack([models[f].predict(Z) for f in sorted(models)]), axis=0).ravel()
    np.testing.assert_allclose(replay_chain(store, chain_id, X), expected, rtol=0, atol=1e-12)


def classification_chain(X, y, folds):
    snv = StandardNormalVariate().fit(X)
    Z = snv.transform(X)
    models = {f: LogisticRegression(max_iter=300).fit(Z[m], y[m]) for f, m in folds.items()}
    trace = ExecutionTrace([TraceStep(0, SNV, shared=snv, stateless=True),
                            TraceStep(1, LOGREG, {"max_iter": 300}, per_fold=models, is_model=True)],
                           task_type="classification")
    return trace, snv, models


def test_classification_averages_probabilities_not_labels(store, coffee):
    X, y = coffee
    trace, snv, models = classification_chain(X, y, folds_of(len(X)))
    chain_id = save(store, trace)
    Z = snv.transform(X)
    mean_proba = np.mean(np.stack([models[f].predict_proba(Z) for f in sorted(models)]), axis=0)
    classes = models["0"].classes_
    labels = replay_chain(store, chain_id, X)
    np.testing.assert_array_equal(labels, classes[np.argmax(mean_proba, axis=1)])
    proba = replay_chain(store, chain_id, X, proba=True)
    np.testing.assert_allclose(proba, mean_proba, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(load_chain_plan(store, chain_id).classes, classes)
    assert labels.dtype == classes.dtype


def test_classification_aligns_folds_with_different_classes(store, coffee):
    X, y = coffee
    labels = np.unique(y)
    missing = y != labels[0]  # fold "1" never sees the first class
    folds = {"0": np.ones(len(X), bool), "1": missing}
    trace, snv, models = classification_chain(X, y, folds)
    chain_id = save(store, trace)
    proba = replay_chain(store, chain_id, X, proba=True)
    assert proba.shape == (len(X), len(labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    Z = snv.transform(X)
    p0, p1 = models["0"].predict_proba(Z), models["1"].predict_proba(Z)
    np.testing.assert_allclose(proba[:, 0], p0[:, 0] / 2)
    np.testing.assert_allclose(proba[:, 1:], (p0[:, 1:] + p1) / 2)


def test_regression_chain_has_no_probabilities(store, fermentation):
    X, y, _ = fermentation
    chain_id = save(store, regression_chain(X, y)[0])
    with pytest.raises(InvalidInputError, match="only for classification"):
        replay_chain(store, chain_id, X, proba=True)


def test_wavelength_aware_steps_receive_wavelengths(store, fermentation):
    X, y, wavelengths = fermentation
    band = BandSelect(low=500.0, high=1500.0).fit(X)
    Z = band.transform(X, wavelengths=wavelengths)
    model = PLSRegression(2).fit(Z, y)
    trace = ExecutionTrace([
        TraceStep(0, f"{__name__}.BandSelect", {"low": 500.0, "high": 1500.0}, shared=band,
                  uses_wavelengths=True),
        TraceStep(1, PLS, per_fold={"0": model}, is_model=True),
    ])
    chain_id = save(store, trace)
    out = replay_chain(store, chain_id, X, wavelengths=wavelengths)
    np.testing.assert_array_equal(out, model.predict(Z).ravel())
    with pytest.raises(InvalidInputError, match="wavelengths must be 1-D"):
        replay_chain(store, chain_id, X, wavelengths=wavelengths[:-1])


def test_input_is_validated(store, fermentation):
    X, y, _ = fermentation
    chain_id = save(store, regression_chain(X, y)[0])
    with pytest.raises(InvalidInputError, match="must be 2-D.*reshape"):
        replay_chain(store, chain_id, X[0])
    with pytest.raises(InvalidInputError, match=f"has {X.shape[1] - 1} features but chain .* "
                                                f"fitted on {X.shape[1]}"):
        replay_chain(store, chain_id, X[:, 1:])
    with pytest.raises(InvalidInputError, match="numeric"):
        replay_chain(store, chain_id, np.full((2, X.shape[1]), "x"))
    with pytest.raises(MissingParentError, match="chain 'nope' does not exist"):
        replay_chain(store, "nope", X)


def test_corrupted_artifact_names_artifact_and_chain(store, fermentation):
    X, y, _ = fermentation
    chain_id = save(store, regression_chain(X, y)[0])
    replay_chain(store, chain_id, X)  # warm the cache
    artifact_id = store.get_chain(chain_id)["fold_artifacts"]["1"]
    path = store.get_artifact_path(artifact_id)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    # the warm cache holds verified objects, so replay keeps working without disk reads
    replay_chain(store, chain_id, X)
    clear_replay_cache()
    with pytest.raises(ArtifactIntegrityError) as info:
        replay_chain(store, chain_id, X)
    assert artifact_id in str(info.value) and chain_id in str(info.value)
    assert "step 3 (PLSRegression), fold '1'" in str(info.value)
    path.unlink()
    with pytest.raises(ArtifactNotFoundError) as info:
        replay_chain(store, chain_id, X, use_cache=False)
    assert artifact_id in str(info.value) and chain_id in str(info.value)


def test_replay_from_another_store_object(tmp_path, fermentation):
    X, y, _ = fermentation
    clear_replay_cache()
    with WorkspaceStore(tmp_path / "ws") as first:
        trace, direct = regression_chain(X, y)
        chain_id = save(first, trace)
    clear_replay_cache()
    with WorkspaceStore(tmp_path / "ws") as second:
        np.testing.assert_allclose(second.replay_chain(chain_id, X), direct(X), rtol=0, atol=1e-12)


def test_hand_written_seed_format_chain(store, coffee):
    """A chain written directly with save_chain (seed step keys only) replays too; the task
    type is inferred from the model (classes_ + predict_proba)."""
    X, y = coffee
    scaler = StandardScaler().fit(X)
    models = {f: LogisticRegression(max_iter=300).fit(scaler.transform(X[m]), y[m])
              for f, m in folds_of(len(X), 2).items()}
    run_id = store.begin_run("manual", {}, [])
    pipeline_id = store.begin_pipeline(run_id, "p", {}, [], "coffee", "h")
    scaler_id = store.save_artifact(scaler, SCALER, "transformer", "joblib")
    fold_ids = {f: store.save_artifact(m, LOGREG, "model", "joblib") for f, m in models.items()}
    steps = [{"step_idx": 0, "operator_class": SCALER, "params": {}, "artifact_id": scaler_id,
              "stateless": False},
             {"step_idx": 1, "operator_class": LOGREG, "params": {}, "artifact_id": None,
              "stateless": False}]
    chain_id = store.save_chain(pipeline_id, steps, 1, LOGREG, "StandardScaler", "per_fold",
                                fold_ids, {"0": scaler_id})
    Z = scaler.transform(X)
    mean_proba = (models["0"].predict_proba(Z) + models["1"].predict_proba(Z)) / 2
    np.testing.assert_allclose(replay_chain(store, chain_id, X, proba=True), mean_proba,
                               rtol=0, atol=1e-12)
    np.testing.assert_array_equal(replay_chain(store, chain_id, X),
                                  models["0"].classes_[np.argmax(mean_proba, axis=1)])


def test_majority_vote_breaks_ties_by_smallest_label():
    from n4a_store.chains.engine import majority_vote

    folds = [np.array(["b", "c", "a", "c"]), np.array(["a", "c", "b", "b"]),
             np.array(["b", "a", "c", "a"]), np.array(["a", "a", "a", "b"])]
    # sample 0: a,b tie 2-2 -> a; 1: a,c tie -> a; 2: a wins 2-1-1; 3: b,c,a -> b 2 votes
    np.testing.assert_array_equal(majority_vote(folds), ["a", "a", "a", "b"])
    np.testing.assert_array_equal(majority_vote([np.array([3, 1]), np.array([1, 3])]), [1, 1])


def test_classifier_without_predict_proba_votes_over_folds(store, coffee):
    from sklearn.linear_model import RidgeClassifier

    X, y = coffee
    snv = StandardNormalVariate().fit(X)
    Z = snv.transform(X)
    folds = folds_of(len(X), k=4)
    models = {f: RidgeClassifier(alpha=a).fit(Z[m], y[m])
              for (f, m), a in zip(folds.items(), (0.01, 1.0, 100.0, 1e4))}
    trace = ExecutionTrace([
        TraceStep(0, SNV, {}, shared=snv, stateless=True),
        TraceStep(1, "sklearn.linear_model.RidgeClassifier", {}, per_fold=models, is_model=True),
    ], task_type="classification")
    chain_id = save(store, trace)
    votes = np.stack([models[f].predict(Z) for f in sorted(models)])
    expected = []
    for column in votes.T:
        labels, counts = np.unique(column, return_counts=True)
        expected.append(labels[np.argmax(counts)])  # first of the sorted tied labels
    np.testing.assert_array_equal(replay_chain(store, chain_id, X), expected)
    with pytest.raises(InvalidInputError, match="RidgeClassifier.*no predict_proba"):
        replay_chain(store, chain_id, X, proba=True)
    assert load_chain_plan(store, chain_id).has_proba is False


def test_chain_with_training_wavelengths_reorders_or_refuses_columns(store, fermentation):
    X, y, wavelengths = fermentation
    trace, direct = regression_chain(X, y)
    trace.wavelengths = wavelengths.tolist()
    chain_id = save(store, trace)
    expected = direct(X[:10])
    np.testing.assert_allclose(replay_chain(store, chain_id, X[:10], wavelengths=wavelengths),
                               expected, rtol=1e-10)
    order = np.random.default_rng(0).permutation(len(wavelengths))
    shuffled = replay_chain(store, chain_id, X[:10, order], wavelengths=wavelengths[order])
    np.testing.assert_allclose(shuffled, expected, rtol=1e-10)
    rounded = replay_chain(store, chain_id, X[:10], wavelengths=np.round(wavelengths + 0.004, 2))
    np.testing.assert_allclose(rounded, expected, rtol=1e-10)  # rounded column names still match
    other = wavelengths.copy()
    other[5] = 5000.0
    with pytest.raises(InvalidInputError, match=r"not in training \[5000.0\], missing \[" +
                       f"{wavelengths[5]}"):
        replay_chain(store, chain_id, X[:10], wavelengths=other)
