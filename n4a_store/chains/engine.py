"""The replay engine: run a stored chain's fitted objects on new data.

This module is the single implementation of chain replay. ``replay_chain``
(workspace), ``n4a_store.predict`` (``.n4a`` bundle) and the exported
``.n4a.py`` script all run it, so they give the same numbers. It imports only
numpy and the standard library because its source is embedded verbatim in the
exported script.

Replay semantics:

- Transformers run in step order. A step with one shared fitted object runs
  once; a step with per-fold objects splits the data into one path per fold.
- Every fold model predicts on its own path; the predictions are averaged.
- Classification averages the folds' ``predict_proba`` (columns aligned on the
  union of the folds' ``classes_``) and returns the label with the highest mean
  probability. Classifiers without ``predict_proba`` (RidgeClassifier,
  LinearSVC...) combine the folds' ``predict`` labels by majority vote; a tie
  goes to the smallest tied label in sorted order (:func:`majority_vote`).
  Such chains have no probabilities.
- Steps flagged ``uses_wavelengths``, and steps whose fitted object's method takes a
  ``wavelengths`` keyword (chains written with the seed step fields only), receive
  ``wavelengths=`` when given.
- A chain that recorded its training wavelength axis (``input_wavelengths`` on
  its first step) checks the caller's ``wavelengths``: the same values in
  another order reorder X's columns to the training order; other values raise
  :class:`InvalidInputError` naming the first differences. Values match within 5 %
  of the training axis' smallest spacing (so rounded column names still match).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

try:  # inside n4a_store; the exported script defines its own fallback
    from n4a_store.errors import InvalidInputError
except ImportError:  # pragma: no cover - exercised by the exported script
    class InvalidInputError(ValueError):  # type: ignore[no-redef]
        """An argument is malformed."""

ArtifactLoader = Callable[[str, str], Any]
"""``load(artifact_id, context)`` -> fitted object; ``context`` names the step and fold."""


class _Step:
    """One resolved step on a replay path."""

    __slots__ = ("obj", "uses_wavelengths", "label")

    def __init__(self, obj: Any, uses_wavelengths: bool, label: str) -> None:
        self.obj = obj
        self.uses_wavelengths = uses_wavelengths or _takes_wavelengths(obj)
        self.label = label


def _takes_wavelengths(obj: Any) -> bool:
    """True when ``obj``'s transform/predict accepts a ``wavelengths`` keyword."""
    import inspect

    for method in ("transform", "predict"):
        fn = getattr(obj, method, None)
        if fn is None:
            continue
        try:
            if "wavelengths" in inspect.signature(fn).parameters:
                return True
        except (TypeError, ValueError):
            continue
    return False


class ReplayPlan:
    """A chain with its fitted objects loaded, ready to predict.

    Attributes:
        chain_id: Id of the chain the plan was compiled from.
        task_type: ``"regression"`` or ``"classification"``.
        n_features_in: Number of input features the chain was fitted on, or ``None``.
        input_wavelengths: The training wavelength axis (column order), or ``None``.
        fold_ids: Fold ids whose models are averaged (``[None]`` for one shared model).
        classes: Class labels (classification), the column order of ``predict_proba``.
        has_proba: True when the chain can give class probabilities (classification models
            with ``predict_proba``); otherwise classification folds vote with ``predict``.
    """

    def __init__(self, chain: dict, load: ArtifactLoader) -> None:
        self.chain_id = chain.get("chain_id")
        steps = sorted(chain.get("steps") or [], key=lambda s: int(s["step_idx"]))
        if not steps:
            raise InvalidInputError(f"chain {self.chain_id!r} has no steps")
        model_idx = chain.get("model_step_idx", steps[-1]["step_idx"])
        model_desc = next((s for s in steps if int(s["step_idx"]) == int(model_idx)), None)
        if model_desc is None or model_desc is not steps[-1]:
            raise InvalidInputError(
                f"chain {self.chain_id!r}: model step {model_idx} is not the last step")
        self.n_features_in = steps[0].get("n_features_in")
        axis = steps[0].get("input_wavelengths")
        self.input_wavelengths = None if axis is None else np.asarray(axis, dtype=np.float64)
        fold_artifacts = dict(chain.get("fold_artifacts") or {})
        shared_artifacts = dict(chain.get("shared_artifacts") or {})

        model_folds = dict(model_desc.get("fold_artifacts") or fold_artifacts)
        if model_folds:
            self.fold_ids: list[Any] = sorted(model_folds, key=_fold_sort_key)
        else:
            model_folds = {None: model_desc.get("artifact_id") or shared_artifacts.get(str(model_idx))}
            if model_folds[None] is None:
                raise InvalidInputError(f"chain {self.chain_id!r}: the model step has no artifact")
            self.fold_ids = [None]

        # Leading shared transformers run once; the rest run per fold path.
        self.prefix: list[_Step] = []
        self.paths: list[list[_Step]] = [[] for _ in self.fold_ids]
        split = False
        for desc in steps[:-1]:
            per_fold = desc.get("fold_artifacts") or {}
            shared_id = desc.get("artifact_id") or shared_artifacts.get(str(desc["step_idx"]))
            uses_wl = bool(desc.get("uses_wavelengths"))
            label = _step_label(desc)
            if per_fold:
                missing = [f for f in self.fold_ids if f not in per_fold]
                if missing:
                    raise InvalidInputError(
                        f"chain {self.chain_id!r}: {label} has no fitted object for folds {missing}")
                split = True
                for path, fold in zip(self.paths, self.fold_ids):
                    obj = load(per_fold[fold], f"{label}, fold {fold!r}")
                    path.append(_Step(obj, uses_wl, label))
            elif shared_id is not None:
                step = _Step(load(shared_id, label), uses_wl, label)
                if split:
                    for path in self.paths:
                        path.append(step)
                else:
                    self.prefix.append(step)
            else:
                raise InvalidInputError(f"chain {self.chain_id!r}: {label} has no artifact")

        model_label = _step_label(model_desc)
        self.models = [
            _Step(load(model_folds[f], model_label + ("" if f is None else f", fold {f!r}")),
                  bool(model_desc.get("uses_wavelengths")), model_label)
            for f in self.fold_ids
        ]
        task = model_desc.get("task_type")
        if task is None:
            first = self.models[0].obj
            task = "classification" if hasattr(first, "classes_") else "regression"
        self.task_type = task
        self.classes: np.ndarray | None = None
        self._class_columns: list[np.ndarray] | None = None
        self.has_proba = False
        if task == "classification":
            self._prepare_classes()

    def _prepare_classes(self) -> None:
        per_fold = []
        self.has_proba = all(callable(getattr(m.obj, "predict_proba", None)) for m in self.models)
        for model in self.models:
            classes = getattr(model.obj, "classes_", None)
            if classes is None:
                if self.has_proba:
                    raise InvalidInputError(
                        f"chain {self.chain_id!r}: classification model {model.label} has no "
                        f"classes_")
                self.classes = None  # labels come from the models' predict()
                return
            per_fold.append(np.asarray(classes))
        if all(len(c) == len(per_fold[0]) and np.array_equal(c, per_fold[0]) for c in per_fold):
            self.classes = per_fold[0]
            self._class_columns = None  # identical class sets: no realignment
        else:
            self.classes = np.unique(np.concatenate(per_fold))
            self._class_columns = [np.searchsorted(self.classes, c) for c in per_fold]

    # ------------------------------------------------------------------ running
    def predict(self, X: Any, wavelengths: Any = None) -> np.ndarray:
        """Predicted values (regression) or labels (classification), averaged over folds."""
        if self.task_type == "classification":
            if not self.has_proba:
                return majority_vote(self._run(X, wavelengths, proba=False, labels=True))
            proba = self.predict_proba(X, wavelengths)
            return self.classes[np.argmax(proba, axis=1)]
        outputs = self._run(X, wavelengths, proba=False)
        mean = outputs[0] if len(outputs) == 1 else np.mean(np.stack(outputs), axis=0)
        if mean.ndim == 2 and mean.shape[1] == 1:
            mean = mean[:, 0]
        return mean

    def predict_proba(self, X: Any, wavelengths: Any = None) -> np.ndarray:
        """Class probabilities averaged over folds; columns follow :attr:`classes`."""
        if self.task_type != "classification":
            raise InvalidInputError(
                f"chain {self.chain_id!r} is a {self.task_type} chain; probabilities exist only "
                f"for classification chains")
        if not self.has_proba:
            model = next(m for m in self.models
                         if not callable(getattr(m.obj, "predict_proba", None)))
            raise InvalidInputError(
                f"chain {self.chain_id!r}: classification model {model.label} "
                f"({type(model.obj).__name__}) has no predict_proba(); this chain gives labels "
                f"only (its folds vote)")
        outputs = self._run(X, wavelengths, proba=True)
        if self._class_columns is not None:
            aligned = []
            for out, columns in zip(outputs, self._class_columns):
                full = np.zeros((out.shape[0], len(self.classes)), dtype=np.float64)
                full[:, columns] = out
                aligned.append(full)
            outputs = aligned
        return outputs[0] if len(outputs) == 1 else np.mean(np.stack(outputs), axis=0)

    def _run(self, X: Any, wavelengths: Any, proba: bool,
             labels: bool = False) -> list[np.ndarray]:
        X = self.check_input(X)
        if wavelengths is not None:
            wavelengths = np.asarray(wavelengths)
            if wavelengths.ndim != 1 or wavelengths.shape[0] != X.shape[1]:
                raise InvalidInputError(
                    f"wavelengths must be 1-D with one value per feature ({X.shape[1]}), "
                    f"got shape {wavelengths.shape}")
            if self.input_wavelengths is not None:
                X, wavelengths = self.align_columns(X, wavelengths)
        for step in self.prefix:
            X = _apply(step, "transform", X, wavelengths, self.chain_id)
        method = "predict_proba" if proba else "predict"
        outputs = []
        for path, model in zip(self.paths, self.models):
            Xf = X
            for step in path:
                Xf = _apply(step, "transform", Xf, wavelengths, self.chain_id)
            out = _apply(model, method, Xf, wavelengths, self.chain_id)
            outputs.append(np.asarray(out) if labels else np.asarray(out, dtype=np.float64))
        return outputs

    def align_columns(self, X: np.ndarray, wavelengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Put X's columns in the training wavelength order.

        Returns ``(X, wavelengths)`` unchanged when they already follow the training axis,
        reordered when they hold the same wavelengths in another order.

        Raises:
            InvalidInputError: the wavelengths are not the training wavelengths.
        """
        train = self.input_wavelengths
        if wavelengths.shape == train.shape and np.array_equal(wavelengths, train):
            return X, wavelengths  # the usual case: nothing to do
        try:
            given = wavelengths.astype(np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"wavelengths must be numbers, got dtype {wavelengths.dtype}") from None
        if given.shape != train.shape:
            raise InvalidInputError(
                f"chain {self.chain_id!r} was trained on {train.shape[0]} wavelengths, "
                f"got {given.shape[0]}")
        given_order, train_order = np.argsort(given, kind="stable"), np.argsort(train, kind="stable")
        tolerance = _wavelength_tolerance(train)
        if np.allclose(given[given_order], train[train_order], rtol=0.0, atol=tolerance):
            columns = np.empty_like(given_order)
            columns[train_order] = given_order  # column of X holding each training wavelength
            return X[:, columns], train
        unknown = [float(v) for v in given if not np.any(np.abs(train - v) <= tolerance)]
        missing = [float(v) for v in train if not np.any(np.abs(given - v) <= tolerance)]
        raise InvalidInputError(
            f"wavelengths do not match the {train.shape[0]} wavelengths chain {self.chain_id!r} "
            f"was trained on ({train[0]:g} .. {train[-1]:g}): not in training {unknown[:3]}"
            f"{' ...' if len(unknown) > 3 else ''}, missing {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''}")

    def check_input(self, X: Any) -> np.ndarray:
        """Return X as a 2-D numeric numpy array with the fitted number of features."""
        if not isinstance(X, np.ndarray):
            to_numpy = getattr(X, "to_numpy", None)
            X = to_numpy() if callable(to_numpy) else np.asarray(X)
        if X.ndim != 2:
            hint = " (for one sample use X.reshape(1, -1))" if X.ndim == 1 else ""
            raise InvalidInputError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}{hint}")
        if X.shape[0] == 0:
            raise InvalidInputError("X has no samples")
        if X.dtype.kind not in "fiub":
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError) as error:
                raise InvalidInputError(f"X must be numeric, got dtype {X.dtype}: {error}") from None
        if self.n_features_in is not None and X.shape[1] != self.n_features_in:
            raise InvalidInputError(
                f"X has {X.shape[1]} features but chain {self.chain_id!r} was fitted on "
                f"{self.n_features_in}")
        return X


def _wavelength_tolerance(axis: np.ndarray) -> float:
    """How far a wavelength may be from a training one and still be that one: 5 % of the
    axis' smallest spacing (rounded column names still match; neighbours never do)."""
    scale = 1e-6 * max(1.0, float(np.max(np.abs(axis)))) if axis.size else 1e-6
    steps = np.diff(np.sort(axis))
    steps = steps[steps > 0]
    return max(scale, 0.05 * float(steps.min())) if steps.size else scale


def majority_vote(labels: list[Any]) -> np.ndarray:
    """Combine per-fold label predictions (one 1-D array per fold) by majority vote.

    Each sample gets the label most folds predicted; a tie goes to the smallest tied
    label in sorted order (``np.unique`` order), so the result is deterministic.
    """
    stacked = np.stack([np.asarray(fold).reshape(-1) for fold in labels])
    if stacked.shape[0] == 1:
        return stacked[0]
    values, codes = np.unique(stacked, return_inverse=True)
    codes = np.asarray(codes).reshape(stacked.shape)
    counts = np.zeros((stacked.shape[1], len(values)), dtype=np.int64)
    rows = np.arange(stacked.shape[1])
    for fold_codes in codes:
        counts[rows, fold_codes] += 1
    return values[np.argmax(counts, axis=1)]  # argmax: first (smallest) of the tied labels


def _apply(step: _Step, method: str, X: Any, wavelengths: Any, chain_id: Any) -> Any:
    """Call ``step.obj.<method>(X)``, passing wavelengths to wavelength-aware steps."""
    try:
        if step.uses_wavelengths and wavelengths is not None:
            return getattr(step.obj, method)(X, wavelengths=wavelengths)
        return getattr(step.obj, method)(X)
    except Exception as error:
        add_note = getattr(error, "add_note", None)
        if callable(add_note):
            add_note(f"while replaying chain {chain_id!r}: {step.label}.{method}()")
        raise


def _step_label(desc: dict) -> str:
    return f"step {desc['step_idx']} ({str(desc.get('operator_class', '?')).rsplit('.', 1)[-1]})"


def _fold_sort_key(fold_id: Any) -> tuple[int, Any]:
    text = str(fold_id)
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)
