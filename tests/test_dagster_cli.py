"""End to end through the command line: `dagster definitions validate` and
`python -m n4a_dagster run-sweep` on a temporary DAGSTER_HOME (`dagster job execute` and
`dagster asset materialize` run as docs/dagster.md writes them, in tests/test_docs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

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
