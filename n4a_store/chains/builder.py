"""Turn an :class:`~n4a_store.chains.trace.ExecutionTrace` into ``save_chain`` arguments.

:class:`ChainBuilder` validates the trace, saves every fitted object through an
artifact registry (anything with ``save_artifact(obj, operator_class,
artifact_type, format) -> artifact_id``, normally a ``WorkspaceStore``) and
returns the keyword arguments of ``WorkspaceStore.save_chain`` minus
``pipeline_id``.

Step descriptor (one dict per step, stored as JSON in the chain)::

    {
        "step_idx": 0,                       # position in the pipeline
        "operator_class": "chemotools...SNV",
        "params": {...},                     # JSON-safe constructor parameters
        "artifact_id": "ab12..." | None,     # the shared fitted object, if any
        "fold_artifacts": {"0": "cd34...", ...},   # per-fold fitted objects ({} if shared)
        "stateless": False,
        "is_model": False,
        "uses_wavelengths": False,
        "n_features_in": 700 | None,         # what the step was fitted on, when known
        "input_wavelengths": [908.1, ...],   # first step only, when the trace knows its
                                             # training wavelength axis (column order)
        "task_type": "regression",           # model step only
    }

``fold_artifacts`` maps fold id to the model's artifact id; ``shared_artifacts``
maps ``str(step_idx)`` to the artifact id of every step fitted once.
"""

from __future__ import annotations

import math
import pickle
from typing import Any, Protocol

from n4a_store.chains.trace import ExecutionTrace, TraceStep
from n4a_store.errors import InvalidInputError

FOLD_STRATEGIES = ("per_fold", "shared")
TASK_TYPES = ("regression", "classification")
SERIALIZATION_FORMATS = ("joblib", "cloudpickle")
# What a pickler raises on an object it cannot serialize (lambdas, local classes, locks).
_PICKLING_ERRORS = (pickle.PicklingError, AttributeError, TypeError)


class ArtifactRegistry(Protocol):
    """What ChainBuilder needs from a store: content-addressed artifact saving."""

    def save_artifact(self, obj: Any, operator_class: str, artifact_type: str, format: str) -> str:
        ...


class ChainBuilder:
    """Build the ``save_chain`` keyword arguments for one execution trace.

    Args:
        trace: The executed steps with their fitted objects.
        artifact_registry: Object with ``save_artifact(obj, operator_class, artifact_type, format)``.
        format: Preferred serialization format. When ``"joblib"`` cannot serialize an object
            (lambdas, locally defined classes), ``"cloudpickle"`` is used for that object.
    """

    def __init__(self, trace: ExecutionTrace, artifact_registry: ArtifactRegistry,
                 *, format: str = "joblib") -> None:
        if format not in SERIALIZATION_FORMATS:
            raise InvalidInputError(
                f"unknown artifact format {format!r}; expected one of {SERIALIZATION_FORMATS}")
        self.trace = trace
        self.artifact_registry = artifact_registry
        self.format = format

    def build(self) -> dict[str, Any]:
        """Validate the trace, save its fitted objects, and return the ``save_chain`` kwargs."""
        fold_ids = validate_trace(self.trace)
        steps = self.trace.steps
        descriptors: list[dict[str, Any]] = []
        shared_artifacts: dict[str, str] = {}
        model_folds: dict[str, str] = {}
        for step in steps:
            descriptor = self._describe(step)
            if descriptor["artifact_id"] is not None:
                shared_artifacts[str(step.step_idx)] = descriptor["artifact_id"]
            if step.is_model:
                descriptor["task_type"] = self.trace.task_type
                model_folds = dict(descriptor["fold_artifacts"])
            descriptors.append(descriptor)
        wavelengths = _wavelength_axis(self.trace.wavelengths, descriptors[0]["n_features_in"])
        if wavelengths is not None:
            descriptors[0]["input_wavelengths"] = wavelengths
        model = steps[-1]
        return {
            "steps": descriptors,
            "model_step_idx": model.step_idx,
            "model_class": model.operator_class,
            "preprocessings": preprocessing_label(steps[:-1]),
            "fold_strategy": self.trace.fold_strategy,
            "fold_artifacts": {fold: model_folds[fold] for fold in fold_ids},
            "shared_artifacts": shared_artifacts,
            "branch_path": list(self.trace.branch_path) if self.trace.branch_path is not None else None,
            "source_index": self.trace.source_index,
        }

    def _describe(self, step: TraceStep) -> dict[str, Any]:
        artifact_type = "model" if step.is_model else "transformer"
        artifact_id = None
        per_fold_ids: dict[str, str] = {}
        if step.shared is not None:
            artifact_id = self._save(step.shared, step, artifact_type)
        for fold_id in sorted(step.per_fold, key=str):
            per_fold_ids[str(fold_id)] = self._save(step.per_fold[fold_id], step, artifact_type)
        sample = step.shared if step.shared is not None else next(iter(step.per_fold.values()))
        return {
            "step_idx": int(step.step_idx),
            "operator_class": step.operator_class,
            "params": json_safe(step.params or {}),
            "artifact_id": artifact_id,
            "fold_artifacts": per_fold_ids,
            "stateless": bool(step.stateless),
            "is_model": bool(step.is_model),
            "uses_wavelengths": bool(step.uses_wavelengths),
            "n_features_in": _n_features_in(sample),
        }

    def _save(self, obj: Any, step: TraceStep, artifact_type: str) -> str:
        """Save one fitted object. Called once per reference the chain will hold, so the
        store's ref_count (one claim per save) matches what deleting the chain releases."""
        save = self.artifact_registry.save_artifact
        try:
            result = save(obj, step.operator_class, artifact_type, self.format)
        except _PICKLING_ERRORS as joblib_error:  # retried with a more capable pickler
            if self.format == "cloudpickle":
                raise InvalidInputError(
                    f"step {step.step_idx} ({step.operator_class}): fitted object cannot be "
                    f"serialized: {joblib_error}") from joblib_error
            try:
                result = save(obj, step.operator_class, artifact_type, "cloudpickle")
            except _PICKLING_ERRORS as error:
                raise InvalidInputError(
                    f"step {step.step_idx} ({step.operator_class}): fitted object cannot be "
                    f"serialized with joblib ({joblib_error}) nor cloudpickle ({error})") from error
        return result


def validate_trace(trace: ExecutionTrace) -> list[str]:
    """Check a trace's shape and return its fold ids (sorted; empty when the model is shared).

    Raises:
        InvalidInputError: naming the first problem found.
    """
    if not isinstance(trace, ExecutionTrace):
        raise InvalidInputError(f"expected an ExecutionTrace, got {type(trace).__name__}")
    steps = trace.steps
    if not steps:
        raise InvalidInputError("execution trace has no steps; it needs at least a model step")
    if trace.fold_strategy not in FOLD_STRATEGIES:
        raise InvalidInputError(
            f"unknown fold_strategy {trace.fold_strategy!r}; expected one of {FOLD_STRATEGIES}")
    if trace.task_type not in TASK_TYPES:
        raise InvalidInputError(
            f"unknown task_type {trace.task_type!r}; expected one of {TASK_TYPES}")
    models = [s.step_idx for s in steps if s.is_model]
    if len(models) != 1:
        raise InvalidInputError(
            f"execution trace must have exactly one model step (is_model=True), found {len(models)}"
            + (f" at step_idx {models}" if models else ""))
    if not steps[-1].is_model:
        raise InvalidInputError(
            f"the model step (step_idx {models[0]}) must be the last step of the trace")
    previous = None
    for step in steps:
        label = f"step {step.step_idx} ({step.operator_class})"
        if not isinstance(step.step_idx, int) or isinstance(step.step_idx, bool):
            raise InvalidInputError(f"{label}: step_idx must be an int")
        if previous is not None and step.step_idx <= previous:
            raise InvalidInputError(
                f"{label}: step_idx values must be strictly increasing (previous {previous})")
        previous = step.step_idx
        if not isinstance(step.operator_class, str) or not step.operator_class:
            raise InvalidInputError(f"step {step.step_idx}: operator_class must be a non-empty string")
        if step.params is not None and not isinstance(step.params, dict):
            raise InvalidInputError(f"{label}: params must be a dict")
        has_shared = step.shared is not None
        has_folds = bool(step.per_fold)
        if has_shared and has_folds:
            raise InvalidInputError(
                f"{label}: has both a shared fitted object and per-fold objects; give one or the other")
        if not has_shared and not has_folds:
            raise InvalidInputError(
                f"{label}: has no fitted object (set shared= or per_fold=); replay needs one even "
                f"for stateless steps")
        if not step.is_model:
            if not callable(getattr(step.shared if has_shared else next(iter(step.per_fold.values())),
                                    "transform", None)):
                raise InvalidInputError(f"{label}: fitted object has no transform() method")
            if has_folds and trace.fold_strategy == "shared":
                raise InvalidInputError(
                    f"{label}: fold_strategy is 'shared' but the transformer has per-fold objects")
        else:
            obj = step.shared if has_shared else next(iter(step.per_fold.values()))
            if not callable(getattr(obj, "predict", None)):
                raise InvalidInputError(f"{label}: fitted model has no predict() method")
            # Classification models without predict_proba are accepted: replay combines their
            # folds by majority vote of predict() labels.
    model = steps[-1]
    fold_ids = sorted((str(k) for k in model.per_fold), key=_fold_sort_key)
    for step in steps[:-1]:
        if not step.per_fold:
            continue
        keys = sorted((str(k) for k in step.per_fold), key=_fold_sort_key)
        if not fold_ids:
            raise InvalidInputError(
                f"step {step.step_idx} ({step.operator_class}): has per-fold objects but the model "
                f"step is shared; per-fold transformers need per-fold models")
        if keys != fold_ids:
            raise InvalidInputError(
                f"step {step.step_idx} ({step.operator_class}): per-fold keys {keys} do not match "
                f"the model's fold ids {fold_ids}")
    return fold_ids


def preprocessing_label(steps: list[TraceStep]) -> str:
    """Display string of the preprocessing steps, e.g. ``"StandardNormalVariate>SavitzkyGolay"``."""
    return ">".join(step.operator_class.rsplit(".", 1)[-1] for step in steps)


def json_safe(value: Any) -> Any:
    """Convert parameters to JSON-safe values (numpy scalars, tuples, classes, estimators)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [json_safe(v) for v in items]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and getattr(value, "shape", None) == ():
        return json_safe(item())
    tolist = getattr(value, "tolist", None)  # numpy array
    if callable(tolist):
        return json_safe(tolist())
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    cls = type(value)
    return {"__class__": f"{cls.__module__}.{cls.__qualname__}", "repr": repr(value)}


def _wavelength_axis(wavelengths: Any, n_features_in: int | None) -> list[float] | None:
    """The trace's wavelengths as a list of finite floats, checked against the input width."""
    if wavelengths is None:
        return None
    try:
        values = [float(v) for v in wavelengths]
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"trace wavelengths must be numbers: {error}") from None
    if not all(math.isfinite(v) for v in values):
        raise InvalidInputError("trace wavelengths must be finite numbers")
    if n_features_in is not None and len(values) != n_features_in:
        raise InvalidInputError(
            f"trace has {len(values)} wavelengths but the first step was fitted on "
            f"{n_features_in} features")
    return values


def _n_features_in(obj: Any) -> int | None:
    n = getattr(obj, "n_features_in_", None)
    try:
        return int(n) if n is not None else None
    except (TypeError, ValueError):
        return None


def _fold_sort_key(fold_id: str) -> tuple[int, Any]:
    return (0, int(fold_id)) if fold_id.lstrip("-").isdigit() else (1, fold_id)
