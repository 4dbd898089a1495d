"""The execution trace a training run produces, the input of :class:`ChainBuilder`.

A trace is an ordered list of steps. Each step names its operator class and
parameters and carries the fitted objects it produced: either one object
shared by every fold (``shared``), or one object per fold (``per_fold``,
keyed by fold id). The model step is last; it normally has one fitted model
per fold. Stateless steps (pure functions of X) carry a fitted object only
so replay can call ``transform`` on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TraceStep:
    """One executed step of a pipeline.

    Attributes:
        step_idx: Position of the step in the pipeline (0-based).
        operator_class: Fully qualified class name, e.g. ``sklearn.preprocessing.StandardScaler``.
        params: Constructor parameters (JSON-serialisable).
        shared: The fitted object used by every fold, or ``None``.
        per_fold: ``{fold_id: fitted object}`` when each fold fitted its own copy.
        stateless: True when the operator learns nothing from data.
        is_model: True for the model (final estimator) step.
        uses_wavelengths: True when the operator takes a ``wavelengths`` argument at transform time.
    """

    step_idx: int
    operator_class: str
    params: dict[str, Any] = field(default_factory=dict)
    shared: Any | None = None
    per_fold: dict[str, Any] = field(default_factory=dict)
    stateless: bool = False
    is_model: bool = False
    uses_wavelengths: bool = False


@dataclass
class ExecutionTrace:
    """The ordered steps of one pipeline execution plus its fold layout.

    Attributes:
        steps: Steps in execution order; exactly one has ``is_model=True`` and it is last.
        fold_strategy: ``"per_fold"`` when transformers were refitted per fold, ``"shared"``
            when transformers were fitted once and only the model varies per fold.
        task_type: ``"regression"`` or ``"classification"``.
        branch_path: Branch indices for branching pipelines.
        source_index: Source index for multi-source pipelines.
        wavelengths: The training wavelength axis, one value per input feature in column
            order, or ``None`` when unknown. Replay uses it to put the columns of new data
            in this order (or refuse data measured on other wavelengths).
    """

    steps: list[TraceStep]
    fold_strategy: str = "per_fold"
    task_type: str = "regression"
    branch_path: list[int] | None = None
    source_index: int | None = None
    wavelengths: list[float] | None = None
