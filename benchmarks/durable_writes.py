"""Cost of durable file writes (fsync of the file before the rename, of its directory after).

Measures, on the file system holding ``--dir`` (default: a temporary directory):

- one 4 KiB atomic write: rename only (what the store did before), durable with
  an immediate directory fsync, and durable inside ``batched_directory_syncs``;
- one pipeline commit (4 artifacts, 9 predictions with arrays, 2 log rows) in a
  real workspace, with the durable writes as shipped.

Usage: python benchmarks/durable_writes.py [--dir PATH] [--files N] [--commits N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from n4a_store import WorkspaceStore
from n4a_store.fileio import batched_directory_syncs, write_atomic


def rename_only(path: Path, data: bytes) -> None:
    """The pre-durability write: temporary file, then rename, no fsync."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def per_file_ms(root: Path, files: int, mode: str) -> float:
    """Mean milliseconds per write of ``files`` 4 KiB files spread over 16 directories."""
    data = os.urandom(4096)
    root.mkdir(parents=True, exist_ok=True)
    for d in range(16):
        (root / f"{d:02x}").mkdir(exist_ok=True)
    started = time.perf_counter()
    if mode == "rename only":
        for i in range(files):
            rename_only(root / f"{i % 16:02x}" / f"{i}.bin", data)
    elif mode == "durable":
        for i in range(files):
            write_atomic(root / f"{i % 16:02x}" / f"{i}.bin", data)
    else:
        with batched_directory_syncs():
            for i in range(files):
                write_atomic(root / f"{i % 16:02x}" / f"{i}.bin", data)
    return (time.perf_counter() - started) * 1000 / files


def commit_ms(workspace: Path, commits: int) -> list[float]:
    """Milliseconds of each ``complete_pipeline`` commit of a small, realistic pipeline."""
    rng = np.random.default_rng(0)
    times = []
    with WorkspaceStore(workspace) as store:
        run_id = store.begin_run("bench", {}, [])
        for c in range(commits):
            pid = store.begin_pipeline(run_id, f"p{c}", {}, [], "wheat", "h")
            models = {str(f): store.save_artifact(rng.normal(size=200), "m.M", "model") for f in range(3)}
            shared = store.save_artifact(rng.normal(size=100), "s.S", "transformer")
            steps = [{"step_idx": 0, "operator_class": "s.S", "artifact_id": shared},
                     {"step_idx": 1, "operator_class": "m.M", "artifact_id": None}]
            chain = store.save_chain(pid, steps, 1, "m.M", "S", "per_fold", models, {"0": shared})
            for fold in models:
                for partition in ("train", "val", "test"):
                    y = rng.normal(size=100)
                    store.save_prediction(pid, chain, "wheat", "M", "m.M", fold, partition, 0.1, 0.2,
                                          0.05, "rmse", "regression", 100, 10, {}, {}, None, None,
                                          0, 0.0, y_true=y, y_pred=y + 0.1)
            store.log_step(pid, 0, "s.S", "fit", duration_ms=1)
            store.log_step(pid, 1, "m.M", "fit", duration_ms=1)
            started = time.perf_counter()
            store.complete_pipeline(pid, 0.1, 0.2, "rmse", 1)
            times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--commits", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        for mode in ("rename only", "durable", "durable, batched"):
            ms = per_file_ms(root / mode.replace(" ", "_").replace(",", ""), args.files, mode)
            print(f"4 KiB atomic write, {mode:17s}: {ms:7.3f} ms per file")
        times = commit_ms(root / "ws", args.commits)
        print(f"pipeline commit (4 artifacts, 9 array rows): median {statistics.median(times):.2f} ms, "
              f"max {max(times):.2f} ms over {len(times)} commits")


if __name__ == "__main__":
    main()
