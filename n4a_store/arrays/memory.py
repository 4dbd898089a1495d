"""MemoryArrays: prediction arrays in a dict of this process (tests, notebooks).

Records go through the same codec as the Parquet backend (validated, then
converted to Arrow and back), so what comes out is exactly what Parquet returns.
"""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

from ..errors import InvalidInputError
from .base import StagedArrays
from .codec import normalize_record, records_to_table, rows_to_records


class MemoryArrays:
    """Array backend holding one-row Arrow tables keyed by (dataset, prediction id)."""

    kind = "memory"

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, pa.Table]] = {}
        self._mutex = threading.RLock()

    def _put(self, records: list[dict[str, Any]]) -> dict[tuple[str, str], pa.Table | None]:
        """Store records; return what each key held before (for undo)."""
        normalized = [normalize_record(r) for r in records]
        seen: set[str] = set()
        for r in normalized:
            if r["prediction_id"] in seen:
                raise InvalidInputError(f"prediction {r['prediction_id']!r} appears twice in the batch")
            seen.add(r["prediction_id"])
        table = records_to_table(normalized)
        before: dict[tuple[str, str], pa.Table | None] = {}
        with self._mutex:
            for row, r in enumerate(normalized):
                key = (r["dataset_name"], r["prediction_id"])
                rows = self._rows.setdefault(key[0], {})
                before[key] = rows.get(key[1])
                rows[key[1]] = table.slice(row, 1)
        return before

    def _restore(self, before: dict[tuple[str, str], pa.Table | None]) -> None:
        with self._mutex:
            for (dataset, pid), old in before.items():
                rows = self._rows.setdefault(dataset, {})
                if old is None:
                    rows.pop(pid, None)
                else:
                    rows[pid] = old
                if not rows:
                    self._rows.pop(dataset, None)

    def stage(self, records: list[dict[str, Any]], session: object = None, *,
              defer_files: bool = False, normalized: bool = False) -> StagedArrays:
        """Store records; the undo puts back what was there before."""
        before = self._put(records)
        return StagedArrays(refs={pid: None for _, pid in before}, undo=lambda: self._restore(before))

    def save_batch(self, records: list[dict]) -> None:
        """Store arrays for a batch of records (seed API)."""
        self._put(records)

    def load(self, prediction_id: str, dataset_name: str) -> dict | None:
        """Arrays of one prediction, or None."""
        found = self.load_batch([prediction_id], dataset_name)
        return found[0] if found else None

    def load_ref(self, prediction_id: str, dataset_name: str, ref: str | None, *,
                 arrays_only: bool = False) -> dict | None:
        """Arrays of one prediction (references are unused)."""
        return self.load(prediction_id, dataset_name)

    def load_batch(self, prediction_ids: list[str], dataset_name: str) -> list[dict]:
        """Arrays of several predictions, in the order asked; absent ones skipped."""
        with self._mutex:
            rows = self._rows.get(dataset_name, {})
            tables = [rows[pid] for pid in prediction_ids if pid in rows]
        return [rows_to_records(t, [0])[0] for t in tables]

    def exists(self, prediction_id: str, dataset_name: str) -> bool:
        """True when arrays are held for the prediction."""
        with self._mutex:
            return prediction_id in self._rows.get(dataset_name, {})

    def list_keys(self, dataset_name: str) -> list[str]:
        """Prediction ids held for a dataset."""
        with self._mutex:
            return sorted(self._rows.get(dataset_name, {}))

    def list_datasets(self) -> list[str]:
        """Datasets with arrays held."""
        with self._mutex:
            return sorted(d for d, rows in self._rows.items() if rows)

    def delete(self, prediction_ids: list[str]) -> None:
        """Forget the arrays of some predictions."""
        wanted = set(prediction_ids)
        with self._mutex:
            for dataset in list(self._rows):
                rows = self._rows[dataset]
                for pid in wanted & rows.keys():
                    del rows[pid]
                if not rows:
                    del self._rows[dataset]

    def compact(self, dataset_name: str | None = None) -> int:
        """Nothing to compact."""
        return 0

    def stats(self) -> dict[str, dict[str, int]]:
        """Per dataset: ``rows`` held; no files, nothing tombstoned."""
        with self._mutex:
            return {d: {"files": 0, "rows": len(rows), "tombstoned": 0}
                    for d, rows in sorted(self._rows.items()) if rows}
