"""Two pipelines in flight in one process stay atomic; claims equal the references chains hold.

Visibility is checked from other processes: a reader subprocess polling while this
process interleaves pipelines, and a writer subprocess SIGKILLed with two pipelines
in flight.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from n4a_store import MissingParentError, WorkspaceStore
from n4a_store.workspace.writes import chain_artifact_refs

PER_PIPELINE = 6
_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

_PIPELINE_HELPERS = '''
import numpy as np
def begin(store, run_id, name):
    return store.begin_pipeline(run_id, name, {}, [], "wheat", "h")
def chain(store, pid, seed):
    rng = np.random.default_rng(seed)
    ids = {str(f): store.save_artifact(rng.normal(size=20), "m.M", "model") for f in range(2)}
    return store.save_chain(pid, [{"step_idx": 0, "operator_class": "m.M"}], 0, "m.M", "", "per_fold",
                            ids, {})
def predictions(store, pid, chain_id, count):
    y = np.arange(10.0)
    for i in range(count):
        store.save_prediction(pid, chain_id, "wheat", "m", "m.M", str(i), "val", 0.1, 0.1, 0.1,
                              "rmse", "regression", 10, 2, {}, {}, None, None, 0, 0.0,
                              y_true=y, y_pred=y + i)
'''
exec(_PIPELINE_HELPERS)  # the same helpers in this process and in the subprocesses

_READER = textwrap.dedent('''
    import sys, time
    from n4a_store import WorkspaceStore
    ws, seconds, per = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    bad, seen = 0, 0
    with WorkspaceStore(ws) as store:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with store._catalog.reading() as s:  # one statement: one snapshot
                rows = s.rows(
                    "SELECT p.status, (SELECT count(*) FROM predictions q "
                    "WHERE q.pipeline_id = p.pipeline_id) FROM pipelines p UNION ALL "
                    "SELECT 'orphan', count(*) FROM predictions q WHERE NOT EXISTS "
                    "(SELECT 1 FROM pipelines p WHERE p.pipeline_id = q.pipeline_id)")
            for status, count in rows:
                if status == "orphan":
                    bad += count
                    continue
                seen += 1
                if status != "completed" or count != per:
                    bad += 1
            time.sleep(0.01)
    print(bad, seen)
''')

_KILLED_WRITER = textwrap.dedent('''
    import sys, time
    from n4a_store import WorkspaceStore
    ws, marker = sys.argv[1], sys.argv[2]
    store = WorkspaceStore(ws)
    run_id = store.begin_run("exp", {}, [])
    done = begin(store, run_id, "done")
    predictions(store, done, chain(store, done, 0), PER)
    store.complete_pipeline(done, 0.1, 0.1, "rmse", 1)
    a, b = begin(store, run_id, "a"), begin(store, run_id, "b")
    ca = chain(store, a, 1)
    predictions(store, a, ca, 3)
    cb = chain(store, b, 2)
    predictions(store, b, cb, PER)
    store.log_step(a, 0, "m.M", "fit")
    open(marker, "w").write(done)
    time.sleep(60)
''')


def _claims_equal_references(store: WorkspaceStore) -> None:
    chains = [store.get_chain(c) for p in store.list_pipelines()["pipeline_id"].to_list()
              for c in store.get_chains_for_pipeline(p)["chain_id"].to_list()]
    refs: dict[str, int] = {}
    for c in chains:
        for ref in chain_artifact_refs(c):
            refs[ref] = refs.get(ref, 0) + 1
    with store._catalog.reading() as s:
        claims = dict(s.rows("SELECT artifact_id, ref_count FROM artifacts"))
    assert {a: n for a, n in claims.items() if n} == refs


def test_reader_never_sees_half_of_two_interleaved_pipelines(workspace):
    store = WorkspaceStore(workspace)
    run_id = store.begin_run("exp", {}, [])
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(workspace), "4", str(PER_PIPELINE)],
                              env=_ENV, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 3.5
    i = 0
    while time.monotonic() < deadline:  # A and B interleaved: B begins while A is half written
        a = begin(store, run_id, f"a{i}")
        ca = chain(store, a, 2 * i)
        predictions(store, a, ca, PER_PIPELINE // 2)
        b = begin(store, run_id, f"b{i}")
        cb = chain(store, b, 2 * i + 1)
        predictions(store, b, cb, PER_PIPELINE // 2)
        predictions(store, a, ca, PER_PIPELINE - PER_PIPELINE // 2)
        store.complete_pipeline(a, 0.1, 0.1, "rmse", 1)
        time.sleep(0.02)  # B stays half written while the reader looks
        predictions(store, b, cb, PER_PIPELINE - PER_PIPELINE // 2)
        store.complete_pipeline(b, 0.1, 0.1, "rmse", 1)
        i += 1
    out, _ = reader.communicate(timeout=60)
    bad, seen = map(int, out.split())
    assert bad == 0 and seen > 0
    assert store.list_pipelines().height == 2 * i
    _claims_equal_references(store)
    store.close()


def test_sigkilled_writer_with_two_pipelines_in_flight_leaves_neither(workspace, tmp_path):
    marker = tmp_path / "ready"
    code = _PIPELINE_HELPERS + f"\nPER = {PER_PIPELINE}\n" + _KILLED_WRITER
    writer = subprocess.Popen([sys.executable, "-c", code, str(workspace), str(marker)], env=_ENV)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert writer.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    done = marker.read_text()
    with WorkspaceStore(workspace) as store:
        pipelines = store.list_pipelines()
        assert pipelines["pipeline_id"].to_list() == [done]
        assert store.query_predictions().height == PER_PIPELINE
        assert store.table_counts()["chains"] == 1 and store.table_counts()["logs"] == 0
        _claims_equal_references(store)
        run_id = pipelines["run_id"][0]
        again = begin(store, run_id, "again")  # the store writes again
        store.complete_pipeline(again, 0.1, 0.1, "rmse", 1)


def test_one_pipeline_never_commits_or_loses_another(store):
    run_id = store.begin_run("exp", {}, [])
    a = begin(store, run_id, "a")
    ca = chain(store, a, 0)
    predictions(store, a, ca, 2)
    b = begin(store, run_id, "b")
    with pytest.raises(ValueError):  # a refused value of B loses nothing of A
        store.save_prediction(b, None, "wheat", "m", "c", "0", "val", 1, 1, 1, "rmse",
                              "regression", 2 ** 63, 1, {}, {}, None, None, 0, 0.0)
    store.fail_pipeline(b, "boom")
    with WorkspaceStore(store.config) as other:
        assert other.get_pipeline(a) is None  # B's begin and failure committed nothing of A
        assert other.get_pipeline(b)["status"] == "failed"
    predictions(store, a, ca, 1)
    store.complete_pipeline(a, 0.1, 0.1, "rmse", 1)
    assert store.query_predictions(pipeline_id=a).height == 3


def test_claims_equal_references_when_pipelines_fail_or_chains_are_refused(store):
    run_id = store.begin_run("exp", {}, [])
    early = begin(store, run_id, "early")
    orphan = store.save_artifact(np.arange(5.0), "m.M", "model")  # saved, then the pipeline fails
    store.fail_pipeline(early, "failed before save_chain")
    refused = begin(store, run_id, "refused")
    kept = store.save_artifact(np.arange(6.0), "m.M", "model")
    with pytest.raises(MissingParentError):
        store.save_chain(refused, [{"step_idx": 0, "operator_class": "m"}], 0, "m", "", "per_fold",
                         {"0": kept, "1": "f" * 64}, {})
    store.fail_pipeline(refused, "chain refused")
    twice = begin(store, run_id, "twice")
    store.save_chain(twice, [{"step_idx": 0, "operator_class": "m"}], 0, "m", "", "per_fold",
                     {"0": kept, "1": kept}, {})  # one artifact, two references
    store.complete_pipeline(twice, 0.1, 0.1, "rmse", 1)
    store.flush()
    assert store.get_artifact(kept)["ref_count"] == 2
    assert store.get_artifact(orphan)["ref_count"] == 0
    _claims_equal_references(store)
    assert store.gc_artifacts() == 0  # this process saved it and may still name it
    with WorkspaceStore(store.config) as other:  # elsewhere it is collectable
        assert other.gc_artifacts() == 1 and other.get_artifact(orphan) is None
    store.delete_pipeline(twice)
    assert store.get_artifact(kept) is None


def test_import_bundle_claims_each_reference_and_leaks_none_when_it_fails(store, tmp_path):
    run_id = store.begin_run("exp", {}, [])
    pid = begin(store, run_id, "src")
    model = store.save_artifact(np.arange(7.0), "m.M", "model")
    chain_id = store.save_chain(pid, [{"step_idx": 0, "operator_class": "m.M"}], 0, "m.M", "",
                                "per_fold", {"0": model, "1": model}, {})
    store.complete_pipeline(pid, 0.1, 0.1, "rmse", 1)
    bundle = store.export_chain(chain_id, tmp_path / "c.n4a")
    imported = store.import_bundle(bundle)
    assert store.get_artifact(model)["ref_count"] == 4  # two chains, two references each
    _claims_equal_references(store)
    store.delete_run(run_id)
    assert store.get_artifact(model)["ref_count"] == 2 and store.get_chain(imported) is not None
