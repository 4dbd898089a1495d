"""The PostgreSQL catalog: many processes on many hosts, no file lock."""

from .catalog import PostgresCatalog

__all__ = ["PostgresCatalog"]
