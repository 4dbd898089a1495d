"""DuckDB type names and the migrations of catalogs written by earlier n4a versions."""

from __future__ import annotations

from ..base import Session
from ..schema import Migration, table_ddl

TYPES = {
    "text": "VARCHAR", "double": "DOUBLE", "bigint": "BIGINT", "int": "INTEGER",
    "bool": "BOOLEAN", "timestamp": "TIMESTAMP", "text_list": "VARCHAR[]",
    "double_list": "DOUBLE[]", "bigint_list": "BIGINT[]",
}


def _v1_to_v2(s: Session) -> None:
    """Parquet locations become one opaque array reference; the prediction_arrays table."""
    s.execute("ALTER TABLE predictions ADD COLUMN array_ref VARCHAR")
    s.execute("UPDATE predictions SET array_ref = array_file || '#' || CAST(array_row AS VARCHAR) "
              "WHERE array_file IS NOT NULL AND array_row IS NOT NULL")
    s.execute("ALTER TABLE predictions DROP COLUMN array_file")
    s.execute("ALTER TABLE predictions DROP COLUMN array_row")
    s.execute(table_ddl("prediction_arrays", TYPES))


#: MIGRATIONS[v] upgrades a DuckDB catalog from version v to v + 1.
MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2}


def has_table(s: Session, name: str) -> bool:
    """True when the catalog has a table called ``name``."""
    return bool(s.rows("SELECT 1 FROM information_schema.tables WHERE table_name = ?", [name]))
