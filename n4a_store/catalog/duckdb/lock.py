"""Cross-process lock guarding the workspace catalog.

DuckDB lets one process open a database file read-write, or several processes
open it read-only, never both. :class:`WorkspaceLock` mirrors that rule with
``flock`` on a side file: writers take it exclusively, readers shared. Unlike
DuckDB's own lock, it can be waited for: a process that cannot get the lock
polls with backoff until a deadline, and leaves a marker under ``waiters/`` so
the holder knows to hand the catalog over as soon as its current operation ends.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ...errors import WorkspaceLockTimeout

_MAX_SLEEP = 0.01


class WorkspaceLock:
    """A shared/exclusive advisory lock on ``<workspace>/.locks/catalog.lock``."""

    def __init__(self, workspace_path: Path) -> None:
        self.workspace_path = Path(workspace_path)
        self._dir = self.workspace_path / ".locks"
        self._waiters = self._dir / "waiters"
        self._waiters.mkdir(parents=True, exist_ok=True)
        self._path = self._dir / "catalog.lock"
        self._fd: int | None = None
        self.mode: str | None = None  # "shared" | "exclusive" | None

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    def acquire(self, exclusive: bool, timeout: float) -> None:
        """Take the lock, waiting at most ``timeout`` seconds, first come first served.

        A waiter leaves a marker stamped with the time it started waiting. It
        does not try the lock while an older waiter it would conflict with is
        still waiting (for a reader: an older writer; for a writer: any older
        waiter), so neither writers nor readers can be starved.

        Raises:
            WorkspaceLockTimeout: the lock stayed busy past the deadline.
        """
        fd = self._file()
        flag = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + timeout
        since = time.time_ns()
        marker: Path | None = None
        sleep = 0.0005
        try:
            while True:
                if not self._older_waiter(since, exclusive):
                    try:
                        fcntl.flock(fd, flag | fcntl.LOCK_NB)
                        self.mode = "exclusive" if exclusive else "shared"
                        return
                    except BlockingIOError:
                        pass
                if marker is None:
                    kind = "x" if exclusive else "s"
                    marker = self._waiters / f"{self._token()}-{since}-{kind}"
                    marker.touch()
                if time.monotonic() >= deadline:
                    raise WorkspaceLockTimeout(
                        f"workspace {str(self.workspace_path)!r} is busy: another process "
                        f"held its catalog for more than {timeout:.1f}s "
                        f"(raise lock_timeout or find the process holding it)"
                    )
                time.sleep(sleep)
                sleep = min(sleep * 2, _MAX_SLEEP)
        finally:
            if marker is not None:
                marker.unlink(missing_ok=True)

    def release(self) -> None:
        """Release the lock if held."""
        if self._fd is not None and self.mode is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self.mode = None

    def others_waiting(self) -> bool:
        """True when another live lock holder-to-be is waiting for the lock."""
        return bool(self._markers())

    def _older_waiter(self, since: int, exclusive: bool) -> bool:
        for stamp, kind in self._markers():
            if stamp < since and (exclusive or kind == "x"):
                return True
        return False

    def _token(self) -> str:
        # pid plus this object's identity: two stores of one process also hand over
        return f"{os.getpid()}-{id(self):x}"

    def _markers(self) -> list[tuple[int, str]]:
        """(waiting since, kind) of every live waiter other than this lock object."""
        mine = self._token() + "-"
        try:
            entries = os.listdir(self._waiters)
        except FileNotFoundError:
            return []
        found = []
        for name in entries:
            if name.startswith(mine):
                continue
            try:
                pid_text, _, stamp_text, kind = name.split("-")
                pid, stamp = int(pid_text), int(stamp_text)
            except ValueError:
                continue
            if _alive(pid):
                found.append((stamp, kind))
            else:
                (self._waiters / name).unlink(missing_ok=True)
        return found

    def forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptor without touching the parent's lock."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self.mode = None

    def close(self) -> None:
        """Release and close the lock file."""
        self.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
