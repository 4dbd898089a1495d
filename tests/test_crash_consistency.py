"""Crash consistency: writers doing real work SIGKILLed at random moments, checked from outside.

Each writer (``integrity_writer.run_writer``: fitted scikit-learn artifacts, chains,
predictions with arrays through both paths, failures, deletes, gc, compaction,
exports) runs in a child process forked from a preloaded forkserver and is
SIGKILLed after a random delay. After every kill the workspace is checked with
plain duckdb/pyarrow/os (``integrity_check``), then opened with the store and
written to again. At the end ``verify(repair=True)`` reclaims what the kills left
and a second verify is clean.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from integrity_check import SPEED_DEPENDENT, check
from integrity_writer import read_acks, run_writer
from n4a_store import WorkspaceStore

WORKSPACES = 3
KILLS_PER_WORKSPACE = 17  # 51 kills in all
MAX_DELAY = 0.25
WORK_BEFORE_KILL = (0, 1, 1, 2, 3)  # pipelines committed before the random delay starts

pytestmark = pytest.mark.timeout(900)  # bounded by work, not time: slower on a loaded machine


def _reopen_and_write(ws: Path) -> str:
    """The store opens after the kill and takes a new committed pipeline."""
    with WorkspaceStore(ws, lock_timeout=30) as store:
        run = store.begin_run("after-kill", {}, [])
        pid = store.begin_pipeline(run, "after", {}, [], "wheat", "h")
        art = store.save_artifact(np.arange(3), "numpy.ndarray", "model")
        chain = store.save_chain(pid, [{"step_idx": 0, "operator_class": "x"}], 0, "x", "",
                                 "single", {"0": art}, {})
        pred = store.save_prediction(pid, chain, "wheat", "m", "x", "0", "val", 0.1, 0.1, 0.1,
                                     "rmse", "regression", 2, 1, {}, {}, None, None, 0, 0.0,
                                     y_true=[1.0, 2.0], y_pred=[1.0, 2.0])
        store.complete_pipeline(pid, 0.1, 0.1, "rmse", 1)
    return {"kind": "committed", "pipeline_id": pid, "chain_id": chain, "predictions": [pred]}


def _wait_for(ack_path: Path, proc: Any, committed: int, timeout: float = 30.0) -> bool:
    """Wait until the writer started (opened the store, committed a run) and committed pipelines.

    Waiting for work rather than for a fixed time keeps the amount of work per kill
    the same on a loaded machine; the kill itself comes after a random delay.
    """
    deadline = time.time() + timeout
    while time.time() < deadline and proc.is_alive():
        kinds = [a["kind"] for a in read_acks(ack_path)]
        if "started" in kinds and kinds.count("committed") >= committed:
            return True
        time.sleep(0.01)
    return False


def _one_workspace(ctx: Any, root: Path, w: int) -> dict[str, Any]:
    """Kill writers of workspace ``w`` again and again, checking after each kill."""
    rng = random.Random(9 + w)
    ws = root / f"ws{w}"
    out: dict[str, Any] = {"kills": 0, "violations": {}, "leftovers": [], "reopen_failures": []}
    extra: list[dict[str, Any]] = []
    for k in range(KILLS_PER_WORKSPACE):
        ack_path = root / f"ws{w}-{k}.acks"
        proc = ctx.Process(target=run_writer, args=(str(ws), str(ack_path), 1000 * w + k))
        proc.start()
        if rng.random() < 0.15:  # while it opens the store (DuckDB replaying the WAL)
            time.sleep(rng.uniform(0.0, 0.3))
        elif not _wait_for(ack_path, proc, rng.choice(WORK_BEFORE_KILL)):
            out["reopen_failures"].append(f"ws{w} kill {k}: the writer never started")
        else:  # a random moment after some work: in a commit, a delete, gc, an export...
            time.sleep(rng.uniform(0.0, MAX_DELAY))
        proc.kill()
        proc.join(30)
        out["kills"] += 1
        acks = [a for j in range(k + 1) for a in read_acks(root / f"ws{w}-{j}.acks")] + extra
        if not (ws / "store.duckdb").exists():
            continue
        violations, left = check(ws, acks)
        for category, items in violations.items():
            out["violations"].setdefault(category, []).extend(f"ws{w} kill {k}: {i}" for i in items)
        out["leftovers"].append(left)
        if k % 6 == 5:  # (every writer's "started" ack also proves the store opens and writes)
            try:
                extra.append(_reopen_and_write(ws))
            except Exception as error:  # noqa: BLE001 - recorded as a violation
                out["reopen_failures"].append(f"ws{w} kill {k}: {error!r}")
    acks = [a for j in range(KILLS_PER_WORKSPACE) for a in read_acks(root / f"ws{w}-{j}.acks")]
    out["acknowledged"] = sum(a["kind"] == "committed" for a in acks)
    with WorkspaceStore(ws) as store:
        repaired = store.verify(repair=True, grace=0)
        after = store.verify(grace=0)
    out["final"] = (repaired, after)
    out["after_repair"] = check(ws, acks + extra)
    return out


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every kill once (the workspaces side by side); the tests below assert on the results."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["integrity_preload"])
    root = tmp_path_factory.mktemp("crash")
    with ThreadPoolExecutor(WORKSPACES) as pool:
        parts = list(pool.map(lambda w: _one_workspace(ctx, root, w), range(WORKSPACES)))
    result: dict[str, Any] = {
        "kills": sum(p["kills"] for p in parts),
        "acknowledged": sum(p["acknowledged"] for p in parts),
        "violations": {c: [i for p in parts for i in p["violations"].get(c, [])]
                       for c in ("acknowledged", "artifacts", "claims", "partial_pipeline")},
        "leftovers": [x for p in parts for x in p["leftovers"]],
        "reopen_failures": [x for p in parts for x in p["reopen_failures"]],
        "final": [p["final"] for p in parts],
        "after_repair": [p["after_repair"] for p in parts],
    }
    print(f"\ncrash campaign: {result['kills']} kills, {result['acknowledged']} acknowledged "
          f"pipelines, violations "
          f"{ {c: len(v) for c, v in result['violations'].items()} }, leftovers after kills: "
          f"{sum(x['stray_tmp'] for x in result['leftovers'])} stray tmp, "
          f"{sum(x['unreferenced_files'] for x in result['leftovers'])} unreferenced artifact files "
          f"(summed over checks); repaired: {[r.repaired for r, _ in result['final']]}")
    for category, items in result["violations"].items():
        for item in items[:3]:
            print(f"  {category}: {item}")
    return result


def test_enough_kills_and_work(campaign: dict[str, Any]) -> None:
    assert campaign["kills"] >= 50
    assert campaign["acknowledged"] >= 50, "the writers did too little work to test anything"


def test_acknowledged_pipelines_survive_every_kill(campaign: dict[str, Any]) -> None:
    assert campaign["violations"]["acknowledged"] == []


def test_every_artifact_a_chain_names_exists_and_matches_its_hash(campaign: dict[str, Any]) -> None:
    assert campaign["violations"]["artifacts"] == []


def test_the_store_opens_and_writes_after_every_kill(campaign: dict[str, Any]) -> None:
    assert campaign["reopen_failures"] == []


def test_repair_reclaims_what_the_kills_left_and_verify_is_clean(campaign: dict[str, Any]) -> None:
    for repaired, after in campaign["final"]:
        assert after.ok, after.summary()
        assert repaired.ok, repaired.summary()
    for violations, left in campaign["after_repair"]:
        assert violations["acknowledged"] == [] and violations["artifacts"] == []
        assert violations["claims"] == []
        assert left == {"stray_tmp": 0, "unreferenced_files": 0}


@pytest.mark.parametrize("category", SPEED_DEPENDENT)
def test_claims_equal_references_and_no_partial_pipeline_after_any_kill(
        campaign: dict[str, Any], category: str) -> None:
    assert campaign["violations"][category] == []
