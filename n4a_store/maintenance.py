"""File-level maintenance helpers: consistent workspace copies."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_SKIP = {".locks"}


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a directory whose files are immutable but may be removed meanwhile (compaction)."""
    for root, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d not in _SKIP]
        here = target / Path(root).relative_to(source)
        here.mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.endswith(".tmp") or name.endswith(".lock"):
                continue
            try:
                shutil.copy2(Path(root) / name, here / name)
            except FileNotFoundError:  # replaced by a concurrent compaction; its successor is copied
                continue


def copy_workspace(source: Path, target: Path) -> None:
    """Copy catalog (with its WAL), arrays, artifacts and library of a workspace.

    The caller holds the catalog lock (shared is enough: no writer can commit).
    """
    target.mkdir(parents=True, exist_ok=True)
    for name in ("store.duckdb", "store.duckdb.wal"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    for sub in ("artifacts", "arrays", "library"):
        if (source / sub).is_dir():
            _copy_tree(source / sub, target / sub)
    # an array file may have been compacted away between listing and copying: copy late files
    if (source / "arrays").is_dir():
        _copy_tree(source / "arrays", target / "arrays")
