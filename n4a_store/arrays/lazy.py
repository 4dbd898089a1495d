"""Lazy prediction arrays (seed 004's SeriesContainer idea).

A :class:`LazyArrays` knows where one prediction's arrays are (backend, id,
dataset, reference) and reads them on first access. :func:`materialize_all`
loads many at once, one batched read per dataset.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Iterator, Mapping

from .base import ArrayBackend


class LazyArrays(Mapping[str, Any]):
    """One prediction's arrays, read from the backend when first used.

    Behaves as a read-only mapping (``lazy["y_pred"]``); :attr:`data` is the
    whole record, or None when the backend holds no arrays for the prediction.
    """

    def __init__(self, backend: ArrayBackend, prediction_id: str, dataset_name: str,
                 ref: str | None = None) -> None:
        self.backend = backend
        self.prediction_id = prediction_id
        self.dataset_name = dataset_name
        self.ref = ref
        self._data: dict | None = None
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """True once the arrays have been read."""
        return self._loaded

    def materialize(self) -> dict | None:
        """Read the arrays now (once) and return them."""
        if not self._loaded:
            self._set(self.backend.load_ref(self.prediction_id, self.dataset_name, self.ref))
        return self._data

    def _set(self, data: dict | None) -> None:
        self._data, self._loaded = data, True

    @property
    def data(self) -> dict | None:
        """The record of arrays (``y_true``, ``y_pred``, ``y_proba``, ...) or None."""
        return self.materialize()

    def __getitem__(self, key: str) -> Any:
        data = self.materialize()
        if data is None:
            raise KeyError(key)
        return data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.materialize() or {})

    def __len__(self) -> int:
        return len(self.materialize() or {})

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "not loaded"
        return f"LazyArrays({self.prediction_id!r}, {self.dataset_name!r}, {state})"


def materialize_all(items: Iterable[LazyArrays]) -> None:
    """Load every not-yet-loaded item, one ``load_batch`` per (backend, dataset)."""
    groups: dict[tuple[int, str], list[LazyArrays]] = defaultdict(list)
    for item in items:
        if not item.loaded:
            groups[(id(item.backend), item.dataset_name)].append(item)
    for (_, dataset), members in groups.items():
        ids = list(dict.fromkeys(m.prediction_id for m in members))
        found = {r["prediction_id"]: r for r in members[0].backend.load_batch(ids, dataset)}
        for member in members:
            member._set(found.get(member.prediction_id))
