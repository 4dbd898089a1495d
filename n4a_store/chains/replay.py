"""Replay a stored chain on new data, inside a workspace.

``replay_chain(store, chain_id, X)`` compiles the chain once per process into a
:class:`~n4a_store.chains.engine.ReplayPlan` (fitted objects loaded and
hash-verified) and caches it, so a warm call touches neither the catalog nor
the disk. Loaded artifacts are cached by artifact id, which is the SHA-256 of
their bytes, so two chains sharing a fitted object load it once.

Caches are per process and bounded (least recently used entries are dropped).
A chain is immutable once saved, so a cached plan never goes stale while the
chain exists; call :func:`clear_replay_cache` after deleting runs if replays of
deleted chains must fail in the same process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from n4a_store.chains.engine import ReplayPlan
from n4a_store.errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    InvalidInputError,
    MissingParentError,
    N4AError,
)

__all__ = [
    "ArtifactLoadError",
    "ReplayPlan",
    "clear_replay_cache",
    "load_chain_plan",
    "replay_chain",
    "set_cache_limits",
]


class ArtifactLoadError(N4AError):
    """An artifact's bytes are intact but cannot be deserialised (e.g. a library is missing)."""


class _LRU:
    """A small thread-safe least-recently-used mapping."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)

    def resize(self, max_items: int) -> None:
        with self._lock:
            self.max_items = max_items
            while len(self._data) > max_items:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


ARTIFACT_CACHE = _LRU(512)  # artifact id (content hash) -> deserialised object
PLAN_CACHE = _LRU(128)      # (workspace path, chain id) -> ReplayPlan


def set_cache_limits(*, artifacts: int | None = None, plans: int | None = None) -> None:
    """Change how many loaded artifacts and compiled chains the process keeps."""
    for cache, limit in ((ARTIFACT_CACHE, artifacts), (PLAN_CACHE, plans)):
        if limit is not None:
            if limit < 0:
                raise InvalidInputError("cache limits must be >= 0")
            cache.resize(limit)


def clear_replay_cache() -> None:
    """Forget every cached artifact and compiled chain of this process."""
    ARTIFACT_CACHE.clear()
    PLAN_CACHE.clear()


def load_chain_plan(store: Any, chain_id: str, *, use_cache: bool = True) -> ReplayPlan:
    """Compile a workspace chain into a :class:`ReplayPlan` (cached per process).

    The plan exposes ``predict(X, wavelengths=None)``, ``predict_proba(X, wavelengths=None)``,
    ``classes``, ``task_type``, ``fold_ids`` and ``n_features_in``.

    Raises:
        MissingParentError: the chain does not exist.
        ArtifactNotFoundError / ArtifactIntegrityError / ArtifactLoadError: an artifact is
            missing, corrupted or cannot be deserialised; the message names artifact and chain.
    """
    key = (str(store.workspace_path), chain_id)
    if use_cache:
        plan = PLAN_CACHE.get(key)
        if plan is not None:
            return plan
    chain = store.get_chain(chain_id)
    if chain is None:
        raise MissingParentError("chain", chain_id)

    def load(artifact_id: str, context: str) -> Any:
        return load_store_artifact(store, artifact_id, chain_id, context, use_cache=use_cache)

    plan = ReplayPlan(chain, load)
    if use_cache:
        PLAN_CACHE.put(key, plan)
    return plan


def replay_chain(store: Any, chain_id: str, X: Any, wavelengths: Any = None, *,
                 proba: bool = False, use_cache: bool = True) -> np.ndarray:
    """Replay a stored chain on new data.

    Args:
        store: An open ``WorkspaceStore``.
        chain_id: Chain to replay.
        X: Feature matrix ``(n_samples, n_features)`` (numpy array or polars DataFrame).
        wavelengths: One value per feature, passed to wavelength-aware steps.
        proba: Classification only: return the fold-averaged class probabilities
            ``(n_samples, n_classes)`` instead of labels; the column order is
            ``load_chain_plan(store, chain_id).classes``.
        use_cache: Reuse loaded artifacts and the compiled chain across calls.

    Returns:
        Regression: fold-averaged predictions, 1-D (2-D for multi-target models).
        Classification: the labels with the highest fold-averaged probability.
    """
    plan = load_chain_plan(store, chain_id, use_cache=use_cache)
    if proba:
        return plan.predict_proba(X, wavelengths)
    return plan.predict(X, wavelengths)


def load_store_artifact(store: Any, artifact_id: str, chain_id: str, context: str, *,
                        use_cache: bool = True) -> Any:
    """Load one artifact for a chain, naming artifact, chain and step in any error."""
    if use_cache:
        obj = ARTIFACT_CACHE.get(artifact_id)
        if obj is not None:
            return obj
    where = f"artifact {artifact_id!r} of chain {chain_id!r} ({context})"
    try:
        obj = store.load_artifact(artifact_id)
    except ArtifactNotFoundError as error:
        raise ArtifactNotFoundError(f"{where} is missing: {error}") from error
    except ArtifactIntegrityError as error:
        raise ArtifactIntegrityError(f"{where} failed its integrity check: {error}") from error
    except N4AError:
        raise
    except Exception as error:  # unpickling failed: missing module, version mismatch...
        raise ArtifactLoadError(
            f"{where} cannot be deserialised: {type(error).__name__}: {error}") from error
    if use_cache:
        ARTIFACT_CACHE.put(artifact_id, obj)
    return obj
