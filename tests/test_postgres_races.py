"""PostgreSQL catalog under contention: writer processes racing gc and deletes.

No file lock serialises PostgreSQL writers, so this checks the guarantees that the
advisory lock and row locks give instead: gc never removes an artifact file that a
surviving chain names, claims equal the references chains hold, and no pipeline is
ever visible half-written.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter

import pytest

from n4a_store import WorkspaceStore
from n4a_store.workspace.writes import chain_artifact_refs

WRITERS = 3
PIPELINES = 8


def _fitted():
    import numpy as np
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)  # identical objects in every process: shared artifacts
    X = rng.normal(size=(40, 12))
    y = X[:, 0] + rng.normal(scale=0.1, size=40)
    scaler = StandardScaler().fit(X)
    return (X, y), {"scaler": scaler, "models": {
        str(f): PLSRegression(n_components=1 + f).fit(scaler.transform(X), y) for f in range(3)}}


def _writer(location: str, keep_run: str, doomed_run: str, worker: int, start_at: float) -> None:
    from conftest import write_pipeline

    data, fitted = _fitted()
    while time.time() < start_at:
        time.sleep(0.005)
    with WorkspaceStore(location, lock_timeout=120) as store:
        for i in range(PIPELINES):
            run = keep_run if i % 2 == 0 else doomed_run
            write_pipeline(store, run, fitted, data, name=f"w{worker}-p{i}")


def _janitor(location: str, doomed_run: str, start_at: float, stop_at: float) -> None:
    while time.time() < start_at:
        time.sleep(0.005)
    with WorkspaceStore(location, lock_timeout=120) as store:
        while time.time() < stop_at:
            for pid in store.list_pipelines(run_id=doomed_run).filter(status="completed")["pipeline_id"]:
                store.delete_pipeline(pid, delete_artifacts=True)
            store.gc_artifacts()
            time.sleep(0.01)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_writers_race_deletes_and_gc(location, workspace):
    with WorkspaceStore(location) as store:
        keep = store.begin_run("keep", {}, [])
        doomed = store.begin_run("doomed", {}, [])
    ctx = mp.get_context("spawn")
    start_at = time.time() + 4.0
    writers = [ctx.Process(target=_writer, args=(location, keep, doomed, w, start_at))
               for w in range(WRITERS)]
    janitor = ctx.Process(target=_janitor, args=(location, doomed, start_at, start_at + 12))
    for p in writers + [janitor]:
        p.start()
    for p in writers + [janitor]:
        p.join(timeout=200)
        assert p.exitcode == 0

    with WorkspaceStore(location) as store:
        store.gc_artifacts()
        kept = store.list_pipelines(run_id=keep)
        assert kept.height == WRITERS * PIPELINES // 2
        assert set(kept["status"]) == {"completed"}
        assert store.query_predictions(run_id=keep).height == kept.height * 9
        references: Counter[str] = Counter()
        for pid in store.list_pipelines()["pipeline_id"]:
            for chain in store.get_chains_for_pipeline(pid).to_dicts():
                chain = store.get_chain(chain["chain_id"])
                references.update(chain_artifact_refs(chain))
                assert store.verify_artifacts(
                    list(chain["fold_artifacts"].values()) + list(chain["shared_artifacts"].values())) == {}
        claims = {a: store.get_artifact(a)["ref_count"] for a in references}
        assert claims == dict(references)
        X = _fitted()[0][0]
        first_chain = store.get_chains_for_pipeline(kept["pipeline_id"][0])["chain_id"][0]
        assert store.replay_chain(first_chain, X).shape == (len(X),)
