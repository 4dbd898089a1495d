"""The file writes of one commit, run on helper threads while the catalog rows are inserted.

A commit writes new artifact files and array part files, each durably (file fsync,
rename, directory fsync). Those waits are I/O, and the catalog inserts that run
meanwhile are mostly C code that releases the GIL, so the two overlap:
:meth:`FileWork.start` hands the writes to a thread pool (concurrent fsyncs also
overlap in the disk queue), a coordinator thread then fsyncs every directory they
touched once, in parallel; :meth:`FileWork.wait`, called right before COMMIT, returns
when all of it is durable and re-raises the first error.

The pool belongs to the process that made it: a forked child makes its own, since
the parent's threads do not exist in the child.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable

from ..artifacts.base import ArtifactBackend
from ..fileio import DirectorySyncs, fsync_directory, joined_directory_syncs

#: threads writing files for commits, per process
FILE_THREADS = 8

_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def file_pool() -> ThreadPoolExecutor:
    """This process's pool of file-writing threads (made again after a fork)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(FILE_THREADS, thread_name_prefix="n4a-files"))
        return _pool[1]


class FileWork:
    """File jobs of one commit; ``created`` lists the artifacts written (for rollback)."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []
        self.created: list[tuple[str, str]] = []
        self._syncs = DirectorySyncs()
        self._coordinator: threading.Thread | None = None
        self._errors: list[BaseException] = []

    def add(self, job: Callable[[], None] | None) -> None:
        """Queue a job (None is ignored: a backend with nothing left to write)."""
        if job is not None:
            self.jobs.append(job)

    def add_artifact(self, artifacts: ArtifactBackend, artifact_id: str, fmt: str, data: bytes) -> None:
        """Queue an artifact file; remembered in ``created`` once written."""
        def write() -> None:
            if artifacts.write(artifact_id, fmt, data):
                self.created.append((artifact_id, fmt))
        self.jobs.append(write)

    def _job(self, job: Callable[[], None]) -> None:
        with joined_directory_syncs(self._syncs):
            job()

    def _coordinate(self) -> None:
        pool = file_pool()
        try:
            futures: list[Future] = [pool.submit(self._job, job) for job in self.jobs]
            wait(futures)
            self._errors += [f.exception() for f in futures if f.exception() is not None]
            if not self._errors:  # a failed commit discards its files: no need to sync
                list(pool.map(fsync_directory, self._syncs.take()))
        except BaseException as error:  # noqa: BLE001 - handed to wait()
            self._errors.append(error)

    def start(self) -> None:
        """Start the jobs in the background (nothing to do without jobs)."""
        if self.jobs:
            self._coordinator = threading.Thread(target=self._coordinate, daemon=True,
                                                 name="n4a-commit-files")
            self._coordinator.start()

    def settle(self) -> None:
        """Wait for the jobs to stop (success or not) without raising."""
        if self._coordinator is not None:
            self._coordinator.join()
            self._coordinator = None

    def wait(self) -> None:
        """Wait until every file and directory is durable; raise the first error a job raised."""
        self.settle()
        if self._errors:
            raise self._errors[0]
