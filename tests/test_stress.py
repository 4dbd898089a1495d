"""Stress: 8 processes on one workspace for a bounded time - 4 writers (real fitted artifacts,
chains, predictions with arrays through both paths, failures, deletes), a deleter, a
maintainer running gc, compaction and vacuum, and 2 readers replaying every visible chain.

Afterwards, checked from outside the API (``integrity_check``): nothing committed and not
deleted is missing, every artifact a surviving chain names exists and matches its hash (gc
never removed it); every chain a reader saw replayed; no lock error reached a caller.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest

from integrity_check import SPEED_DEPENDENT, check
from integrity_writer import Acks, data, read_acks, run_writer
from n4a_store import N4AError, WorkspaceLockTimeout, WorkspaceStore

DURATION = 8.0  # seconds of concurrent work, per process
WRITERS = 4

pytestmark = pytest.mark.timeout(900)  # bounded by work, not time: slower on a loaded machine


def _guarded(role: str, errors_path: str, body: Callable[[], Any]) -> None:
    """Run ``body``; record any exception that reached this caller (lock errors included)."""
    try:
        body()
    except BaseException as error:  # noqa: BLE001 - every error is a finding here
        with open(errors_path, "a") as out:
            out.write(json.dumps({"role": role, "type": type(error).__name__,
                                  "lock": isinstance(error, (WorkspaceLockTimeout, TimeoutError)),
                                  "error": str(error)[:300],
                                  "trace": traceback.format_exc()[-1500:]}) + "\n")
        os._exit(1)


def _writer(ws: str, ack: str, errors: str, seed: int, duration: float) -> None:
    deadline = time.time() + duration
    _guarded(f"writer-{seed}", errors,
             lambda: run_writer(ws, ack, seed, maintenance=False, deadline=deadline))


def _deleter(ws: str, ack: str, errors: str, duration: float) -> None:
    deadline = time.time() + duration
    def body() -> None:
        rng, acks = random.Random(1), Acks(Path(ack))
        with WorkspaceStore(ws) as store:
            while time.time() < deadline:
                time.sleep(0.3)
                done = store.list_pipelines()
                done = done.filter(done["status"] == "completed")
                if done.height < 4:
                    continue
                victim = done["pipeline_id"][rng.randrange(done.height)]
                acks.write("deleting", pipeline_id=victim)
                store.delete_pipeline(victim)
                acks.write("deleted", pipeline_id=victim)
    _guarded("deleter", errors, body)


def _maintainer(ws: str, errors: str, duration: float) -> None:
    deadline = time.time() + duration
    def body() -> None:
        with WorkspaceStore(ws) as store:
            k = 0
            while time.time() < deadline:
                k += 1
                store.gc_artifacts()
                time.sleep(0.2)
                store.compact_arrays()
                time.sleep(0.2)
                if k % 4 == 0:
                    store.vacuum()
    _guarded("maintainer", errors, body)


def _reader(ws: str, out: str, errors: str, duration: float) -> None:
    deadline = time.time() + duration
    def body() -> None:
        X, _ = data(0)
        replayed = gone = 0
        failures: list[str] = []
        with WorkspaceStore(ws) as store:
            while time.time() < deadline:
                pipelines = store.list_pipelines()
                for pid in pipelines.filter(pipelines["status"] == "completed")["pipeline_id"]:
                    for chain_id in store.get_chains_for_pipeline(pid)["chain_id"]:
                        try:
                            store.replay_chain(chain_id, X)
                            replayed += 1
                        except N4AError as error:
                            if store.get_chain(chain_id) is None:
                                gone += 1  # deleted meanwhile: not a failure
                            else:
                                failures.append(f"{chain_id}: {error!r}")
                    if time.time() >= deadline:
                        break
        Path(out).write_text(json.dumps({"replayed": replayed, "gone": gone, "failures": failures}))
    _guarded("reader", errors, body)


@pytest.fixture(scope="module")
def stressed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["integrity_preload"])
    root = tmp_path_factory.mktemp("stress")
    ws, errors = root / "ws", str(root / "errors.jsonl")
    WorkspaceStore(ws).close()
    deadline = DURATION  # each process works this long once it started
    ctx.Process(target=time.sleep, args=(0,)).start()  # start the forkserver before the clock runs
    procs = [ctx.Process(target=_writer, args=(str(ws), str(root / f"w{i}.acks"), errors, i, deadline))
             for i in range(WRITERS)]
    procs.append(ctx.Process(target=_deleter, args=(str(ws), str(root / "d.acks"), errors, deadline)))
    procs.append(ctx.Process(target=_maintainer, args=(str(ws), errors, deadline)))
    procs += [ctx.Process(target=_reader, args=(str(ws), str(root / f"r{i}.json"), errors, deadline))
              for i in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    acks = [a for p in sorted(root.glob("*.acks")) for a in read_acks(p)]
    violations, left = check(ws, acks)
    readers = [json.loads((root / f"r{i}.json").read_text()) if (root / f"r{i}.json").exists()
               else {"replayed": 0, "gone": 0, "failures": ["reader wrote no result"]} for i in range(2)]
    errors_seen = read_acks(Path(errors))
    with WorkspaceStore(ws) as store:
        repaired = store.verify(repair=True, grace=0)
    result = {"processes": len(procs), "exit_codes": [p.exitcode for p in procs],
              "acknowledged": sum(a["kind"] == "committed" for a in acks),
              "deleted": sum(a["kind"] == "deleted" for a in acks),
              "violations": violations, "leftovers": left, "readers": readers,
              "errors": errors_seen, "repaired": repaired}
    print(f"\nstress: {len(procs)} processes for {DURATION:.0f} s: {result['acknowledged']} acknowledged "
          f"pipelines, {result['deleted']} deleted, replays {[r['replayed'] for r in readers]}, "
          f"violations { {c: len(v) for c, v in violations.items()} }, errors {len(errors_seen)} "
          f"(lock: {sum(e['lock'] for e in errors_seen)}), leftovers {left}, repaired {repaired.repaired}")
    return result


def test_eight_processes_did_real_work(stressed: dict[str, Any]) -> None:
    assert stressed["processes"] == 8
    assert stressed["acknowledged"] >= 8  # throughput depends on the machine's load
    assert all(r["replayed"] > 0 for r in stressed["readers"])


def test_no_error_and_no_lock_error_reached_a_caller(stressed: dict[str, Any]) -> None:
    assert stressed["errors"] == [], stressed["errors"][:3]
    assert stressed["exit_codes"] == [0] * 8


def test_nothing_committed_and_not_deleted_is_missing(stressed: dict[str, Any]) -> None:
    assert stressed["violations"]["acknowledged"] == []


def test_gc_never_removed_what_a_surviving_chain_names(stressed: dict[str, Any]) -> None:
    assert stressed["violations"]["artifacts"] == []


def test_every_visible_chain_replayed(stressed: dict[str, Any]) -> None:
    for reader in stressed["readers"]:
        assert reader["failures"] == []


def test_repair_after_the_stress_leaves_a_clean_workspace(stressed: dict[str, Any]) -> None:
    assert stressed["repaired"].ok, stressed["repaired"].summary()


@pytest.mark.parametrize("category", SPEED_DEPENDENT)
def test_claims_equal_references_and_no_partial_pipeline(stressed: dict[str, Any],
                                                         category: str) -> None:
    assert stressed["violations"][category] == []
