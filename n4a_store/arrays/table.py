"""TableArrays: prediction arrays in the catalog's ``prediction_arrays`` table (seed 002).

One row per prediction, columns as in :mod:`.codec` (list columns: ``DOUBLE[]``,
``VARCHAR[]``, ``BIGINT[]`` in DuckDB; ``double precision[]``, ``text[]``,
``bigint[]`` in PostgreSQL). Writes made by the store join the catalog
transaction, so a rollback removes them too; reads use portable SQL with ``?``
placeholders and the catalog's own ``in_list`` fragment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..catalog.base import Session
from ..errors import InvalidInputError
from .base import StagedArrays
from .codec import SCHEMA, normalize_record, records_to_table, rows_to_records

if TYPE_CHECKING:
    from ..catalog.sql import SqlCatalog

TABLE = "prediction_arrays"
#: the codec's columns that the table holds (the rest of the metadata lives in ``predictions``)
STORED = ("prediction_id", "dataset_name", "y_true", "y_pred", "y_true_labels", "y_pred_labels",
          "y_proba", "y_proba_cols", "sample_indices", "weights")
_SELECT = ", ".join(STORED)


def _table_for(records: list[dict[str, Any]]) -> pa.Table:
    """Validated, de-duplicated records as an Arrow table with the stored columns."""
    normalized = [normalize_record(r) for r in records]
    seen: set[str] = set()
    for r in normalized:
        if r["prediction_id"] in seen:
            raise InvalidInputError(f"prediction {r['prediction_id']!r} appears twice in the batch")
        seen.add(r["prediction_id"])
    return records_to_table(normalized).select(list(STORED))


def _to_records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows read back from the table, as codec records (metadata kept in ``predictions`` is None)."""
    n = table.num_rows
    columns = {}
    for field in SCHEMA:
        if field.name in table.column_names:
            columns[field.name] = table.column(field.name).cast(field.type)
        else:
            columns[field.name] = pa.nulls(n, type=field.type)
    full = pa.Table.from_arrays([columns[f.name] for f in SCHEMA], schema=SCHEMA)
    return rows_to_records(full, range(n))


class TableArrays:
    """Array backend keeping arrays in the catalog database itself."""

    kind = "table"

    def __init__(self, catalog: "SqlCatalog") -> None:
        self.catalog = catalog

    # -- writing ------------------------------------------------------------------
    def stage(self, records: list[dict[str, Any]], session: Session, *,
              defer_files: bool = False, normalized: bool = False) -> StagedArrays:
        """Insert rows inside the caller's transaction; its rollback is the undo."""
        table = _table_for(records)
        self._replace(session, table)
        return StagedArrays(refs={pid: None for pid in table.column("prediction_id").to_pylist()})

    def save_batch(self, records: list[dict]) -> None:
        """Store arrays for a batch of records in one transaction of their own (seed API)."""
        table = _table_for(records)
        with self.catalog.writing() as s:
            self._replace(s, table)

    def _replace(self, session: Session, table: pa.Table) -> None:
        ids = table.column("prediction_id").to_pylist()
        if not ids:
            return
        session.execute(f"DELETE FROM {TABLE} WHERE {self.catalog.in_list('prediction_id')}", [ids])
        session.insert(TABLE, table)

    # -- reading ------------------------------------------------------------------
    def _select(self, prediction_ids: list[str], dataset_name: str) -> list[dict[str, Any]]:
        ids = list(dict.fromkeys(prediction_ids))
        if not ids:
            return []
        with self.catalog.reading() as s:
            frame = s.frame(f"SELECT {_SELECT} FROM {TABLE} WHERE dataset_name = ? AND "
                            f"{self.catalog.in_list('prediction_id')}", [dataset_name, ids])
        found = {r["prediction_id"]: r for r in _to_records(frame.to_arrow())}
        return [found[pid] for pid in prediction_ids if pid in found]

    def load(self, prediction_id: str, dataset_name: str) -> dict | None:
        """Arrays of one prediction, or None."""
        found = self._select([prediction_id], dataset_name)
        return found[0] if found else None

    def load_ref(self, prediction_id: str, dataset_name: str, ref: str | None, *,
                 arrays_only: bool = False) -> dict | None:
        """Arrays of one prediction (the reference is unused: the id is the key)."""
        return self.load(prediction_id, dataset_name)

    def load_batch(self, prediction_ids: list[str], dataset_name: str) -> list[dict]:
        """Arrays of several predictions, in the order asked; absent ones skipped."""
        return self._select(prediction_ids, dataset_name)

    def exists(self, prediction_id: str, dataset_name: str) -> bool:
        """True when a row is stored for the prediction."""
        with self.catalog.reading() as s:
            return bool(s.rows(f"SELECT 1 FROM {TABLE} WHERE prediction_id = ? AND dataset_name = ?",
                               [prediction_id, dataset_name]))

    def list_keys(self, dataset_name: str) -> list[str]:
        """Prediction ids with stored arrays in a dataset."""
        with self.catalog.reading() as s:
            return [r[0] for r in s.rows(f"SELECT prediction_id FROM {TABLE} WHERE dataset_name = ? "
                                         "ORDER BY prediction_id", [dataset_name])]

    def list_datasets(self) -> list[str]:
        """Datasets that have stored arrays."""
        with self.catalog.reading() as s:
            return [r[0] for r in s.rows(f"SELECT DISTINCT dataset_name FROM {TABLE} "
                                         "ORDER BY dataset_name")]

    def stats(self) -> dict[str, dict[str, int]]:
        """Per dataset: ``rows`` stored; no files and nothing tombstoned."""
        with self.catalog.reading() as s:
            rows = s.rows(f"SELECT dataset_name, COUNT(*) FROM {TABLE} GROUP BY dataset_name "
                          "ORDER BY dataset_name")
        return {name: {"files": 0, "rows": int(n), "tombstoned": 0} for name, n in rows}

    # -- deleting -----------------------------------------------------------------
    def delete(self, prediction_ids: list[str]) -> None:
        """Delete rows at once, in a write transaction of their own."""
        ids = sorted({p for p in prediction_ids if p})
        if not ids:
            return
        with self.catalog.writing() as s:
            s.execute(f"DELETE FROM {TABLE} WHERE {self.catalog.in_list('prediction_id')}", [ids])

    def compact(self, dataset_name: str | None = None) -> int:
        """Nothing to compact: deletes remove rows at once."""
        return 0
