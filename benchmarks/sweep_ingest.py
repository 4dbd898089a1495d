"""Ingest and query benchmark for the core store.

Writes P pipelines x 5 folds x 3 partitions (arrays of 200 samples) through
WorkspaceStore, then tops the catalog up to a total number of predictions and
times the read paths. Prints the plain-library floor for the same data: one raw
Arrow insert into DuckDB plus one raw pyarrow Parquet write.

    python benchmarks/sweep_ingest.py                 # 100k ingested, 1M in the catalog
    python benchmarks/sweep_ingest.py --ingest 15000 --total 100000   # quick run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from n4a_store import WorkspaceStore

FOLDS, PARTITIONS, SAMPLES = 5, ("train", "val", "test"), 200


def write_pipelines(store: WorkspaceStore, run_id: str, count: int, rng: np.random.Generator,
                    arrays: bool, offset: int = 0) -> None:
    """Write ``count`` pipelines the way a sweep does."""
    y = rng.normal(size=SAMPLES)
    for i in range(count):
        pid = store.begin_pipeline(run_id, f"{offset + i:06d}_pls", {"n": i}, [], "wheat", "h")
        for fold in range(FOLDS):
            for partition in PARTITIONS:
                score = float(rng.random())
                extra = {"y_true": y, "y_pred": y + score} if arrays else {}
                store.save_prediction(
                    pid, None, "wheat", "PLS", "sklearn.cross_decomposition.PLSRegression",
                    str(fold), partition, score, score, score, "rmse", "regression", SAMPLES, 700,
                    {"rmse": score}, {"n_components": 5}, None, None, 0, 0.0, "SNV", **extra)
        store.complete_pipeline(pid, 0.1, 0.2, "rmse", 10)


def timed(fn, repeat: int = 20) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def floor(n_predictions: int, directory: Path) -> tuple[float, float]:
    """Seconds for one raw Arrow insert into DuckDB and one raw Parquet write of the same data."""
    rng = np.random.default_rng(1)
    ids = [f"{i:036d}" for i in range(n_predictions)]
    scalars = pa.table({
        "prediction_id": ids, "pipeline_id": [i[:30] for i in ids],
        "val_score": rng.random(n_predictions), "test_score": rng.random(n_predictions),
        "partition": ["val"] * n_predictions, "scores": ['{"rmse":0.1}'] * n_predictions,
    })
    values = rng.normal(size=n_predictions * SAMPLES)
    offsets = pa.array(np.arange(n_predictions + 1, dtype=np.int32) * SAMPLES)
    array_col = pa.ListArray.from_arrays(offsets, pa.array(values))
    arrays = pa.table({"prediction_id": ids, "y_true": array_col, "y_pred": array_col})
    con = duckdb.connect(str(directory / "floor.duckdb"))
    con.execute("CREATE TABLE predictions AS SELECT * FROM scalars LIMIT 0")
    start = time.perf_counter()
    con.execute("INSERT INTO predictions SELECT * FROM scalars")
    duck = time.perf_counter() - start
    con.close()
    start = time.perf_counter()
    # the writer settings the store uses (no dictionary, no statistics on the list columns):
    # pyarrow's defaults would make the floor ~3x slower and flatter the store's ratio
    pq.write_table(arrays, directory / "floor.parquet", compression="zstd", use_dictionary=False,
                   write_statistics=False)
    parquet = time.perf_counter() - start
    return duck, parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingest", type=int, default=100_000, help="predictions written with arrays")
    parser.add_argument("--total", type=int, default=1_000_000, help="predictions in the catalog for query timings")
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    per_pipeline = FOLDS * len(PARTITIONS)
    root = args.workspace or Path(tempfile.mkdtemp(prefix="n4a-bench-"))
    rng = np.random.default_rng(0)
    store = WorkspaceStore(root / "ws")
    run_id = store.begin_run("bench", {}, [{"name": "wheat"}])

    print(f"workspace: {root / 'ws'}")
    print(f"shape: pipelines x {FOLDS} folds x {len(PARTITIONS)} partitions, arrays of {SAMPLES} samples\n")

    # 1. default mode: every complete_pipeline is its own durable transaction
    n = max(1, min(200, args.ingest // per_pipeline // 10))
    start = time.perf_counter()
    write_pipelines(store, run_id, n, rng, arrays=True)
    elapsed = time.perf_counter() - start
    print(f"ingest, one commit per pipeline : {n * per_pipeline / elapsed:10,.0f} predictions/s")

    # 2. batch mode, checking linearity chunk by chunk
    total_pipelines = args.ingest // per_pipeline
    chunk = max(1, total_pipelines // 5)
    written = n
    rates = []
    while written < total_pipelines:
        count = min(chunk, total_pipelines - written)
        start = time.perf_counter()
        with store.batch():
            write_pipelines(store, run_id, count, rng, arrays=True, offset=written)
        elapsed = time.perf_counter() - start
        written += count
        rates.append(count * per_pipeline / elapsed)
        print(f"ingest, store.batch(), up to {written * per_pipeline:>9,}: "
              f"{rates[-1]:10,.0f} predictions/s")
    if rates:
        print(f"linearity: last chunk rate / first chunk rate = {rates[-1] / rates[0]:.2f}")

    # 3. top the catalog up (scores only) to the total
    start = time.perf_counter()
    remaining = max(0, args.total // per_pipeline - written)
    step = 2000
    while remaining > 0:
        count = min(step, remaining)
        with store.batch():
            write_pipelines(store, run_id, count, rng, arrays=False, offset=written)
        written += count
        remaining -= count
    store.flush()
    print(f"\ncatalog filled to {written * per_pipeline:,} predictions in {time.perf_counter() - start:.1f}s")

    # 4. reads
    print(f"top_predictions(10)                   : {timed(lambda: store.top_predictions(10)):7.2f} ms")
    print(f"top_predictions(10, group_by=pipeline): "
          f"{timed(lambda: store.top_predictions(10, group_by='pipeline_id'), 5):7.2f} ms")
    pid = store.list_pipelines().row(7, named=True)["pipeline_id"]
    print(f"query_predictions(pipeline_id=...)    : {timed(lambda: store.query_predictions(pipeline_id=pid)):7.2f} ms")
    print(f"query_predictions(partition, limit=1k): "
          f"{timed(lambda: store.query_predictions(partition='val', fold_id='3', limit=1000)):7.2f} ms")
    with_arrays = store.query_predictions(limit=1000, offset=100)["prediction_id"].to_list()
    print(f"get_prediction(load_arrays=True)      : "
          f"{timed(lambda: store.get_prediction(with_arrays[17], load_arrays=True), 200):7.2f} ms")
    print(f"array_store.load_batch(1000)          : "
          f"{timed(lambda: store.array_store.load_batch(with_arrays, 'wheat'), 10):7.2f} ms")
    start = time.perf_counter()
    store.compact_arrays()
    print(f"compact_arrays()                      : {time.perf_counter() - start:7.2f} s "
          f"-> {store.array_store.stats()['wheat']['files']} file(s)")
    print(f"get_prediction(load_arrays=True) compacted: "
          f"{timed(lambda: store.get_prediction(with_arrays[17], load_arrays=True), 200):7.2f} ms")
    print(f"array_store.load_batch(1000) compacted    : "
          f"{timed(lambda: store.array_store.load_batch(with_arrays, 'wheat'), 10):7.2f} ms")
    store.close()

    # 5. floor
    duck, parquet = floor(args.ingest, root)
    print(f"\nfloor for {args.ingest:,} predictions: raw DuckDB Arrow insert {duck:.3f}s + raw "
          f"pyarrow Parquet write {parquet:.3f}s = {args.ingest / (duck + parquet):,.0f} predictions/s")
    if rates:
        floor_rate = args.ingest / (duck + parquet)
        batch_rate = statistics.mean(rates)
        print(f"store.batch() ingest {batch_rate:,.0f} predictions/s = "
              f"{batch_rate / floor_rate * 100:.0f}% of the floor (target 50%)")


if __name__ == "__main__":
    main()
