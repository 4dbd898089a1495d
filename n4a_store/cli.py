"""The ``n4a`` command line: run sweeps, inspect a workspace, export and predict, maintain.

Exit codes: 0 success; 1 an error, or a sweep in which pipelines failed; 2 a usage
error (bad option, missing argument, invalid sweep config).

Every command takes ``--workspace DIR`` (default: ``$N4A_WORKSPACE``, else ``./workspace``).
Listings are tables on stdout (``--json`` for machine-readable output); progress bars and
diagnostics go to stderr.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_WORKSPACE = "./workspace"
BUILTIN_DEMO = "builtin:nirs-regression"


# --------------------------------------------------------------------------- plumbing


SHORT_ID = 8  # characters of an id shown in tables (``show`` accepts prefixes of 6 or more)
WIDE_WIDTH = 250


def _console(stderr: bool = False, wide: bool = False) -> Any:
    """A rich console on stdout (or stderr).

    Width: the terminal's; when not a terminal, ``$COLUMNS`` or 100. ``wide`` (``--wide``)
    never narrower than 250 columns, so full ids are never cut.
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width: int | None = None
    if not stream.isatty():
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else 100
    if wide:
        width = max(width or 0, WIDE_WIDTH)
    return Console(file=stream, width=width, soft_wrap=False, highlight=False)


def _short(ident: Any, wide: bool = False) -> str:
    """An id as shown in tables: its first 8 characters unless ``wide``."""
    if ident is None:
        return "-"
    return str(ident) if wide else str(ident)[:SHORT_ID]


def wide_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--wide`` option: every column and full ids."""
    return click.option("--wide", is_flag=True,
                        help="All columns and full ids (default: a table for 80 columns).")(fn)


class N4AGroup(click.Group):
    """Click group turning n4a errors into one-line messages and documented exit codes."""

    def main(self, args: Any = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the CLI; usage errors print one ``Error: ...`` line and exit 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "n4a"
            _error(f"{exc.format_message()} (see '{command} --help')")
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            _error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:
            _error("aborted")
            sys.exit(EXIT_FAILURE)
        sys.exit(code if isinstance(code, int) else EXIT_OK)

    def invoke(self, ctx: click.Context) -> Any:
        from n4a_store.errors import N4AError
        from n4a_store.sweep.errors import SweepConfigError

        try:
            return super().invoke(ctx)
        except SweepConfigError as exc:
            _error(f"invalid sweep config: {exc}")
            ctx.exit(EXIT_USAGE)
        except (N4AError, FileNotFoundError, KeyError, ValueError, OSError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            _error(f"{message}")
            ctx.exit(EXIT_FAILURE)


def _error(message: str) -> None:
    click.echo(f"Error: {message}", err=True)


def workspace_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--workspace`` option shared by every command."""
    return click.option(
        "--workspace", "-w", "workspace",
        type=str,
        envvar="N4A_WORKSPACE", default=DEFAULT_WORKSPACE, show_default=True, show_envvar=True,
        help="Workspace: a directory, or a store URI (file://…, postgresql://…?file_root=…).",
    )(fn)


def _open_store(workspace: str, *, create: bool = False) -> Any:
    """Open the workspace (a path or store URI); refuse (exit 1) when it does not exist unless ``create``.

    The one place the CLI opens a workspace.
    """
    from n4a_store import WorkspaceStore
    from n4a_store.config import parse_to_config
    from n4a_store.errors import N4AError

    try:
        config = parse_to_config(workspace)
        if not create and not config.exists():
            raise click.ClickException(
                f"no workspace at {config.display_uri()} (no catalog there); run `n4a sweep CONFIG "
                f"--workspace {config.display_uri()}` first or pass --workspace / set N4A_WORKSPACE")
        return WorkspaceStore(config)
    except N4AError as error:
        raise click.ClickException(str(error)) from error


def _fmt(value: Any, digits: int = 4) -> str:
    """Display a cell: floats rounded, None as '-', datetimes to the second."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _table(title: str | None, columns: list[str], rows: list[list[Any]], *,
           no_wrap: tuple[str, ...] = ()) -> Any:
    from rich.table import Table

    from rich import box

    table = Table(title=title, title_justify="left", show_lines=False, box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)
    for col in columns:
        numeric = col.split(" ")[0] in {
            "rank", "val", "test", "best_val", "best_test", "pipelines", "completed", "failed",
            "ms", "duration_ms", "n_samples", "count", "rows", "files"}
        # numbers and ids are never split over lines; long text is cut with an ellipsis
        table.add_column(col, justify="right" if numeric else "left",
                         no_wrap=numeric or col in no_wrap or col.endswith("_id") or col == "run",
                         overflow="fold" if col.endswith("_id") else "ellipsis")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    return table


def _json_out(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    return str(value)


# --------------------------------------------------------------------------- the group


@click.group(cls=N4AGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="n4a", prog_name="n4a")
def main() -> None:
    """n4a: training sweeps on spectra, stored in a DuckDB + Parquet workspace.

    \b
    Exit codes: 0 ok; 1 error or failed pipelines; 2 usage error or invalid config.
    """


# --------------------------------------------------------------------------- sweep


@main.command()
@click.argument("config")
@workspace_option
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes running pipelines in parallel.")
@click.option("--name", "run_name", default=None, help="Run name (default: the config's name).")
@click.option("--top", "top_n", type=click.IntRange(min=0), default=10, show_default=True,
              help="Leaderboard rows to print.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--commit-interval", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds of pipelines committed together (0: commit each pipeline).")
def sweep(config: str, workspace: str, jobs: int, run_name: str | None, top_n: int,
          progress: bool | None, as_json: bool, commit_interval: float) -> None:
    """Run the sweep CONFIG (a YAML/JSON file, or builtin:<name>) into the workspace.

    \b
    Builtin configs: builtin:nirs-regression, builtin:nirs-classification.
    Exits 1 when any pipeline failed (the others are still recorded).
    """
    _run_sweep(config, workspace, jobs, run_name, top_n, progress, as_json, commit_interval)


@main.command()
@workspace_option
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes running pipelines in parallel.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr.")
def demo(workspace: str, jobs: int, progress: bool | None) -> None:
    """Run the bundled regression sweep (chemotools fermentation data) and print the leaderboard.

    Same as `n4a sweep builtin:nirs-regression`.
    """
    _run_sweep(BUILTIN_DEMO, workspace, jobs, None, 10, progress, False, 2.0)


def _run_sweep(config: str, workspace: str, jobs: int, run_name: str | None, top_n: int,
               progress: bool | None, as_json: bool, commit_interval: float) -> None:
    from n4a_store.sweep import load_sweep_config, run_sweep

    if not config.startswith("builtin:"):
        if Path(config).is_dir():
            raise click.BadParameter(f"{config} is a directory; give a YAML/JSON sweep config "
                                     f"file or builtin:<name>", param_hint="CONFIG")
        if not Path(config).is_file():
            raise click.BadParameter(f"no such config file: {config}", param_hint="CONFIG")
    cfg = load_sweep_config(config)
    if progress is None:
        progress = sys.stderr.isatty()
    summary = run_sweep(cfg, workspace, jobs=jobs, progress=progress, run_name=run_name,
                        commit_interval=commit_interval)
    if as_json:
        _json_out({
            "run_id": summary.run_id, "workspace": str(workspace), "n_pipelines": summary.n_pipelines,
            "n_completed": summary.n_completed, "n_failed": summary.n_failed,
            "duration_s": round(summary.duration_s, 3),
            "leaderboard": summary.leaderboard.head(top_n).to_dicts(),
        })
    else:
        _print_leaderboard(summary, top_n)
    if summary.n_failed:
        _print_failures(summary)
        sys.exit(EXIT_FAILURE)


def _print_leaderboard(summary: Any, top_n: int) -> None:
    board = summary.leaderboard.filter(summary.leaderboard["status"] == "completed")
    records = [{"rank": r["rank"], "dataset": r["dataset_name"], "metric": r["metric"],
                "pipeline": r["name"], "val": r["best_val"], "test": r["best_test"],
                "preprocessing": r["preprocessings"] or "-",
                "model": (r["model_class"] or "-").rsplit(".", 1)[-1],
                "pipeline_id": r["pipeline_id"], "chain_id": r["chain_id"], "run_id": summary.run_id}
               for r in board.iter_rows(named=True) if r["rank"] is not None and r["rank"] <= top_n]
    console = _console()
    _print_ranking(console, records, wide=False, with_run=False)
    console.print(
        f"run {summary.run_id}: {summary.n_pipelines} pipelines, {summary.n_completed} completed, "
        f"{summary.n_failed} failed in {summary.duration_s:.1f} s -> {summary.workspace_path}")


def _print_ranking(console: Any, records: list[dict[str, Any]], *, wide: bool,
                   with_run: bool) -> None:
    """One table per (dataset, metric): rank, pipeline name, scores, short ids."""
    from n4a_store.ranking import direction_label

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["dataset"], rec["metric"]), []).append(rec)
    columns = ["rank", "pipeline", "val", "test"]
    if wide:
        columns += ["preprocessing", "model", "pipeline_id", "chain_id"]
    else:
        columns += ["id"]  # the pipeline id's first 8 characters: `n4a show` takes it
    if with_run:
        columns += ["run_id" if wide else "run"]
    for (dataset, metric), rows in groups.items():
        table_rows = []
        for rec in rows:
            cells = {**rec, "pipeline_id": _short(rec["pipeline_id"], wide),
                     "id": _short(rec["pipeline_id"]),
                     "chain_id": _short(rec.get("chain_id"), wide),
                     "run": _short(rec.get("run_id")), "run_id": rec.get("run_id")}
            table_rows.append([cells[c] for c in columns])
        console.print(_table(f"Leaderboard {dataset}: {metric} ({direction_label(metric)})",
                             columns, table_rows, no_wrap=("pipeline",)))


def _print_failures(summary: Any) -> None:
    """Each failed pipeline (name, dataset, id) with its error on its own wrapped lines.

    Not a table: an error squeezed into a column of an 80-column terminal reads as
    one word per line and loses its end.
    """
    console = _console(stderr=True)
    console.print(f"{summary.n_failed} pipeline(s) failed:", markup=False)
    for r in summary.failures[:20]:
        error = (r.error or "").splitlines()[0][:300] if r.error else "(no error recorded)"
        console.print(f"  {r.name}  {r.dataset_name}  {r.pipeline_id}", markup=False)
        console.print(f"    {error}", markup=False)
    if summary.n_failed > 20:
        console.print(f"... and {summary.n_failed - 20} more (n4a show {summary.run_id})",
                      markup=False)


# --------------------------------------------------------------------------- listings


@main.command()
@workspace_option
@click.option("--status", type=click.Choice(["running", "completed", "failed"]), default=None,
              help="Only runs with this status.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@wide_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def runs(workspace: str, status: str | None, limit: int, wide: bool, as_json: bool) -> None:
    """List runs, newest first."""
    with _open_store(workspace) as store:
        frame = store.list_runs(status=status, limit=limit)
    records = []
    for r in frame.iter_rows(named=True):
        summary = _loads(r.get("summary")) or {}
        records.append({
            "run_id": r["run_id"], "name": r["name"], "status": r["status"],
            "created_at": r["created_at"], "datasets": ", ".join(r.get("dataset_names") or []),
            "pipelines": summary.get("n_pipelines"), "failed": summary.get("n_failed"),
            "duration_s": summary.get("duration_s"),
        })
    if as_json:
        _json_out(records)
        return
    if not records:
        click.echo(f"no runs in {workspace}")
        return
    if wide:
        columns = ["run_id", "name", "status", "created_at", "datasets", "pipelines", "failed"]
        rows = [[rec[c] for c in columns] for rec in records]
    else:  # fits 80 columns: short ids, minutes, failures next to the count
        columns = ["run_id", "name", "status", "created", "datasets", "pipelines"]
        rows = [[_short(rec["run_id"]), rec["name"], rec["status"],
                 rec["created_at"].strftime("%Y-%m-%d %H:%M") if rec["created_at"] else "-",
                 rec["datasets"],
                 "-" if rec["pipelines"] is None else
                 f"{rec['pipelines']}" + (f" ({rec['failed']} failed)" if rec["failed"] else "")]
                for rec in records]
    _console(wide=wide).print(_table(f"Runs in {workspace}", columns, rows,
                                     no_wrap=("name", "created", "status")))


@main.command()
@workspace_option
@click.option("--run", "run_ref", default="latest", show_default=True,
              help="Run id (or unique prefix), 'latest', or 'all' for every run.")
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True,
              help="Rows per dataset and metric.")
@wide_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def top(workspace: str, run_ref: str, dataset: str | None, n: int, wide: bool,
        as_json: bool) -> None:
    """Best pipelines by cross-validated score (pooled out-of-fold), per dataset and metric.

    The ranking is store.top_predictions(n, fold_id="avg", group_by="metric") per dataset:
    rmse/mae lowest first, r2/accuracy/balanced_accuracy/f1 highest first.
    """
    from n4a_store.ranking import BEST_FOLD

    with _open_store(workspace) as store:
        run_id = None if run_ref == "all" else _resolve_run(store, run_ref)
        pipelines = store.list_pipelines(run_id=run_id)
        datasets = pipelines["dataset_name"].unique(maintain_order=True).to_list()
        if dataset is not None and dataset not in datasets:
            where = f"run {run_id}" if run_id else str(workspace)
            raise click.ClickException(
                f"no dataset {dataset!r} in {where}; datasets: {', '.join(datasets) or 'none'}")
        info = {r["pipeline_id"]: r for r in pipelines.iter_rows(named=True)}
        records: list[dict[str, Any]] = []
        for ds_name in [dataset] if dataset else datasets:
            ranked = store.top_predictions(n, fold_id=BEST_FOLD, dataset_name=ds_name,
                                           run_id=run_id, group_by="metric")
            rank, previous = 0, None
            for row in ranked.iter_rows(named=True):
                p = info.get(row["pipeline_id"]) or {}
                if p.get("status") != "completed" or row["val_score"] is None:
                    continue
                rank = rank + 1 if row["metric"] == previous else 1
                previous = row["metric"]
                records.append({
                    "rank": rank, "dataset": ds_name, "metric": row["metric"],
                    "pipeline": p.get("name"), "val": row["val_score"], "test": row["test_score"],
                    "preprocessing": row["preprocessings"] or "-",
                    "model": (row["model_class"] or "-").rsplit(".", 1)[-1],
                    "pipeline_id": row["pipeline_id"], "chain_id": row["chain_id"],
                    "run_id": row["run_id"],
                })
    if as_json:
        _json_out(records)
        return
    if not records:
        click.echo("no completed pipelines" + (f" in run {run_id}" if run_id else ""))
        return
    console = _console(wide=wide)
    console.print(f"Top pipelines of run {run_id}" if run_id else "Top pipelines (all runs)")
    _print_ranking(console, records, wide=wide, with_run=run_id is None)


# --------------------------------------------------------------------------- show


@main.command()
@click.argument("ident", metavar="ID")
@workspace_option
@wide_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw record as JSON.")
def show(ident: str, workspace: str, wide: bool, as_json: bool) -> None:
    """Show a run, pipeline, chain or prediction by id ('latest' = newest run).

    Runs and pipelines are also found by a unique id prefix (6+ characters, as `top` and
    `runs` print them); a pipeline also by its name (the newest pipeline of that name).
    """
    with _open_store(workspace) as store:
        kind, record = _lookup(store, ident)
        if kind == "run":
            pipelines = store.list_pipelines(run_id=record["run_id"])
            record["pipelines"] = pipelines.select(
                "pipeline_id", "name", "status", "dataset_name", "metric", "best_val", "best_test",
            ).to_dicts()
        elif kind == "pipeline":
            record["chains"] = store.get_chains_for_pipeline(record["pipeline_id"]).select(
                "chain_id", "preprocessings", "model_class").to_dicts()
            record["log"] = store.get_pipeline_log(record["pipeline_id"]).select(
                "step_idx", "operator_class", "event", "duration_ms", "message").to_dicts()
        elif kind == "prediction":
            record = store.get_prediction(record["prediction_id"], load_arrays=True)
    if as_json:
        _json_out({"kind": kind, **record})
        return
    {"run": _show_run, "pipeline": _show_pipeline, "chain": _show_chain,
     "prediction": _show_prediction}[kind](record, wide)


def _lookup(store: Any, ident: str) -> tuple[str, dict[str, Any]]:
    if ident == "latest":
        return "run", store.get_run(_resolve_run(store, "latest"))
    for kind, getter in (("run", store.get_run), ("pipeline", store.get_pipeline),
                         ("chain", store.get_chain), ("prediction", store.get_prediction)):
        record = getter(ident)
        if record is not None:
            return kind, record
    named = store.list_pipelines().filter(name=ident)
    if named.height:
        return "pipeline", store.get_pipeline(named["pipeline_id"][-1])
    matches = _prefix_matches(store, ident)
    if len(matches) == 1:
        kind, full = matches[0]
        return kind, {"run": store.get_run, "pipeline": store.get_pipeline}[kind](full)
    if len(matches) > 1:
        raise click.ClickException(f"id prefix {ident!r} is ambiguous ({len(matches)} matches)")
    raise click.ClickException(f"no run, pipeline, chain or prediction with id {ident!r} in "
                               f"{store.workspace_path}")


def _prefix_matches(store: Any, prefix: str) -> list[tuple[str, str]]:
    """Runs and pipelines whose id starts with ``prefix`` (at least 6 characters)."""
    if len(prefix) < 6:
        return []
    out = [("run", r) for r in store.list_runs(limit=None)["run_id"].to_list() if r.startswith(prefix)]
    out += [("pipeline", p) for p in store.list_pipelines()["pipeline_id"].to_list()
            if p.startswith(prefix)]
    return out


def _resolve_run(store: Any, ref: str) -> str:
    if ref == "latest":
        frame = store.list_runs(limit=1)
        if frame.height == 0:
            raise click.ClickException(f"no runs in {store.workspace_path}")
        return frame["run_id"][0]
    if store.get_run(ref) is not None:
        return ref
    matches = [m for m in _prefix_matches(store, ref) if m[0] == "run"]
    if len(matches) == 1:
        return matches[0][1]
    raise click.ClickException(f"no run with id {ref!r}" + (" (ambiguous prefix)" if matches else ""))


def _kv(title: str, pairs: list[tuple[str, Any]]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in pairs:
        table.add_row(key, _fmt(value) if not isinstance(value, dict | list) else
                      json.dumps(value, default=_json_default))
    return Group(Text(title, style="bold"), table)


def _show_run(run: dict[str, Any], wide: bool = False) -> None:
    console = _console(wide=wide)
    summary = run.get("summary") or {}
    console.print(_kv(f"Run {run['run_id']}", [
        ("name", run["name"]), ("status", run["status"]), ("created_at", run["created_at"]),
        ("completed_at", run.get("completed_at")),
        ("datasets", ", ".join(d.get("name", "?") for d in run.get("datasets") or [])),
        ("pipelines", summary.get("n_pipelines")), ("completed", summary.get("n_completed")),
        ("failed", summary.get("n_failed")), ("duration_s", summary.get("duration_s")),
        ("metadata", run.get("metadata") or {}), ("error", run.get("error")),
    ]))
    rows = [[p["name"], p["status"], p["dataset_name"], p["metric"], p["best_val"], p["best_test"],
             _short(p["pipeline_id"], wide)] for p in run.get("pipelines", [])]
    if rows:
        console.print(_table("Pipelines", ["pipeline", "status", "dataset", "metric", "best_val",
                                           "best_test", "pipeline_id"], rows))


def _show_pipeline(p: dict[str, Any], wide: bool = False) -> None:
    console = _console(wide=wide)
    console.print(_kv(f"Pipeline {p['pipeline_id']}", [
        ("name", p["name"]), ("status", p["status"]), ("run_id", p["run_id"]),
        ("dataset", p["dataset_name"]), ("dataset_hash", p.get("dataset_hash")),
        ("metric", p.get("metric")), ("best_val", p.get("best_val")),
        ("best_test", p.get("best_test")), ("duration_ms", p.get("duration_ms")),
        ("error", (p.get("error") or "").strip() or None),
    ]))
    steps = (p.get("expanded_config") or {}).get("pipeline") or []
    console.print(_table("Steps", ["step", "class", "params"],
                         [[i, s.get("class") if wide else str(s.get("class")).rsplit(".", 1)[-1],
                           json.dumps(s.get("params") or {})]
                          for i, s in enumerate(steps)]))
    choices = p.get("generator_choices") or []
    if choices:
        console.print(_table("Generator choices", ["path", "generator", "index", "value"],
                             [[c.get("path"), c.get("generator"), c.get("index"),
                               json.dumps(c.get("value"), default=str)] for c in choices]))
    if p.get("chains"):
        console.print(_table("Chains", ["chain_id", "preprocessings", "model_class"],
                             [[c["chain_id"], c["preprocessings"], c["model_class"]]
                              for c in p["chains"]]))
    if p.get("log"):
        console.print(_table("Log", ["step_idx", "operator_class", "event", "duration_ms"],
                             [[r["step_idx"], r["operator_class"], r["event"], r["duration_ms"]]
                              for r in p["log"]]))


def _show_chain(c: dict[str, Any], wide: bool = False) -> None:
    console = _console(wide=wide)
    console.print(_kv(f"Chain {c['chain_id']}", [
        ("pipeline_id", c["pipeline_id"]), ("model_class", c["model_class"]),
        ("preprocessings", c.get("preprocessings")), ("fold_strategy", c["fold_strategy"]),
        ("folds", len(c.get("fold_artifacts") or {})), ("created_at", c.get("created_at")),
    ]))
    rows = []
    for s in c.get("steps") or []:
        folds = s.get("fold_artifacts") or s.get("fold_artifact_ids") or {}
        artifacts = s.get("artifact_id") or f"{len(folds)} per-fold"
        rows.append([s.get("step_idx"), s.get("operator_class"), json.dumps(s.get("params") or {}),
                     "yes" if s.get("stateless") else "no", artifacts])
    console.print(_table("Steps", ["step", "class", "params", "stateless", "artifacts"], rows))


def _show_prediction(r: dict[str, Any], wide: bool = False) -> None:
    console = _console(wide=wide)
    pairs = [(k, r.get(k)) for k in (
        "prediction_id", "pipeline_id", "chain_id", "run_id", "dataset_name", "model_class",
        "fold_id", "partition", "metric", "val_score", "test_score", "train_score", "n_samples",
        "n_features", "preprocessings", "scores")]
    console.print(_kv(f"Prediction {r['prediction_id']}", pairs))
    if r.get("y_true") is not None:
        n = len(r["y_true"])
        rows = [[i, r["sample_indices"][i] if r.get("sample_indices") is not None else "-",
                 float(r["y_true"][i]), float(r["y_pred"][i])] for i in range(min(n, 10))]
        console.print(_table(f"Arrays ({n} samples, first {min(n, 10)})",
                             ["row", "sample", "y_true", "y_pred"], rows))


# --------------------------------------------------------------------------- export / predict


@main.command()
@click.argument("ident", metavar="ID", required=False)
@workspace_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file (default: <workspace>/exports/<name>.<ext>).")
@click.option("--format", "fmt", type=click.Choice(["n4a", "n4a.py", "json", "yaml"]), default=None,
              help="chain/pipeline: n4a (default) or n4a.py; pipeline: json = its config; "
                   "run: yaml (default), or n4a / n4a.py = its best chain.")
@click.option("--predictions", "predictions", is_flag=True,
              help="Export prediction records to Parquet instead (filters below).")
@click.option("--run", "run_ref", default=None, help="--predictions: run id or 'latest'.")
@click.option("--dataset", default=None, help="--predictions: dataset name.")
@click.option("--partition", type=click.Choice(["train", "val", "test"]), default=None,
              help="--predictions: partition.")
@click.option("--with-arrays", is_flag=True, help="--predictions: include y_true/y_pred arrays.")
def export(ident: str | None, workspace: str, output: Path | None, fmt: str | None,
           predictions: bool, run_ref: str | None, dataset: str | None, partition: str | None,
           with_arrays: bool) -> None:
    """Export a chain (.n4a bundle or .n4a.py script), a pipeline, a run, or predictions.

    \b
    n4a export CHAIN_ID -o model.n4a
    n4a export PIPELINE_ID --format json -o config.json
    n4a export latest --format n4a -o best.n4a       # best chain of the newest run
    n4a export --predictions --run latest -o preds.parquet
    """
    with _open_store(workspace) as store:
        exports_dir = store.workspace_path / "exports"
        if predictions:
            if ident is not None:
                raise click.UsageError("--predictions takes no ID; use --run/--dataset/--partition")
            known = store.list_pipelines()["dataset_name"].unique().sort().to_list()
            if dataset is not None and dataset not in known:
                raise click.ClickException(f"no dataset {dataset!r} in {workspace}; datasets: "
                                           f"{', '.join(known) or 'none'}")
            filters: dict[str, Any] = {"dataset_name": dataset, "partition": partition}
            if run_ref is not None:
                filters["run_id"] = _resolve_run(store, run_ref)
            path = output or exports_dir / "predictions.parquet"
            store.export_predictions_parquet(path, with_arrays=with_arrays,
                                             **{k: v for k, v in filters.items() if v is not None})
            click.echo(str(path))
            return
        if ident is None:
            raise click.UsageError("give an ID (run, pipeline or chain) or --predictions")
        kind, record = _lookup(store, ident)
        if kind == "prediction":
            kind, record = "chain", store.get_chain(record["chain_id"])
        if kind == "run":
            if fmt in (None, "yaml"):
                path = output or exports_dir / f"run_{record['run_id'][:8]}.yaml"
                click.echo(str(store.export_run(record["run_id"], path)))
                return
            if fmt == "json":
                raise click.UsageError("a run exports as yaml, n4a or n4a.py")
            best = (record.get("summary") or {}).get("best") or {}
            chain_ids = [b["chain_id"] for b in best.values() if b.get("chain_id")]
            if not chain_ids:
                raise click.ClickException(f"run {record['run_id']} has no completed pipeline")
            kind, record = "chain", store.get_chain(chain_ids[0])
        if kind == "pipeline":
            if fmt == "json":
                path = output or exports_dir / f"{record['name']}.json"
                click.echo(str(store.export_pipeline_config(record["pipeline_id"], path)))
                return
            if fmt == "yaml":
                raise click.UsageError("a pipeline exports as json, n4a or n4a.py")
            chains = store.get_chains_for_pipeline(record["pipeline_id"])
            if chains.height == 0:
                raise click.ClickException(
                    f"pipeline {record['pipeline_id']} has no chain (status {record['status']})")
            kind, record = "chain", store.get_chain(chains["chain_id"][0])
        if fmt in ("json", "yaml"):
            raise click.UsageError("a chain exports as n4a or n4a.py")
        fmt = fmt or "n4a"
        path = output or exports_dir / f"chain_{record['chain_id'][:8]}.{fmt}"
        click.echo(str(store.export_chain(record["chain_id"], path, format=fmt)))


PREDICTION_FORMATS = (".csv", ".parquet", ".pq")


@main.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write predictions to this .csv or .parquet file (default: CSV on stdout).")
@click.option("--target", default=None,
              help="Column of DATA holding reference values: kept in the output, not a feature; "
                   "error metrics go to stderr.")
@click.option("--id", "ids", multiple=True, help="Column of DATA copied next to each prediction.")
@click.option("--drop", "drop", multiple=True, help="Other non-spectral columns of DATA to ignore.")
@click.option("--proba", is_flag=True, help="Classification: print class probabilities too.")
def predict(bundle: Path, data: Path, output: Path | None, target: str | None,
            ids: tuple[str, ...], drop: tuple[str, ...], proba: bool) -> None:
    """Predict with a .n4a BUNDLE on the spectra in DATA (.csv or .parquet).

    DATA's columns are named by wavelength; --target/--id/--drop name the other columns.
    """
    import polars as pl

    from n4a_store.bundles.predict import load_bundle
    from n4a_store.bundles.predict import predict as bundle_predict
    from n4a_store.sweep.datasets import read_spectra_table

    if output is not None and output.suffix.lower() not in PREDICTION_FORMATS:
        raise click.BadParameter(f"{output}: predictions are written as .csv or .parquet",
                                 param_hint="--output")
    columns_in = _table_columns(data)
    for option, names in (("--target", (target,) if target else ()), ("--id", ids),
                          ("--drop", drop)):
        for name in names:
            if name not in columns_in:
                shown = ", ".join(columns_in[:6]) + (", ..." if len(columns_in) > 6 else "")
                raise click.BadParameter(f"no column {name!r} in {data} (columns: {shown})",
                                         param_hint=option)
    X, wavelengths = read_spectra_table(data, tuple(drop) + tuple(ids), target)
    y = bundle_predict(bundle, X, wavelengths=wavelengths)
    frame_in = _read_columns(data, [*ids, *([target] if target else [])])
    columns: dict[str, Any] = {"row": list(range(len(y)))}
    for name in ids:
        columns[name] = frame_in[name].to_list()
    if target:
        columns[target] = frame_in[target].to_list()
    columns["prediction"] = y.tolist()
    plan = load_bundle(bundle)
    if proba:
        if plan.task_type != "classification":
            raise click.UsageError("--proba is only for classification bundles")
        if not getattr(plan, "has_proba", True):
            raise click.UsageError("--proba needs a model with predict_proba; this bundle's "
                                   "classifier gives labels only (its folds vote)")
        probabilities = bundle_predict(bundle, X, wavelengths=wavelengths, proba=True)
        for j, label in enumerate(plan.classes.tolist()):
            columns[f"proba_{label}"] = probabilities[:, j].tolist()
    frame = pl.DataFrame(columns)
    if output is None:
        click.echo(frame.write_csv(), nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix.lower() == ".csv":
            frame.write_csv(output)
        else:
            frame.write_parquet(output)
        click.echo(f"{len(y)} predictions -> {output}", err=True)
    if target:
        click.echo(_metrics_line(plan.task_type, frame_in[target].to_numpy(), y), err=True)


def _table_columns(path: Path) -> list[str]:
    import polars as pl

    if path.suffix.lower() in (".parquet", ".pq"):
        return list(pl.read_parquet_schema(path))
    return pl.read_csv(path, n_rows=0).columns


def _read_columns(path: Path, names: list[str]) -> Any:
    import polars as pl

    if path.suffix.lower() in (".parquet", ".pq"):
        return pl.read_parquet(path, columns=names)
    return pl.read_csv(path, columns=names) if names else pl.DataFrame()


def _metrics_line(task_type: str, y_true: Any, y_pred: Any) -> str:
    """``rmse=... mae=... r2=... (n=..)`` for predictions against reference values."""
    import numpy as np

    from n4a_store.sweep.scoring import score_partition

    if task_type == "classification":
        y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    scores = score_partition(task_type, y_true, y_pred)
    return " ".join(f"{k}={_fmt(v)}" for k, v in scores.items()) + f" (n={len(y_true)})"


# --------------------------------------------------------------------------- maintenance


@main.command()
@workspace_option
def gc(workspace: str) -> None:
    """Delete artifact files no chain references any more."""
    with _open_store(workspace) as store:
        before = store.artifact_stats()
        removed = store.gc_artifacts()
        after = store.artifact_stats()
    freed = before["bytes"] - after["bytes"]
    click.echo(f"removed {removed} unreferenced artifact(s), freed {_bytes(freed)}; "
               f"{after['count']} artifact(s) remain ({_bytes(after['bytes'])})")


@main.command()
@workspace_option
@click.option("--dataset", default=None, help="Only this dataset's array files.")
def compact(workspace: str, dataset: str | None) -> None:
    """Merge prediction-array files and drop deleted rows (one file per dataset)."""
    with _open_store(workspace) as store:
        before = store.array_stats()
        if dataset is not None and dataset not in before:
            raise click.ClickException(
                f"no prediction arrays of dataset {dataset!r} in {workspace}; datasets: "
                f"{', '.join(sorted(before)) or 'none'}")
        removed = store.compact_arrays(dataset)
        after = store.array_stats()
    files_before = sum(v["files"] for v in before.values())
    files_after = sum(v["files"] for v in after.values())
    click.echo(f"compacted arrays: removed {removed} deleted row(s); files {files_before} -> "
               f"{files_after}")


@main.command()
@click.argument("ident", metavar="ID")
@workspace_option
@click.option("--keep-artifacts", is_flag=True,
              help="Keep the artifact files no chain uses any more (n4a gc removes them later).")
def delete(ident: str, workspace: str, keep_artifacts: bool) -> None:
    """Delete a run or a pipeline (ID as `show` takes it) with everything it holds.

    A run takes its pipelines, chains, predictions, arrays and logs with it; a pipeline its
    chains, predictions, arrays and logs. Artifacts no chain uses any more are removed too
    unless --keep-artifacts. A Dagster deployment on this workspace drops the partitions of
    what is deleted on the next tick of its n4a_partitions_sensor.
    """
    with _open_store(workspace) as store:
        kind, record = _lookup(store, ident)
        if kind == "run":
            n_pipelines = store.list_pipelines(run_id=record["run_id"]).height
            rows = store.delete_run(record["run_id"], delete_artifacts=not keep_artifacts)
            what = f"run {record['run_id']} ({record['name']}, {n_pipelines} pipeline(s))"
        elif kind == "pipeline":
            rows = store.delete_pipeline(record["pipeline_id"], delete_artifacts=not keep_artifacts)
            what = f"pipeline {record['pipeline_id']} ({record['name']})"
        else:
            raise click.ClickException(
                f"{ident!r} is a {kind}: `n4a delete` takes a run or a pipeline id")
    click.echo(f"deleted {what}: {rows} catalog row(s)")


@main.command()
@workspace_option
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed: recount claims, remove orphans and strays, compact.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--grace", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds a temporary file may be in flight before it counts as stray.")
def verify(workspace: str, repair: bool, as_json: bool, grace: float) -> None:
    """Check the workspace's integrity (exit 1 when a problem remains); --repair fixes what it can."""
    from rich.progress import Progress

    with _open_store(workspace) as store:
        with Progress(console=_console(stderr=True), transient=True, disable=as_json) as bar:
            task = bar.add_task("repairing" if repair else "verifying", total=None)

            def advance(phase: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=f"hashing {phase}")

            report = store.verify(repair=repair, grace=grace, progress=advance)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        if report.repaired:
            fixed = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in report.repaired.items() if n)
            click.echo(f"repaired: {fixed or 'nothing to repair'}")
        click.echo(report.summary())
        if not report.ok and not repair and any(f.repairable for f in report.findings):
            click.echo("run 'n4a verify --repair' to fix the repairable problems")
    if not report.ok:
        sys.exit(EXIT_FAILURE)


@main.command()
@workspace_option
def vacuum(workspace: str) -> None:
    """Reclaim unused space in the catalog (the DuckDB file, or PostgreSQL's tables)."""
    with _open_store(workspace) as store:
        if store.backend != "duckdb":
            store.vacuum()
            click.echo(f"vacuumed the catalog of {store.uri}")
            return
        db = store.workspace_path / "store.duckdb"
        before = _db_size(db)
        store.vacuum()
    click.echo(f"vacuumed {db}: {_bytes(before)} -> {_bytes(_db_size(db))}")


def _db_size(db: Path) -> int:
    wal = db.with_name(db.name + ".wal")
    return (db.stat().st_size if db.exists() else 0) + (wal.stat().st_size if wal.exists() else 0)


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value



@main.group("store")
def store_group() -> None:
    """Move runs between stores (DuckDB directories, PostgreSQL URIs)."""


@store_group.command("export")
@click.option("--from", "source", required=True, help="Source store: a directory or store URI.")
@click.option("--to", "destination", required=True, help="Destination store (created if needed).")
@click.option("--run", "run_ids", multiple=True, help="Only this run (repeatable; default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the transfer report as JSON.")
def store_export(source: str, destination: str, run_ids: tuple[str, ...], as_json: bool) -> None:
    """Copy runs with everything under them to another store, ids preserved (re-runnable)."""
    from rich.progress import Progress

    from n4a_store.errors import N4AError
    from n4a_store.transfer import export_store

    source_store = _open_store(source)
    try:
        with Progress(console=_console(stderr=True), transient=True, disable=as_json) as bar:
            task = bar.add_task("copying runs", total=None)

            def advance(run_id: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=f"run {run_id[:8]}")

            report = export_store(source_store, destination, list(run_ids) or None, progress=advance)
    except N4AError as error:
        raise click.ClickException(str(error)) from error
    finally:
        source_store.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    copied = ", ".join(f"{n} {t}" for t, n in report.copied.items() if n)
    skipped = sum(report.skipped.values())
    click.echo(f"copied {copied or 'nothing'} ({_bytes(report.bytes_copied)} of artifacts, "
               f"{report.arrays_copied} array records); {skipped} row(s) already there")

if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]) or "n4a")
