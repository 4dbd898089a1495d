"""PostgreSQL for tests: a fresh database per test on the server N4A_TEST_POSTGRES_URL names.

Without a server the PostgreSQL variants skip with a loud reason, unless
``N4A_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), which makes that a failure.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("duckdb", "postgresql")


def server_url() -> str:
    """The admin URL of the test server."""
    return os.environ.get("N4A_TEST_POSTGRES_URL") or DEFAULT_URL


def _unavailable(reason: str) -> None:
    if os.environ.get("N4A_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (N4A_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"PostgreSQL TESTS SKIPPED: {reason} (set N4A_TEST_POSTGRES_URL)")


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a fresh database, yield its URL, drop it afterwards."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed")
    admin = server_url()
    try:
        con = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _unavailable(f"no server answers at {urlsplit(admin).hostname}:{urlsplit(admin).port}: {exc}")
    name = f"n4a_test_{uuid.uuid4().hex[:12]}"
    with con:
        con.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(admin)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
