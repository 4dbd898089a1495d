"""Worker processes for :func:`~n4a_store.sweep.runner.run_sweep` with ``jobs > 1``.

Each worker (started with ``spawn`` or ``forkserver``, never ``fork``, so no
DuckDB connection or lock crosses a fork) opens its own ``WorkspaceStore`` on
the sweep's workspace and runs whole pipelines; the store serialises the
writes of all processes. The config, the expanded pipelines and the loaded
datasets are sent once per worker. Numerical libraries are limited to one
thread per worker so ``jobs`` processes use ``jobs`` cores.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from n4a_store.sweep.config import SweepConfig
from n4a_store.sweep.datasets import SpectraDataset
from n4a_store.sweep.expansion import PipelineSpec

_STATE: dict[str, Any] = {}


def run_parallel(
    workspace_path: Path,
    run_id: str,
    cfg: SweepConfig,
    specs: list[PipelineSpec],
    datasets: list[SpectraDataset],
    *,
    jobs: int,
    mp_context: str = "spawn",
    commit_interval: float = 2.0,
) -> Iterator[Any]:
    """Run every (pipeline, dataset) pair in ``jobs`` worker processes; yield results as they finish.

    A task that raises in its worker (e.g. a store error before the pipeline began) is yielded
    as a failed :class:`~n4a_store.sweep.runner.PipelineResult` without a pipeline id.

    Each worker groups its commits in windows of ``commit_interval`` seconds; its last window
    is committed when the worker exits, which the pool's shutdown waits for, so everything is
    committed when this generator is exhausted.
    """
    from n4a_store.sweep.runner import PipelineResult

    if mp_context not in ("spawn", "forkserver"):
        raise ValueError(f"mp_context must be 'spawn' or 'forkserver', got {mp_context!r}")
    ctx = multiprocessing.get_context(mp_context)
    tasks = [(i, d) for d in range(len(datasets)) for i in range(len(specs))]
    workers = min(jobs, len(tasks))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(str(workspace_path), run_id, cfg, specs, datasets,
                                       commit_interval)) as pool:
        with _unreachable_main_hidden():  # workers start on the first submits
            pending = {pool.submit(_run_task, i, d): (i, d) for i, d in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i, d = pending.pop(future)
                try:
                    yield future.result()
                except Exception as exc:
                    spec, ds = specs[i], datasets[d]
                    yield PipelineResult(
                        pipeline_id=None, chain_id=None, status="failed", best_val=None,
                        best_test=None, metric=cfg.metric_for(ds.task_type),
                        error=f"{type(exc).__name__}: {exc}", duration_ms=0, n_predictions=0,
                        name=spec.name, key=spec.key, dataset_name=ds.name,
                        preprocessings=spec.preprocessings, model_class=spec.model.class_path)


@contextlib.contextmanager
def _unreachable_main_hidden() -> Iterator[None]:
    """Hide ``__main__.__file__`` from spawned workers when it is not a real file.

    A script read from stdin or a notebook has a ``__file__`` that spawned children
    cannot re-run; they would die at start-up and leave the pool waiting. The workers
    need nothing from ``__main__`` (tasks are n4a functions), so it is safe to hide.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or os.path.isfile(path):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _init_worker(workspace_path: str, run_id: str, cfg: SweepConfig, specs: list[PipelineSpec],
                 datasets: list[SpectraDataset], commit_interval: float) -> None:
    """Per-worker setup: one thread for BLAS/OpenMP, one WorkspaceStore and commit window,
    both closed (committing what is buffered) when the worker exits."""
    from multiprocessing.util import Finalize

    try:
        from threadpoolctl import threadpool_limits

        _STATE["threadpool_limits"] = threadpool_limits(1)
    except ImportError:  # threadpoolctl ships with scikit-learn; tolerate its absence
        pass
    from n4a_store import WorkspaceStore
    from n4a_store.sweep.runner import CommitWindow

    store = WorkspaceStore(Path(workspace_path))
    window = CommitWindow(store, commit_interval).__enter__()
    Finalize(None, _shutdown_worker, exitpriority=10)
    _STATE.update(store=store, window=window, run_id=run_id, cfg=cfg, specs=specs,
                  datasets=datasets)


def _shutdown_worker() -> None:
    """Commit the worker's last window and close its store."""
    try:
        _STATE["window"].close()
    finally:
        _STATE["store"].close()


def _run_task(spec_index: int, dataset_index: int) -> Any:
    from n4a_store.sweep.runner import run_pipeline

    result = run_pipeline(_STATE["store"], _STATE["run_id"], _STATE["specs"][spec_index],
                          _STATE["datasets"][dataset_index], _STATE["cfg"])
    _STATE["window"].tick()
    return result
