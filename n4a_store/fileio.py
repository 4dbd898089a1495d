"""Durable atomic file writes: write a temporary sibling, flush it, rename it onto the target.

A reader never sees half a file, and a failed write leaves nothing behind.
Every write is also durable once it returns: the temporary file's contents are
fsynced before the rename, and the directory holding the new name is fsynced
after it (as is the parent of any directory the write had to create), so after
a power loss a file is either absent or complete, never named but empty.

Directory fsyncs can be batched: inside ``with batched_directory_syncs():``
the writes of the current thread still flush their own contents, but each
directory they touch is fsynced once, when the block exits. The workspace's
commit wraps its file writes in such a block, right before the catalog
transaction commits, so a commit pays one fsync per file plus one per
directory touched instead of two per file::

    with batched_directory_syncs() as syncs:
        write_atomic(a, data_a)       # file fsynced, directory deferred
        write_atomic(b, data_b)
    # here: each distinct directory fsynced once (syncs.synced tells how many)
"""

from __future__ import annotations

import os
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = [
    "DirectorySyncs", "atomic_path", "batched_directory_syncs", "fsync_directory",
    "fsync_file", "joined_directory_syncs", "write_atomic",
]

_state = threading.local()


def fsync_file(path: Path) -> None:
    """Flush a file's contents to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Flush a directory's entries (names created, renamed or removed) to stable storage.

    Platforms that cannot open a directory for fsync (Windows) are skipped silently.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (IsADirectoryError, PermissionError):  # pragma: no cover - not POSIX
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that do not support it (EINVAL)
        pass
    finally:
        os.close(fd)


class DirectorySyncs:
    """Directories whose fsync is deferred to the end of a :func:`batched_directory_syncs` block.

    Safe to share between threads (see :func:`joined_directory_syncs`).
    """

    def __init__(self) -> None:
        self.pending: set[Path] = set()
        self.synced = 0
        self._mutex = threading.Lock()

    def add(self, directory: Path) -> None:
        """Remember ``directory`` for the final fsync."""
        with self._mutex:
            self.pending.add(Path(directory))

    def take(self) -> list[Path]:
        """The remembered directories, forgotten here (the caller syncs them)."""
        with self._mutex:
            directories, self.pending = sorted(self.pending), set()
            self.synced += len(directories)
        return directories

    def flush(self) -> int:
        """Fsync every remembered directory once; return how many were synced."""
        directories = self.take()
        for directory in directories:
            fsync_directory(directory)
        return len(directories)


@contextmanager
def joined_directory_syncs(syncs: DirectorySyncs) -> Iterator[DirectorySyncs]:
    """Defer this thread's directory fsyncs into ``syncs`` (owned and flushed by the caller)."""
    outer = getattr(_state, "syncs", None)
    _state.syncs = syncs
    try:
        yield syncs
    finally:
        _state.syncs = outer


@contextmanager
def batched_directory_syncs() -> Iterator[DirectorySyncs]:
    """Defer the directory fsyncs of this thread's atomic writes to the end of the block.

    When the block exits normally, each directory touched is fsynced once,
    before control returns (so a catalog COMMIT that follows names only durable
    files). If the block raises, nothing is synced (the caller discards the
    files anyway). Nested blocks join the outermost one.
    """
    outer = getattr(_state, "syncs", None)
    if outer is not None:
        yield outer
        return
    syncs = DirectorySyncs()
    _state.syncs = syncs
    try:
        yield syncs
        syncs.flush()
    finally:
        _state.syncs = None


def _sync_directory(directory: Path) -> None:
    syncs = getattr(_state, "syncs", None)
    if syncs is None:
        fsync_directory(directory)
    else:
        syncs.add(directory)


def _make_parents(directory: Path) -> None:
    """Create ``directory`` and missing parents; make each new entry durable."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    if not missing:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for created in missing:
        _sync_directory(created.parent)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; flush it and rename it onto ``path`` on success.

    Parent directories are created. Temporary names start with ``.`` and end in
    ``.tmp``, so directory scans (array files, backups) skip them. The file is
    fsynced before the rename and its directory after it (deferred inside
    :func:`batched_directory_syncs`).
    """
    path = Path(path)
    _make_parents(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        _sync_directory(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; return ``path``."""
    path = Path(path)
    _make_parents(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _sync_directory(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path
