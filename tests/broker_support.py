"""The Celery broker for tests: RabbitMQ at N4A_TEST_BROKER_URL (default guest on 127.0.0.1).

Without a broker the scale-out tests skip with a loud reason, unless
``N4A_REQUIRE_BROKER=1`` (set by ``.ci/run``), which makes that a failure.
"""

from __future__ import annotations

import os

import pytest

DEFAULT_URL = "pyamqp://guest:guest@127.0.0.1:5672//"


def broker_url() -> str:
    """The broker URL of the tests."""
    return os.environ.get("N4A_TEST_BROKER_URL") or DEFAULT_URL


def require_broker() -> str:
    """The broker URL, once a connection to it succeeded; else skip (or fail if required)."""
    try:
        import dagster_celery  # noqa: F401

        from n4a_dagster.cluster import ClusterError, check_broker
    except ImportError as exc:
        _unavailable(f"dagster-celery is not installed ({exc}); pip install 'n4a[cluster]'")
    url = broker_url()
    try:
        check_broker(url, timeout=3.0)
    except ClusterError as exc:
        _unavailable(str(exc))
    return url


def _unavailable(reason: str) -> None:
    if os.environ.get("N4A_REQUIRE_BROKER") == "1":
        pytest.fail(f"a Celery broker is required (N4A_REQUIRE_BROKER=1) but {reason}")
    pytest.skip(f"CELERY BROKER TESTS SKIPPED: {reason} (set N4A_TEST_BROKER_URL)")
