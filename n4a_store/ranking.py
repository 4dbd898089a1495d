"""What "best" means in n4a, in one place.

The **best model** of a dataset (in a run) is the completed pipeline whose pooled
out-of-fold validation score (the prediction with ``fold_id="avg"`` and
``partition="val"``; the pipeline's ``best_val``) is best in the direction of its
metric; ties go to the smaller pipeline name. ``rmse`` and ``mae`` are errors (lower
is better); ``r2``, ``accuracy``, ``balanced_accuracy`` and ``f1`` are scores (higher
is better). The API (``WorkspaceStore.top_predictions``), ``n4a top``, the sweep
leaderboard, the Dagster ``leaderboard`` and ``model_bundle`` assets all rank this way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .errors import InvalidInputError

#: Metrics where a smaller value is better (errors).
LOWER_IS_BETTER: frozenset[str] = frozenset({"rmse", "mae"})
#: Metrics where a larger value is better (scores).
HIGHER_IS_BETTER: frozenset[str] = frozenset({"r2", "accuracy", "balanced_accuracy", "f1"})
#: The fold id of the pooled out-of-fold (val) / fold-averaged (test) predictions.
BEST_FOLD = "avg"
#: The partition "best" is decided on.
BEST_PARTITION = "val"
#: Prediction columns that hold a value of the row's ``metric`` (their direction follows it).
SCORE_COLUMNS: frozenset[str] = frozenset({"val_score", "test_score", "train_score"})


def higher_is_better(metric: str) -> bool:
    """True for scores (r2, accuracy, balanced_accuracy, f1), False for errors (rmse, mae).

    Raises:
        InvalidInputError: the metric's direction is not known.
    """
    if metric in HIGHER_IS_BETTER:
        return True
    if metric in LOWER_IS_BETTER:
        return False
    raise InvalidInputError(
        f"the direction of metric {metric!r} is unknown (known: "
        f"{', '.join(sorted(LOWER_IS_BETTER | HIGHER_IS_BETTER))}); pass ascending= explicitly")


def direction_label(metric: str) -> str:
    """``"lower is better"`` or ``"higher is better"`` (``"?"`` for an unknown metric)."""
    try:
        return "higher is better" if higher_is_better(metric) else "lower is better"
    except InvalidInputError:
        return "?"


def arrow(metric: str) -> str:
    """A short direction marker for tables: ``↓`` (lower is better) or ``↑``."""
    try:
        return "↑" if higher_is_better(metric) else "↓"
    except InvalidInputError:
        return ""


def ascending_for(metrics: Iterable[str | None]) -> bool:
    """The sort direction of a ranking over rows with these metrics.

    Raises:
        InvalidInputError: the metrics disagree on the direction (e.g. rmse and accuracy)
            or one has no known direction.
    """
    names = sorted({m for m in metrics if m is not None})
    if not names:
        return True
    directions = {m: higher_is_better(m) for m in names}
    if len(set(directions.values())) > 1:
        lower = [m for m, up in directions.items() if not up]
        higher = [m for m, up in directions.items() if up]
        raise InvalidInputError(
            f"this ranking mixes metrics with opposite directions ({', '.join(lower)}: lower is "
            f"better; {', '.join(higher)}: higher is better); restrict it (dataset_name=...), "
            f"rank within each metric (group_by='metric' or 'dataset_name'), or pass ascending=")
    return not next(iter(directions.values()))


def sort_key(metric: str, value: float | None, name: str = "") -> tuple[int, float, str]:
    """A key sorting rows best first under ``metric``: non-finite values last, ties by name."""
    if value is None or not math.isfinite(value):
        return (1, 0.0, name)
    return (0, -value if higher_is_better(metric) else value, name)


def is_better(metric: str, candidate: float | None, incumbent: float | None) -> bool:
    """True when ``candidate`` beats ``incumbent`` under ``metric`` (nan/None never wins)."""
    if candidate is None or not math.isfinite(candidate):
        return False
    if incumbent is None or not math.isfinite(incumbent):
        return True
    return candidate > incumbent if higher_is_better(metric) else candidate < incumbent


def round_score(value: Any, digits: int = 4) -> float | None:
    """A score rounded for display (None for missing or non-finite values)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, digits) if math.isfinite(number) else None
