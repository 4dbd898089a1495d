"""The seed's own workload on both catalogs, beside the plain-library floor and the reference.

Workload (issue 12): 200 pipelines x 5 folds x 3 partitions, arrays of 200 samples; per
pipeline a fitted scaler plus five fitted fold models saved with ``save_artifact``,
``save_chain``, 15 ``save_prediction`` with their arrays, ``complete_pipeline``; one durable
commit per pipeline, no ``batch()``. Fitting happens before the clock starts. Then 100 cold
``get_prediction(load_arrays=True)`` in a fresh process on the freshly ingested workspace
(one array part file per pipeline, nothing compacted): the store's open and the 100 reads
are timed, module imports are not (for either implementation).

Printed: each figure, its ratio to the reference (nirs4all 1.4.10: measured with
``--reference-python PATH`` pointing at an interpreter of a virtual environment where it is
installed, else the issue's figures: 23-25 s ingest, 3.5-4.0 s for 100 reads) and to the
plain-library floor (one Arrow insert per table into DuckDB, one pyarrow write of the arrays,
the artifact files written: the same rows, in one go).

    python benchmarks/seed_workload.py [--pipelines 200] [--pg URL] [--reference-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backends import FOLDS, PARTITIONS, SAMPLES, _pg_database, ingest  # noqa: E402

#: the issue's reference figures for nirs4all 1.4.10 on this workload (seconds)
REFERENCE_INGEST_S = (23.0, 25.0)
REFERENCE_READS_S = (3.5, 4.0)
TARGET_INGEST, TARGET_READS = 15.0, 10.0

# Module imports are outside the clock for both implementations: the libraries a read
# touches are imported first (n4a imports duckdb and pyarrow.compute lazily, on first use;
# without this their ~150 ms import would count as n4a's read time and not nirs4all's)
_READS = '''
import json, sys, time
t0 = time.perf_counter()
for name in ("duckdb", "polars", "pyarrow.compute", "pyarrow.parquet", "sqlite3"):
    try:
        __import__(name)
    except ImportError:
        pass
from {module} import WorkspaceStore
ids = json.load(open(sys.argv[2]))
t1 = time.perf_counter()
store = WorkspaceStore({location})
for pid in ids:
    record = store.get_prediction(pid, load_arrays=True)
    assert record is not None and record["y_pred"] is not None
t2 = time.perf_counter()
store.close()
print(json.dumps({{"reads_s": t2 - t1, "import_s": t1 - t0}}))
'''

_REFERENCE_INGEST = '''
import json, sys, time, uuid
import numpy as np
from pathlib import Path
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler
from nirs4all.pipeline.storage import WorkspaceStore
ws, n = Path(sys.argv[1]), int(sys.argv[2])
FOLDS, PARTS, SAMPLES, FEATURES = 5, ("train", "val", "test"), 200, 50
objs = []
for i in range(n):
    rng = np.random.default_rng(i)
    X = rng.normal(size=(60, FEATURES))
    objs.append((StandardScaler().fit(X), [Ridge().fit(X, rng.normal(size=60)) for _ in range(FOLDS)]))
store = WorkspaceStore(ws)
run_id = store.begin_run("bench", {}, [{"name": "wheat"}])
rng = np.random.default_rng(0)
ids = []
t = time.perf_counter()
for i, (scaler, models) in enumerate(objs):
    pid = store.begin_pipeline(run_id, f"{i:04d}_ridge", {"alpha": 1.0}, [], "wheat", "h")
    sid = store.save_artifact(scaler, "sklearn.preprocessing.StandardScaler", "transformer", "joblib")
    fold = {str(f): store.save_artifact(m, "sklearn.linear_model.Ridge", "model", "joblib")
            for f, m in enumerate(models)}
    steps = [{"step_idx": 0, "operator_class": "sklearn.preprocessing.StandardScaler", "params": {},
              "artifact_id": sid, "stateless": False},
             {"step_idx": 1, "operator_class": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0},
              "artifact_id": None, "stateless": False}]
    chain = store.save_chain(pid, steps, 1, "sklearn.linear_model.Ridge", "StandardScaler",
                             "per_fold", fold, {"0": sid})
    y = rng.normal(size=SAMPLES)
    records = []
    for f in range(FOLDS):
        for part in PARTS:
            p = store.save_prediction(pid, chain, "wheat", "Ridge", "sklearn.linear_model.Ridge",
                                      str(f), part, 0.3, 0.31, 0.2, "rmse", "regression", SAMPLES,
                                      FEATURES, {"rmse": 0.3}, {}, None, None, 0, 0.0, "StandardScaler")
            records.append({"prediction_id": p, "dataset_name": "wheat", "y_true": y, "y_pred": y + 0.1,
                            "model_name": "Ridge", "fold_id": str(f), "partition": part,
                            "metric": "rmse", "val_score": 0.3, "task_type": "regression"})
            ids.append(p)
    store.array_store.save_batch(records)
    store.complete_pipeline(pid, 0.3, 0.31, "rmse", 100)
elapsed = time.perf_counter() - t
store.close()
print(json.dumps({"ingest_s": elapsed, "ids": ids}))
'''


def _compile_package(python: str, package: str) -> None:
    """Byte-compile an implementation's package, as ``pip install`` does for a wheel.

    An editable install (this checkout) is otherwise compiled on every import when
    ``PYTHONDONTWRITEBYTECODE`` is set, which would charge the lazily imported modules'
    compile time to the store's open; the reference's wheel was compiled when installed.
    """
    where = subprocess.run(
        [python, "-c", f"import importlib.util, os; print(os.path.dirname(importlib.util.find_spec({package!r}).origin))"],
        check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([python, "-m", "compileall", "-q", where], check=True, capture_output=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})


def cold_reads(python: str, module: str, location: str, ids: list[str], workdir: Path) -> float:
    """Seconds for 100 ``get_prediction(load_arrays=True)`` in a fresh process (store open included)."""
    rng = np.random.default_rng(1)
    chosen = [str(i) for i in rng.choice(ids, size=min(100, len(ids)), replace=False)]
    id_file = workdir / f"ids-{time.monotonic_ns()}.json"
    id_file.write_text(json.dumps(chosen))
    code = _READS.format(module=module, location=repr(location))
    _compile_package(python, module.split(".")[0])
    out = subprocess.run([python, "-c", code, location, str(id_file)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return float(json.loads(out.stdout.strip().splitlines()[-1])["reads_s"])


def floor(pipelines: int, directory: Path) -> float:
    """Seconds of the plain libraries for the workload's rows, in one go (see module doc)."""
    from n4a_store.catalog.duckdb.schema import TYPES
    from n4a_store.catalog.pending import SCHEMAS
    from n4a_store.catalog.schema import table_ddl
    from n4a_store.fileio import write_atomic

    preds = pipelines * FOLDS * len(PARTITIONS)
    rng = np.random.default_rng(2)
    now = np.datetime64("2026-01-01T00:00:00", "us")

    def table(name: str, rows: int) -> pa.Table:
        cols = {}
        for field in SCHEMAS[name]:
            if pa.types.is_string(field.type):
                cols[field.name] = pa.array([f"{i:036d}" for i in range(rows)])
            elif pa.types.is_timestamp(field.type):
                cols[field.name] = pa.array(np.full(rows, now))
            elif pa.types.is_boolean(field.type):
                cols[field.name] = pa.array(np.ones(rows, dtype=bool))
            elif pa.types.is_floating(field.type):
                cols[field.name] = pa.array(rng.random(rows))
            else:
                cols[field.name] = pa.array(np.arange(rows), type=field.type)
        return pa.table(cols)

    tables = {"pipelines": table("pipelines", pipelines), "chains": table("chains", pipelines),
              "predictions": table("predictions", preds), "artifacts": table("artifacts", 6 * pipelines)}
    values = rng.normal(size=preds * SAMPLES)
    offsets = pa.array(np.arange(preds + 1, dtype=np.int32) * SAMPLES)
    arr = pa.ListArray.from_arrays(offsets, pa.array(values))
    arrays = pa.table({"prediction_id": tables["predictions"].column("prediction_id"),
                       "y_true": arr, "y_pred": arr})
    blobs = [os.urandom(1500) for _ in range(6 * pipelines)]
    con = duckdb.connect(str(directory / "floor.duckdb"))
    for name in tables:
        con.execute(table_ddl(name, TYPES))
    start = time.perf_counter()
    for name, rows in tables.items():
        n4a_rows = rows  # noqa: F841 - replacement scan
        con.execute(f"INSERT INTO {name} SELECT * FROM n4a_rows")
    pq.write_table(arrays, directory / "floor.parquet", compression="zstd", use_dictionary=False,
                   write_statistics=False)
    for i, blob in enumerate(blobs):
        write_atomic(directory / "floor-artifacts" / f"{i}.joblib", blob)
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--reference-python", default=None,
                        help="interpreter of a virtual environment with nirs4all==1.4.10")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="n4a-seed-"))
    n = args.pipelines
    print(f"seed workload: {n} pipelines x {FOLDS} folds x {len(PARTITIONS)} partitions, arrays of "
          f"{SAMPLES}, 6 artifacts per pipeline, one durable commit per pipeline, no batch()")

    # the figures are for 200 pipelines: scaled to --pipelines (reads stay 100)
    ref_ingest = sum(REFERENCE_INGEST_S) / 2 * n / 200
    ref_reads = sum(REFERENCE_READS_S) / 2
    ref_note = "the issue's figures 23-25 s / 3.5-4.0 s (midpoints, ingest scaled to --pipelines)"
    if args.reference_python:
        ref_ws = root / "reference"
        out = subprocess.run([args.reference_python, "-c", _REFERENCE_INGEST, str(ref_ws), str(n)],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        ref = json.loads(out.stdout.strip().splitlines()[-1])
        ref_ingest = ref["ingest_s"]
        ref_reads = cold_reads(args.reference_python, "nirs4all.pipeline.storage", str(ref_ws),
                               ref["ids"], root)
        ref_note = "nirs4all 1.4.10 measured in this run"
    print(f"  reference ({ref_note}): ingest {ref_ingest:.2f} s, 100 cold reads {ref_reads:.3f} s")

    floor_s = floor(n, root)
    print(f"  plain-library floor for the same rows: {floor_s:.3f} s "
          f"({floor_s / n * 1000:.2f} ms/pipeline)")

    locations = {"DuckDB": str(root / "duckdb")}
    drop = None
    try:
        pg_url, drop = _pg_database(args.pg)
        locations["PostgreSQL"] = f"{pg_url}?file_root={root / 'pg'}"
    except Exception as exc:  # noqa: BLE001 - PostgreSQL is optional here
        print(f"  PostgreSQL unavailable ({exc}); DuckDB only")
    try:
        for label, location in locations.items():
            ingest_s, ids = ingest(location, n)
            reads_s = cold_reads(sys.executable, "n4a_store", location, ids, root)
            ingest_ratio, reads_ratio = ref_ingest / ingest_s, ref_reads / reads_s
            print(f"  {label:10s} ingest {ingest_s:6.2f} s = {ingest_s / n * 1000:6.2f} ms/pipeline  "
                  f"{ingest_ratio:5.1f}x the reference (target {TARGET_INGEST:.0f}x)  "
                  f"{floor_s / ingest_s * 100:5.1f}% of the floor's speed")
            print(f"  {label:10s} 100 cold get_prediction(load_arrays=True) {reads_s:.3f} s = "
                  f"{reads_s * 10:.2f} ms each  {reads_ratio:5.1f}x the reference "
                  f"(target {TARGET_READS:.0f}x)")
    finally:
        if drop is not None:
            drop()


if __name__ == "__main__":
    main()
