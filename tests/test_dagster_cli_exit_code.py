"""`python -m n4a_dagster run-sweep` exits 1 when pipelines failed, like `n4a sweep`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from n4a_dagster.testing import tiny_sweep_config

pytestmark = pytest.mark.slow


def test_run_sweep_exits_1_when_a_pipeline_failed(tmp_path):
    home, workspace = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    config = tiny_sweep_config(tmp_path, n_components=(2, 40))  # 40 components: fails
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "n4a_dagster", "run-sweep", "--workspace", str(workspace),
         "--config", str(config), "--dagster-home", str(home), "--max-concurrent", "2"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert "rank" in done.stdout and "0001_PLSR" in done.stdout  # leaderboard still printed
    assert "2 completed, 2 failed" in done.stderr
