"""The nightly sweep schedule (stopped until switched on in the UI or with ``dagster schedule start``)."""

from __future__ import annotations

import os

from dagster import DefaultScheduleStatus, JobDefinition, ScheduleDefinition

SWEEP_CRON_ENV = "N4A_SWEEP_CRON"
SWEEP_TIMEZONE_ENV = "N4A_SWEEP_TIMEZONE"
DEFAULT_SWEEP_CRON = "0 2 * * *"


def build_sweep_schedule(
    job: JobDefinition,
    *,
    cron: str | None = None,
    timezone: str | None = None,
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
) -> ScheduleDefinition:
    """Run ``job`` (the sweep job) on ``cron`` (env ``N4A_SWEEP_CRON``, default 02:00 nightly)."""
    cron_schedule = cron or os.environ.get(SWEEP_CRON_ENV) or DEFAULT_SWEEP_CRON
    return ScheduleDefinition(
        name="n4a_nightly_sweep",
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone=timezone or os.environ.get(SWEEP_TIMEZONE_ENV) or "UTC",
        default_status=default_status,
        description=f"Run the configured n4a sweep ({cron_schedule}).",
    )
