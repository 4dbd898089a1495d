"""Metrics, their direction, and scoring of one partition.

Regression: ``rmse`` and ``mae`` (lower is better), ``r2`` (higher is better).
Classification: ``accuracy``, ``balanced_accuracy`` and ``f1`` (macro average),
all higher is better. A metric that cannot be computed (e.g. r2 on a single
sample) is ``nan``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import ranking

TASK_TYPES = ("regression", "classification")


@dataclass(frozen=True)
class MetricSpec:
    """A metric: its task type, direction and function ``f(y_true, y_pred) -> float``."""

    name: str
    task_type: str
    higher_is_better: bool
    func: Callable[[np.ndarray, np.ndarray], float]


def _rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def _mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y_true - y_pred)))


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if len(y_true) < 2:
        return math.nan
    ss_tot = float(np.sum((y_true - np.mean(y_true)) ** 2))
    if ss_tot == 0.0:
        return math.nan
    return 1.0 - float(np.sum((y_true - y_pred) ** 2)) / ss_tot


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred))


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(y_true, y_pred))


def _f1_macro(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


METRICS: dict[str, MetricSpec] = {
    name: MetricSpec(name, task, ranking.higher_is_better(name), func)
    for name, task, func in (
        ("rmse", "regression", _rmse), ("r2", "regression", _r2), ("mae", "regression", _mae),
        ("accuracy", "classification", _accuracy),
        ("balanced_accuracy", "classification", _balanced_accuracy),
        ("f1", "classification", _f1_macro),
    )
}


def metrics_for(task_type: str) -> list[str]:
    """Names of the metrics computed for ``task_type``, in display order."""
    return [name for name, spec in METRICS.items() if spec.task_type == task_type]


def default_metric(task_type: str) -> str:
    """The ranking metric used when a config names none: rmse or accuracy."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task type {task_type!r}; known: {list(TASK_TYPES)}")
    return "rmse" if task_type == "regression" else "accuracy"


def higher_is_better(metric: str) -> bool:
    """Direction of ``metric`` (see :func:`n4a_store.ranking.higher_is_better`)."""
    return ranking.higher_is_better(metric)


def score_partition(task_type: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Every metric of ``task_type`` on one partition (``nan`` when not computable)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    if len(y_true) == 0:
        return {name: math.nan for name in metrics_for(task_type)}
    if task_type == "regression":
        y_true = y_true.astype(float)
        y_pred = y_pred.astype(float)
    out = {}
    for name in metrics_for(task_type):
        value = METRICS[name].func(y_true, y_pred)
        out[name] = value if math.isfinite(value) else math.nan
    return out


def is_better(metric: str, candidate: float | None, incumbent: float | None) -> bool:
    """True when ``candidate`` beats ``incumbent`` under ``metric`` (nan/None never wins)."""
    return ranking.is_better(metric, candidate, incumbent)
