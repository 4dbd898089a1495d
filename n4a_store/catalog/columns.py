"""Column whitelists and value coercion for the catalog.

No text from a caller is ever spliced into SQL: identifiers a caller may name
(ranking metric, ``group_by``, filters) are checked against the sets below and
only the whitelisted identifier is used; values always travel as parameters.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

import numpy as np

from ..errors import InvalidInputError

PREDICTION_COLUMNS: tuple[str, ...] = (
    "prediction_id", "pipeline_id", "chain_id", "run_id", "dataset_name", "model_name",
    "model_class", "fold_id", "partition", "val_score", "test_score", "train_score", "metric",
    "task_type", "n_samples", "n_features", "scores", "best_params", "branch_id", "branch_name",
    "exclusion_count", "exclusion_rate", "preprocessings", "has_arrays", "created_at",
)

#: Numeric prediction columns that ``top_predictions`` may rank by.
RANKABLE_COLUMNS = frozenset({
    "val_score", "test_score", "train_score", "exclusion_rate", "exclusion_count",
    "n_samples", "n_features",
})

#: Prediction columns that ``top_predictions(group_by=...)`` may group on.
GROUPABLE_COLUMNS = frozenset({
    "dataset_name", "model_name", "model_class", "fold_id", "partition", "metric", "task_type",
    "branch_id", "branch_name", "preprocessings", "pipeline_id", "chain_id", "run_id",
})

#: Keyword filters accepted by ``query_predictions`` and ``export_predictions_parquet``.
PREDICTION_FILTERS = frozenset({
    "dataset_name", "model_class", "partition", "fold_id", "branch_id", "pipeline_id", "run_id",
    "model_name", "chain_id", "task_type", "metric",
})

#: Catalog columns holding JSON text, per table.
JSON_COLUMNS: dict[str, tuple[str, ...]] = {
    "runs": ("config", "datasets", "summary", "metadata"),
    "pipelines": ("expanded_config", "generator_choices"),
    "chains": ("steps", "fold_artifacts", "shared_artifacts", "branch_path"),
    "predictions": ("scores", "best_params"),
    "logs": ("details",),
}

LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})


def check_column(name: str, allowed: frozenset[str], what: str) -> str:
    """Return ``name`` if it is an allowed identifier, else raise InvalidInputError."""
    if not isinstance(name, str) or name not in allowed:
        raise InvalidInputError(
            f"unknown {what} {name!r}; expected one of: {', '.join(sorted(allowed))}"
        )
    return name


def finite_or_none(value: Any, field: str) -> float | None:
    """Coerce a score to float; NaN and +/-inf become None (stored as NULL, ranked last)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{field} must be a number, got {value!r}") from exc
    return number if math.isfinite(number) else None


def int_or_none(value: Any, field: str) -> int | None:
    """Coerce to int or None, refusing floats with a fractional part and non-numbers."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{field} must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise InvalidInputError(f"{field} must be an integer, got {value!r}")


def _plain(obj: Any, field: str) -> Any:
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        number = float(obj)
        return number if math.isfinite(number) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v, field) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v, field) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_plain(v, field) for v in obj.tolist()]
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    raise InvalidInputError(
        f"{field} must be JSON-serialisable; found a value of type {type(obj).__name__}"
    )


def to_json(obj: Any, field: str) -> str | None:
    """Serialise to JSON text; numpy scalars become numbers, non-finite floats become null."""
    if obj is None:
        return None
    return json.dumps(_plain(obj, field), separators=(",", ":"))


def from_json(text: str | None) -> Any:
    """Parse JSON text stored by :func:`to_json` (None stays None)."""
    return None if text is None else json.loads(text)


def decode_json_columns(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A copy of a catalog row of ``table`` with its JSON-text columns decoded."""
    out = dict(row)
    for key in JSON_COLUMNS.get(table, ()):
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out
