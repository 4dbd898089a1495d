"""Cross-validated fitting of one concrete pipeline (no store access here).

For each fold the transformers are fitted on the fold's training part and
applied to its training, validation and (if any) test samples; then the model
is fitted and predicts all three. Every step is a fresh instance per fold
(``fold_strategy="per_fold"``); a step whose fitted state is identical on
every fold learned nothing from the data (stateless): one fitted copy is
shared by all folds.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from n4a_store.sweep.config import CVConfig, import_class
from n4a_store.sweep.datasets import SpectraDataset
from n4a_store.sweep.expansion import WAVELENGTHS_MARKER, PipelineSpec, StepSpec



class PipelineStepError(RuntimeError):
    """A step failed while building, fitting or predicting; the message names step, class and fold."""

    def __init__(self, step_idx: int, step_class: str, stage: str, fold: str | None,
                 error: BaseException) -> None:
        self.step_idx = step_idx
        self.step_class = step_class
        self.stage = stage
        self.fold = fold
        where = f"step {step_idx} ({step_class}) failed in {stage}"
        if fold is not None:
            where += f" on fold {fold}"
        super().__init__(f"{where}: {type(error).__name__}: {error}")


@dataclass
class FoldResult:
    """Predictions of one fold model on each partition (sample positions into the dataset)."""

    fold_id: str
    train_idx: np.ndarray
    val_idx: np.ndarray
    y_pred: dict[str, np.ndarray] = field(default_factory=dict)   # partition -> predictions
    y_proba: dict[str, np.ndarray] = field(default_factory=dict)  # partition -> (n, n_classes)


@dataclass
class StepRecord:
    """A step's fitted objects per fold, timing and flags."""

    step_idx: int
    spec: StepSpec
    params: dict[str, Any]
    per_fold: dict[str, Any] = field(default_factory=dict)
    fit_ms: list[float] = field(default_factory=list)
    transform_ms: list[float] = field(default_factory=list)
    predict_ms: list[float] = field(default_factory=list)
    uses_wavelengths: bool = False
    stateless: bool = False
    is_model: bool = False


@dataclass
class TrainingOutcome:
    """Everything fitting produced: the per-step records and the per-fold predictions."""

    steps: list[StepRecord]
    folds: list[FoldResult]


def make_folds(y: np.ndarray, cv: CVConfig, task_type: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train positions, validation positions) per fold: KFold or StratifiedKFold, seeded."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(y)
    if cv.n_splits > n:
        raise ValueError(f"cv.n_splits={cv.n_splits} is larger than the {n} samples of the dataset")
    stratified = cv.stratified if cv.stratified is not None else task_type == "classification"
    seed = cv.seed if cv.shuffle else None
    if stratified:
        if task_type != "classification":
            raise ValueError("cv.stratified is only for classification")
        splitter: Any = StratifiedKFold(cv.n_splits, shuffle=cv.shuffle, random_state=seed)
    else:
        splitter = KFold(cv.n_splits, shuffle=cv.shuffle, random_state=seed)
    positions = np.arange(n)
    return [(tr, va) for tr, va in splitter.split(positions, y)]


def resolve_params(params: dict[str, Any], wavelengths: np.ndarray) -> dict[str, Any]:
    """Constructor arguments from config params: nested objects built, ``$wavelengths`` filled in."""
    return {k: _resolve_value(v, wavelengths) for k, v in params.items()}


def _resolve_value(value: Any, wavelengths: np.ndarray) -> Any:
    if isinstance(value, str) and value == WAVELENGTHS_MARKER:
        return wavelengths.copy()
    if isinstance(value, dict):
        if "class" in value and set(value) <= {"class", "params"}:
            cls = import_class(value["class"])
            return cls(**resolve_params(value.get("params") or {}, wavelengths))
        return {k: _resolve_value(v, wavelengths) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_value(v, wavelengths) for v in value]
    return value


def effective_params(step: StepSpec, seed: int) -> dict[str, Any]:
    """The step's params plus ``random_state=seed`` when the class takes one and none was given."""
    params = dict(step.params)
    cls = import_class(step.class_path)
    if "random_state" not in params and "random_state" in _init_params(cls):
        params["random_state"] = seed
    return params


def _init_params(cls: type) -> set[str]:
    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()


def takes_wavelengths(obj: Any, method: str = "transform") -> bool:
    """True when ``obj.<method>`` accepts a ``wavelengths`` keyword."""
    fn = getattr(obj, method, None)
    if fn is None:
        return False
    try:
        return "wavelengths" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def same_fitted_state(objects: list[Any]) -> bool:
    """True when every fitted object holds the same state (attributes equal, arrays equal).

    Fitted on different folds, equal states mean the step learned nothing from the data
    (SNV, Savitzky-Golay, a range cut): one fitted copy can serve every fold.
    """
    if len(objects) < 2:
        return False
    first = objects[0]
    return all(type(o) is type(first) and _same_value(_state(o), _state(first))
               for o in objects[1:])


def _state(obj: Any) -> Any:
    try:
        return vars(obj)
    except TypeError:
        return _Opaque()


class _Opaque:
    """Stands for state that cannot be inspected; never equal to anything."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__


def _same_value(a: Any, b: Any, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f")))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k], depth + 1) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same_value(x, y, depth + 1) for x, y in zip(a, b, strict=True)))
    if isinstance(a, str | bytes | int | float | bool | complex | type(None) | np.generic):
        try:
            return type(a) is type(b) and bool(a == b)
        except Exception:
            return False
    if hasattr(a, "__dict__") and type(a) is type(b):  # a nested estimator or helper object
        return _same_value(vars(a), vars(b), depth + 1)
    return False


def fit_folds(spec: PipelineSpec, ds: SpectraDataset, cv: CVConfig, seed: int) -> TrainingOutcome:
    """Fit ``spec`` on every CV fold of ``ds`` and predict train, val and test partitions.

    Raises:
        PipelineStepError: naming the step, its class, the stage and the fold.
    """
    folds = make_folds(ds.y, cv, ds.task_type)
    last = len(spec.steps) - 1
    records = [
        StepRecord(step_idx=i, spec=s, params=effective_params(s, seed), is_model=(i == last))
        for i, s in enumerate(spec.steps)
    ]
    results: list[FoldResult] = []
    for k, (tr, va) in enumerate(folds):
        fold_id = str(k)
        parts = {"train": ds.X[tr], "val": ds.X[va]}
        if ds.X_test is not None:
            parts["test"] = ds.X_test
        y_train = ds.y[tr]
        result = FoldResult(fold_id, tr, va)
        for rec in records:
            obj = _build(rec, ds, fold_id)
            if rec.is_model:
                _fit_model(rec, obj, parts, y_train, ds, result)
            else:
                parts = _fit_transformer(rec, obj, parts, y_train, ds, fold_id)
            rec.per_fold[fold_id] = obj
        results.append(result)
    for rec in records:
        if not rec.is_model:
            rec.stateless = same_fitted_state(list(rec.per_fold.values()))
            rec.uses_wavelengths = takes_wavelengths(next(iter(rec.per_fold.values())))
        else:
            rec.uses_wavelengths = takes_wavelengths(next(iter(rec.per_fold.values())), "predict")
    return TrainingOutcome(records, results)


def _build(rec: StepRecord, ds: SpectraDataset, fold_id: str) -> Any:
    try:
        cls = import_class(rec.spec.class_path)
        return cls(**resolve_params(rec.params, ds.wavelengths))
    except Exception as exc:
        raise PipelineStepError(rec.step_idx, rec.spec.class_path, "construction", None, exc) from exc


def _call(obj: Any, method: str, X: np.ndarray, ds: SpectraDataset) -> Any:
    if takes_wavelengths(obj, method):
        return getattr(obj, method)(X, wavelengths=ds.wavelengths)
    return getattr(obj, method)(X)


def _fit_transformer(rec: StepRecord, obj: Any, parts: dict[str, np.ndarray], y_train: np.ndarray,
                     ds: SpectraDataset, fold_id: str) -> dict[str, np.ndarray]:
    t0 = time.perf_counter()
    try:
        obj.fit(parts["train"], y_train)
    except Exception as exc:
        raise PipelineStepError(rec.step_idx, rec.spec.class_path, "fit", fold_id, exc) from exc
    t1 = time.perf_counter()
    out = {}
    for name, X in parts.items():
        try:
            Xt = np.asarray(_call(obj, "transform", X, ds), dtype=np.float64)
        except Exception as exc:
            raise PipelineStepError(rec.step_idx, rec.spec.class_path, f"transform ({name})",
                                    fold_id, exc) from exc
        if Xt.ndim != 2 or Xt.shape[0] != X.shape[0]:
            raise PipelineStepError(rec.step_idx, rec.spec.class_path, f"transform ({name})", fold_id,
                                    ValueError(f"returned shape {Xt.shape} for input {X.shape}"))
        out[name] = Xt
    rec.fit_ms.append((t1 - t0) * 1000)
    rec.transform_ms.append((time.perf_counter() - t1) * 1000)
    return out


def _fit_model(rec: StepRecord, model: Any, parts: dict[str, np.ndarray], y_train: np.ndarray,
               ds: SpectraDataset, result: FoldResult) -> None:
    fold_id = result.fold_id
    t0 = time.perf_counter()
    try:
        model.fit(parts["train"], y_train)
    except Exception as exc:
        raise PipelineStepError(rec.step_idx, rec.spec.class_path, "fit", fold_id, exc) from exc
    t1 = time.perf_counter()
    for name, X in parts.items():
        try:
            pred = np.asarray(_call(model, "predict", X, ds))
            if ds.task_type == "regression":
                pred = pred.astype(np.float64)
                if pred.ndim == 2 and pred.shape[1] == 1:
                    pred = pred[:, 0]
            if pred.shape != (X.shape[0],):
                raise ValueError(f"predict returned shape {pred.shape} for {X.shape[0]} samples")
            if ds.task_type == "regression" and not np.all(np.isfinite(pred)):
                raise ValueError("predict returned non-finite values")
            result.y_pred[name] = pred
            if ds.task_type == "classification" and hasattr(model, "predict_proba"):
                result.y_proba[name] = _align_proba(model, _call(model, "predict_proba", X, ds), ds)
        except Exception as exc:
            raise PipelineStepError(rec.step_idx, rec.spec.class_path, f"predict ({name})",
                                    fold_id, exc) from exc
    rec.fit_ms.append((t1 - t0) * 1000)
    rec.predict_ms.append((time.perf_counter() - t1) * 1000)


def _align_proba(model: Any, proba: Any, ds: SpectraDataset) -> np.ndarray:
    """Columns of ``predict_proba`` reordered to the dataset's classes (missing classes get 0)."""
    proba = np.asarray(proba, dtype=np.float64)
    assert ds.classes is not None
    out = np.zeros((proba.shape[0], len(ds.classes)), dtype=np.float64)
    position = {label: i for i, label in enumerate(ds.classes)}
    for col, label in enumerate(np.asarray(model.classes_).tolist()):
        out[:, position[label]] = proba[:, col]
    return out
