"""Command line: run the sweep job through Dagster, start a local cluster, or open the UI.

    python -m n4a_dagster run-sweep --store ./workspace [--config builtin:nirs-regression]
    python -m n4a_dagster run-sweep --store 'postgresql://db/n4a?file_root=/shared/n4a' \
        --executor celery
    python -m n4a_dagster run-sweep --store URI --executor celery --from-failure DAGSTER_RUN_ID
    python -m n4a_dagster cluster --workers 2
    python -m n4a_dagster ui

``run-sweep`` executes the ``n4a_sweep`` job on a persistent Dagster instance
(``DAGSTER_HOME``, default ``./.dagster_home``), so the run and its materializations show up
in the UI afterwards, and prints the leaderboard. ``--executor`` (env ``N4A_EXECUTOR``)
picks Dagster's multiprocess executor (one host, the default) or dagster-celery's (steps on
celery workers, broker ``N4A_CELERY_BROKER``). ``--from-failure`` re-executes the steps of a
failed Dagster run that did not succeed (its failed partitions and the rest of the sweep).
``cluster`` runs the whole scale-out deployment on this machine (see
:mod:`n4a_dagster.local_cluster`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_DAGSTER_HOME = ".dagster_home"
EXECUTOR_ENV = "N4A_EXECUTOR"


def _prepare_dagster_home(path: str | None) -> Path:
    home = Path(path or os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("# Dagster instance of n4a (defaults: local SQLite storage here).\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run the sweep job; print the leaderboard; return the exit code."""
    from dagster import DagsterInstance, ReexecutionOptions, build_reconstructable_job, execute_job

    from n4a_dagster.jobs import default_max_concurrent, run_config_for
    from n4a_dagster.resources import (
        SWEEP_CONFIG_ENV,
        WORKSPACE_ENV,
        default_sweep_config,
        default_workspace,
        store_config_from_location,
    )

    location = args.store or default_workspace()
    store = store_config_from_location(location)
    # a directory is passed on absolute; a URI as it is (it may carry credentials: never printed)
    workspace = store.to_uri() if "://" in location else str(store.path)  # type: ignore[attr-defined]
    shown = store.display_uri()
    sweep_config = args.config or default_sweep_config()
    if not sweep_config.startswith("builtin:"):
        sweep_config = str(Path(sweep_config).expanduser().resolve())
    os.environ[WORKSPACE_ENV] = workspace
    os.environ[SWEEP_CONFIG_ENV] = sweep_config
    home = _prepare_dagster_home(args.dagster_home)
    concurrent = args.max_concurrent or default_max_concurrent()
    executor = args.executor or os.environ.get(EXECUTOR_ENV) or "multiprocess"
    job = build_reconstructable_job(
        "n4a_dagster.jobs", "sweep_job_for",
        reconstructable_kwargs={"workspace": workspace, "sweep_config": sweep_config,
                                "max_concurrent": concurrent},
    )
    how = f"{concurrent} parallel steps" if executor == "multiprocess" else f"{executor} executor"
    print(f"n4a sweep {sweep_config} -> {shown} through Dagster "
          f"({how}, DAGSTER_HOME={home})", file=sys.stderr)
    with DagsterInstance.get() as instance:
        reexecution = None
        if args.from_failure:
            reexecution = ReexecutionOptions.from_failure(args.from_failure, instance)
            print(f"re-executing the steps of Dagster run {args.from_failure} that did not "
                  f"succeed", file=sys.stderr)
        run_config = run_config_for(executor, concurrent, args.pipelines_per_step)
        if not args.verbose:
            run_config["loggers"] = {"console": {"config": {"log_level": "WARNING"}}}
        with execute_job(job, instance=instance, run_config=run_config,
                         reexecution_options=reexecution) as result:
            success = result.success
            dagster_run_id = result.run_id
            summary = result.output_for_node("finish_sweep_op") if success else None
    if not success or summary is None:
        print(f"sweep failed (Dagster run {dagster_run_id}); see the run in the UI; re-run "
              f"what did not succeed with --from-failure {dagster_run_id}", file=sys.stderr)
        return 1
    _print_leaderboard(workspace, summary["run_id"])
    print(f"\nstore run {summary['run_id']}: {summary['n_completed']} completed, "
          f"{summary['n_failed']} failed; Dagster run {dagster_run_id}", file=sys.stderr)
    print(f"open the UI: {ui_hint(home, shown, sweep_config)}", file=sys.stderr)
    return 1 if summary["n_failed"] > 0 else 0


def ui_hint(home: Path | str, workspace: str, sweep_config: str) -> str:
    """A shell command that opens the UI on this instance and workspace, runnable from any
    directory: absolute quoted paths and this environment's own ``dagster``."""
    import shlex

    dagster = Path(sys.executable).with_name("dagster")
    program = str(dagster) if dagster.exists() else "dagster"
    env = " ".join(f"{name}={shlex.quote(str(value))}" for name, value in (
        ("DAGSTER_HOME", Path(home).resolve()), ("N4A_WORKSPACE", workspace),
        ("N4A_SWEEP_CONFIG", sweep_config)))
    return f"{env} {shlex.quote(program)} dev -m n4a_dagster.definitions -a defs"


def _print_leaderboard(workspace: str, run_id: str) -> None:
    import polars as pl

    from n4a_store import WorkspaceStore
    from n4a_store.sweep.runner import leaderboard

    from n4a_dagster.sweep_steps import store_results

    with WorkspaceStore(workspace) as store:
        board = leaderboard(store_results(store, run_id))
    columns = ["rank", "dataset_name", "name", "best_val", "best_test", "metric", "status"]
    with pl.Config(tbl_rows=50, tbl_cols=len(columns), tbl_width_chars=120):
        print(board.select(columns))


def ui_command(args: argparse.Namespace) -> int:
    """Replace this process with ``dagster dev`` on the n4a code location."""
    _prepare_dagster_home(args.dagster_home)
    if args.workspace:
        os.environ["N4A_WORKSPACE"] = args.workspace
    dagster = Path(sys.executable).with_name("dagster")
    program = str(dagster) if dagster.exists() else "dagster"
    os.execvp(program, [program, "dev", "-m", "n4a_dagster.definitions", "-a", "defs"])
    return 0  # pragma: no cover


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m n4a_dagster``."""
    parser = argparse.ArgumentParser(prog="python -m n4a_dagster", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-sweep", help="run the sweep job through Dagster")
    run.add_argument("--store", "--workspace", dest="store",
                     help="store URI or workspace directory (env N4A_WORKSPACE, ./workspace)")
    run.add_argument("--executor", choices=["multiprocess", "in_process", "celery"],
                     help="where steps run (env N4A_EXECUTOR, multiprocess)")
    run.add_argument("--from-failure", metavar="DAGSTER_RUN_ID",
                     help="re-execute the steps of this failed Dagster run that did not succeed")
    run.add_argument("--config", help="sweep config path or builtin:<name> (env N4A_SWEEP_CONFIG)")
    run.add_argument("--max-concurrent", type=int, help="parallel steps (env N4A_MAX_CONCURRENT, 4)")
    run.add_argument("--dagster-home", help="Dagster instance directory (env DAGSTER_HOME, "
                                            "./.dagster_home)")
    run.add_argument("--pipelines-per-step", type=int, default=None,
                     help="pipelines trained per Dagster step (default: automatic, 1 for up to "
                          "3 x max-concurrent pipelines, at most 10)")
    run.add_argument("--verbose", action="store_true", help="show Dagster's event log")
    run.set_defaults(func=run_sweep_command)
    from n4a_dagster.local_cluster import add_cluster_parser

    add_cluster_parser(sub)
    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on the n4a definitions")
    ui.add_argument("--workspace", help="workspace directory (env N4A_WORKSPACE)")
    ui.add_argument("--dagster-home", help="Dagster instance directory (env DAGSTER_HOME)")
    ui.set_defaults(func=ui_command)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
