"""``predict(bundle_path, X)``: predict from a ``.n4a`` bundle without a workspace.

Every call re-reads the bundle and verifies every member's SHA-256 before
using it, so a bundle altered between calls is refused. Deserialised artifacts
and the compiled chain are cached per process by content hash, so repeated
calls on an unchanged bundle only pay for reading and hashing it.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from n4a_store.bundles.layout import installed_version
from n4a_store.bundles.safety import VerifiedBundle, read_verified_bundle
from n4a_store.chains.engine import ReplayPlan
from n4a_store.chains.replay import ARTIFACT_CACHE, PLAN_CACHE, ArtifactLoadError
from n4a_store.errors import N4AError

__all__ = ["BundleVersionWarning", "load_bundle", "predict"]


class BundleVersionWarning(UserWarning):
    """A library version differs from the one recorded when the bundle was exported."""


def load_bundle(bundle_path: str | Path, *, use_cache: bool = True,
                expected_sha256: str | None = None, key: str | bytes | None = None) -> ReplayPlan:
    """Verify a bundle and return its compiled :class:`~n4a_store.chains.engine.ReplayPlan`.

    The plan offers ``predict``, ``predict_proba``, ``classes`` and ``n_features_in``.
    ``expected_sha256`` pins the file's hash; ``key`` (default ``$N4A_BUNDLE_KEY``)
    requires a valid signature. Both are checked before anything is unpickled.
    """
    bundle = read_verified_bundle(bundle_path, expected_sha256=expected_sha256, key=key)
    key = ("bundle", bundle.manifest_sha256)
    if use_cache:
        plan = PLAN_CACHE.get(key)
        if plan is not None:
            return plan
    check_versions(bundle)
    plan = ReplayPlan(bundle.chain, _loader(bundle, use_cache))
    if use_cache:
        PLAN_CACHE.put(key, plan)
    return plan


def predict(bundle_path: str | Path, X: Any, wavelengths: Any = None, *,
            proba: bool = False, use_cache: bool = True,
            expected_sha256: str | None = None, key: str | bytes | None = None) -> np.ndarray:
    """Predict with a ``.n4a`` bundle; returns exactly what ``replay_chain`` returns.

    Args:
        bundle_path: Path of the ``.n4a`` file.
        X: Feature matrix ``(n_samples, n_features)``.
        wavelengths: One value per feature, for wavelength-aware steps.
        proba: Classification only: return fold-averaged class probabilities, columns in
            the order of ``load_bundle(bundle_path).classes``.
        use_cache: Reuse deserialised artifacts across calls (hashes are always re-checked).
        expected_sha256: The SHA-256 the bundle file must have (proves it is the published one).
        key: Signing key (default ``$N4A_BUNDLE_KEY``); if set, the bundle must be signed with it.
    """
    plan = load_bundle(bundle_path, use_cache=use_cache, expected_sha256=expected_sha256, key=key)
    return plan.predict_proba(X, wavelengths) if proba else plan.predict(X, wavelengths)


def check_versions(bundle: VerifiedBundle) -> list[str]:
    """Warn (BundleVersionWarning) about libraries whose installed version differs."""
    differences = []
    for name, recorded in sorted((bundle.manifest.get("libraries") or {}).items()):
        if name == "n4a":
            continue
        current = installed_version(name)
        if current is not None and current != recorded:
            differences.append(f"{name} {recorded} (bundle) vs {current} (installed)")
    if differences:
        warnings.warn(f"{bundle.path.name} was exported with other library versions: "
                      + "; ".join(differences), BundleVersionWarning, stacklevel=3)
    return differences


def deserialize(data: bytes, fmt: str) -> Any:
    """Unpickle verified artifact bytes written with joblib or cloudpickle."""
    if fmt == "joblib":
        import joblib

        return joblib.load(io.BytesIO(data))
    import cloudpickle

    return cloudpickle.loads(data)


def _loader(bundle: VerifiedBundle, use_cache: bool):
    chain_id = bundle.chain.get("chain_id")

    def load(artifact_id: str, context: str) -> Any:
        if use_cache:
            obj = ARTIFACT_CACHE.get(artifact_id)
            if obj is not None:
                return obj
        fmt, data = bundle.artifacts[artifact_id]
        try:
            obj = deserialize(data, fmt)
        except N4AError:
            raise
        except Exception as error:
            raise ArtifactLoadError(
                f"artifact {artifact_id!r} of chain {chain_id!r} ({context}) in "
                f"{bundle.path.name} cannot be deserialised: {type(error).__name__}: {error}") from error
        if use_cache:
            ARTIFACT_CACHE.put(artifact_id, obj)
        return obj

    return load
