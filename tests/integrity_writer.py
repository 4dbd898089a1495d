"""A writer doing real work on a workspace, for the crash and stress harnesses (not a test module).

It fits scikit-learn objects, saves them as artifacts, saves chains and predictions
with arrays through both paths (``save_prediction(y_true=...)`` and the seed's
two-step ``store.array_store.save_batch``), fails pipelines, deletes, runs gc and
compaction and exports, and appends one JSON line per acknowledged event to an
*ack file* (``O_APPEND``, written after the call returned):

* ``{"kind": "committed", "pipeline_id", "chain_id", "predictions": [...]}`` once
  ``complete_pipeline`` returned: the pipeline must survive (unless deleted later);
* ``{"kind": "deleting", "pipeline_id"}`` before ``delete_pipeline`` and
  ``{"kind": "deleted", "pipeline_id"}`` after it returned;
* ``{"kind": "failed", "pipeline_id"}`` after ``fail_pipeline`` returned;
* ``{"kind": "started", "run_id"}`` once the store opened and committed a new run.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from n4a_store import WorkspaceStore
from n4a_store.errors import MissingParentError

DATASET = "wheat"


class Acks:
    """The append-only ack file of one writer."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, kind: str, **fields: Any) -> None:
        """Append one event (a single write: whole lines only)."""
        os.write(self.fd, (json.dumps({"kind": kind, **fields}) + "\n").encode())


def read_acks(path: Path) -> list[dict[str, Any]]:
    """Every complete line of an ack file."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by the kill (never happens with one write)
            pass
    return out


def data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A small regression problem."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(24, 6))
    return X, X[:, 0] * 0.7 - X[:, 3] * 0.2 + rng.normal(scale=0.05, size=24)


def begin_pipeline(store: WorkspaceStore, run_id: str, name: str) -> str:
    """Register a pipeline on the harness dataset."""
    return store.begin_pipeline(run_id, name, {"model": "Ridge"}, [], DATASET, "h")


def fit_and_save(store: WorkspaceStore, pid: str, rng: random.Random, X: np.ndarray,
                 y: np.ndarray, two_step: bool) -> dict[str, Any]:
    """Fit, save artifacts, the chain and 4 predictions with arrays; return the ids."""
    scaler = StandardScaler().fit(X)  # identical bytes every time: one shared, many-claimed artifact
    Xs = scaler.transform(X)
    alpha = rng.uniform(0.01, 10.0)
    models = {str(f): Ridge(alpha=alpha + f).fit(Xs, y) for f in range(2)}
    scaler_id = store.save_artifact(scaler, "sklearn.preprocessing.StandardScaler", "transformer")
    fold_ids = {f: store.save_artifact(m, "sklearn.linear_model.Ridge", "model") for f, m in models.items()}
    steps = [
        {"step_idx": 0, "operator_class": "sklearn.preprocessing.StandardScaler", "params": {},
         "artifact_id": scaler_id, "stateless": False},
        {"step_idx": 1, "operator_class": "sklearn.linear_model.Ridge", "params": {"alpha": alpha},
         "artifact_id": None, "stateless": False},
    ]
    chain_id = store.save_chain(pid, steps, 1, "sklearn.linear_model.Ridge", "StandardScaler",
                                "per_fold", fold_ids, {"0": scaler_id})
    predictions, records = [], []
    for fold, model in models.items():
        y_pred = model.predict(Xs)
        for partition in ("val", "test"):
            arrays = {} if two_step else {"y_true": y, "y_pred": y_pred}
            pred = store.save_prediction(
                pid, chain_id, DATASET, "Ridge", "sklearn.linear_model.Ridge", fold, partition,
                0.1, 0.2, 0.05, "rmse", "regression", len(y), X.shape[1], {"rmse": 0.1}, {},
                None, None, 0, 0.0, "StandardScaler", **arrays)
            predictions.append(pred)
            records.append({"prediction_id": pred, "dataset_name": DATASET, "y_true": y,
                            "y_pred": y_pred})
    if two_step:
        store.array_store.save_batch(records)
    store.log_step(pid, 1, "sklearn.linear_model.Ridge", "fit", duration_ms=3)
    return {"pipeline_id": pid, "chain_id": chain_id, "predictions": predictions}


def write_pipeline(store: WorkspaceStore, run_id: str, rng: random.Random, X: np.ndarray,
                   y: np.ndarray, acks: Acks, name: str) -> dict[str, Any]:
    """One whole pipeline, acknowledged once ``complete_pipeline`` returned."""
    pid = begin_pipeline(store, run_id, name)
    ids = fit_and_save(store, pid, rng, X, y, two_step=rng.random() < 0.5)
    store.complete_pipeline(pid, 0.1, 0.2, "rmse", 5)
    acks.write("committed", **ids)
    return ids


def run_writer(location: str, ack_path: str, seed: int, *, maintenance: bool = True,
               two_in_flight: bool = True, deadline: float | None = None,
               lock_timeout: float = 60.0) -> None:
    """Write until killed (or until ``deadline``, a ``time.time()`` value)."""
    rng = random.Random(seed)
    acks = Acks(Path(ack_path))
    X, y = data(seed)
    store = WorkspaceStore(location, lock_timeout=lock_timeout)
    run_id = store.begin_run(f"writer-{seed}", {"seed": seed}, [{"name": DATASET}])
    acks.write("started", run_id=run_id)  # the store opened and took a write
    mine: list[str] = []
    n = 0
    while deadline is None or time.time() < deadline:
        n += 1
        roll = rng.random()
        if roll < 0.55:
            mine.append(write_pipeline(store, run_id, rng, X, y, acks, f"p{n}")["pipeline_id"])
        elif roll < 0.63 and two_in_flight:
            # two pipelines in flight in one process (a caller interleaving them)
            a, b = begin_pipeline(store, run_id, f"a{n}"), None
            ids_a = fit_and_save(store, a, rng, X, y, two_step=False)
            b = begin_pipeline(store, run_id, f"b{n}")
            ids_b = fit_and_save(store, b, rng, X, y, two_step=True)
            store.complete_pipeline(a, 0.1, 0.2, "rmse", 5)
            acks.write("committed", **ids_a)
            store.complete_pipeline(b, 0.1, 0.2, "rmse", 5)
            acks.write("committed", **ids_b)
            mine += [a, b]
        elif roll < 0.70:
            # a pipeline that fails after saving its artifacts, before its chain
            pid = begin_pipeline(store, run_id, f"f{n}")
            store.save_artifact(StandardScaler().fit(X * rng.uniform(1, 2)),
                                "sklearn.preprocessing.StandardScaler", "transformer")
            store.fail_pipeline(pid, "diverged")
            acks.write("failed", pipeline_id=pid)
        elif roll < 0.78 and mine:
            victim = mine.pop(rng.randrange(len(mine)))
            acks.write("deleting", pipeline_id=victim)
            store.delete_pipeline(victim)
            acks.write("deleted", pipeline_id=victim)
        elif roll < 0.84 and maintenance:
            store.gc_artifacts()
        elif roll < 0.90 and maintenance:
            store.compact_arrays()
        elif roll < 0.96 and mine:
            pid = rng.choice(mine)
            chain = store.get_chains_for_pipeline(pid)
            if chain.height:
                out = store.workspace_path / "exports" / f"{pid}.n4a"
                try:
                    store.export_chain(chain["chain_id"][0], out)
                except MissingParentError:  # another process deleted the pipeline meanwhile
                    if store.get_chain(chain["chain_id"][0]) is not None:
                        raise
            store.export_predictions_parquet(store.workspace_path / "exports" / "preds.parquet",
                                             pipeline_id=pid)
        else:
            store.flush()
    store.close()
