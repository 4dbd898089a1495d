"""The seed-API workload on both catalogs, and concurrent PostgreSQL writers.

Workload (as a nirs4all user writes it): per pipeline, a fitted scaler plus five fitted
fold models saved with ``save_artifact``, ``save_chain``, 5 folds x 3 partitions of
``save_prediction`` with arrays of 200 samples, ``complete_pipeline``; one durable
commit per pipeline, no ``batch()``. Fitting happens before the clock starts.

Reports: ingest time per pipeline on DuckDB and PostgreSQL, PostgreSQL ingest with
1, 2, 4 and 8 writer processes, and the latency of ``get_prediction(load_arrays=True)``.

Usage: python benchmarks/backends.py [--pipelines 200] [--pg postgresql://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from n4a_store import WorkspaceStore

FOLDS, PARTITIONS, SAMPLES, FEATURES = 5, ("train", "val", "test"), 200, 50


def fitted_objects(seed: int) -> tuple[object, list[object]]:
    """A scaler and five fold models, distinct per seed (so artifacts do not dedupe)."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, FEATURES))
    scaler = StandardScaler().fit(X)
    models = [Ridge(alpha=1.0).fit(X, rng.normal(size=60)) for _ in range(FOLDS)]
    return scaler, models


def write_pipeline(store: WorkspaceStore, run_id: str, index: int, objects: tuple, rng) -> list[str]:
    """One pipeline through the seed API; returns its prediction ids."""
    scaler, models = objects
    pid = store.begin_pipeline(run_id, f"{index:04d}_ridge", {"alpha": 1.0}, [], "wheat", "h")
    scaler_id = store.save_artifact(scaler, "sklearn.preprocessing.StandardScaler", "transformer", "joblib")
    fold_ids = {str(f): store.save_artifact(m, "sklearn.linear_model.Ridge", "model", "joblib")
                for f, m in enumerate(models)}
    steps = [{"step_idx": 0, "operator_class": "sklearn.preprocessing.StandardScaler", "params": {},
              "artifact_id": scaler_id, "stateless": False},
             {"step_idx": 1, "operator_class": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0},
              "artifact_id": None, "stateless": False}]
    chain = store.save_chain(pid, steps, 1, "sklearn.linear_model.Ridge", "StandardScaler",
                             "per_fold", fold_ids, {"0": scaler_id})
    ids = []
    y = rng.normal(size=SAMPLES)
    for fold in range(FOLDS):
        for partition in PARTITIONS:
            ids.append(store.save_prediction(
                pid, chain, "wheat", "Ridge", "sklearn.linear_model.Ridge", str(fold), partition,
                0.3, 0.31, 0.2, "rmse", "regression", SAMPLES, FEATURES, {"rmse": 0.3}, {},
                None, None, 0, 0.0, "StandardScaler", y_true=y, y_pred=y + 0.1))
    store.complete_pipeline(pid, 0.3, 0.31, "rmse", 100)
    return ids


def ingest(location: str, pipelines: int, seed: int = 0, run_id: str | None = None) -> tuple[float, list[str]]:
    """Write ``pipelines`` pipelines; return (seconds, prediction ids)."""
    objects = [fitted_objects(seed * 100_000 + i) for i in range(pipelines)]
    rng = np.random.default_rng(seed)
    with WorkspaceStore(location, lock_timeout=300) as store:
        run_id = run_id or store.begin_run("bench", {}, [{"name": "wheat"}])
        started = time.perf_counter()
        ids = [pid for i in range(pipelines) for pid in write_pipeline(store, run_id, i, objects[i], rng)]
        return time.perf_counter() - started, ids


def point_reads(location: str, ids: list[str], n: int = 100) -> float:
    """Median ms of a cold-process ``get_prediction(load_arrays=True)`` over ``n`` ids."""
    rng = np.random.default_rng(1)
    chosen = rng.choice(ids, size=min(n, len(ids)), replace=False)
    with WorkspaceStore(location) as store:
        times = []
        for pid in chosen:
            t = time.perf_counter()
            record = store.get_prediction(str(pid), load_arrays=True)
            times.append((time.perf_counter() - t) * 1000)
            assert record["y_pred"] is not None
    return statistics.median(times)


def _writer(location: str, run_id: str, pipelines: int, seed: int, start_at: float, out: "mp.Queue") -> None:
    objects = [fitted_objects(seed * 100_000 + i) for i in range(pipelines)]
    rng = np.random.default_rng(seed)
    with WorkspaceStore(location, lock_timeout=300) as store:
        while time.time() < start_at:
            time.sleep(0.002)
        t = time.perf_counter()
        for i in range(pipelines):
            write_pipeline(store, run_id, i, objects[i], rng)
        out.put(time.perf_counter() - t)


def concurrent_ingest(location: str, writers: int, per_writer: int) -> float:
    """Pipelines per second with ``writers`` processes writing ``per_writer`` pipelines each."""
    with WorkspaceStore(location) as store:
        run_id = store.begin_run(f"bench-{writers}", {}, [])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3 + writers * 0.5
    procs = [ctx.Process(target=_writer, args=(location, run_id, per_writer, 1000 + w, start_at, out))
             for w in range(writers)]
    for p in procs:
        p.start()
    durations = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return writers * per_writer / max(durations)


def _pg_database(admin: str):
    import psycopg

    name = f"n4a_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    base = admin.rsplit("/", 1)[0]

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return f"{base}/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--per-writer", type=int, default=40)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="n4a-bench-"))
    preds = args.pipelines * FOLDS * len(PARTITIONS)
    print(f"seed workload: {args.pipelines} pipelines x {FOLDS} folds x {len(PARTITIONS)} partitions "
          f"({preds} predictions, arrays of {SAMPLES}), 6 artifacts per pipeline, one commit per pipeline")

    duck = str(root / "duckdb")
    duck_s, duck_ids = ingest(duck, args.pipelines)
    duck_read = point_reads(duck, duck_ids)
    print(f"  DuckDB      ingest {duck_s:6.2f} s  {duck_s / args.pipelines * 1000:6.1f} ms/pipeline  "
          f"{preds / duck_s:7.0f} predictions/s   get_prediction(load_arrays) {duck_read:.2f} ms")

    pg_url, drop = _pg_database(args.pg)
    try:
        pg = f"{pg_url}?file_root={root / 'pg'}"
        pg_s, pg_ids = ingest(pg, args.pipelines)
        pg_read = point_reads(pg, pg_ids)
        print(f"  PostgreSQL  ingest {pg_s:6.2f} s  {pg_s / args.pipelines * 1000:6.1f} ms/pipeline  "
              f"{preds / pg_s:7.0f} predictions/s   get_prediction(load_arrays) {pg_read:.2f} ms")
        print(f"  one PostgreSQL writer vs DuckDB: {pg_s / duck_s:.2f}x the time (target <= 1.5x)")
        rates = {}
        for writers in (1, 2, 4, 8):
            rates[writers] = concurrent_ingest(pg, writers, args.per_writer)
            print(f"  PostgreSQL, {writers} writer process(es): {rates[writers]:6.1f} pipelines/s "
                  f"({rates[writers] / rates[1]:.2f}x one writer)")
        print(f"  4 writers vs 1: {rates[4] / rates[1]:.2f}x (target >= 3x; this machine has "
              f"{mp.cpu_count()} cores shared by writers and the server)")
    finally:
        drop()


if __name__ == "__main__":
    main()
