"""The embedded DuckDB catalog: ``store.duckdb`` in the workspace directory."""

from .catalog import DuckDBCatalog

__all__ = ["DuckDBCatalog"]
