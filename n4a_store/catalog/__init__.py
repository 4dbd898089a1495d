"""The DuckDB catalog: schema and migrations, cross-process locking, connections, columns."""
