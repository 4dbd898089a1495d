"""On-disk naming of array files: dataset directories, part files, tombstones."""

from __future__ import annotations

import functools
import time
import uuid

from ..errors import InvalidInputError

PART_PREFIX = "part-"
DATA_PREFIX = "data-"
SUFFIX = ".parquet"
TOMBSTONE_DIR = "_tombstones"
ROW_GROUP_SIZE = 256


#: Longest encoded directory name; most file systems allow 255 bytes per name.
MAX_DIRNAME_BYTES = 255


def dataset_dirname(dataset_name: str) -> str:
    """Encode a dataset name as a safe directory name (reversible).

    Any character outside ``[A-Za-z0-9._-]`` (and a leading ``.`` or ``_``) is
    percent-encoded, so ``/``, ``..`` and NUL cannot escape ``arrays/``. Names
    whose encoding exceeds 255 bytes, and names holding a lone surrogate, raise
    InvalidInputError.
    """
    if not isinstance(dataset_name, str) or not dataset_name:
        raise InvalidInputError(f"dataset_name must be a non-empty string, got {dataset_name!r:.80}")
    return _encoded_dirname(dataset_name)


@functools.lru_cache(maxsize=4096)
def _encoded_dirname(dataset_name: str) -> str:
    """The encoding of a non-empty str name (cached: every prediction row asks it)."""
    try:
        dataset_name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("dataset_name holds a lone surrogate; it cannot be stored") from None
    out: list[str] = []
    for index, char in enumerate(dataset_name):
        keep = char.isascii() and (char.isalnum() or char in "-_.")
        if keep and index == 0 and char in "._":
            keep = False
        if keep:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
        if len(out) > MAX_DIRNAME_BYTES:
            break
    encoded = "".join(out)
    if len(encoded) > MAX_DIRNAME_BYTES:
        raise InvalidInputError(
            f"dataset_name {dataset_name[:40]!r}... ({len(dataset_name)} characters) is too long: "
            f"its directory name would exceed {MAX_DIRNAME_BYTES} bytes")
    return encoded


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
