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
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
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
    store: Any = None,
) -> Iterator[Any]:
    """Run every (pipeline, dataset) pair in ``jobs`` worker processes; yield results as they finish.

    A task that raises in its worker (e.g. a store error before the pipeline began) is yielded
    as a failed :class:`~n4a_store.sweep.runner.PipelineResult` without a pipeline id.

    A worker process that dies (native crash, OOM kill, ``os._exit``) breaks the pool: the
    pipeline it was running is failed in the store with ``"worker process died (exit code
    N)"``, a fresh pool is started, and every other unfinished task runs again (a partial
    record of a task that was stopped only because the pool shut down is deleted first, so
    the store holds one record per task). A task caught in two broken pools is failed.

    Each worker groups its commits in windows of ``commit_interval`` seconds; its last window
    is committed when the worker exits, which the pool's shutdown waits for, so everything is
    committed when this generator is exhausted. ``store`` (the caller's open store on the same
    workspace) records dead workers' pipelines; one is opened when needed if it is not given.
    """
    if mp_context not in ("spawn", "forkserver"):
        raise ValueError(f"mp_context must be 'spawn' or 'forkserver', got {mp_context!r}")
    ctx = multiprocessing.get_context(mp_context)
    tasks = [(i, d) for d in range(len(datasets)) for i in range(len(specs))]
    recovery = _Recovery(workspace_path, run_id, cfg, specs, datasets, tasks, store)
    todo = list(range(len(tasks)))
    try:
        while todo:
            events = ctx.SimpleQueue()
            broken: list[int] = []
            workers = min(jobs, len(todo))
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(str(workspace_path), run_id, cfg, specs, datasets,
                                               commit_interval, events)) as pool:
                with _unreachable_main_hidden():  # workers start on the first submits
                    pending = {pool.submit(_run_task, t, *tasks[t]): t for t in todo}
                tasks_in_pool = list(todo)
                processes: dict[int, Any] = {}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    recovery.read_events(events)
                    for future in done:
                        t = pending.pop(future)
                        try:
                            yield future.result()
                        except BrokenProcessPool:
                            processes = processes or dict(getattr(pool, "_processes", None) or {})
                            broken.append(t)
                        except Exception as exc:
                            yield recovery.failed_result(t, f"{type(exc).__name__}: {exc}")
            recovery.read_events(events)
            exit_codes = {pid: p.exitcode for pid, p in processes.items()}
            todo = []
            # A pool that broke before any of its tasks started (e.g. workers dying at start-up)
            # would break again: fail its tasks instead of retrying forever.
            hopeless = bool(broken) and not any(t in recovery.worker_pid for t in broken) \
                and len(broken) == len(tasks_in_pool)
            for t in sorted(broken):
                result = recovery.after_break(t, exit_codes, retry=not hopeless)
                if result is None:
                    todo.append(t)
                else:
                    yield result
    finally:
        recovery.close()


class _Recovery:
    """What the parent knows about tasks from its workers' events, and how it settles tasks
    caught in a broken pool."""

    def __init__(self, workspace_path: Path, run_id: str, cfg: SweepConfig,
                 specs: list[PipelineSpec], datasets: list[SpectraDataset],
                 tasks: list[tuple[int, int]], store: Any) -> None:
        self.workspace_path = workspace_path
        self.run_id = run_id
        self.cfg = cfg
        self.specs = specs
        self.datasets = datasets
        self.tasks = tasks
        self._store = store
        self._own_store: Any = None
        self.worker_pid: dict[int, int] = {}     # task -> pid of the worker that started it
        self.pipeline_id: dict[int, str] = {}    # task -> pipeline id it began
        self.breaks: dict[int, int] = {}         # task -> broken pools it was running in

    def read_events(self, events: Any) -> None:
        """Consume the workers' ``("start", task, pid)`` / ``("begin", task, pipeline_id)`` events."""
        while not events.empty():
            kind, task, value = events.get()
            if kind == "start":
                self.worker_pid[task] = value
                self.pipeline_id.pop(task, None)
            else:
                self.pipeline_id[task] = value

    def after_break(self, task: int, exit_codes: dict[int, int | None], *,
                    retry: bool = True) -> Any:
        """Settle a task whose future failed with BrokenProcessPool.

        Returns a failed result when the task was running in the worker that died (or was
        already caught in an earlier broken pool, or ``retry`` is false); ``None`` when it
        must run again.
        """
        pid = self.worker_pid.pop(task, None)
        pipeline_id = self.pipeline_id.pop(task, None)
        if pid is None:
            if retry:
                return None  # never started
            return self._record_death(task, None, None, before_start=True)
        code = exit_codes.get(pid)
        self.breaks[task] = self.breaks.get(task, 0) + 1
        # SIGTERM or a clean exit (0): stopped by the pool shutting down, not a crash
        died = code is not None and code not in (0, -signal.SIGTERM)
        if died or self.breaks[task] > 1:
            return self._record_death(task, pipeline_id, code)
        if pipeline_id is not None and self._settled_store().get_pipeline(pipeline_id) is not None:
            self._settled_store().delete_pipeline(pipeline_id)
        return None

    def _record_death(self, task: int, pipeline_id: str | None, code: int | None, *,
                      before_start: bool = False) -> Any:
        spec, ds = self.specs[self.tasks[task][0]], self.datasets[self.tasks[task][1]]
        if before_start:
            error = f"worker processes died before running any task; pipeline {spec.name!r} " \
                    f"on dataset {ds.name!r} was not run"
        else:
            error = f"worker process died ({_describe_exit(code)}) while running pipeline " \
                    f"{spec.name!r} on dataset {ds.name!r}"
        store = self._settled_store()
        if pipeline_id is not None and store.get_pipeline(pipeline_id) is None:
            pipeline_id = None  # a pipeline is committed whole: the dead worker's never was
        if pipeline_id is None:
            pipeline_id = store.begin_pipeline(self.run_id, spec.name, spec.expanded_config,
                                               spec.generator_choices, ds.name, ds.dataset_hash)
        store.fail_pipeline(pipeline_id, error)
        store.flush()
        return self.failed_result(task, error, pipeline_id)

    def failed_result(self, task: int, error: str, pipeline_id: str | None = None) -> Any:
        """A failed PipelineResult for ``task``."""
        from n4a_store.sweep.runner import PipelineResult

        spec, ds = self.specs[self.tasks[task][0]], self.datasets[self.tasks[task][1]]
        return PipelineResult(
            pipeline_id=pipeline_id, chain_id=None, status="failed", best_val=None,
            best_test=None, metric=self.cfg.metric_for(ds.task_type), error=error,
            duration_ms=0, n_predictions=0, name=spec.name, key=spec.key, dataset_name=ds.name,
            preprocessings=spec.preprocessings, model_class=spec.model.class_path)

    def _settled_store(self) -> Any:
        if self._store is None:
            from n4a_store import WorkspaceStore

            self._own_store = self._store = WorkspaceStore(self.workspace_path)
        return self._store

    def close(self) -> None:
        if self._own_store is not None:
            self._own_store.close()


def _describe_exit(code: int | None) -> str:
    """``"exit code 1"`` or ``"exit code -9, killed by SIGKILL"``."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"exit code {code}, killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


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
                 datasets: list[SpectraDataset], commit_interval: float, events: Any = None) -> None:
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

    store = WorkspaceStore(workspace_path)
    window = CommitWindow(store, commit_interval).__enter__()
    Finalize(None, _shutdown_worker, exitpriority=10)
    _STATE.update(store=store, window=window, run_id=run_id, cfg=cfg, specs=specs,
                  datasets=datasets, events=events)


def _shutdown_worker() -> None:
    """Commit the worker's last window and close its store."""
    try:
        _STATE["window"].close()
    finally:
        _STATE["store"].close()


def _run_task(task: int, spec_index: int, dataset_index: int) -> Any:
    """Run one pipeline, telling the parent when it starts and which pipeline id it began
    (synchronous writes: they reach the parent even if this process dies right after)."""
    from n4a_store.sweep.runner import run_pipeline

    events = _STATE.get("events")
    on_begin = None
    if events is not None:
        events.put(("start", task, os.getpid()))

        def on_begin(pipeline_id: str) -> None:
            events.put(("begin", task, pipeline_id))

    result = run_pipeline(_STATE["store"], _STATE["run_id"], _STATE["specs"][spec_index],
                          _STATE["datasets"][dataset_index], _STATE["cfg"], on_begin=on_begin)
    _STATE["window"].tick()
    return result
