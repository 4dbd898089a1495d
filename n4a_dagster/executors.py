"""The sweep job's executor, chosen by run configuration: one host or many.

``n4a_executor`` is a Dagster executor whose config is a selector, like Dagster's own
default ``multi_or_in_process_executor``::

    execution:
      config:
        multiprocess: {max_concurrent: 4}      # one host: a process per step (the default)
    execution:
      config:
        in_process: {}                         # one process (debugging)
    execution:
      config:
        celery:                                # many hosts: steps go to celery workers
          broker: {env: N4A_CELERY_BROKER}
          backend: rpc://

The ``celery`` branch exists when ``dagster-celery`` is installed (``pip install
'n4a[cluster]'``); its fields are dagster-celery's own executor config. Nothing in the job's
code changes between the three: a deployment picks one in its run config (or with
``python -m n4a_dagster run-sweep --executor``).

Celery settings that n4a adds by default (:data:`N4A_CELERY_SETTINGS`, also used by the
worker app in :mod:`n4a_dagster.celery_app`):

* ``task_acks_late``: a task is acknowledged when its step has finished, so a worker host
  that dies mid-step (its broker connection drops) has the step delivered to another worker
  instead of lost, while a step process killed under a living worker fails that step only;
* ``worker_prefetch_multiplier = 1``: a worker reserves no step it cannot start.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from dagster import Field, Selector, executor, multiple_process_executor_requirements
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    MULTI_PROC_CONFIG,
    _core_in_process_executor_creation,
    _core_multiprocess_executor_creation,
)

#: The executor kinds of the sweep job.
EXECUTORS = ("multiprocess", "in_process", "celery")
#: Environment variable naming the Celery broker (launcher and workers read the same one).
BROKER_ENV = "N4A_CELERY_BROKER"
#: Environment variable naming the Celery result backend (default ``rpc://``).
BACKEND_ENV = "N4A_CELERY_BACKEND"
#: Environment variable naming the Celery queue of the steps (default ``dagster``): workers
#: listen on it, the launcher sends to it, so several deployments can share one broker.
QUEUE_ENV = "N4A_CELERY_QUEUE"
DEFAULT_QUEUE = "dagster"
DEFAULT_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "rpc://"
#: Celery settings n4a sets on the launcher's and the workers' app (see the module docstring).
N4A_CELERY_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}


def celery_available() -> bool:
    """True when dagster-celery can be imported (the ``cluster`` extra is installed)."""
    try:
        import dagster_celery  # noqa: F401
    except ImportError:
        return False
    return True


def broker_url() -> str:
    """The broker URL from ``N4A_CELERY_BROKER``, else RabbitMQ on 127.0.0.1 (guest)."""
    return os.environ.get(BROKER_ENV) or DEFAULT_BROKER


def backend_url() -> str:
    """The result backend from ``N4A_CELERY_BACKEND``, else ``rpc://`` (results via the broker)."""
    return os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND


def queue_name() -> str:
    """The steps' Celery queue from ``N4A_CELERY_QUEUE``, else ``dagster``."""
    return os.environ.get(QUEUE_ENV) or DEFAULT_QUEUE


def _selector_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {"multiprocess": MULTI_PROC_CONFIG, "in_process": IN_PROC_CONFIG}
    if celery_available():
        from dagster_celery.executor import CELERY_CONFIG

        fields["celery"] = Field(CELERY_CONFIG)
    return fields


@executor(
    name="n4a_executor",
    config_schema=Field(Selector(_selector_fields()), default_value={"multiprocess": {}}),
    requirements=multiple_process_executor_requirements(),
)
def n4a_executor(init_context: Any) -> Any:
    """Multiprocess (one host), in-process, or celery (many hosts), by run config."""
    config = init_context.executor_config
    if "celery" in config:
        from dagster._core.execution.retries import RetryMode
        from dagster_celery.executor import CeleryExecutor

        # dagster-celery registers its task again for every step it submits; harmless
        warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered")
        celery = config["celery"]
        return CeleryExecutor(
            broker=celery.get("broker"), backend=celery.get("backend"),
            config_source={**N4A_CELERY_SETTINGS, **(celery.get("config_source") or {})},
            include=celery.get("include"), retries=RetryMode.from_config(celery["retries"]))
    if "in_process" in config:
        return _core_in_process_executor_creation(config["in_process"])
    return _core_multiprocess_executor_creation(config.get("multiprocess") or {})


def celery_executor_config() -> dict[str, Any]:
    """The ``celery`` executor config naming the broker and backend by environment variable,
    so no URL (nor its password) is written into Dagster's run storage."""
    config: dict[str, Any] = {
        "broker": {"env": BROKER_ENV} if os.environ.get(BROKER_ENV) else DEFAULT_BROKER,
        "backend": {"env": BACKEND_ENV} if os.environ.get(BACKEND_ENV) else DEFAULT_BACKEND}
    if queue_name() != DEFAULT_QUEUE:
        config["config_source"] = {"task_default_queue": queue_name()}
    return config
