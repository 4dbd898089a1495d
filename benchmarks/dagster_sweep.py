"""A 50-pipeline sweep through Dagster against the plain sweep runner: the orchestration overhead.

Sweep: chemotools fermentation spectra, 5 preprocessings x PLS(1..10 components), 3-fold CV.

Measured (each into a fresh workspace, the same config):
  * plain runner, 1 process          -- run_sweep(cfg, ws, jobs=1)
  * plain runner, N worker processes -- run_sweep(cfg, ws, jobs=N)
  * Dagster n4a_sweep in process     -- execute_in_process (Dagster bookkeeping, no processes)
  * Dagster n4a_sweep multiprocess   -- execute_job, N concurrent steps, forkserver (the default),
                                        pipelines per step automatic (the default), 1 and 5
  * Dagster n4a_sweep multiprocess   -- the same with the spawn start method (--with-spawn)

Every variant's store is checked for exact counts (50 pipelines, same predictions).

    .venv/bin/python benchmarks/dagster_sweep.py [--concurrency 4] [--with-spawn]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import yaml

PREPROCESSINGS: list[Any] = [
    None,
    {"class": "chemotools.scatter.StandardNormalVariate"},
    {"class": "chemotools.scatter.MultiplicativeScatterCorrection"},
    {"class": "chemotools.derivative.SavitzkyGolay",
     "params": {"window_length": 15, "polyorder": 2, "deriv": 1}},
    [{"class": "chemotools.scatter.StandardNormalVariate"},
     {"class": "chemotools.derivative.SavitzkyGolay",
      "params": {"window_length": 15, "polyorder": 2, "deriv": 1}}],
]


def write_config(directory: Path) -> Path:
    """The 50-pipeline benchmark sweep config."""
    config = {
        "name": "bench-50",
        "datasets": ["chemotools:fermentation"],
        "task_type": "regression",
        "metric": "rmse",
        "cv": {"n_splits": 3, "shuffle": True, "seed": 0},
        "seed": 0,
        "pipeline": [
            {"_or_": PREPROCESSINGS},
            {"class": "sklearn.cross_decomposition.PLSRegression",
             "params": {"n_components": {"_range_": [1, 10]}, "scale": False}},
        ],
    }
    path = directory / "bench50.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def check_store(workspace: Path, expected_pipelines: int) -> tuple[int, int]:
    """(completed pipelines, predictions) of the workspace's single run; exact-count checks."""
    from n4a_store import WorkspaceStore

    with WorkspaceStore(workspace) as store:
        runs = store.list_runs()
        assert runs.height == 1, f"{workspace}: {runs.height} runs"
        run_id = runs["run_id"][0]
        pipelines = store.list_pipelines(run_id=run_id)
        assert pipelines.height == expected_pipelines, pipelines.height
        completed = int((pipelines["status"] == "completed").sum())
        return completed, store.query_predictions(run_id=run_id).height


def timed(label: str, fn: Callable[[], Any], results: list[tuple[str, float]]) -> None:
    """Run ``fn`` and record its wall time under ``label``."""
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    results.append((label, elapsed))
    print(f"  {label:<44} {elapsed:7.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--with-spawn", action="store_true",
                        help="also run the multiprocess job with the spawn start method (slow)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("dagster").setLevel(logging.WARNING)

    from dagster import build_reconstructable_job, execute_job, instance_for_test

    from n4a_dagster.definitions import build_definitions
    from n4a_dagster.jobs import SWEEP_JOB, auto_pipelines_per_step, multiprocess_run_config
    from n4a_store.sweep import expand_pipelines, load_sweep_config, run_sweep

    root = Path(tempfile.mkdtemp(prefix="n4a_dagster_bench_"))
    try:
        config = write_config(root)
        n = len(expand_pipelines(load_sweep_config(config)))
        print(f"sweep: {n} pipelines x 3 folds on fermentation; concurrency {args.concurrency}")
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        results: list[tuple[str, float]] = []
        counts: dict[str, tuple[int, int]] = {}

        def plain(jobs: int) -> Callable[[], None]:
            def go() -> None:
                ws = root / f"plain{jobs}"
                run_sweep(config, ws, jobs=jobs)
                counts[f"plain{jobs}"] = check_store(ws, n)
            return go

        def dagster_in_process() -> None:
            ws = root / "dagster_inproc"
            defs = build_definitions(workspace=str(ws), sweep_config=str(config))
            with instance_for_test() as instance:
                result = defs.resolve_job_def(SWEEP_JOB).execute_in_process(
                    instance=instance, run_config=quiet)
                assert result.success
            counts["dagster_inproc"] = check_store(ws, n)

        def dagster_multiprocess(forkserver: bool, per_step: int | None = 1) -> Callable[[], None]:
            def go() -> None:
                ws = root / f"dagster_mp_{forkserver}_{per_step}"
                job = build_reconstructable_job(
                    "n4a_dagster.jobs", "sweep_job_for",
                    reconstructable_kwargs={"workspace": str(ws), "sweep_config": str(config),
                                            "max_concurrent": args.concurrency})
                run_config = {**multiprocess_run_config(args.concurrency, forkserver, per_step),
                              **quiet}
                with instance_for_test() as instance:
                    with execute_job(job, instance=instance, run_config=run_config) as result:
                        assert result.success
                counts[f"dagster_mp_{forkserver}_{per_step}"] = check_store(ws, n)
            return go

        timed("plain run_sweep, 1 process", plain(1), results)
        timed(f"plain run_sweep, jobs={args.concurrency}", plain(args.concurrency), results)
        timed("Dagster n4a_sweep, in process", dagster_in_process, results)
        auto = auto_pipelines_per_step(n, args.concurrency)
        timed(f"Dagster multiprocess x{args.concurrency}, default ({auto}/step)",
              dagster_multiprocess(True, None), results)
        timed(f"Dagster multiprocess x{args.concurrency}, forkserver, 1/step",
              dagster_multiprocess(True), results)
        timed(f"Dagster multiprocess x{args.concurrency}, forkserver, 5/step",
              dagster_multiprocess(True, 5), results)
        if args.with_spawn:
            timed(f"Dagster multiprocess x{args.concurrency}, spawn, 1/step",
                  dagster_multiprocess(False), results)

        assert len(set(counts.values())) == 1, f"stores differ: {counts}"
        completed, predictions = next(iter(counts.values()))
        print(f"\nevery store: {n} pipelines ({completed} completed), {predictions} predictions")
        times = dict(results)
        base1 = times["plain run_sweep, 1 process"]
        baseN = times[f"plain run_sweep, jobs={args.concurrency}"]
        print(f"\n{'variant':<46} {'wall s':>7} {'vs plain x1':>12} {'vs plain xN':>12} "
              f"{'overhead/pipeline':>18}")
        for label, elapsed in results:
            reference = base1 if "in process" in label or "1 process" in label else baseN
            per_pipeline = (elapsed - reference) / n * 1000
            print(f"{label:<46} {elapsed:7.2f} {elapsed / base1:11.2f}x {elapsed / baseN:11.2f}x "
                  f"{per_pipeline:15.0f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
