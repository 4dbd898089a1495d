"""``python -m n4a_dagster cluster`` (``make cluster``): the scale-out deployment on one machine.

In order: check the broker and the PostgreSQL server; create a fresh n4a catalog database
and a fresh Dagster instance database (``--name``, default ``n4a_cluster`` and
``n4a_cluster_dagster``, replaced if they exist and kept afterwards for inspection); write the
instance template into ``<dir>/dagster_home``; start ``--workers`` celery workers as separate
processes, each with its own directory and only the cluster's environment; run the sweep
through the celery executor (``run-sweep --executor celery``), which prints the leaderboard
and the ``N completed, M failed`` line; stop every worker. The exit code is run-sweep's:
non-zero when a pipeline or a step failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .cluster import (
    ClusterError,
    ClusterSettings,
    WorkerPool,
    check_broker,
    check_postgres,
    create_database,
    dagster_postgres_url,
    write_instance,
)
from .executors import broker_url

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_URL_ENV = "N4A_CLUSTER_POSTGRES_URL"


def add_cluster_parser(sub: Any) -> None:
    """Register the ``cluster`` sub-command."""
    parser = sub.add_parser("cluster", help="run the sweep on N local celery workers "
                                            "(broker, PostgreSQL instance and catalog)")
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes (2)")
    parser.add_argument("--config", default=None,
                        help="sweep config path or builtin:<name> (builtin:nirs-regression)")
    parser.add_argument("--dir", default="./cluster",
                        help="the file root and the workers' directories (./cluster)")
    parser.add_argument("--postgres", default=None,
                        help=f"PostgreSQL admin URL (env {ADMIN_URL_ENV}, {DEFAULT_ADMIN_URL})")
    parser.add_argument("--broker", default=None,
                        help="Celery broker URL (env N4A_CELERY_BROKER, RabbitMQ on 127.0.0.1)")
    parser.add_argument("--name", default="n4a_cluster",
                        help="catalog database name; the instance's gets _dagster (n4a_cluster)")
    parser.set_defaults(func=cluster_command)


def cluster_command(args: argparse.Namespace) -> int:
    """Run the local cluster; return the sweep's exit code (2 when a service is missing)."""
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    admin = args.postgres or os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL
    broker = args.broker or broker_url()
    root = Path(args.dir).expanduser().resolve()
    try:
        check_broker(broker)
        check_postgres(admin)
        print(f"broker and PostgreSQL answer; fresh databases {args.name}, "
              f"{args.name}_dagster", file=sys.stderr)
        catalog = create_database(admin, args.name, replace=True)
        dagster_db = dagster_postgres_url(
            create_database(admin, f"{args.name}_dagster", replace=True))
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 2
    files = root / "files"
    if files.exists():
        import shutil

        shutil.rmtree(files)  # a fresh catalog: its old files would be orphans
    files.mkdir(parents=True)
    settings = ClusterSettings(broker=broker, dagster_pg_url=dagster_db,
                               store=f"{catalog}?file_root={files}", file_root=files,
                               queue=args.name)
    home = write_instance(root / "dagster_home")
    os.environ.update(settings.instance_env())
    from .__main__ import main

    with WorkerPool(settings, args.workers, root / "workers") as pool:
        print(f"{len(pool.workers)} celery workers up: "
              f"{', '.join(w.name for w in pool.workers)}", file=sys.stderr)
        argv = ["run-sweep", "--store", settings.store, "--executor", "celery",
                "--dagster-home", str(home)]
        if args.config:
            argv += ["--config", args.config]
        code = main(argv)
    print(f"stopped {args.workers} workers; catalog {args.name} and instance "
          f"{args.name}_dagster kept, files in {files}", file=sys.stderr)
    return code
