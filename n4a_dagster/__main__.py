"""Command line: run the sweep job through Dagster, or open the Dagster UI.

    python -m n4a_dagster run-sweep --workspace ./workspace [--config builtin:nirs-regression]
    python -m n4a_dagster ui

``run-sweep`` executes the ``n4a_sweep`` job with Dagster's multiprocess executor on a
persistent Dagster instance (``DAGSTER_HOME``, default ``./.dagster_home``), so the run and
its materializations show up in the UI afterwards, and prints the leaderboard.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_DAGSTER_HOME = ".dagster_home"


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
    from dagster import DagsterInstance, build_reconstructable_job, execute_job

    from n4a_dagster.jobs import default_max_concurrent, multiprocess_run_config
    from n4a_dagster.resources import (
        SWEEP_CONFIG_ENV,
        WORKSPACE_ENV,
        default_sweep_config,
        default_workspace,
        store_config_from_location,
    )

    location = args.workspace or default_workspace()
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
    job = build_reconstructable_job(
        "n4a_dagster.jobs", "sweep_job_for",
        reconstructable_kwargs={"workspace": workspace, "sweep_config": sweep_config,
                                "max_concurrent": concurrent},
    )
    print(f"n4a sweep {sweep_config} -> {shown} through Dagster "
          f"({concurrent} parallel steps, DAGSTER_HOME={home})", file=sys.stderr)
    with DagsterInstance.get() as instance:
        run_config = multiprocess_run_config(concurrent,
                                             pipelines_per_step=args.pipelines_per_step)
        if not args.verbose:
            run_config["loggers"] = {"console": {"config": {"log_level": "WARNING"}}}
        with execute_job(job, instance=instance, run_config=run_config) as result:
            success = result.success
            dagster_run_id = result.run_id
            summary = result.output_for_node("finish_sweep_op") if success else None
    if not success or summary is None:
        print(f"sweep failed (Dagster run {dagster_run_id}); see the run in the UI", file=sys.stderr)
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
    run.add_argument("--workspace", help="workspace directory or store URI (env N4A_WORKSPACE, ./workspace)")
    run.add_argument("--config", help="sweep config path or builtin:<name> (env N4A_SWEEP_CONFIG)")
    run.add_argument("--max-concurrent", type=int, help="parallel steps (env N4A_MAX_CONCURRENT, 4)")
    run.add_argument("--dagster-home", help="Dagster instance directory (env DAGSTER_HOME, "
                                            "./.dagster_home)")
    run.add_argument("--pipelines-per-step", type=int, default=None,
                     help="pipelines trained per Dagster step (default 1)")
    run.add_argument("--verbose", action="store_true", help="show Dagster's event log")
    run.set_defaults(func=run_sweep_command)
    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on the n4a definitions")
    ui.add_argument("--workspace", help="workspace directory (env N4A_WORKSPACE)")
    ui.add_argument("--dagster-home", help="Dagster instance directory (env DAGSTER_HOME)")
    ui.set_defaults(func=ui_command)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
