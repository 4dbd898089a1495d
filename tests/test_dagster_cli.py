"""End to end through the command line: `dagster definitions validate`, `dagster job execute`,
`dagster asset materialize` and `python -m n4a_dagster run-sweep` on a temporary DAGSTER_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.instance.ref import InstanceRef

from n4a_dagster.keys import MODEL_BUNDLE, PIPELINE
from n4a_dagster.testing import tiny_sweep_config
from n4a_store import WorkspaceStore

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
pytestmark = pytest.mark.slow


def _env(home: Path, workspace: Path, config: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "DAGSTER_HOME": str(home), "N4A_WORKSPACE": str(workspace),
            "N4A_SWEEP_CONFIG": str(config), "N4A_MAX_CONCURRENT": "4"}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_definitions_validate(tmp_path):
    env = _env(tmp_path / "home", tmp_path / "ws", tiny_sweep_config(tmp_path))
    done = _run([DAGSTER, "definitions", "validate", "-w", "workspace.yaml"], env, REPO)
    assert "passed validation" in done.stderr + done.stdout


def test_job_execute_then_materialize_bundle(tmp_path):
    home, workspace = tmp_path / "home", tmp_path / "ws"
    env = _env(home, workspace, tiny_sweep_config(tmp_path))
    location = ["-m", "n4a_dagster.definitions", "-a", "defs"]
    _run([DAGSTER, "job", "execute", *location, "-j", "n4a_sweep"], env, tmp_path)
    _run([DAGSTER, "asset", "materialize", *location, "--select", "n4a/model_bundle"], env,
         tmp_path)

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        [sweep] = [r for r in instance.get_runs() if r.job_name == "n4a_sweep"]
        assert sweep.status == DagsterRunStatus.SUCCESS
        pipelines = instance.fetch_materializations(PIPELINE, limit=100).records
        bundle = instance.fetch_materializations(MODEL_BUNDLE, limit=1).records[0]
        bundle_meta = {k: v.value for k, v in bundle.asset_materialization.metadata.items()}
    with WorkspaceStore(workspace) as store:
        [run_id] = store.list_runs()["run_id"].to_list()
        run = store.get_run(run_id)
        assert run["status"] == "completed"
        assert run["metadata"]["dagster_run_id"] == sweep.run_id
        stored = set(store.list_pipelines(run_id=run_id)["pipeline_id"])
        best = store.list_pipelines(run_id=run_id).sort("best_val").row(0, named=True)
        best_chain = store.get_chains_for_pipeline(best["pipeline_id"])["chain_id"][0]
    assert len(stored) == 4
    assert {r.asset_materialization.metadata["n4a/pipeline_id"].value for r in pipelines} == stored
    assert bundle_meta["n4a/chain_id"] == best_chain
    assert Path(bundle_meta["bundle_path"]).is_file()
    assert Path(bundle_meta["bundle_path"]).parent == workspace / "exports"


def test_python_m_n4a_dagster_run_sweep(tmp_path):
    home, workspace = tmp_path / "home", tmp_path / "ws"
    env = _env(home, tmp_path / "unused", tiny_sweep_config(tmp_path))
    done = _run([sys.executable, "-m", "n4a_dagster", "run-sweep", "--workspace", str(workspace),
                 "--config", env["N4A_SWEEP_CONFIG"], "--dagster-home", str(home)], env, tmp_path)
    assert "0003_SNV-PLSR" in done.stdout  # the leaderboard is printed
    [hint] = [line.split("open the UI: ", 1)[1] for line in done.stderr.splitlines()
              if line.startswith("open the UI: ")]
    assert f"{Path(sys.executable).with_name('dagster')} dev -m n4a_dagster.definitions" in hint
    elsewhere = tmp_path / "elsewhere"  # copy-pasteable from any directory: check the same
    elsewhere.mkdir()                   # command line with `definitions validate` for `dev`
    check = subprocess.run(hint.replace(" dev ", " definitions validate ", 1), shell=True,
                           cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    with WorkspaceStore(workspace) as store:
        runs = store.list_runs()
        assert runs.height == 1 and runs["status"][0] == "completed"
        assert store.list_pipelines().filter(pl.col("status") == "completed").height == 4
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert [r.job_name for r in instance.get_runs()] == ["n4a_sweep"]
