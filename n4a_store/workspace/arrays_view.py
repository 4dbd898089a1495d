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
            buffered = self._buffered_predictions()
            deferred = [r for r in normalized if r["prediction_id"] in buffered]
            for record in deferred:
                _, row = buffered[record["prediction_id"]]
                if record["dataset_name"] != row["dataset_name"]:
                    raise InvalidInputError(
                        f"arrays of prediction {record['prediction_id']!r} must be saved under its "
                        f"dataset {row['dataset_name']!r}, not {record['dataset_name']!r}")
            for record in deferred:
                buf, row = buffered[record["prediction_id"]]
                buf.arrays = [a for a in buf.arrays if a["prediction_id"] != record["prediction_id"]]
                buf.arrays.append(record)
                row["has_arrays"] = True
            rest = [r for r in records if r["prediction_id"] not in buffered]
            if rest:
                self._backend.save_batch(rest)

    def _buffered_predictions(self) -> dict[str, tuple[Any, dict]]:
        """prediction id -> (the buffer holding it, its buffered row), over every buffer."""
        uow = self._store._uow
        found: dict[str, tuple[Any, dict]] = {}
        for buf in uow.buffers():
            for row in buf.predictions:
                found[row["prediction_id"]] = (buf, row)
        return found

    # -- reading (read-your-writes: arrays still buffered here are served from the buffer) --
    def _buffered_arrays(self, dataset_name: str) -> dict[str, dict]:
        """Arrays of this store's buffered predictions in ``dataset_name``, by prediction id."""
        store = self._store
        if store._closed:
            return {}
        uow = store._uow
        return {a["prediction_id"]: dict(a) for buf in uow.buffers()
                for a in buf.arrays if a.get("dataset_name") == dataset_name}

    def load(self, prediction_id: str, dataset_name: str) -> dict | None:
        """Arrays of one prediction, or None."""
        found = self.load_batch([prediction_id], dataset_name)
        return found[0] if found else None

    def load_batch(self, prediction_ids: list[str], dataset_name: str) -> list[dict]:
        """Arrays of several predictions of one dataset, in the order asked."""
        with self._store._lock:
            mine = self._buffered_arrays(dataset_name)
        if not mine:
            return self._backend.load_batch(prediction_ids, dataset_name)
        stored = {r["prediction_id"]: r for r in self._backend.load_batch(
            [p for p in prediction_ids if p not in mine], dataset_name)}
        return [mine.get(p) or stored[p] for p in prediction_ids if p in mine or p in stored]

    def exists(self, prediction_id: str, dataset_name: str) -> bool:
        """True when arrays are stored (or buffered here) for the prediction."""
        with self._store._lock:
            if prediction_id in self._buffered_arrays(dataset_name):
                return True
        return self._backend.exists(prediction_id, dataset_name)

    def list_keys(self, dataset_name: str) -> list[str]:
        """Prediction ids with stored (not deleted) arrays in a dataset, and those buffered here."""
        with self._store._lock:
            mine = self._buffered_arrays(dataset_name)
        keys = self._backend.list_keys(dataset_name)
        return keys + sorted(set(mine) - set(keys)) if mine else keys
