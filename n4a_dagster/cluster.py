"""A celery cluster on one machine: service checks, fresh databases, worker processes.

The pieces ``python -m n4a_dagster cluster`` (``make cluster``) and the scale-out tests are
built from; on a real cluster each worker runs on its own host with the same environment
(:func:`worker_env`) and the same command (:func:`worker_command`).

A worker shares nothing with the launcher but the broker, the two PostgreSQL databases
(Dagster's instance, n4a's catalog) and the file root: it gets its own working directory and
an environment holding only those addresses.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from .executors import BACKEND_ENV, BROKER_ENV, DEFAULT_QUEUE, QUEUE_ENV

#: The instance template shipped with n4a (PostgreSQL storage, shared step storage).
INSTANCE_TEMPLATE = Path(__file__).with_name("deploy") / "dagster.yaml"
#: Environment variables the instance template reads.
DAGSTER_PG_ENV = "N4A_DAGSTER_PG_URL"
DAGSTER_STORAGE_ENV = "N4A_DAGSTER_STORAGE"
DAGSTER_LOGS_ENV = "N4A_DAGSTER_COMPUTE_LOGS"
#: Variables passed through to a worker besides the cluster's own.
_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PGPASSWORD", "PGPASSFILE")


class ClusterError(RuntimeError):
    """A service the cluster needs is missing, or a worker did not come up."""


def check_broker(url: str, timeout: float = 5.0) -> None:
    """Connect to the Celery broker once.

    Raises:
        ClusterError: naming the broker's host and port (never its password).
    """
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises the transport's own errors
        raise ClusterError(f"no Celery broker answers at {_where(url)}: {exc}") from exc


def check_postgres(url: str, timeout: float = 5.0) -> None:
    """Connect to PostgreSQL once.

    Raises:
        ClusterError: naming the server's host and port (never its password).
    """
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=int(timeout)).close()
    except psycopg.Error as exc:
        raise ClusterError(f"no PostgreSQL server answers at {_where(url)}: {exc}") from exc


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or ''}".rstrip(":")


def database_url(admin_url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``admin_url``."""
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}", query=""))


def dagster_postgres_url(url: str) -> str:
    """``url`` with SQLAlchemy's psycopg2 driver named, as dagster-postgres needs it.

    SQLAlchemy 2.1 maps a plain ``postgresql://`` to psycopg 3, on which dagster-postgres'
    ``NOTIFY run_events, %(id)s`` fails (server-side parameters); ``postgresql+psycopg2://``
    keeps the driver dagster-postgres is written for.
    """
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))
    return url


def create_database(admin_url: str, name: str, *, replace: bool = False) -> str:
    """Create database ``name`` (dropping it first when ``replace``); return its URL."""
    import psycopg
    from psycopg import sql

    if not name.replace("_", "").isalnum():
        raise ClusterError(f"database name {name!r}: letters, digits and _ only")
    with psycopg.connect(admin_url, autocommit=True) as con:
        if replace:
            con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, closing its connections."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def unique_name(prefix: str) -> str:
    """A database name not used before: ``prefix`` and 12 random hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class ClusterSettings:
    """What every process of a cluster is told: the broker, Dagster's database, the file root.

    Attributes:
        broker: Celery broker URL.
        dagster_pg_url: The Dagster instance's PostgreSQL database.
        store: The n4a store URI (``postgresql://…?file_root=…``).
        file_root: The shared directory (n4a files, Dagster step storage and logs).
        queue: The Celery queue of the steps (one per deployment sharing a broker).
    """

    broker: str
    dagster_pg_url: str
    store: str
    file_root: Path
    queue: str = DEFAULT_QUEUE

    @property
    def dagster_storage(self) -> Path:
        """Dagster's step outputs, on the shared file root."""
        return self.file_root / ".dagster"

    def instance_env(self) -> dict[str, str]:
        """The variables the instance template and the executor config read."""
        return {BROKER_ENV: self.broker, BACKEND_ENV: "rpc://", QUEUE_ENV: self.queue,
                DAGSTER_PG_ENV: self.dagster_pg_url,
                DAGSTER_STORAGE_ENV: str(self.dagster_storage),
                DAGSTER_LOGS_ENV: str(self.dagster_storage / "logs")}


def write_instance(home: Path) -> Path:
    """Write the PostgreSQL instance template as ``home/dagster.yaml``; return ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
    return home


def worker_env(settings: ClusterSettings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a worker: the cluster's variables and a few basics, nothing
    of the launcher's (no ``DAGSTER_HOME``, no ``N4A_WORKSPACE``)."""
    env = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
    env.update(settings.instance_env())
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def worker_command(name: str, concurrency: int = 1, queue: str = DEFAULT_QUEUE,
                   python: str | None = None) -> list[str]:
    """The command line of one celery worker named ``name`` (``name@host`` in events)."""
    return [python or sys.executable, "-m", "celery", "-A", "n4a_dagster.celery_app", "worker",
            "-Q", queue, "-c", str(concurrency), "-n", f"{name}@%h",
            "--prefetch-multiplier=1", "--without-gossip", "--without-mingle",
            "-l", "WARNING"]


@dataclass
class Worker:
    """One celery worker process (its own session, so its pool processes stop with it)."""

    name: str
    process: subprocess.Popen[bytes]
    directory: Path
    log: IO[bytes]

    def pool_pids(self) -> list[int]:
        """Pids of the worker's pool processes (the ones that run steps)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except (OSError, ValueError):
            return []

    def alive(self) -> bool:
        """True while the worker's main process runs."""
        return self.process.poll() is None


@dataclass
class WorkerPool:
    """N celery workers started as separate processes, stopped together.

    Use as a context manager: ``with WorkerPool(settings, 2, root) as pool: ...``.
    """

    settings: ClusterSettings
    n_workers: int
    directory: Path
    concurrency: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    prefix: str = "n4a-worker"
    workers: list[Worker] = field(default_factory=list)

    def __enter__(self) -> "WorkerPool":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, ready_timeout: float = 90.0) -> None:
        """Start the workers and wait until each answers a ping through the broker."""
        env = worker_env(self.settings, self.extra_env)
        for index in range(1, self.n_workers + 1):
            name = f"{self.prefix}-{index}"
            directory = self.directory / name
            directory.mkdir(parents=True, exist_ok=True)
            log = open(directory / "worker.log", "wb")
            process = subprocess.Popen(worker_command(name, self.concurrency, self.settings.queue),
                                       cwd=directory,
                                       env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            self.workers.append(Worker(name, process, directory, log))
        try:
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        """Block until every worker answers a ping.

        Raises:
            ClusterError: a worker exited, or not all answered within ``timeout`` seconds.
        """
        from celery import Celery

        app = Celery("n4a-ping", broker=self.settings.broker, backend="rpc://")
        deadline = time.monotonic() + timeout
        expected = {w.name for w in self.workers}
        while time.monotonic() < deadline:
            for worker in self.workers:
                if not worker.alive():
                    raise ClusterError(f"worker {worker.name} exited with "
                                       f"{worker.process.returncode}: {self.log_tail(worker)}")
            replies = app.control.ping(timeout=1.0) or []
            answered = {name.split("@", 1)[0] for reply in replies for name in reply}
            if expected <= answered:
                return
        raise ClusterError(f"workers {sorted(expected)} not ready after {timeout:.0f} s")

    def log_tail(self, worker: Worker, n_chars: int = 2000) -> str:
        """The end of a worker's log."""
        worker.log.flush()
        return (worker.directory / "worker.log").read_text(errors="replace")[-n_chars:]

    def pids(self) -> list[int]:
        """Every pid of the pool: the workers' main processes and their pool processes."""
        return [p for w in self.workers for p in (w.process.pid, *w.pool_pids())]

    def stop(self, grace: float = 20.0) -> None:
        """Stop every worker: SIGTERM (warm shutdown) to each session, SIGKILL after ``grace``."""
        for worker in self.workers:
            _signal_group(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for worker in self.workers:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(worker.process.pid, signal.SIGKILL)
                worker.process.wait()
            _signal_group(worker.process.pid, signal.SIGKILL)  # strays of its session
            worker.log.close()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
