"""Scale-out: the sweep on celery workers (separate processes) with a PostgreSQL-backed Dagster
instance, a fresh PostgreSQL catalog and a shared file root; and a worker process killed
mid-step, then the failed steps re-executed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from broker_support import require_broker
from pg_support import postgres_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

#: Words that must not appear in a worker's log or the launcher's output.
ERROR_WORDS = ("WorkspaceLockTimeout", "OperationalError", "deadlock", "could not connect",
               "connection refused", "too many clients", "lock timeout")


@dataclass
class Cluster:
    """A running local cluster of one test: settings, workers, the launcher's Dagster home."""

    settings: object
    pool: object
    home: Path
    started_pids: set[int]


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> Iterator[Cluster]:
    """Two celery workers against a fresh Dagster database and a fresh n4a catalog."""
    from n4a_dagster.cluster import ClusterSettings, WorkerPool, dagster_postgres_url, write_instance

    broker = require_broker()
    files = tmp_path / "shared"
    extra = getattr(request, "param", {}) or {}
    with postgres_database() as catalog_url, postgres_database() as dagster_url:
        settings = ClusterSettings(
            broker=broker, dagster_pg_url=dagster_postgres_url(dagster_url),
            store=f"{catalog_url}?file_root={files}", file_root=files,
            queue=f"n4a_test_{os.getpid()}_{time.monotonic_ns()}")
        home = write_instance(tmp_path / "launcher" / "dagster_home")
        for name, value in settings.instance_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        pool = WorkerPool(settings, 2, tmp_path / "workers",
                          extra_env={k: str(v).replace("{tmp}", str(tmp_path))
                                     for k, v in extra.items()})
        pool.start()
        started: set[int] = set(pool.pids())
        try:
            yield Cluster(settings, pool, home, started)
        finally:
            started |= set(pool.pids())
            pool.stop()
        for pid in started:  # every process the test started is gone
            assert not _running(pid), f"process {pid} is still running"
        for worker in pool.workers:
            log = (worker.directory / "worker.log").read_text(errors="replace")
            found = [w for w in ERROR_WORDS if w.lower() in log.lower()]
            assert not found, f"{worker.name} logged {found}:\n{log[-3000:]}"
        _drain_queue(broker, settings.queue)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _drain_queue(broker: str, queue: str) -> None:
    from kombu import Connection

    with Connection(broker) as conn:
        channel = conn.channel()
        try:
            channel.queue_delete(queue)
        except Exception:  # the queue may not exist; nothing to clean up then
            pass


def _run_sweep(cluster: Cluster, *extra: str) -> int:
    from n4a_dagster.__main__ import main

    return main(["run-sweep", "--store", cluster.settings.store, "--executor", "celery",
                 "--dagster-home", str(cluster.home), *extra])


def _dagster_runs(home: Path) -> list:
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        return list(reversed(instance.get_runs()))


def _celery_workers_of(home: Path, run_id: str) -> dict[str, str]:
    """step key -> the celery worker that ran it, from the run's engine events."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_records_for_run(
            run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=10_000).records
    workers = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        if "Celery worker" in metadata:
            workers[event.step_key] = metadata["Celery worker"].value
    return workers


def _step_failures(home: Path, run_id: str) -> list:
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        return instance.get_records_for_run(
            run_id, of_type=DagsterEventType.STEP_FAILURE, limit=1000).records


def _any_train_step_succeeded(cluster: Cluster) -> bool:
    """True once a training step of the (only) run succeeded, so the kill lands mid-sweep."""
    runs = _dagster_runs(cluster.home)
    return bool(runs) and any(k.startswith("train_pipeline_op")
                              for k in _succeeded(cluster.home, runs[0].run_id))


def _succeeded(home: Path, run_id: str) -> set[str]:
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_records_for_run(
            run_id, of_type=DagsterEventType.STEP_SUCCESS, limit=1000).records
    return {r.event_log_entry.step_key for r in records}


def _mapping_keys(run_id: str, home: Path) -> list[str]:
    """Mapping keys of the plan op's dynamic outputs in a run."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_records_for_run(
            run_id, of_type=DagsterEventType.STEP_OUTPUT, limit=1000).records
    return [r.event_log_entry.dagster_event.step_output_data.mapping_key for r in records
            if r.event_log_entry.step_key == "plan_sweep_op"]


def _assert_store(store_uri: str, sweep: str, n_pipelines: int, dagster_run_id: str) -> None:
    """One completed run of ``n_pipelines`` completed pipelines, one per partition, each with
    one chain that replays to its stored test predictions."""
    from n4a_store import WorkspaceStore
    from n4a_store.sweep import expand_pipelines, load_dataset, load_sweep_config

    from n4a_dagster.checks import verify_prediction_arrays, verify_run_artifacts

    cfg = load_sweep_config(sweep)
    ds = load_dataset("chemotools:fermentation")
    keys = {s.key for s in expand_pipelines(cfg)}
    assert len(keys) == n_pipelines
    with WorkspaceStore(store_uri) as store:
        runs = store.list_runs(limit=None)
        assert runs.height == 1
        run = store.get_run(runs["run_id"][0])
        assert run["status"] == "completed"
        assert run["metadata"]["dagster_run_id"] == dagster_run_id
        assert run["summary"]["n_completed"] == n_pipelines and run["summary"]["n_failed"] == 0
        pipelines = store.list_pipelines(run_id=run["run_id"])
        assert pipelines.height == n_pipelines
        assert pipelines.filter(pl.col("status") == "completed").height == n_pipelines
        seen = [row["expanded_config"] for row in pipelines.iter_rows(named=True)]
        import json

        seen_keys = [(json.loads(c) if isinstance(c, str) else c)["key"] for c in seen]
        assert sorted(seen_keys) == sorted(keys)  # each partition exactly once
        predictions = store.query_predictions(run_id=run["run_id"])
        per_pipeline = predictions.group_by("pipeline_id").len()["len"].to_list()
        assert len(per_pipeline) == n_pipelines and len(set(per_pipeline)) == 1
        for pipeline_id in pipelines["pipeline_id"].to_list():
            chains = store.get_chains_for_pipeline(pipeline_id)
            assert chains.height == 1
            mine = predictions.filter((pl.col("pipeline_id") == pipeline_id)
                                      & (pl.col("fold_id") == "avg")
                                      & (pl.col("partition") == "test"))
            stored = store.get_prediction(mine["prediction_id"][0], load_arrays=True)
            replayed = store.replay_chain(chains["chain_id"][0], ds.X_test,
                                          wavelengths=ds.wavelengths)
            assert np.allclose(replayed, stored["y_pred"])
        assert verify_prediction_arrays(store, run["run_id"]).passed
        assert verify_run_artifacts(store, run["run_id"]).passed


def test_builtin_sweep_on_two_celery_workers(cluster: Cluster, capsys):
    for worker in cluster.pool.workers:  # the workers know the broker, databases, file root only
        names = {item.split(b"=", 1)[0].decode() for item in
                 Path(f"/proc/{worker.process.pid}/environ").read_bytes().split(b"\0") if item}
        assert "DAGSTER_HOME" not in names and "N4A_WORKSPACE" not in names
        assert {"N4A_CELERY_BROKER", "N4A_DAGSTER_PG_URL", "N4A_DAGSTER_STORAGE"} <= names
    assert _run_sweep(cluster) == 0
    out = capsys.readouterr()
    assert "20 completed, 0 failed" in out.err
    assert "0019_RC-LC-SG-SS-PLSR" in out.out  # the leaderboard
    (run,) = _dagster_runs(cluster.home)
    assert run.is_success
    workers = _celery_workers_of(cluster.home, run.run_id)
    train_steps = {k for k in workers if k.startswith("train_pipeline_op")}
    assert len(train_steps) == 10  # automatic batching: 20 pipelines for 4 slots (12 steps aimed at), 2 per step
    assert len({workers[k] for k in train_steps}) == 2  # both workers ran training steps
    assert {w.split("@")[0] for w in workers.values()} == {w.name for w in cluster.pool.workers}
    _assert_store(cluster.settings.store, "builtin:nirs-regression", 20, run.run_id)
    found = [w for w in ERROR_WORDS if w.lower() in (out.out + out.err).lower()]
    assert not found


@pytest.mark.parametrize("cluster", [{"N4A_TEST_PAUSE_DIR": "{tmp}/pause"}], indirect=True)
def test_killed_worker_fails_its_step_and_rerun_completes(cluster: Cluster, tmp_path, capsys):
    from n4a_dagster.testing import pausing_sweep_config

    pause = tmp_path / "pause"
    pause.mkdir()
    (pause / "armed").touch()
    sweep = str(pausing_sweep_config(cluster.settings.file_root / "configs"))
    import threading

    killed: list[int] = []

    def kill_the_paused_step() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            claimed = pause / "claimed"
            if claimed.exists() and claimed.read_text() and _any_train_step_succeeded(cluster):
                victim = int(claimed.read_text())
                if any(victim in w.pool_pids() for w in cluster.pool.workers):
                    os.kill(victim, signal.SIGKILL)  # as the OOM killer would, mid-step
                    killed.append(victim)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_paused_step)
    killer.start()
    assert _run_sweep(cluster, "--config", sweep) == 1
    killer.join()
    assert len(killed) == 1, "the paused fit ran in a celery worker's pool process and was killed"
    (pause / "armed").unlink()
    (failed,) = _dagster_runs(cluster.home)
    assert failed.is_failure
    all_train = {f"train_pipeline_op[{k}]" for k in _mapping_keys(failed.run_id, cluster.home)}
    assert len(all_train) == 4
    succeeded_first = _succeeded(cluster.home, failed.run_id) & all_train
    assert 0 < len(succeeded_first) < 4

    assert _run_sweep(cluster, "--config", sweep, "--from-failure", failed.run_id) == 0
    assert "4 completed, 0 failed" in capsys.readouterr().err
    _, rerun = _dagster_runs(cluster.home)
    assert rerun.is_success and rerun.parent_run_id == failed.run_id
    rerun_train = {k for k in _celery_workers_of(cluster.home, rerun.run_id)
                   if k.startswith("train_pipeline_op")}
    # the re-execution trains exactly what did not succeed: the killed step, the unstarted ones
    assert rerun_train == all_train - succeeded_first
    assert not _step_failures(cluster.home, rerun.run_id)
    _assert_store(cluster.settings.store, sweep, 4, failed.run_id)
