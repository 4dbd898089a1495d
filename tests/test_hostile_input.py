"""Hostile input, with hypothesis: every public call given ids and names with ``/``, ``..``,
NUL, 10k characters, lone surrogates, NaN, +/-inf, huge numbers, wrong types, SQL-looking
column names, mismatched arrays, hostile ``ArrayStore`` dataset names, ``PipelineLibrary``
names and configs, and bundles (zip slip, absolute paths, symlinks, tampered members, a
consistently rewritten manifest carrying a pickle payload, bombs) either works or raises
an ``N4AError`` quickly, and leaves the workspace valid (verify clean, writes still commit)."""

from __future__ import annotations

import hashlib
import json
import pickle
import stat
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from n4a_store import N4AError, WorkspaceStore
from n4a_store.arrays.store import ArrayStore
from n4a_store.errors import InvalidInputError
from n4a_store.library import PipelineLibrary

NASTY_TEXT = ["", " ", "a/b", "..", "../../etc/passwd", "/abs/path", "C:\\x", "x\x00y", "\ud800",
              "x" * 10_000, "val_score; DROP TABLE runs; --", "' OR '1'='1", "é🙂", "\n", "%2e%2e"]
hostile = st.one_of(
    st.none(), st.booleans(), st.sampled_from(NASTY_TEXT), st.text(max_size=20),
    st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(object()),
)
FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW_CALL = 5.0  # seconds: "quickly"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One workspace with a run, a pipeline, a chain and a prediction to aim at."""
    root = tmp_path_factory.mktemp("hostile")
    store = WorkspaceStore(root / "ws")
    run = store.begin_run("r", {}, [{"name": "wheat"}])
    pid = store.begin_pipeline(run, "p", {}, [], "wheat", "h")
    art = store.save_artifact(np.arange(4), "numpy.ndarray", "model")
    chain = store.save_chain(pid, [{"step_idx": 0, "operator_class": "x"}], 0, "M", "", "single",
                             {"0": art}, {})
    store.save_prediction(pid, chain, "wheat", "m", "M", "0", "val", 0.1, 0.1, 0.1, "rmse",
                          "regression", 2, 1, {}, {}, None, None, 0, 0.0,
                          y_true=[1.0, 2.0], y_pred=[1.0, 2.0])
    store.flush()
    yield {"store": store, "run": run, "pid": pid, "chain": chain, "art": art, "root": root}
    store.close()


def _pred(ws: dict, **kw: Any) -> str:
    args = dict(pipeline_id=ws["pid"], chain_id=ws["chain"], dataset_name="wheat", model_name="m",
                model_class="M", fold_id="0", partition="val", val_score=0.1, test_score=0.1,
                train_score=0.1, metric="rmse", task_type="regression", n_samples=3, n_features=2,
                scores={}, best_params={}, branch_id=None, branch_name=None, exclusion_count=0,
                exclusion_rate=0.0)
    args.update(kw)
    return ws["store"].save_prediction(**args)


def _calls(ws: dict) -> dict[str, Callable[[Any], Any]]:
    s, run, pid, chain, art = ws["store"], ws["run"], ws["pid"], ws["chain"], ws["art"]
    one_step = [{"step_idx": 0, "operator_class": "x"}]
    calls: dict[str, Callable[[Any], Any]] = {
        "begin_run.name": lambda h: s.begin_run(h, {}, []),
        "begin_run.config": lambda h: s.begin_run("r", h, []),
        "begin_run.datasets": lambda h: s.begin_run("r", {}, h),
        "begin_run.metadata": lambda h: s.begin_run("r", {}, [], metadata=h),
        "begin_pipeline.run_id": lambda h: s.begin_pipeline(h, "p", {}, [], "wheat", "h"),
        "begin_pipeline.name": lambda h: s.begin_pipeline(run, h, {}, [], "wheat", "h"),
        "begin_pipeline.choices": lambda h: s.begin_pipeline(run, "p", {}, h, "wheat", "h"),
        "begin_pipeline.dataset": lambda h: s.begin_pipeline(run, "p", {}, [], h, "h"),
        "begin_pipeline.hash": lambda h: s.begin_pipeline(run, "p", {}, [], "wheat", h),
        "complete_pipeline.best_val": lambda h: s.complete_pipeline(
            s.begin_pipeline(run, "q", {}, [], "wheat", "h"), h, 0.1, "rmse", 1),
        "complete_pipeline.metric": lambda h: s.complete_pipeline(
            s.begin_pipeline(run, "q", {}, [], "wheat", "h"), 0.1, 0.1, h, 1),
        "complete_pipeline.duration": lambda h: s.complete_pipeline(
            s.begin_pipeline(run, "q", {}, [], "wheat", "h"), 0.1, 0.1, "rmse", h),
        "complete_pipeline.id": lambda h: s.complete_pipeline(h, 0.1, 0.1, "rmse", 1),
        "save_chain.pipeline": lambda h: s.save_chain(h, one_step, 0, "M", "", "single", {"0": art}, {}),
        "save_chain.steps": lambda h: s.save_chain(pid, h, 0, "M", "", "single", {"0": art}, {}),
        "save_chain.model_idx": lambda h: s.save_chain(pid, one_step, h, "M", "", "single", {"0": art}, {}),
        "save_chain.fold_value": lambda h: s.save_chain(pid, one_step, 0, "M", "", "single", {"0": h}, {}),
        "save_chain.shared": lambda h: s.save_chain(pid, one_step, 0, "M", "", "single", {}, h),
        "save_chain.preprocessings": lambda h: s.save_chain(pid, one_step, 0, "M", h, "single", {}, {}),
        "save_chain.branch_path": lambda h: s.save_chain(pid, one_step, 0, "M", "", "single", {}, {},
                                                         branch_path=h),
        "save_artifact.operator": lambda h: s.save_artifact(1, h, "model"),
        "save_artifact.format": lambda h: s.save_artifact(1, "x", "model", h),
        "save_artifact_bytes.data": lambda h: s.save_artifact_bytes(h, "x", "model"),
        "log_step.step_idx": lambda h: s.log_step(pid, h, "x", "fit"),
        "log_step.event": lambda h: s.log_step(pid, 0, "x", h),
        "log_step.details": lambda h: s.log_step(pid, 0, "x", "fit", details=h),
        "log_step.level": lambda h: s.log_step(pid, 0, "x", "fit", level=h),
        "y_true": lambda h: _pred(ws, y_true=h, y_pred=[1.0, 2.0]),
        "y_pred.length": lambda h: _pred(ws, y_true=[1.0, 2.0], y_pred=h),
        "y_proba": lambda h: _pred(ws, y_true=[1.0, 2.0], y_pred=[1.0, 2.0], y_proba=h),
        "get_run": lambda h: s.get_run(h),
        "get_pipeline": lambda h: s.get_pipeline(h),
        "get_chain": lambda h: s.get_chain(h),
        "get_prediction": lambda h: s.get_prediction(h, load_arrays=True),
        "get_artifact": lambda h: s.get_artifact(h),
        "load_artifact": lambda h: s.load_artifact(h),
        "load_arrays": lambda h: s.load_arrays(h),
        "delete_prediction": lambda h: s.delete_prediction(h),
        "delete_pipeline": lambda h: s.delete_pipeline(h),
        "delete_run": lambda h: s.delete_run(h),
        "list_runs.status": lambda h: s.list_runs(status=h),
        "list_runs.limit": lambda h: s.list_runs(limit=h),
        "list_runs.offset": lambda h: s.list_runs(offset=h),
        "list_pipelines.run": lambda h: s.list_pipelines(run_id=h),
        "query.value": lambda h: s.query_predictions(model_class=h),
        "query.branch_id": lambda h: s.query_predictions(branch_id=h),
        "query.fold_id": lambda h: s.query_predictions(fold_id=h),
        "top.n": lambda h: s.top_predictions(h),
        "top.metric": lambda h: s.top_predictions(3, metric=h),
        "top.group_by": lambda h: s.top_predictions(3, group_by=h),
        "top.ascending": lambda h: s.top_predictions(3, ascending=h),
        "top.partition": lambda h: s.top_predictions(3, partition=h),
        "artifact_stats": lambda h: s.artifact_stats(h),
        "pipeline_log": lambda h: s.get_pipeline_log(h),
        "run_log_summary": lambda h: s.get_run_log_summary(h),
        "compact_arrays": lambda h: s.compact_arrays(h),
        "array_store.load.dataset": lambda h: s.array_store.load("x", h),
        "array_store.save_batch": lambda h: s.array_store.save_batch(h),
        "array_store.save_batch.dataset": lambda h: s.array_store.save_batch(
            [{"prediction_id": "hostile-orphan", "dataset_name": h, "y_true": [1.0], "y_pred": [1.0]}]),
        "verify.grace": lambda h: s.verify(grace=h),
    }
    for field in ("model_name", "model_class", "fold_id", "metric", "task_type", "branch_name",
                  "chain_id", "pipeline_id", "dataset_name", "partition", "scores", "best_params",
                  "preprocessings", "val_score", "n_samples", "branch_id", "exclusion_rate"):
        calls[f"save_prediction.{field}"] = lambda h, f=field: _pred(ws, **{f: h})
    return calls


def _call(fn: Callable[[Any], Any], value: Any) -> str:
    """Run one call; 'ok' or 'refused'; anything but an N4AError fails the test."""
    started = time.perf_counter()
    try:
        fn(value)
        outcome = "ok"
    except N4AError:
        outcome = "refused"
    elapsed = time.perf_counter() - started
    assert elapsed < SLOW_CALL, f"took {elapsed:.1f} s"
    return outcome


CALL_NAMES = sorted(_calls({"store": None, "run": None, "pid": None, "chain": None, "art": None}))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(CALL_NAMES), value=hostile)
def test_every_public_call_works_or_raises_an_n4a_error(ws: dict, name: str, value: Any) -> None:
    _call(_calls(ws)[name], value)


def test_sql_looking_names_are_refused_by_name(ws: dict) -> None:
    s = ws["store"]
    for bad in ("val_score; DROP TABLE runs; --", "val_score) OR (1=1", "runs.*", "\"val_score\""):
        with pytest.raises(InvalidInputError):
            s.top_predictions(3, metric=bad)
        with pytest.raises(InvalidInputError):
            s.top_predictions(3, group_by=bad)
        with pytest.raises(InvalidInputError):
            s.query_predictions(**{bad: 1})
    assert s.table_counts()["runs"] >= 1


def test_unstorable_arguments_are_refused_at_the_call_not_accepted(ws: dict) -> None:
    s = ws["store"]
    for value in ("\ud800", 2 ** 70, object()):
        with pytest.raises(InvalidInputError):
            s.begin_run("r", {"v": value}, [])
    for dataset in ("x" * 10_000, "\ud800", "a\x00b", 5):
        with pytest.raises(InvalidInputError):
            s.begin_pipeline(ws["run"], "p", {}, [], dataset, "h")
    with pytest.raises(InvalidInputError):
        _pred(ws, y_true=[1.0, 2.0, 3.0], y_pred=[1.0, 2.0])
    with pytest.raises(InvalidInputError):
        s.save_chain(ws["pid"], [{"step_idx": 0}], 0, "M", "", "single", {"0": 123}, {})
    with pytest.raises(InvalidInputError):
        s.get_run("\ud800")
    with pytest.raises(InvalidInputError):
        s.list_runs(limit=2 ** 70)


def test_the_workspace_is_valid_after_the_hostile_calls(ws: dict) -> None:
    """Runs after the property tests: nothing wedged, nothing left invalid."""
    s = ws["store"]
    s.flush()
    pid = s.begin_pipeline(ws["run"], "after", {}, [], "wheat", "h")
    s.complete_pipeline(pid, 0.1, 0.1, "rmse", 1)
    assert s.get_pipeline(pid)["status"] == "completed"
    report = s.verify()
    # the only orphans allowed are arrays saved standalone for an id no prediction has
    assert {f.kind for f in report.findings} <= {"orphan_arrays"}, report.summary()
    assert s.verify(repair=True).ok


@FAST
@given(name=st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=60)))
def test_array_store_dataset_names_stay_inside_arrays(tmp_path_factory: Any, name: str) -> None:
    root = tmp_path_factory.mktemp("arrays")
    arrays = ArrayStore(root)
    try:
        arrays.save_batch([{"prediction_id": "p1", "dataset_name": name,
                            "y_true": [1.0], "y_pred": [2.0]}])
    except N4AError:
        assert not [p for p in (root / "arrays").rglob("*.parquet")]
        return
    files = list(root.rglob("*.parquet"))
    assert files and all((root / "arrays") in f.parents for f in files)
    assert arrays.load("p1", name)["y_pred"].tolist() == [2.0]
    assert arrays.list_datasets() == [name]


@FAST
@given(name=st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=40), hostile),
       config=st.one_of(hostile, st.recursive(st.none() | st.floats() | st.text(max_size=5),
                                              lambda c: st.lists(c, max_size=3)
                                              | st.dictionaries(st.text(max_size=4), c, max_size=3),
                                              max_leaves=8)))
def test_pipeline_library_names_and_configs(tmp_path_factory: Any, name: Any, config: Any) -> None:
    root = tmp_path_factory.mktemp("lib")
    library = PipelineLibrary(root)
    try:
        path = library.save_template(config, name)
    except N4AError:
        assert not any(p.is_file() for p in root.rglob("*"))
        return
    assert path.parent == library.templates_dir and path.is_file()
    assert library.load_template(name) is not None


# -- bundles ------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def bundle(ws: dict) -> dict:
    path = ws["store"].export_chain(ws["chain"], ws["root"] / "good.n4a", key="k")
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    return {"path": path, "members": members, "sha": hashlib.sha256(path.read_bytes()).hexdigest()}


def _write_zip(path: Path, members: dict[str, bytes], *, symlink: str | None = None,
               declared: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name == symlink:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return path


def _forged(bundle: dict, marker: Path) -> dict[str, bytes]:
    """The bundle with an artifact swapped for a pickle payload and every hash rewritten."""
    members = dict(bundle["members"])
    manifest = json.loads(members["manifest.json"])
    evil = pickle.dumps(_Payload(marker))
    evil_id = hashlib.sha256(evil).hexdigest()
    old_id = next(iter(manifest["artifacts"]))
    old_member = manifest["artifacts"][old_id]["member"]
    new_member = old_member.replace(old_id, evil_id)
    members.pop(old_member)
    members[new_member] = evil
    members["chain.json"] = members["chain.json"].decode().replace(old_id, evil_id).encode()
    text = json.dumps(manifest).replace(old_id, evil_id)
    manifest = json.loads(text)
    manifest["artifacts"][evil_id]["format"] = "cloudpickle"
    for name in (new_member, "chain.json"):
        manifest["members"][name]["sha256"] = hashlib.sha256(members[name]).hexdigest()
        if "size" in manifest["members"][name]:
            manifest["members"][name]["size"] = len(members[name])
    members["manifest.json"] = json.dumps(manifest).encode()
    members.pop("manifest.sig", None)
    return members


BUNDLE_ATTACKS = ["zip_slip", "absolute", "symlink", "tampered", "forged_manifest", "bomb",
                  "not_a_zip", "duplicate_chain_missing"]


@FAST
@given(attack=st.sampled_from(BUNDLE_ATTACKS), flip=st.integers(min_value=0, max_value=10_000),
       name=st.sampled_from(["../evil.txt", "../../x/../evil", "a/../../evil", "/etc/evil",
                             "C:/evil", "\\\\host\\evil"]))
def test_hostile_bundles_are_refused_before_anything_runs(ws: dict, bundle: dict, attack: str,
                                                         flip: int, name: str) -> None:
    root: Path = ws["root"]
    marker = root / "payload-ran"
    members = dict(bundle["members"])
    path = root / f"hostile-{attack}.n4a"
    key: str | None = "k"
    if attack == "zip_slip" or attack == "absolute":
        members[name if attack == "zip_slip" else "/" + name.lstrip("./")] = b"x"
        _write_zip(path, members)
    elif attack == "symlink":
        members["link"] = b"/etc/passwd"
        _write_zip(path, members, symlink="link")
    elif attack == "tampered":
        target = sorted(n for n in members if n.startswith("artifacts/"))[0]
        data = bytearray(members[target])
        data[flip % len(data)] ^= 0x5A
        members[target] = bytes(data)
        _write_zip(path, members)
    elif attack == "forged_manifest":
        _write_zip(path, _forged(bundle, marker))
        key = None if flip % 2 else "k"  # refused by signature, or by the pinned file hash
    elif attack == "bomb":
        target = sorted(n for n in members if n.startswith("artifacts/"))[0]
        members[target] = b"\0" * (64 << 20)
        _write_zip(path, members)
    elif attack == "not_a_zip":
        path.write_bytes(b"PK\x03\x04" + bytes(flip % 251) * 50)
    else:
        members.pop("chain.json")
        _write_zip(path, members)
    before = ws["store"].table_counts()
    started = time.perf_counter()
    with pytest.raises(N4AError):
        ws["store"].import_bundle(path, key=key,
                                  expected_sha256=None if key else bundle["sha"])
    assert time.perf_counter() - started < SLOW_CALL
    assert not marker.exists(), "a payload ran"
    after = ws["store"].table_counts()
    assert after["chains"] == before["chains"] and after["artifacts"] == before["artifacts"]
