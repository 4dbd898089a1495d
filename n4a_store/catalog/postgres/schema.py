"""PostgreSQL type names, indexes and migrations of the n4a catalog."""

from __future__ import annotations

from ..base import Session
from ..schema import Migration

TYPES = {
    "text": "TEXT", "double": "DOUBLE PRECISION", "bigint": "BIGINT", "int": "INTEGER",
    "bool": "BOOLEAN", "timestamp": "TIMESTAMP", "text_list": "TEXT[]",
    "double_list": "DOUBLE PRECISION[]", "bigint_list": "BIGINT[]",
}

#: indexes for the lookups the store makes (DuckDB scans instead: its zone maps suffice)
INDEXES: tuple[str, ...] = (
    "CREATE INDEX pipelines_run ON pipelines (run_id)",
    "CREATE INDEX chains_pipeline ON chains (pipeline_id)",
    "CREATE INDEX predictions_pipeline ON predictions (pipeline_id)",
    "CREATE INDEX predictions_run ON predictions (run_id)",
    "CREATE INDEX predictions_dataset ON predictions (dataset_name)",
    "CREATE INDEX predictions_val ON predictions (partition, val_score)",
    "CREATE INDEX logs_pipeline ON logs (pipeline_id)",
    "CREATE INDEX artifacts_unclaimed ON artifacts (ref_count) WHERE ref_count <= 0",
    "CREATE INDEX prediction_arrays_dataset ON prediction_arrays (dataset_name)",
)

#: MIGRATIONS[v] upgrades a PostgreSQL catalog from version v to v + 1 (the first
#: PostgreSQL catalogs were written at version 2).
MIGRATIONS: dict[int, Migration] = {}


def has_table(s: Session, name: str) -> bool:
    """True when the current schema has a table called ``name``."""
    return bool(s.rows("SELECT 1 FROM information_schema.tables "
                       "WHERE table_schema = current_schema() AND table_name = ?", [name]))
