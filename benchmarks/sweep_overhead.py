"""The store's share of a sweep's wall time (target: <= 5%).

Runs real sweeps on chemotools data through the sweep runner, single process,
with the WorkspaceStore wrapped in a timing proxy: every store call (including
the artifact saves ChainBuilder makes and the per-pipeline commit at
complete_pipeline) is timed. Prints, per sweep: wall time, time inside store
calls, the store's share, the per-method breakdown, and the wall time of the
same training with no store at all (fit + predict + score only).

Usage: python benchmarks/sweep_overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from n4a_store import WorkspaceStore
from n4a_store.sweep import expand_pipelines, load_sweep_config, load_sweep_datasets, run_pipeline
from n4a_store.sweep.runner import CommitWindow, sweep_summary_dict
from n4a_store.sweep.scoring import score_partition
from n4a_store.sweep.training import fit_folds


class TimedStore:
    """Forwards every call to a WorkspaceStore and accumulates the seconds spent in it."""

    def __init__(self, store: WorkspaceStore) -> None:
        self._store = store
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if not callable(target):
            return target

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return target(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def sweep_with_store(cfg: Any, workspace: Path, commit_interval: float
                     ) -> tuple[float, TimedStore, int]:
    """Run the sweep like run_sweep(jobs=1) does, through the timing proxy.

    Commits of grouped pipelines (CommitWindow) are timed as ``commit_window``.
    """
    t0 = time.perf_counter()
    specs = expand_pipelines(cfg)
    datasets = load_sweep_datasets(cfg, specs)
    with WorkspaceStore(workspace) as raw:
        store = TimedStore(raw)
        run_id = store.begin_run(cfg.name, cfg.to_dict(), [d.metadata() for d in datasets])
        results = []
        with CommitWindow(raw, commit_interval) as window:
            for ds in datasets:
                for spec in specs:
                    results.append(run_pipeline(store, run_id, spec, ds, cfg))
                    window.tick()
        store.seconds["commit_window"] += window.commit_s
        store.calls["commit_window"] += 1
        store.complete_run(run_id, sweep_summary_dict(results, time.perf_counter() - t0))
        t_close = time.perf_counter()
    store.seconds["close"] += time.perf_counter() - t_close
    wall = time.perf_counter() - t0
    failed = sum(r.status == "failed" for r in results)
    if failed:
        raise SystemExit(f"{failed} pipelines failed; the benchmark expects none")
    return wall, store, len(results)


def sweep_without_store(cfg: Any) -> float:
    """The same cross-validated training and scoring with nothing written anywhere."""
    t0 = time.perf_counter()
    specs = expand_pipelines(cfg)
    for ds in load_sweep_datasets(cfg, specs):
        for spec in specs:
            outcome = fit_folds(spec, ds, cfg.cv, cfg.seed)
            for fold in outcome.folds:
                score_partition(ds.task_type, ds.y[fold.val_idx], fold.y_pred["val"])
                score_partition(ds.task_type, ds.y[fold.train_idx], fold.y_pred["train"])
                if ds.y_test is not None:
                    score_partition(ds.task_type, ds.y_test, fold.y_pred["test"])
    return time.perf_counter() - t0


def configs() -> list[tuple[str, Any]]:
    reg = load_sweep_config("builtin:nirs-regression")
    big = copy.deepcopy(reg.to_dict())
    big["name"] = "nirs-regression-5fold-x10"
    big["cv"]["n_splits"] = 5
    big["pipeline"][-1]["params"]["n_components"] = {"_range_": [1, 10]}
    heavy = copy.deepcopy(load_sweep_config("builtin:nirs-classification").to_dict())
    heavy["cv"]["n_splits"] = 5
    heavy["pipeline"][-1] = {"class": "sklearn.ensemble.RandomForestClassifier",
                             "params": {"n_estimators": 300, "max_features": {"_or_": [
                                 "sqrt", 0.05, 0.2]}}}
    return [
        ("builtin nirs-regression (20 pipes, 3 folds)", reg),
        ("builtin nirs-classification (6 pipes, 3 folds)",
         load_sweep_config("builtin:nirs-classification")),
        ("regression, 40 pipes, 5 folds", load_sweep_config(big)),
        ("coffee, forests of 300 trees, 5 folds (6 pipes)", load_sweep_config(heavy)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per sweep (best is kept)")
    parser.add_argument("--commit-interval", type=float, nargs="*", default=[0.0, 2.0],
                        help="commit windows to compare (0 = one commit per pipeline)")
    args = parser.parse_args()
    print(f"{'sweep':<46} {'commit':>6} {'pipes':>5} {'wall s':>7} {'store s':>8} {'share':>6} "
          f"{'ms/pipe':>7} {'no-store s':>10}")
    for label, cfg in configs():
        bare = min(sweep_without_store(cfg) for _ in range(args.repeat))
        for interval in args.commit_interval:
            best: tuple[float, TimedStore, int] | None = None
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as tmp:
                    run = sweep_with_store(cfg, Path(tmp) / "ws", interval)
                if best is None or run[1].total < best[1].total:
                    best = run
            wall, store, n = best
            print(f"{label:<46} {interval:>5g}s {n:>5} {wall:>7.3f} {store.total:>8.3f} "
                  f"{store.total / wall:>6.1%} {store.total / n * 1000:>7.1f} {bare:>10.3f}")
            top = sorted(store.seconds.items(), key=lambda kv: -kv[1])[:6]
            print("      " + ", ".join(f"{k} {v * 1000:.0f} ms/{store.calls[k]}" for k, v in top))
    print("share = time inside WorkspaceStore calls (incl. grouped commits and close) / sweep "
          "wall time (target <= 5%); ms/pipe = store time per pipeline; no-store = the same "
          "training and scoring with nothing written")


if __name__ == "__main__":
    main()
