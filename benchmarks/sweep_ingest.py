"""Ingest and query benchmark for the core store.

Writes P pipelines x 5 folds x 3 partitions (arrays of 200 samples) through
WorkspaceStore, then tops the catalog up to a total number of predictions and
times the read paths. Prints the plain-library floor for the rows the batch phase
wrote: one Arrow insert per table into a fresh DuckDB catalog with the store's schema
plus one pyarrow Parquet write of their arrays with the store's settings.

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
from n4a_store.arrays.codec import WRITER_OPTIONS
from n4a_store.arrays.layout import ROW_GROUP_SIZE

FOLDS, PARTITIONS, SAMPLES = 5, ("train", "val", "test"), 200
#: runs of the floor; their median is reported
FLOOR_REPEATS = 3


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


def floor(store_root: Path, first: str, last: str, directory: Path) -> tuple[float, float, int]:
    """The plain libraries on the very rows the store wrote in batch mode.

    The ``pipelines`` and ``predictions`` rows of the pipelines named ``first`` to ``last``
    and their array rows are read back from the store; then, timed: one Arrow insert per
    table into a fresh DuckDB file made with the store's own DDL (primary keys included),
    and one pyarrow write of the array rows with the store's writer settings, each the
    median of :data:`FLOOR_REPEATS` runs. Returns (DuckDB seconds, Parquet seconds,
    predictions).
    """
    con = duckdb.connect(str(store_root / "store.duckdb"), read_only=True)
    ddl = dict(con.execute("SELECT table_name, sql FROM duckdb_tables() "
                           "WHERE table_name IN ('pipelines', 'predictions')").fetchall())
    pipelines = con.sql("SELECT * FROM pipelines WHERE name BETWEEN ? AND ? ORDER BY created_at",
                        params=[first, last]).to_arrow_table()
    predictions = con.sql(
        "SELECT p.* FROM predictions p JOIN pipelines q USING (pipeline_id) "
        "WHERE q.name BETWEEN ? AND ? ORDER BY p.created_at", params=[first, last]).to_arrow_table()
    con.close()
    ids = predictions.column("prediction_id").to_pylist()
    parts = sorted((store_root / "arrays").rglob("*.parquet"))
    arrays = pa.concat_tables([pq.read_table(f, filters=[("prediction_id", "in", ids)]) for f in parts])
    assert arrays.num_rows == len(ids), (arrays.num_rows, len(ids))

    ducks, parquets = [], []
    for attempt in range(FLOOR_REPEATS):  # the median of a few runs: one run is noisy here
        floor_db = duckdb.connect(str(directory / f"floor-{attempt}.duckdb"))
        for table in ("pipelines", "predictions"):
            floor_db.execute(ddl[table])
        start = time.perf_counter()
        for table, rows in (("pipelines", pipelines), ("predictions", predictions)):
            n4a_rows = rows  # noqa: F841 - found by DuckDB's replacement scan
            floor_db.execute(f"INSERT INTO {table} SELECT * FROM n4a_rows")
        ducks.append(time.perf_counter() - start)
        floor_db.close()
        start = time.perf_counter()
        pq.write_table(arrays, directory / f"floor-{attempt}.parquet", row_group_size=ROW_GROUP_SIZE,
                       **WRITER_OPTIONS)
        parquets.append(time.perf_counter() - start)
    return statistics.median(ducks), statistics.median(parquets), len(ids)


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

    # 5. floor: the plain libraries on the rows the batch phase wrote
    duck, parquet, count = floor(root / "ws", f"{n:06d}_pls", f"{total_pipelines - 1:06d}_pls", root)
    floor_rate = count / (duck + parquet)
    print(f"\nfloor for the same {count:,} predictions (their pipelines and predictions rows, one "
          f"Arrow insert each into a fresh catalog with the store's schema: {duck:.3f}s; their "
          f"arrays, one pyarrow write with the store's settings: {parquet:.3f}s) = "
          f"{floor_rate:,.0f} predictions/s")
    if rates:
        batch_rate = statistics.median(rates)
        print(f"store.batch() ingest (median of the chunks) {batch_rate:,.0f} predictions/s = "
              f"{batch_rate / floor_rate * 100:.0f}% of the floor (target 50%)")


if __name__ == "__main__":
    main()
