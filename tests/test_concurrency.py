"""Several processes, one workspace: exact counts, atomic pipelines, bounded waits."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from n4a_store import WorkspaceLockTimeout, WorkspaceStore
from pg_support import BACKENDS

WRITERS = 4
PIPELINES_PER_WRITER = 6
PREDICTIONS_PER_PIPELINE = 9


def _writer(workspace: str, run_id: str, worker: int, start_at: float) -> None:
    from conftest import write_pipeline
    import numpy as np
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)  # same data in every worker: identical artifacts dedupe
    X = rng.normal(size=(40, 12))
    y = X[:, 0] + rng.normal(scale=0.1, size=40)
    scaler = StandardScaler().fit(X)
    fitted = {"scaler": scaler,
              "models": {str(f): PLSRegression(n_components=1 + f).fit(scaler.transform(X), y)
                         for f in range(3)}}
    while time.time() < start_at:
        time.sleep(0.005)
    store = WorkspaceStore(workspace, lock_timeout=120)
    for i in range(PIPELINES_PER_WRITER):
        time.sleep(0.05)  # "training" between pipelines, as in a real sweep
        write_pipeline(store, run_id, fitted, (X, y), name=f"w{worker}-p{i}",
                       dataset=f"ds{worker % 2}")
    store.close()


def _reader(workspace: str, start_at: float, queue: "mp.Queue") -> None:
    store = WorkspaceStore(workspace, lock_timeout=120)
    observations = []
    while time.time() < start_at:
        time.sleep(0.005)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = store.list_pipelines().filter(status="completed")["pipeline_id"].to_list()
        counts = store.query_predictions().group_by("pipeline_id").len()
        per_pipeline = dict(zip(counts["pipeline_id"].to_list(), counts["len"].to_list()))
        torn = [p for p in done if per_pipeline.get(p) != PREDICTIONS_PER_PIPELINE]
        store.top_predictions(5, group_by="dataset_name")
        observations.append((len(done), sum(per_pipeline.values()), torn))
        if len(done) == WRITERS * PIPELINES_PER_WRITER:
            break
        time.sleep(0.01)
    store.close()
    queue.put(observations)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_parallel_writers_and_a_reader(location, workspace):
    with WorkspaceStore(location) as store:
        run_id = store.begin_run("parallel", {}, [])
    ctx = mp.get_context("spawn")
    start_at = time.time() + 4.0  # let every process import before the race starts
    writers = [ctx.Process(target=_writer, args=(location, run_id, w, start_at))
               for w in range(WRITERS)]
    queue = ctx.Queue()
    reader = ctx.Process(target=_reader, args=(location, start_at - 0.5, queue))
    for p in writers + [reader]:
        p.start()
    observations = queue.get(timeout=200)
    for p in writers + [reader]:
        p.join(timeout=200)
        assert p.exitcode == 0

    total_pipelines = WRITERS * PIPELINES_PER_WRITER
    with WorkspaceStore(location) as store:
        pipelines = store.list_pipelines(run_id=run_id)
        assert pipelines.height == total_pipelines
        assert set(pipelines["status"]) == {"completed"}
        predictions = store.query_predictions(run_id=run_id)
        assert predictions.height == total_pipelines * PREDICTIONS_PER_PIPELINE
        assert predictions["prediction_id"].n_unique() == predictions.height
        for dataset in ("ds0", "ds1"):
            ids = predictions.filter(dataset_name=dataset)["prediction_id"].to_list()
            assert len(store.load_arrays(ids)) == len(ids)
        assert store.get_chains_for_pipeline(pipelines["pipeline_id"][0]).height == 1
        # every worker fitted identical objects: 4 distinct artifacts, one claim per save
        stats = store.artifact_stats()
        assert stats["count"] == 4
        total_claims = sum(store.get_artifact(a)["ref_count"] for a in _artifact_ids(workspace))
        assert total_claims == 4 * total_pipelines
        assert sum(len(store.get_pipeline_log(p)) for p in pipelines["pipeline_id"]) == 2 * total_pipelines

    assert observations, "the reader made no observation"
    assert all(not torn for _, _, torn in observations), "a reader saw a half-written pipeline"
    seen = [n for n, _, _ in observations]
    assert seen == sorted(seen)
    assert any(0 < n < total_pipelines for n in seen), "the reader never overlapped the writers"


def _artifact_ids(workspace: Path) -> list[str]:
    return [p.stem for p in (workspace / "artifacts").rglob("*.joblib")]


_HOLDER = """
import sys, time
from n4a_store import WorkspaceStore
store = WorkspaceStore(sys.argv[1])
with store._catalog.exclusive():
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
store.close()
"""


def test_lock_wait_is_bounded_and_named(workspace):
    WorkspaceStore(workspace).close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workspace), "3"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    started = time.monotonic()
    with pytest.raises(WorkspaceLockTimeout, match=str(workspace.name)):
        WorkspaceStore(workspace, lock_timeout=0.5)
    assert time.monotonic() - started < 2.5
    # with a longer bound the same call simply waits for the holder
    with WorkspaceStore(workspace, lock_timeout=30) as store:
        assert store.list_runs().height == 0
    holder.wait(timeout=30)


_FOREIGN = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("open", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_foreign_duckdb_lock_never_leaks_out(workspace):
    WorkspaceStore(workspace).close()
    db = str(workspace / "store.duckdb")
    other = subprocess.Popen([sys.executable, "-c", _FOREIGN, db, "2"], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "open"
    with pytest.raises(WorkspaceLockTimeout, match="locked by another program"):
        WorkspaceStore(workspace, lock_timeout=0.3).list_runs()
    with WorkspaceStore(workspace, lock_timeout=30) as store:  # waits, then works
        assert store.begin_run("after", {}, [])
    other.wait(timeout=30)
    con = duckdb.connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
    con.close()


def test_lease_is_released_when_idle(workspace):
    store = WorkspaceStore(workspace, idle_release=0.1)
    store.begin_run("x", {}, [])
    assert store._catalog.holding == "w"
    deadline = time.monotonic() + 5
    while store._catalog.holding is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store._catalog.holding is None
    # another process can now open the file directly
    con = duckdb.connect(str(workspace / "store.duckdb"))
    con.close()
    assert store.list_runs().height == 1
    store.close()


def test_failed_commit_keeps_the_buffer_for_a_retry(workspace):
    import fcntl
    import os

    store = WorkspaceStore(workspace, lock_timeout=0.3)
    run_id = store.begin_run("r", {}, [])
    pid = store.begin_pipeline(run_id, "p", {}, [], "d", "h")
    for i in range(3):
        store.save_prediction(pid, None, "d", "m", "M", str(i), "val", 0.1, 0.2, 0.3, "rmse",
                              "regression", 10, 5, {}, {}, None, None, 0, 0.0,
                              y_true=[1.0, 2.0], y_pred=[1.0, 2.0])
    store._catalog.release()
    fd = os.open(workspace / ".locks" / "catalog.lock", os.O_RDWR)  # another holder
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(WorkspaceLockTimeout):
            store.complete_pipeline(pid, 0.1, 0.2, "rmse", 5)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    store.complete_pipeline(pid, 0.1, 0.2, "rmse", 5)
    assert store.query_predictions(pipeline_id=pid).height == 3
    assert len(store.array_store.load_batch(store.query_predictions()["prediction_id"].to_list(), "d")) == 3
    store.close()


def test_forked_child_survives_and_uses_its_own_connection(workspace):
    import os

    store = WorkspaceStore(workspace, idle_release=30)
    store.begin_run("parent", {}, [])
    assert store._catalog.holding == "w"
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = 0 if store._catalog.holding is None else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert store.list_runs().height == 1
    store.close()


def _busy_reader(workspace: str, seconds: float) -> None:
    store = WorkspaceStore(workspace)
    end = time.time() + seconds
    while time.time() < end:
        store.list_runs(limit=1)
    store.close()


def test_writers_are_not_starved_by_alternating_readers(workspace):
    WorkspaceStore(workspace).close()
    ctx = mp.get_context("spawn")
    readers = [ctx.Process(target=_busy_reader, args=(str(workspace), 8.0)) for _ in range(2)]
    for p in readers:
        p.start()
    time.sleep(3.0)
    with WorkspaceStore(workspace, lock_timeout=4.0) as writer:
        started = time.monotonic()
        writer.begin_run("writer", {}, [])
        assert time.monotonic() - started < 4.0
    for p in readers:
        p.join(timeout=30)
        assert p.exitcode == 0
