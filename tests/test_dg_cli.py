"""Dagster's `dg` CLI on the project: `dg check defs`, `dg list defs`, `dg launch`, `dg dev`.

`pyproject.toml`'s `[tool.dg]` section points dg at the same code location as
`workspace.yaml` (`n4a_dagster.definitions:defs`, named `n4a`). Each command runs as a
user types it, from the project root, with its own DAGSTER_HOME and workspace.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.instance.ref import InstanceRef

from n4a_dagster.testing import tiny_sweep_config

ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")

pytestmark = pytest.mark.timeout(180)


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    return {**os.environ, "DAGSTER_HOME": str(home), "N4A_WORKSPACE": str(tmp_path / "ws"),
            "N4A_SWEEP_CONFIG": str(tiny_sweep_config(tmp_path, n_components=(2,)))}


def _dg(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    if not DG.exists():
        pytest.fail(f"dg is not installed next to {sys.executable} (dagster-dg-cli, the dev extra)")
    return subprocess.run([str(DG), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_dg_project_names_the_workspace_yaml_location() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    location = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert project["code_location_target_module"] == location["module_name"]
    assert project["code_location_name"] == location["location_name"]


def test_dg_check_and_list_defs(env: dict[str, str]) -> None:
    checked = _dg("check", "defs", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = _dg("list", "defs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    assets = {a["asset_key"] for a in defs["assets"]}
    assert {"n4a/sweep_plan", "n4a/pipeline", "n4a/leaderboard", "n4a/model_bundle"} <= assets
    assert {"n4a_sweep", "n4a_verify", "n4a_export"} <= {j["name"] for j in defs["jobs"]}
    assert "n4a_partitions_sensor" in {s["name"] for s in defs["sensors"]}


def test_dg_launch_runs_a_job_and_an_asset_into_the_instance(env: dict[str, str]) -> None:
    verify = _dg("launch", "--job", "n4a_verify", env=env)
    assert verify.returncode == 0, verify.stderr[-2000:]
    plan = _dg("launch", "--assets", "n4a/sweep_plan", env=env)
    assert plan.returncode == 0, plan.stderr[-2000:]
    with DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
        runs = instance.get_runs()
        assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS] * 2
        assert {r.job_name for r in runs} == {"n4a_verify", "__ASSET_JOB"}
        # the plan registered the sweep's pipeline partitions (2 pipelines of the tiny sweep)
        assert len(instance.get_dynamic_partitions("n4a_pipelines")) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["data"]


def test_dg_dev_serves_the_n4a_location(env: dict[str, str]) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(DG), "dev", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    query = ("{ workspaceOrError { ... on Workspace { locationEntries { name "
             "locationOrLoadError { __typename ... on RepositoryLocation { repositories { "
             "jobs { name } } } } } } } }")
    try:
        deadline, entries = time.monotonic() + 90, []
        while time.monotonic() < deadline and server.poll() is None:
            try:
                entries = _graphql(url, query)["workspaceOrError"]["locationEntries"]
                loaded = [e for e in entries if (e["locationOrLoadError"] or {}).get("__typename")
                          == "RepositoryLocation"]
                if loaded:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert server.poll() is None, f"dg dev exited with code {server.returncode}"
        assert [e["name"] for e in entries] == ["n4a"], entries
        jobs = {j["name"] for r in entries[0]["locationOrLoadError"]["repositories"] for j in r["jobs"]}
        assert {"n4a_sweep", "n4a_verify"} <= jobs
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # dg, the webserver, the daemon, the code server
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
