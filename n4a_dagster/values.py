"""The in-memory values the n4a assets pass to and receive from the IO managers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from n4a_store.chains.trace import ExecutionTrace


@dataclass
class ChainToSave:
    """Fitted per-fold objects to store as artifacts plus a chain row of ``pipeline_id``."""

    pipeline_id: str
    trace: ExecutionTrace


@dataclass
class StoredChain:
    """A chain already in the store, replayable without keeping the store open.

    Attributes:
        chain_id: The store's chain id.
        workspace: Location of the store holding the chain (a path or store URI).
        record: The chain row (``WorkspaceStore.get_chain``), when loaded.
    """

    chain_id: str
    workspace: str
    record: dict[str, Any] | None = None

    def predict(self, X: Any, wavelengths: Any | None = None, **kwargs: Any) -> np.ndarray:
        """Replay the chain on ``X`` (opens the store for the call only)."""
        from n4a_store import WorkspaceStore

        with WorkspaceStore(self.workspace) as store:
            return store.replay_chain(self.chain_id, X, wavelengths=wavelengths, **kwargs)

    def export(self, output_path: str | Path, format: str = "n4a") -> Path:
        """Export the chain as a ``.n4a`` bundle or ``.n4a.py`` script."""
        from n4a_store import WorkspaceStore

        with WorkspaceStore(self.workspace) as store:
            return Path(store.export_chain(self.chain_id, Path(output_path), format=format))


@dataclass
class PredictionArraysRef:
    """Prediction arrays already written through the store (by ``save_prediction``)."""

    dataset_name: str
    prediction_ids: list[str] = field(default_factory=list)
    pipeline_id: str | None = None
    run_id: str | None = None


@dataclass
class PredictionsToSave:
    """Predictions of one chain to write with ``save_prediction``, arrays included.

    Each record holds the ``save_prediction`` arguments after ``dataset_name`` (model_name,
    model_class, fold_id, partition, scores..., and ``y_true``/``y_pred``/... arrays).
    """

    pipeline_id: str
    chain_id: str
    dataset_name: str
    records: list[dict[str, Any]]


@dataclass
class PipelineOutcome:
    """What one (dataset, pipeline) partition wrote into the store."""

    run_id: str
    dataset_name: str
    pipeline_key: str
    pipeline_name: str
    pipeline_id: str
    status: str
    chain_id: str | None
    prediction_ids: list[str]
    best_val: float | None
    best_test: float | None
    metric: str | None
    duration_ms: int | None
    error: str | None
    replaced_pipeline_ids: list[str] = field(default_factory=list)
    #: The Dagster partition (``<dataset>/<label>/<pipeline key>``) this outcome belongs to.
    partition_key: str = ""
    #: A failed attempt that left the partition's earlier completed pipeline in place: its id
    #: (also ``pipeline_id``), and the id the deleted failed attempt had.
    kept_previous_pipeline_id: str | None = None
    failed_attempt_pipeline_id: str | None = None
