"""The prediction-array backend protocol (seed 004's storage-backend protocol).

A backend keeps the dense arrays of predictions (``y_true``, ``y_pred``,
``y_proba``, ``sample_indices``, ``weights``) keyed by prediction id within a
dataset. The catalog stores, per prediction, only an opaque *array reference*
the backend returned when the arrays were staged; the backend alone knows what
it means (a Parquet file and row, nothing for a table).

Writes made by the store go through :meth:`ArrayBackend.stage` inside the
catalog transaction and are undone with :meth:`StagedArrays.discard` when that
transaction fails. :meth:`ArrayBackend.save_batch` is the seed's standalone path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..catalog.base import Session


@dataclass
class StagedArrays:
    """Arrays staged for one commit: their references, the file work left, and its undo.

    ``write``, when set, is file work the backend left for the caller to run before
    COMMIT: it touches no catalog session, so the store runs it on another thread while
    the catalog rows are inserted (the references are known before the bytes land).
    """

    refs: dict[str, str | None] = field(default_factory=dict)
    undo: Callable[[], None] | None = None
    write: Callable[[], None] | None = None

    def discard(self) -> None:
        """Remove what was written (the catalog transaction failed)."""
        if self.undo is not None:
            self.undo()


class ArrayBackend(Protocol):
    """Where prediction arrays live."""

    kind: str

    def stage(self, records: list[dict[str, Any]], session: Session, *,
              defer_files: bool = False, normalized: bool = False) -> StagedArrays:
        """Write validated records as part of the catalog transaction ``session``.

        With ``defer_files``, a backend that writes files may leave that work in the
        returned ``StagedArrays.write`` for the caller to run before COMMIT. With
        ``normalized`` the records already came out of ``normalize_record`` (the
        store's own buffers), and a backend may skip validating them again.
        """
        ...

    def save_batch(self, records: list[dict]) -> None:
        """Store arrays for a batch of records at once (seed API)."""
        ...

    def load(self, prediction_id: str, dataset_name: str) -> dict | None:
        """Arrays of one prediction, or None."""
        ...

    def load_ref(self, prediction_id: str, dataset_name: str, ref: str | None, *,
                 arrays_only: bool = False) -> dict | None:
        """Arrays of one prediction using the reference the catalog holds (falls back to load).

        ``arrays_only=True`` lets a backend return only the id and array keys.
        """
        ...

    def load_batch(self, prediction_ids: list[str], dataset_name: str) -> list[dict]:
        """Arrays of several predictions of one dataset, in the order asked; absent ones skipped."""
        ...

    def delete(self, prediction_ids: list[str]) -> None:
        """Delete the arrays of some predictions."""
        ...

    def exists(self, prediction_id: str, dataset_name: str) -> bool:
        """True when arrays are stored for the prediction."""
        ...

    def list_keys(self, dataset_name: str) -> list[str]:
        """Prediction ids with stored (not deleted) arrays in a dataset."""
        ...

    def list_datasets(self) -> list[str]:
        """Datasets that have stored arrays."""
        ...

    def compact(self, dataset_name: str | None = None) -> int:
        """Reclaim space of deleted arrays; return the rows removed."""
        ...

    def stats(self) -> dict[str, dict[str, int]]:
        """Per dataset: ``files``, ``rows`` stored and ``tombstoned`` rows not yet compacted."""
        ...
