"""What is on disk: artifact files by id, and temporary files of atomic writes.

Every atomic write (:mod:`n4a_store.fileio`) goes through a sibling named
``.<name>.<12 hex>.tmp``; one that is still there belongs to a write in flight
or to a process that died during it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..artifacts.codec import ARTIFACT_FORMATS

_FORMAT_OF_EXT = {ext: fmt for fmt, ext in ARTIFACT_FORMATS.items()}
_ARTIFACT_NAME = re.compile(r"^([0-9a-f]{64})\.([a-z]+)$")
_TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
#: directories of a workspace never scanned (lock files live there)
_SKIP_DIRS = {".locks"}


@dataclass(frozen=True)
class DiskFile:
    """A file found by a scan, with its age in seconds."""

    path: Path
    age: float


def is_tmp_name(name: str) -> bool:
    """True for the name of an atomic write's temporary file."""
    return bool(_TMP_NAME.match(name))


def _age(path: Path, now: float) -> float | None:
    try:
        return max(0.0, now - path.stat().st_mtime)
    except FileNotFoundError:
        return None


def artifact_files(root: Path) -> tuple[dict[str, tuple[str, Path]], list[DiskFile]]:
    """Scan ``artifacts/``: ``{artifact_id: (format, path)}`` and the other files there.

    Other files are names that are neither an artifact nor a temporary file
    (temporary files are found by :func:`tmp_files`).
    """
    found: dict[str, tuple[str, Path]] = {}
    others: list[DiskFile] = []
    now = time.time()
    if not root.is_dir():
        return found, others
    for shard in sorted(root.iterdir()):
        if not shard.is_dir():
            if not is_tmp_name(shard.name):
                age = _age(shard, now)
                if age is not None:
                    others.append(DiskFile(shard, age))
            continue
        for entry in sorted(shard.iterdir()):
            if is_tmp_name(entry.name):
                continue
            match = _ARTIFACT_NAME.match(entry.name)
            fmt = _FORMAT_OF_EXT.get(match.group(2)) if match else None
            if match and fmt and shard.name == match.group(1)[:2] and entry.is_file():
                found[match.group(1)] = (fmt, entry)
            else:
                age = _age(entry, now)
                if age is not None:
                    others.append(DiskFile(entry, age))
    return found, others


def tmp_files(workspace: Path) -> list[DiskFile]:
    """Every temporary file of an atomic write under the workspace (``.locks/`` skipped)."""
    out: list[DiskFile] = []
    now = time.time()
    for directory, subdirs, names in os.walk(workspace):
        if Path(directory) == workspace:
            subdirs[:] = [d for d in subdirs if d not in _SKIP_DIRS]
        for name in names:
            if is_tmp_name(name):
                path = Path(directory) / name
                age = _age(path, now)
                if age is not None:
                    out.append(DiskFile(path, age))
    return sorted(out, key=lambda f: str(f.path))


def remove_file(path: Path) -> bool:
    """Unlink a file; True if it was there. Its emptied shard directory goes too."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    if path.parent.parent.name == "artifacts":
        try:
            path.parent.rmdir()
        except OSError:
            pass
    return True
