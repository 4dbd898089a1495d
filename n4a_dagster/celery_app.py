"""The Celery app of an n4a worker: ``celery -A n4a_dagster.celery_app worker``.

The same app as ``dagster_celery.app`` (the ``execute_plan`` task on the ``dagster`` queue),
configured from the environment instead of a generated config module:

* ``N4A_CELERY_BROKER`` (default RabbitMQ on 127.0.0.1, guest) and ``N4A_CELERY_BACKEND``
  (default ``rpc://``), the same variables the launcher's executor config names, and
  ``N4A_CELERY_QUEUE`` (default ``dagster``; start the worker with ``-Q`` the same);
* the settings in :data:`n4a_dagster.executors.N4A_CELERY_SETTINGS` (late acknowledgement,
  prefetch 1).

A worker needs no ``DAGSTER_HOME`` and no workspace: every task carries a reference to the
Dagster instance (PostgreSQL, resolved with the worker's own ``N4A_DAGSTER_PG_URL``) and the
job to rebuild (``n4a_dagster.jobs.sweep_job_for`` with the store URI). Importing the sweep's
modules here makes each pool process start warm.
"""

from __future__ import annotations

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from .executors import N4A_CELERY_SETTINGS, backend_url, broker_url, queue_name

app = make_app(CeleryExecutor.for_cli(
    broker=broker_url(), backend=backend_url(),
    config_source={**N4A_CELERY_SETTINGS, "task_default_queue": queue_name()}).app_args())
execute_plan = create_task(app)

import n4a_dagster.definitions  # noqa: E402,F401  (warm imports for every step)
import n4a_store.sweep.runner  # noqa: E402,F401
