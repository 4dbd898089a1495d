"""Leased DuckDB connections to the workspace catalog.

Opening a DuckDB file costs tens of milliseconds, so a process keeps its
connection (and the :class:`WorkspaceLock` that goes with it) between
operations, as a *lease*. The lease ends when another process is waiting for
the lock (checked after every operation), after ``idle_release`` seconds
without use (a daemon thread watches), or on :meth:`LeasedConnection.close`.

Reads use a read-only connection under a shared lock, so several reader
processes proceed together; writes upgrade to a read-write connection under the
exclusive lock. Lock errors raised by DuckDB itself (a process that does not use
this lock, such as the ``duckdb`` shell) are retried until the same deadline.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import duckdb

from ...errors import WorkspaceLockTimeout
from .lock import WorkspaceLock

_LIVE: "weakref.WeakSet[LeasedConnection]" = weakref.WeakSet()
# Connections inherited by a forked child: kept referenced forever, because
# destroying a DuckDB connection that belongs to the parent crashes the child.
_INHERITED: list[object] = []


def _reset_after_fork() -> None:
    for catalog in list(_LIVE):
        catalog._forget_after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


class LeasedConnection:
    """Connection manager for one workspace's ``store.duckdb``."""

    def __init__(
        self,
        db_path: Path,
        lock: WorkspaceLock,
        timeout: float = 60.0,
        idle_release: float = 0.2,
    ) -> None:
        self.db_path = Path(db_path)
        self.lock = lock
        self.timeout = timeout
        self.idle_release = idle_release
        self._con: duckdb.DuckDBPyConnection | None = None
        self._mode: str | None = None  # "r" | "w"
        self._mutex = threading.RLock()
        self._depth = 0
        self._last_used = 0.0
        self._closed = False
        self._wake = threading.Event()
        self._reaper: threading.Thread | None = None
        _LIVE.add(self)

    # -- public context managers -------------------------------------------------
    @contextmanager
    def _lease(self, mode: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the connection in ``mode`` ("r" or "w") for the duration of the block."""
        with self._mutex:
            con = self._ensure(mode)
            self._depth += 1
            try:
                yield con
            finally:
                self._depth -= 1
                self._after_use()

    def reading(self) -> "contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]":
        """Yield a connection that sees every committed write."""
        return self._lease("r")

    def exclusive(self) -> "contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]":
        """Yield a read-write connection with no transaction opened (for VACUUM, DDL)."""
        return self._lease("w")

    @contextmanager
    def writing(
        self, after_commit: Callable[[], None] | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Yield a read-write connection inside one transaction (commit on success).

        ``after_commit`` runs after COMMIT while the exclusive lock is still held
        (used to remove files whose catalog rows the transaction deleted).
        """
        with self._lease("w") as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            if after_commit is not None:
                after_commit()

    def release(self) -> None:
        """End the lease now: close the connection and release the lock."""
        with self._mutex:
            if self._depth == 0:
                self._drop()

    def close(self) -> None:
        """Release everything; the catalog can still be reopened by a later call."""
        with self._mutex:
            self._drop()
            self._closed = True
            self._wake.set()
            self.lock.close()

    @property
    def holding(self) -> str | None:
        """"r", "w" or None: what this process currently holds."""
        return self._mode

    # -- internals ------------------------------------------------------------
    def _ensure(self, mode: str) -> duckdb.DuckDBPyConnection:
        if self._con is not None and (mode == "r" or self._mode == "w"):
            return self._con
        if self._depth:
            raise RuntimeError("cannot upgrade a catalog read to a write inside a read")
        self._drop()
        self._closed = False
        exclusive = mode == "w"
        deadline = time.monotonic() + self.timeout
        self.lock.acquire(exclusive=exclusive, timeout=self.timeout)
        sleep = 0.005
        while True:
            try:
                self._con = duckdb.connect(str(self.db_path), read_only=not exclusive)
                self._mode = mode
                break
            except duckdb.Error as exc:  # DuckDB's own file lock, held by a foreign process
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    self.lock.release()
                    if "lock" in str(exc).lower():
                        raise WorkspaceLockTimeout(
                            f"workspace {str(self.lock.workspace_path)!r} is busy: its catalog "
                            f"file stayed locked by another program for more than "
                            f"{self.timeout:.1f}s"
                        ) from exc
                    raise
                time.sleep(sleep)
                sleep = min(sleep * 2, 0.1)
        self._start_reaper()
        return self._con

    def _after_use(self) -> None:
        self._last_used = time.monotonic()
        if self._depth == 0 and self.lock.others_waiting():
            self._drop()

    def _drop(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            finally:
                self._con = None
                self._mode = None
                self.lock.release()

    def _start_reaper(self) -> None:
        if self._reaper is not None and self._reaper.is_alive():
            return
        self._wake.clear()
        ref = weakref.ref(self)
        self._reaper = threading.Thread(
            target=_reap, args=(ref, self._wake, self.idle_release), daemon=True,
            name=f"n4a-catalog-lease-{self.db_path.parent.name}",
        )
        self._reaper.start()

    def _forget_after_fork(self) -> None:
        # The child shares the parent's lock description and DuckDB handle: drop both
        # without closing or unlocking them, which would break the parent.
        if self._con is not None:
            _INHERITED.append(self._con)
        self._con = None
        self._mode = None
        self._depth = 0
        self._reaper = None
        self._mutex = threading.RLock()
        self._wake = threading.Event()
        self.lock.forget_after_fork()


def _reap(ref: "weakref.ref[LeasedConnection]", wake: threading.Event, idle: float) -> None:
    """Daemon loop: end a catalog's lease when it is idle and someone waits, or after ``idle`` s."""
    tick = min(idle / 2, 0.02)
    while True:
        if wake.wait(tick):
            return
        catalog = ref()
        if catalog is None:
            return
        if not catalog._mutex.acquire(blocking=False):  # in use right now: check later
            del catalog
            continue
        try:
            if catalog._con is None:
                catalog._reaper = None
                return
            quiet = time.monotonic() - catalog._last_used
            if catalog._depth == 0 and (quiet >= idle or catalog.lock.others_waiting()):
                catalog._drop()
                catalog._reaper = None
                return
        finally:
            catalog._mutex.release()
        del catalog


def first_row(result: duckdb.DuckDBPyConnection) -> tuple | None:
    """First row of an executed statement, consuming the whole result.

    DuckDB refuses further work on a connection while a result is unfinished,
    so ``fetchone()`` alone is not enough.
    """
    rows = result.fetchall()
    return rows[0] if rows else None
