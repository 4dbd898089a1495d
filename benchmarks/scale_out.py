"""Scale-out: one 40-pipeline sweep on 1, 2 and 4 celery workers against the multiprocess
executor on one host, with a PostgreSQL Dagster instance and a PostgreSQL n4a catalog.

Sweep: chemotools' coffee spectra (3 origins, 60 spectra, a quarter held out), SNV or a
Savitzky-Golay derivative, then a random forest (5 tree counts x 2 max_features x 2
min_samples_leaf), 3-fold stratified CV: 40 pipelines of real training.

Measured, each variant into fresh databases and a fresh file root:

* ``plain runner``: ``run_sweep(jobs=1)`` in this process with every ``WorkspaceStore``
  call timed, giving the store's share of a pipeline's work (catalog + arrays + artifacts);
* ``multiprocess xN``: the sweep job on Dagster's multiprocess executor (N = cores);
* ``celery xW``: the same job on W celery worker processes (one step each at a time).

For every Dagster variant, from the instance's event log: wall time; per training step
the pick-up latency (the executor's last engine event for the step -> STEP_START: the
subprocess or celery task starting, plan and resources) and the step's duration
(STEP_START -> STEP_SUCCESS); the pipelines' own time (``duration_ms`` in the store:
training and writes) and the metadata plots (timed here on a sample) split the step.
On a 2-core machine more workers than cores cannot go faster; the numbers say what the
orchestration costs, not what a cluster gains.

    .venv/bin/python benchmarks/scale_out.py [--workers 1 2 4] [--postgres URL] [--broker URL]
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import statistics
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

N_PIPELINES = 40


def write_config(directory: Path) -> Path:
    """The 40-pipeline random-forest sweep on the coffee spectra."""
    config = {
        "name": "scale-out-40",
        "datasets": [{"chemotools": "coffee", "test_fraction": 0.25}],
        "task_type": "classification",
        "metric": "accuracy",
        "cv": {"n_splits": 3, "shuffle": True, "seed": 0, "stratified": True},
        "seed": 0,
        "pipeline": [
            {"_or_": [{"class": "chemotools.scatter.StandardNormalVariate"},
                      {"class": "chemotools.derivative.SavitzkyGolay",
                       "params": {"window_length": 11, "polyorder": 2, "deriv": 1}}]},
            {"class": "sklearn.ensemble.RandomForestClassifier",
             "params": {"n_estimators": {"_or_": [50, 100, 150, 200, 250]},
                        "max_features": {"_or_": ["sqrt", 0.2]},
                        "min_samples_leaf": {"_or_": [1, 2]},
                        "random_state": 0, "n_jobs": 1}},
        ],
    }
    path = directory / "scale_out_40.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def fresh_cluster(admin: str, broker: str, root: Path, label: str) -> Iterator[Any]:
    """Fresh catalog and instance databases, a file root and the launcher's environment."""
    from n4a_dagster.cluster import (ClusterSettings, create_database, dagster_postgres_url,
                                     drop_database, unique_name, write_instance)

    catalog_name, dagster_name = unique_name("n4a_bench"), unique_name("n4a_bench_dagster")
    catalog = create_database(admin, catalog_name)
    dagster_db = dagster_postgres_url(create_database(admin, dagster_name))
    files = root / label / "files"
    settings = ClusterSettings(broker=broker, dagster_pg_url=dagster_db,
                               store=f"{catalog}?file_root={files}", file_root=files,
                               queue=f"n4a_bench_{os.getpid()}_{label}")
    home = write_instance(root / label / "dagster_home")
    saved = dict(os.environ)
    os.environ.update(settings.instance_env())
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        yield settings, home
    finally:
        os.environ.clear()
        os.environ.update(saved)
        drop_database(admin, catalog_name)
        drop_database(admin, dagster_name)


def run_dagster(settings: Any, home: Path, config: Path, run_config: dict) -> tuple[float, str]:
    """Run the sweep job; return (wall seconds, Dagster run id)."""
    from dagster import DagsterInstance, build_reconstructable_job, execute_job

    job = build_reconstructable_job("n4a_dagster.jobs", "sweep_job_for", reconstructable_kwargs={
        "workspace": settings.store, "sweep_config": str(config), "max_concurrent": 2})
    run_config = {**run_config, "loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with DagsterInstance.from_config(str(home)) as instance:
        started = time.perf_counter()
        with execute_job(job, instance=instance, run_config=run_config) as result:
            wall = time.perf_counter() - started
            assert result.success, f"the sweep failed (run {result.run_id})"
            return wall, result.run_id


def step_timings(home: Path, run_id: str) -> dict[str, float]:
    """Mean pick-up latency and step duration (s) of the training steps of a run.

    Pick-up runs from the executor taking the step (the multiprocess executor launching its
    subprocess; a celery worker receiving the task, after any wait in the queue) to
    STEP_START.
    """
    from dagster import DagsterInstance

    pickup: dict[str, float] = {}
    start: dict[str, float] = {}
    duration: list[float] = []
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_records_for_run(run_id, limit=100_000).records
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or not (entry.step_key or "").startswith("train_pipeline_op"):
            continue
        kind = event.event_type_value
        if kind == "STEP_WORKER_STARTING" or (  # multiprocess: "Launching subprocess for"
                kind == "ENGINE_EVENT" and "in celery worker" in (entry.message or "")):
            pickup[entry.step_key] = entry.timestamp
        elif kind == "STEP_START":
            start[entry.step_key] = entry.timestamp
        elif kind == "STEP_SUCCESS":
            duration.append(entry.timestamp - start[entry.step_key])
    latency = [start[k] - pickup[k] for k in start if k in pickup]
    return {"pickup_s": statistics.mean(latency), "step_s": statistics.mean(duration),
            "n_steps": float(len(duration))}


def pipeline_seconds(store_uri: str) -> float:
    """Mean ``duration_ms`` of the run's pipelines (training and store writes), in s; checks
    the store holds exactly the sweep's pipelines, all completed."""
    from n4a_store import WorkspaceStore

    with WorkspaceStore(store_uri) as store:
        runs = store.list_runs(limit=None)
        assert runs.height == 1
        pipelines = store.list_pipelines(run_id=runs["run_id"][0])
        assert pipelines.height == N_PIPELINES, pipelines.height
        assert (pipelines["status"] == "completed").all()
        return float(pipelines["duration_ms"].mean()) / 1000


@contextmanager
def timed_store() -> Iterator[dict[str, float]]:
    """Time every public ``WorkspaceStore`` method (outermost calls only)."""
    from n4a_store import WorkspaceStore

    totals = {"store_s": 0.0}
    depth = [0]
    originals = {}
    for name in dir(WorkspaceStore):
        attr = getattr(WorkspaceStore, name)
        if name.startswith("_") or not inspect.isfunction(attr):
            continue
        originals[name] = attr

        def wrapper(self, *args, __f=attr, **kwargs):
            depth[0] += 1
            started = time.perf_counter()
            try:
                return __f(self, *args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    totals["store_s"] += time.perf_counter() - started

        setattr(WorkspaceStore, name, wrapper)
    try:
        yield totals
    finally:
        for name, attr in originals.items():
            setattr(WorkspaceStore, name, attr)


def plain_runner(admin: str, broker: str, root: Path, config: Path) -> dict[str, float]:
    """The sweep in this process, store calls timed; and the metadata plots on a sample."""
    from n4a_store import WorkspaceStore
    from n4a_store.sweep import load_sweep_config, run_sweep

    from n4a_dagster.plots import pipeline_plots

    with fresh_cluster(admin, broker, root, "plain") as (settings, _home):
        with timed_store() as totals:
            started = time.perf_counter()
            summary = run_sweep(load_sweep_config(str(config)), settings.store, jobs=1,
                                progress=False)
            wall = time.perf_counter() - started
        assert summary.n_completed == N_PIPELINES
        with WorkspaceStore(settings.store) as store:
            ids = store.list_pipelines(run_id=summary.run_id)["pipeline_id"].to_list()[:5]
            started = time.perf_counter()
            for pipeline_id in ids:
                pipeline_plots(store, pipeline_id, "bench", ["Brasil", "Ethiopia", "Vietnam"])
            plots = (time.perf_counter() - started) / len(ids)
    return {"wall_s": wall, "store_s": totals["store_s"], "plots_s": plots}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--postgres", default=os.environ.get("N4A_CLUSTER_POSTGRES_URL")
                        or "postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--broker", default=os.environ.get("N4A_CELERY_BROKER")
                        or "pyamqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("dagster").setLevel(logging.ERROR)

    from n4a_dagster.cluster import WorkerPool, check_broker, check_postgres
    from n4a_dagster.jobs import celery_run_config, multiprocess_run_config

    check_broker(args.broker)
    check_postgres(args.postgres)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="n4a-scale-out-") as tmp:
        root = Path(tmp)
        config = write_config(root)
        print(f"{N_PIPELINES}-pipeline random-forest sweep on coffee; {cores} cores; "
              f"PostgreSQL catalog and Dagster instance", flush=True)
        plain = plain_runner(args.postgres, args.broker, root, config)
        per_pipeline = plain["wall_s"] / N_PIPELINES
        print(f"  plain runner, 1 process: {plain['wall_s']:.1f} s; store calls "
              f"{plain['store_s']:.1f} s = {100 * plain['store_s'] / plain['wall_s']:.0f}% "
              f"of the work; {per_pipeline:.2f} s per pipeline; metadata plots "
              f"{plain['plots_s']:.2f} s per pipeline (Dagster steps only)", flush=True)
        variants: list[tuple[str, Any, int]] = [
            (f"multiprocess x{cores}", lambda: multiprocess_run_config(cores), 0)]
        variants += [(f"celery x{w}", celery_run_config, w) for w in args.workers]
        print(f"  {'variant':<16} {'wall s':>7} {'vs plain':>8} {'pick-up s':>9} "
              f"{'step s':>7} {'pipeline s':>10} {'plots s':>7} {'Dagster s/step':>14}")
        for label, make_run_config, workers in variants:
            tag = label.replace(" ", "_")
            with fresh_cluster(args.postgres, args.broker, root, tag) as (settings, home):
                run_config = make_run_config()  # after the cluster's queue is in the env
                if workers:
                    with WorkerPool(settings, workers, root / tag / "workers"):
                        wall, run_id = run_dagster(settings, home, config, run_config)
                else:
                    wall, run_id = run_dagster(settings, home, config, run_config)
                steps = step_timings(home, run_id)
                pipe = pipeline_seconds(settings.store)
            assert steps["n_steps"] == N_PIPELINES
            overhead = steps["pickup_s"] + steps["step_s"] - pipe - plain["plots_s"]
            print(f"  {label:<16} {wall:7.1f} {wall / plain['wall_s']:7.2f}x "
                  f"{steps['pickup_s']:9.2f} {steps['step_s']:7.2f} {pipe:10.2f} "
                  f"{plain['plots_s']:7.2f} {overhead:14.2f}", flush=True)
    print("step s = STEP_START -> STEP_SUCCESS; pipeline s = the runner's own time (training "
          "and store writes); Dagster s/step = pick-up + step - pipeline - plots.")


if __name__ == "__main__":
    main()
