"""On-disk naming of array files: dataset directories, part files, tombstones."""

from __future__ import annotations

import time
import uuid

from ..errors import InvalidInputError

PART_PREFIX = "part-"
DATA_PREFIX = "data-"
SUFFIX = ".parquet"
TOMBSTONE_DIR = "_tombstones"
ROW_GROUP_SIZE = 256


def dataset_dirname(dataset_name: str) -> str:
    """Encode a dataset name as a safe directory name (reversible)."""
    if not isinstance(dataset_name, str) or not dataset_name:
        raise InvalidInputError(f"dataset_name must be a non-empty string, got {dataset_name!r}")
    out: list[str] = []
    for index, char in enumerate(dataset_name):
        keep = char.isascii() and (char.isalnum() or char in "-_.")
        if keep and index == 0 and char in "._":
            keep = False
        if keep:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def dataset_from_dirname(dirname: str) -> str:
    """Inverse of :func:`dataset_dirname`."""
    from urllib.parse import unquote

    return unquote(dirname)


def new_part_name() -> str:
    """A unique, time-ordered name for a freshly written part file."""
    return f"{PART_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{SUFFIX}"


def new_data_name() -> str:
    """A unique, time-ordered name for a compacted file."""
    return f"{DATA_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{SUFFIX}"


def is_array_file(name: str) -> bool:
    """True for committed part or compacted files (not temporaries or locks)."""
    return name.endswith(SUFFIX) and (name.startswith(PART_PREFIX) or name.startswith(DATA_PREFIX))
