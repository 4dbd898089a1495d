"""The UI as a person sees it: headless Chromium against dagster-webserver on a temporary
port opens a pipeline partition's materialization and finds its predicted-vs-true plot.

Skips loudly without Chromium, unless ``N4A_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which
makes that a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from cdp_support import Browser, find_chromium
from n4a_dagster.definitions import build_definitions
from n4a_dagster.jobs import SWEEP_JOB
from n4a_dagster.testing import tiny_sweep_config

WEBSERVER = str(Path(sys.executable).with_name("dagster-webserver"))
pytestmark = [
    pytest.mark.filterwarnings("ignore:InitResourceContext.dagster_run is deprecated"),
    pytest.mark.filterwarnings("ignore:Parameter `owners`"),
]

CLICK_SHOW_MARKDOWN = """(() => {
  for (const row of document.querySelectorAll('tr')) {
    const cells = row.querySelectorAll('td');
    if (cells.length > 1 && cells[0].innerText.trim() === 'predicted_vs_true') {
      const link = [...cells[1].querySelectorAll('a, button')]
        .find(e => /Show Markdown/.test(e.innerText));
      if (link) { link.click(); return true; }
    }
  }
  return false;
})()"""
RENDERED_PLOT = """(() => {
  const img = [...document.querySelectorAll('img')].find(i =>
    i.src.startsWith('data:image/png') && i.complete && i.naturalWidth > 0
    && i.alt.startsWith('predicted_vs_true'));
  return img ? {width: img.naturalWidth, height: img.naturalHeight, alt: img.alt} : null;
})()"""


@pytest.fixture
def chromium() -> str:
    found = find_chromium()
    if found is None:
        reason = "no chromium on PATH (apt-get install -y chromium)"
        if os.environ.get("N4A_REQUIRE_BROWSER") == "1":
            pytest.fail(f"a browser is required (N4A_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(f"BROWSER TEST SKIPPED: {reason}")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"dagster-webserver did not answer at {url} in {timeout} s")


@pytest.mark.timeout(120)
def test_pipeline_partition_shows_its_plot_in_the_browser(tmp_path, chromium):
    home, workspace = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    config = tiny_sweep_config(tmp_path, n_components=(3,))
    defs = build_definitions(workspace=str(workspace), sweep_config=str(config))
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert defs.resolve_job_def(SWEEP_JOB).execute_in_process(instance=instance).success
        partition = sorted(instance.get_dynamic_partitions("n4a_pipelines"))[-1]
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "N4A_WORKSPACE": str(workspace),
           "N4A_SWEEP_CONFIG": str(config)}
    server = subprocess.Popen(
        [WEBSERVER, "-h", "127.0.0.1", "-p", str(port), "-m", "n4a_dagster.definitions",
         "-a", "defs"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_server(url, server, timeout=40)
        browser = Browser(chromium)
        browser.navigate(f"{url}/assets/n4a/pipeline?view=partitions"
                         f"&partition={quote(partition, safe='')}")
        assert browser.wait_for(CLICK_SHOW_MARKDOWN, timeout=20)
        plot = browser.wait_for(RENDERED_PLOT, timeout=10)
        assert plot["width"] > 300 and plot["height"] > 150
        assert "on fermentation" in plot["alt"]
        page = browser.evaluate("document.body.innerText")
        assert partition.split("/")[1] in page  # the readable key is on the page
    finally:
        if browser is not None:
            browser.close()
        os.killpg(server.pid, signal.SIGTERM)  # the webserver and its code server
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
