"""``store.array_store``: the array backend as the store's callers see it.

The seed's two-step path saves a prediction, then its arrays with
``store.array_store.save_batch([...])``. Written to disk at once, those arrays
would have no catalog record until the writer's ``complete_pipeline``; a
``compact_arrays()`` in another process meanwhile would take them for orphans
of a dead writer and tombstone them. So arrays of a prediction still buffered
in this store join that prediction's buffered rows instead: they are staged
and committed in the same transaction as the prediction, exactly like arrays
given to ``save_prediction``. Arrays of predictions already committed (or
unknown to this store) are written through at once, as the seed specifies.

Every other attribute is the backend's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..arrays.codec import normalize_record
from ..errors import InvalidInputError

if TYPE_CHECKING:
    from .store import WorkspaceStore


class StoreArrays:
    """The store's array backend, with writes of buffered predictions deferred to their commit."""

    def __init__(self, backend: Any, store: "WorkspaceStore") -> None:
        self._backend = backend
        self._store = store

    @property
    def backend(self) -> Any:
        """The underlying array backend."""
        return self._backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def __repr__(self) -> str:
        return f"StoreArrays({self._backend!r})"

    # -- writing ---------------------------------------------------------------------
    def save_batch(self, records: list[dict]) -> None:
        """Store arrays for a batch of records (seed API).

        Every record is validated first (``InvalidInputError``, nothing written).
        Records of predictions this store still buffers are committed with them;
        the others are written at once.
        """
        if not isinstance(records, list):
            raise InvalidInputError(f"records must be a list of dicts, got {type(records).__name__}")
        normalized = [normalize_record(r) for r in records]
        seen: set[str] = set()
        for record in normalized:
            if record["prediction_id"] in seen:
                raise InvalidInputError(
                    f"prediction {record['prediction_id']!r} appears twice in the batch")
            seen.add(record["prediction_id"])
        store = self._store
        with store._lock:
            store._check_open()
            pending = store._uow.pending
            buffered = {row["prediction_id"]: row for row in pending.predictions}
            deferred = [r for r in normalized if r["prediction_id"] in buffered]
            for record in deferred:
                row = buffered[record["prediction_id"]]
                if record["dataset_name"] != row["dataset_name"]:
                    raise InvalidInputError(
                        f"arrays of prediction {record['prediction_id']!r} must be saved under its "
                        f"dataset {row['dataset_name']!r}, not {record['dataset_name']!r}")
            if deferred:
                ids = {r["prediction_id"] for r in deferred}
                pending.arrays = [a for a in pending.arrays if a["prediction_id"] not in ids]
                pending.arrays.extend(deferred)
                for pid in ids:
                    buffered[pid]["has_arrays"] = True
            rest = [r for r in records if r["prediction_id"] not in buffered]
            if rest:
                self._backend.save_batch(rest)

    # -- reading (read-your-writes: deferred arrays are committed first) ------------------
    def _flush_deferred(self) -> None:
        store = self._store
        with store._lock:
            if not store._closed and store._uow.pending.arrays:
                store._uow.commit()

    def load(self, prediction_id: str, dataset_name: str) -> dict | None:
        """Arrays of one prediction, or None."""
        self._flush_deferred()
        return self._backend.load(prediction_id, dataset_name)

    def load_batch(self, prediction_ids: list[str], dataset_name: str) -> list[dict]:
        """Arrays of several predictions of one dataset, in the order asked."""
        self._flush_deferred()
        return self._backend.load_batch(prediction_ids, dataset_name)

    def exists(self, prediction_id: str, dataset_name: str) -> bool:
        """True when arrays are stored for the prediction."""
        self._flush_deferred()
        return self._backend.exists(prediction_id, dataset_name)

    def list_keys(self, dataset_name: str) -> list[str]:
        """Prediction ids with stored (not deleted) arrays in a dataset."""
        self._flush_deferred()
        return self._backend.list_keys(dataset_name)
