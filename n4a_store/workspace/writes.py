"""Validation and row building: every argument is checked here, at the call that gave it.

Functions take the public API's arguments and return catalog rows (plain dicts in
the column layout of :mod:`n4a_store.catalog.pending`) or raise
:class:`~n4a_store.errors.InvalidInputError`. Nothing here touches a backend.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ..arrays.codec import normalize_record
from ..arrays.layout import dataset_dirname
from ..catalog.columns import (
    LOG_LEVELS,
    check_id,
    check_row,
    finite_or_none,
    int_or_none,
    text_or_none,
    to_json,
)
from ..errors import InvalidInputError

_EPOCH = datetime(1970, 1, 1)


def now() -> datetime:
    """The current UTC time, naive (as the catalog stores it).

    The same value as ``datetime.now(timezone.utc)`` without its time zone (both
    floor the system clock to the microsecond), built without the zone round trip.
    """
    return _EPOCH + timedelta(0, 0, time.time_ns() // 1000)


#: ids made per refill of :data:`_IDS`
ID_BATCH = 256
#: byte maps setting the version-4 nibble and the RFC 4122 variant bits of a UUID
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
#: (start, stop) of the five dash-separated groups of a UUID's 32 hex digits
_GROUPS = ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))
#: ids made ahead, taken with ``list.pop`` (atomic, so threads never share one)
_IDS: list[str] = []
os.register_at_fork(after_in_child=_IDS.clear)  # a child never reuses its parent's ids


def _fresh_ids(count: int) -> list[str]:
    """``count`` random version-4 UUID strings from ``os.urandom``, formatted all at once."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    digits = np.frombuffer(raw.hex().encode("ascii"), dtype=np.uint8).reshape(count, 32)
    lines = np.full((count, 37), ord("-"), dtype=np.uint8)  # 36 characters and a line break
    lines[:, 36] = ord("\n")
    for group, (start, stop) in enumerate(_GROUPS):
        lines[:, start + group:stop + group] = digits[:, start:stop]
    return lines.tobytes().decode("ascii").split()


def new_id() -> str:
    """A fresh random (version 4) UUID string.

    Built from ``os.urandom`` like :func:`uuid.uuid4`, :data:`ID_BATCH` at a time;
    safe across threads and ``fork`` (a child process drops the ids made ahead).
    """
    while True:  # other threads may empty the pool between a refill and its pop
        try:
            return _IDS.pop()
        except IndexError:
            _IDS.extend(_fresh_ids(ID_BATCH))


#: longest name (run, pipeline, model class, ...) accepted
MAX_NAME_CHARS = 1024


def check_name(value: Any, field: str) -> str:
    """A non-empty string of at most :data:`MAX_NAME_CHARS`, else InvalidInputError naming ``field``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{field} must be a non-empty string, got {value!r:.80}")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidInputError(f"{field} is {len(value)} characters long; at most {MAX_NAME_CHARS}")
    return text_or_none(value, field)  # type: ignore[return-value]


def check_dataset(value: Any) -> str:
    """A dataset name: a name that can also name its array directory."""
    check_name(value, "dataset_name")
    dataset_dirname(value)
    return value


def check_fold(value: Any) -> str | None:
    """A fold id: text, or an integer (stored as text)."""
    if value is None:
        return None
    if type(value) is int or (isinstance(value, (int, np.integer))
                              and not isinstance(value, (bool, np.bool_))):
        return str(int(value))
    if not isinstance(value, str):
        raise InvalidInputError(f"fold_id must be a string or an integer, got {type(value).__name__}")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidInputError(f"fold_id is {len(value)} characters long; at most {MAX_NAME_CHARS}")
    return text_or_none(value, "fold_id")


def check_artifact_map(value: Any, field: str) -> dict[str, str]:
    """``{key: artifact_id}`` with string (or integer) keys and string ids."""
    if not isinstance(value, dict):
        raise InvalidInputError(f"{field} must be a dict of key -> artifact id")
    out: dict[str, str] = {}
    for key, artifact_id in value.items():
        if isinstance(key, bool) or not isinstance(key, (str, int, np.integer)):
            raise InvalidInputError(f"{field} keys must be strings or integers, got {key!r:.80}")
        out[str(key)] = check_id(artifact_id, f"{field}[{key!r:.40}]")
    return out


def check_page(limit: int | None, offset: int) -> None:
    """Refuse negative or non-integer pagination."""
    top = (1 << 63) - 1
    if limit is not None and (not isinstance(limit, (int, np.integer)) or isinstance(limit, bool)
                              or not 0 <= limit <= top):
        raise InvalidInputError(f"limit must be an integer from 0 to 2**63-1 or None, got {limit!r:.80}")
    if not isinstance(offset, (int, np.integer)) or isinstance(offset, bool) or not 0 <= offset <= top:
        raise InvalidInputError(f"offset must be an integer from 0 to 2**63-1, got {offset!r:.80}")


def chain_artifact_refs(chain: dict[str, Any]) -> list[str]:
    """Artifact references a chain holds, one entry per claim it owns.

    A chain owns one claim per value of ``fold_artifacts`` and ``shared_artifacts``
    and per value of any per-step ``fold_artifacts`` mapping (per-fold
    transformers). A step's plain ``artifact_id`` mirrors ``shared_artifacts``
    and is not counted twice.
    """
    refs: list[str] = []
    for key in ("fold_artifacts", "shared_artifacts"):
        value = chain.get(key) or {}
        refs.extend(v for v in value.values() if isinstance(v, str))
    model_idx = chain.get("model_step_idx")
    for step in chain.get("steps") or []:
        if not isinstance(step, dict) or step.get("step_idx") == model_idx:
            continue
        per_fold = step.get("fold_artifacts")
        if isinstance(per_fold, dict):
            refs.extend(v for v in per_fold.values() if isinstance(v, str))
    return refs


def run_row(name: Any, config: Any, datasets: Any, metadata: Any) -> dict[str, Any]:
    """A new ``runs`` row."""
    check_name(name, "run name")
    if datasets is None:
        datasets = []
    if not isinstance(datasets, list) or not all(isinstance(d, dict) for d in datasets):
        raise InvalidInputError("datasets must be a list of dicts (name, path, hash, ...)")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInputError("metadata must be a dict or None")
    return {
        "run_id": new_id(), "name": name, "status": "running", "config": to_json(config, "config"),
        "datasets": to_json(datasets, "datasets"),
        "dataset_names": [str(d["name"]) for d in datasets if d.get("name") is not None],
        "metadata": to_json(metadata or {}, "metadata"), "created_at": now(),
    }


def pipeline_row(run_id: str, name: Any, expanded_config: Any, generator_choices: Any,
                 dataset_name: Any, dataset_hash: Any) -> dict[str, Any]:
    """A new ``pipelines`` row (status running)."""
    check_name(name, "pipeline name")
    check_dataset(dataset_name)
    if generator_choices is not None and not isinstance(generator_choices, (list, tuple)):
        raise InvalidInputError(
            f"generator_choices must be a list or None, got {type(generator_choices).__name__}")
    if dataset_hash is not None and not isinstance(dataset_hash, str):
        raise InvalidInputError(f"dataset_hash must be a string or None, got {type(dataset_hash).__name__}")
    return {
        "pipeline_id": new_id(), "run_id": run_id, "name": name, "status": "running",
        "expanded_config": to_json(expanded_config, "expanded_config"),
        "generator_choices": to_json(list(generator_choices or []), "generator_choices"),
        "dataset_name": dataset_name,
        "dataset_hash": text_or_none(dataset_hash, "dataset_hash"),
        "created_at": now(),
    }


def completion(best_val: Any, best_test: Any, metric: Any, duration_ms: Any) -> dict[str, Any]:
    """The scores ``complete_pipeline`` records."""
    return {
        "best_val": finite_or_none(best_val, "best_val"),
        "best_test": finite_or_none(best_test, "best_test"),
        "metric": text_or_none(metric, "metric"),
        "duration_ms": int_or_none(duration_ms, "duration_ms"),
    }


def chain_row(pipeline_id: str, steps: Any, model_step_idx: Any, model_class: Any,
              preprocessings: Any, fold_strategy: Any, fold_artifacts: Any, shared_artifacts: Any,
              branch_path: Any, source_index: Any) -> tuple[dict[str, Any], set[str]]:
    """A new ``chains`` row and every artifact id it names."""
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        raise InvalidInputError("steps must be a non-empty list of step dicts")
    idx = int_or_none(model_step_idx, "model_step_idx", 32)
    if idx is None or not 0 <= idx < len(steps):
        raise InvalidInputError(f"model_step_idx {model_step_idx!r} is outside the {len(steps)} steps")
    check_name(model_class, "model_class")
    check_name(fold_strategy, "fold_strategy")
    if preprocessings is not None and not isinstance(preprocessings, str):
        raise InvalidInputError(f"preprocessings must be a string, got {type(preprocessings).__name__}")
    for step in steps:
        if step.get("artifact_id") is not None:
            check_id(step["artifact_id"], "steps[].artifact_id")
        if step.get("fold_artifacts") is not None:
            check_artifact_map(step["fold_artifacts"], "steps[].fold_artifacts")
    if branch_path is not None and (not isinstance(branch_path, (list, tuple)) or not all(
            isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in branch_path)):
        raise InvalidInputError(f"branch_path must be a list of integers or None, got {branch_path!r:.80}")
    chain = {
        "fold_artifacts": check_artifact_map(fold_artifacts, "fold_artifacts"),
        "shared_artifacts": check_artifact_map(shared_artifacts, "shared_artifacts"),
        "steps": steps, "model_step_idx": idx,
    }
    referenced = set(chain_artifact_refs(chain)) | {
        s["artifact_id"] for s in steps if isinstance(s.get("artifact_id"), str)}
    row = {
        "chain_id": new_id(), "pipeline_id": pipeline_id, "steps": to_json(steps, "steps"),
        "model_step_idx": idx, "model_class": model_class, "preprocessings": preprocessings or "",
        "fold_strategy": fold_strategy,
        "fold_artifacts": to_json(chain["fold_artifacts"], "fold_artifacts"),
        "shared_artifacts": to_json(chain["shared_artifacts"], "shared_artifacts"),
        "branch_path": to_json(branch_path, "branch_path"),
        "source_index": int_or_none(source_index, "source_index", 32), "created_at": now(),
    }
    return check_row("chains", row), referenced


#: the optional text arguments of :func:`prediction_row`, in the order they are checked
_PREDICTION_TEXTS = ("preprocessings", "chain_id", "model_name", "model_class", "metric",
                     "task_type", "branch_name")


def _plain_texts(values: tuple[Any, ...]) -> bool:
    """True when every value is None or an ASCII ``str`` without NUL (what
    :func:`text_or_none` accepts at once); otherwise each is checked on its own."""
    for value in values:
        if value is not None and (type(value) is not str or not value.isascii() or "\x00" in value):
            return False
    return True


def _any_given(values: Any) -> bool:
    """True when any of ``values`` is not None (arrays are never compared)."""
    for value in values:
        if value is not None:
            return True
    return False


def prediction_row(
    pipeline_id: str, chain_id: Any, dataset_name: Any, model_name: Any, model_class: Any,
    fold_id: Any, partition: Any, val_score: Any, test_score: Any, train_score: Any, metric: Any,
    task_type: Any, n_samples: Any, n_features: Any, scores: Any, best_params: Any, branch_id: Any,
    branch_name: Any, exclusion_count: Any, exclusion_rate: Any, preprocessings: Any,
    arrays: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A new ``predictions`` row (without ``run_id``) and its validated array record, if any.

    Every text and number is checked once, here, against its column (the row needs no
    :func:`check_row` after), and the array record's metadata are these checked values.
    """
    check_dataset(dataset_name)
    check_name(partition, "partition")
    texts = (preprocessings, chain_id, model_name, model_class, metric, task_type, branch_name)
    if not _plain_texts(texts):
        for value, field in zip(texts, _PREDICTION_TEXTS):
            text_or_none(value, field)
    fold = check_fold(fold_id)
    val = finite_or_none(val_score, "val_score")
    prediction_id = new_id()
    record = None
    if _any_given(arrays.values()):
        record = normalize_record({
            "prediction_id": prediction_id, "dataset_name": dataset_name, **arrays,
            "model_name": model_name, "fold_id": fold, "partition": partition, "metric": metric,
            "task_type": task_type, "val_score": val,
        }, checked_meta=True)
    row = {
        "prediction_id": prediction_id, "pipeline_id": pipeline_id, "chain_id": chain_id,
        "dataset_name": dataset_name, "model_name": model_name, "model_class": model_class,
        "fold_id": fold, "partition": partition,
        "val_score": val,
        "test_score": finite_or_none(test_score, "test_score"),
        "train_score": finite_or_none(train_score, "train_score"),
        "metric": metric, "task_type": task_type,
        "n_samples": int_or_none(n_samples, "n_samples"),
        "n_features": int_or_none(n_features, "n_features"),
        "scores": to_json(scores, "scores"), "best_params": to_json(best_params, "best_params"),
        "branch_id": int_or_none(branch_id, "branch_id"), "branch_name": branch_name,
        "exclusion_count": int_or_none(exclusion_count, "exclusion_count"),
        "exclusion_rate": finite_or_none(exclusion_rate, "exclusion_rate"),
        "preprocessings": preprocessings or "", "has_arrays": record is not None,
        "created_at": now(),
    }
    return row, record


def artifact_row(artifact_id: str, relative_path: str, operator_class: Any, artifact_type: Any,
                 format: str, size: int) -> dict[str, Any]:
    """A new ``artifacts`` row (claims are counted separately)."""
    return {
        "artifact_id": artifact_id, "artifact_path": relative_path, "content_hash": artifact_id,
        "operator_class": operator_class, "artifact_type": artifact_type, "format": format,
        "size_bytes": size, "created_at": now(),
    }


def log_row(pipeline_id: str, step_idx: Any, operator_class: Any, event: Any, duration_ms: Any,
            message: Any, details: Any, level: Any) -> dict[str, Any]:
    """A new ``logs`` row."""
    if not isinstance(level, str) or level not in LOG_LEVELS:
        raise InvalidInputError(
            f"unknown log level {level!r}; expected one of: {', '.join(sorted(LOG_LEVELS))}")
    check_name(event, "event")
    row = {
        "log_id": new_id(), "pipeline_id": pipeline_id,
        "step_idx": int_or_none(step_idx, "step_idx", 32), "operator_class": operator_class,
        "event": event, "duration_ms": int_or_none(duration_ms, "duration_ms"),
        "message": message, "details": to_json(details, "details"), "level": level,
        "created_at": now(),
    }
    return check_row("logs", row)
