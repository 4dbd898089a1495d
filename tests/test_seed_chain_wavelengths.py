"""A chain written with the seed's step fields only still gets wavelengths on replay."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cross_decomposition import PLSRegression

from n4a_store import predict


class NeedsWavelengths(TransformerMixin, BaseEstimator):
    """Keeps the columns whose wavelength is at least ``low``; refuses to run without them."""

    def __init__(self, low: float = 0.0) -> None:
        self.low = low

    def fit(self, X, y=None, wavelengths=None):
        return self

    def transform(self, X, wavelengths=None):
        if wavelengths is None:
            raise ValueError("wavelengths are required")
        return np.asarray(X)[:, np.asarray(wavelengths) >= self.low]


def _seed_chain(store, X, y, wavelengths):
    run_id = store.begin_run("seed", {}, [])
    pid = store.begin_pipeline(run_id, "p", {}, [], "wheat", "h")
    step = NeedsWavelengths(low=float(wavelengths[10])).fit(X)
    Z = step.transform(X, wavelengths=wavelengths)
    models = {str(f): PLSRegression(n_components=2 + f).fit(Z, y) for f in range(2)}
    step_id = store.save_artifact(step, f"{__name__}.NeedsWavelengths", "transformer", "joblib")
    fold_ids = {f: store.save_artifact(m, "sklearn.cross_decomposition.PLSRegression", "model",
                                       "joblib") for f, m in models.items()}
    steps = [  # exactly the seed's fields: no uses_wavelengths, no input_wavelengths
        {"step_idx": 0, "operator_class": f"{__name__}.NeedsWavelengths",
         "params": {"low": float(wavelengths[10])}, "artifact_id": step_id, "stateless": False},
        {"step_idx": 1, "operator_class": "sklearn.cross_decomposition.PLSRegression",
         "params": {}, "artifact_id": None, "stateless": False},
    ]
    chain_id = store.save_chain(pid, steps, 1, "sklearn.cross_decomposition.PLSRegression",
                                "NeedsWavelengths", "per_fold", fold_ids, {"0": step_id})
    expected = np.mean([m.predict(Z).ravel() for m in models.values()], axis=0)
    return chain_id, expected


def test_replay_and_bundle_pass_wavelengths_to_seed_steps(store, regression_data, tmp_path):
    X, y = regression_data
    wavelengths = np.linspace(900.0, 1700.0, X.shape[1])
    chain_id, expected = _seed_chain(store, X, y, wavelengths)
    np.testing.assert_allclose(store.replay_chain(chain_id, X, wavelengths=wavelengths), expected)
    bundle = store.export_chain(chain_id, tmp_path / "seed.n4a")
    np.testing.assert_allclose(predict(bundle, X, wavelengths=wavelengths), expected)
    with pytest.raises(ValueError, match="wavelengths are required"):
        store.replay_chain(chain_id, X)  # without wavelengths the operator still refuses
