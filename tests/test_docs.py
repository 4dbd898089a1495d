"""The docs are right as written: every CLI command documented; the README and quickstart
Python snippets run against a workspace made by the built-in sweeps and pick the
leaderboard's #1; CLI tables fit 80 columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from n4a_store import WorkspaceStore
from n4a_store.cli import main
from n4a_store.sweep import load_dataset, load_sweep_config, run_sweep

ROOT = Path(__file__).resolve().parent.parent
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
SHELL_BLOCK = re.compile(r"```(?:bash|sh)\n(.*?)```", re.S)

pytestmark = pytest.mark.slow


def _python_blocks(doc: str) -> list[str]:
    return PYTHON_BLOCK.findall((ROOT / doc).read_text(encoding="utf-8"))


def _cli(*args: str, columns: int = 80):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": str(columns)},
                              catch_exceptions=False)


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_cli_command_is_documented(command):
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert re.search(rf"\bn4a {command}\b", text), f"`n4a {command}` is not in docs/cli.md"


@pytest.fixture(scope="module")
def built_in(tmp_path_factory) -> dict:
    """A directory holding ./workspace with both built-in sweeps, as after `make run` and
    `n4a sweep builtin:nirs-classification`."""
    root = tmp_path_factory.mktemp("docs")
    runs = {}
    for name in ("builtin:nirs-regression", "builtin:nirs-classification"):
        summary = run_sweep(load_sweep_config(name), root / "workspace", jobs=1, progress=False)
        assert summary.n_failed == 0
        runs[name] = summary.run_id
    with WorkspaceStore(root / "workspace") as store:
        best = store.get_run(runs["builtin:nirs-regression"])["summary"]["best"]["fermentation"]
    top = json.loads(_cli("top", "-w", str(root / "workspace"), "--run", "all",
                          "--dataset", "fermentation", "--json").stdout)
    return {"root": root, "runs": runs, "summary_best": best, "top": top,
            "X_new": load_dataset("chemotools:fermentation").X_test}


def _run_blocks(blocks: list[str], built_in: dict, monkeypatch) -> dict:
    monkeypatch.chdir(built_in["root"])
    namespace: dict = {"X_new": built_in["X_new"]}
    for block in blocks:
        exec(compile(block, "<doc snippet>", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace


def test_readme_snippet_ships_the_leaderboards_best_model(built_in, monkeypatch, capsys):
    [snippet] = _python_blocks("README.md")
    ns = _run_blocks([snippet], built_in, monkeypatch)
    assert ns["best"]["chain_id"] == built_in["summary_best"]["chain_id"]  # leaderboard #1
    assert ns["best"]["chain_id"] == built_in["top"][0]["chain_id"]        # `n4a top` #1
    printed = capsys.readouterr().out
    assert printed.strip().startswith("[") and Path(ns["bundle"]).is_file()
    with WorkspaceStore(built_in["root"] / "workspace") as store:
        np.testing.assert_allclose(
            store.replay_chain(ns["best"]["chain_id"], built_in["X_new"]),
            __import__("n4a_store").predict(ns["bundle"], built_in["X_new"]))


def test_quickstart_snippets_run_and_agree(built_in, monkeypatch):
    ns = _run_blocks(_python_blocks("docs/quickstart.md"), built_in, monkeypatch)
    assert ns["best"]["chain_id"] == built_in["summary_best"]["chain_id"]
    assert ns["leaders"]["chain_id"][0] == built_in["top"][0]["chain_id"]
    assert len(ns["y"]) == len(built_in["X_new"])
    assert ns["record"]["y_true"] is not None
    ns["store"].close()


def test_the_old_readme_call_now_refuses_to_mix_rmse_and_accuracy(built_in):
    from n4a_store import InvalidInputError

    with WorkspaceStore(built_in["root"] / "workspace") as store:
        with pytest.raises(InvalidInputError, match="mixes metrics"):
            store.top_predictions(1, metric="val_score")


@pytest.mark.parametrize("args", [("top",), ("top", "--run", "all"), ("runs",),
                                  ("top", "--run", "all", "-n", "3")])
def test_cli_tables_fit_80_columns(built_in, args):
    result = _cli(*args, "-w", str(built_in["root"] / "workspace"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, result.stdout
    if args[0] == "top":
        best = built_in["top"][0] if "all" in args else None
        if best:  # the score and the short id are whole on one line
            row = next(line for line in lines if best["pipeline_id"][:8] in line)
            assert f"{best['val']:.4f}" in row and best["pipeline"] in row


def test_show_accepts_what_top_prints(built_in):
    ws = str(built_in["root"] / "workspace")
    best = built_in["top"][0]
    for ident in (best["pipeline_id"][:8], best["pipeline"]):
        shown = _cli("show", ident, "-w", ws, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["pipeline_id"] == best["pipeline_id"]


def test_messages_name_the_problem(built_in, tmp_path):
    ws = str(built_in["root"] / "workspace")
    directory = _cli("sweep", str(tmp_path), "-w", ws)
    assert directory.exit_code == 2 and "is a directory" in directory.stderr
    assert len(directory.stderr.strip().splitlines()) == 1
    assert directory.stderr.startswith("Error: ")
    nosuch = _cli("top", "-w", ws, "--dataset", "nosuch")
    assert nosuch.exit_code == 1 and "no dataset 'nosuch'" in nosuch.stderr
    assert "coffee" in nosuch.stderr  # the datasets of the latest run
    compact = _cli("compact", "-w", ws, "--dataset", "nosuch")
    assert compact.exit_code == 1 and "nosuch" in compact.stderr


def test_dagster_md_commands_run_as_written(tmp_path):
    """The `export DAGSTER_HOME=... N4A_WORKSPACE=...` block of docs/dagster.md, run verbatim
    with bash in a directory laid out like a clone after `make install` (the sweep is the tiny
    one, through N4A_SWEEP_CONFIG, to keep the test short)."""
    import os
    import subprocess

    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.instance.ref import InstanceRef

    from n4a_dagster.keys import MODEL_BUNDLE, PIPELINE
    from n4a_dagster.testing import tiny_sweep_config

    [block] = [b for b in SHELL_BLOCK.findall((ROOT / "docs" / "dagster.md").read_text("utf-8"))
               if b.startswith("export DAGSTER_HOME=")]
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(ROOT / ".venv")
    (clone / "workspace.yaml").write_text((ROOT / "workspace.yaml").read_text("utf-8"))
    (clone / ".dagster_home").mkdir()  # as `make run` leaves it
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "N4A_WORKSPACE")}
    env["N4A_SWEEP_CONFIG"] = str(tiny_sweep_config(tmp_path))
    done = subprocess.run(["bash", "-euc", block], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "passed validation" in done.stdout + done.stderr
    home, workspace = clone / ".dagster_home", clone / "workspace"
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        [sweep] = [r for r in instance.get_runs() if r.job_name == "n4a_sweep"]
        assert sweep.status == DagsterRunStatus.SUCCESS
        pipelines = instance.fetch_materializations(PIPELINE, limit=100).records
        bundle = instance.fetch_materializations(MODEL_BUNDLE, limit=1).records[0]
        bundle_meta = {k: v.value for k, v in bundle.asset_materialization.metadata.items()}
    with WorkspaceStore(workspace) as store:
        [run_id] = store.list_runs()["run_id"].to_list()
        run = store.get_run(run_id)
        assert run["status"] == "completed" and run["metadata"]["dagster_run_id"] == sweep.run_id
        listed = store.list_pipelines(run_id=run_id)
        best = listed.sort("best_val").row(0, named=True)
        best_chain = store.get_chains_for_pipeline(best["pipeline_id"])["chain_id"][0]
    assert {r.asset_materialization.metadata["n4a/pipeline_id"].value
            for r in pipelines} == set(listed["pipeline_id"])
    assert bundle_meta["n4a/chain_id"] == best_chain
    assert Path(bundle_meta["bundle_path"]).parent == workspace / "exports"
