""".n4a bundles and .n4a.py scripts: equality with replay, tamper and traversal refusal, import."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chemotools.datasets import load_coffee, load_fermentation_train
from chemotools.derivative import SavitzkyGolay
from chemotools.scatter import StandardNormalVariate
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from n4a_store import ChainBuilder, ExecutionTrace, TraceStep, WorkspaceStore, import_bundle, predict
from n4a_store.bundles.predict import load_bundle
from n4a_store.bundles.safety import BundleIntegrityError, UnsafeBundleError
from n4a_store.chains.replay import clear_replay_cache
from n4a_store.errors import ArtifactIntegrityError, InvalidInputError

# Runs an exported script as __main__ with n4a_store made unimportable.
RUN_WITHOUT_N4A = ("import runpy, sys; sys.modules['n4a_store'] = None; sys.argv = sys.argv[1:]; "
                   "runpy.run_path(sys.argv[0], run_name='__main__')")


class _SideEffect:
    """Unpickling this creates a file: proof that a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _folds(n, k=3):
    return {str(i): np.arange(n) % k != i for i in range(k)}


def _save(store, trace):
    run_id = store.begin_run("train", {"sweep": "unit"}, [{"name": "data", "hash": "h"}])
    pipeline_id = store.begin_pipeline(run_id, "0001_pls", {"model": "pls"}, [], "data", "h")
    chain_id = store.save_chain(pipeline_id, **ChainBuilder(trace, store).build())
    store.complete_pipeline(pipeline_id, 0.5, 0.6, "rmse", 3)
    store.complete_run(run_id, {})
    return chain_id


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One workspace with a regression chain (fermentation) and a classifier chain (coffee)."""
    clear_replay_cache()
    root = tmp_path_factory.mktemp("bundles")
    Xf, yf = load_fermentation_train(set_output="polars")
    wavelengths = np.array([float(c) for c in Xf.columns])
    Xf, yf = Xf.to_numpy(), yf.to_numpy().ravel()
    snv = StandardNormalVariate().fit(Xf)
    savgol = SavitzkyGolay(window_length=9, polyorder=2, deriv=1).fit(snv.transform(Xf))
    Z = savgol.transform(snv.transform(Xf))
    scalers = {f: StandardScaler().fit(Z[m]) for f, m in _folds(len(Xf)).items()}
    pls = {f: PLSRegression(3).fit(scalers[f].transform(Z[m]), yf[m]) for f, m in _folds(len(Xf)).items()}
    regression = ExecutionTrace([
        TraceStep(0, "chemotools.scatter.StandardNormalVariate", shared=snv, stateless=True),
        TraceStep(1, "chemotools.derivative.SavitzkyGolay", {"window_length": 9}, shared=savgol,
                  stateless=True),
        TraceStep(2, "sklearn.preprocessing.StandardScaler", per_fold=scalers),
        TraceStep(3, "sklearn.cross_decomposition.PLSRegression", {"n_components": 3},
                  per_fold=pls, is_model=True),
    ])
    Xc, yc = load_coffee(set_output="polars")
    Xc, yc = Xc.to_numpy()[:, ::4].copy(), yc.to_series().to_numpy()
    snv_c = StandardNormalVariate().fit(Xc)
    logreg = {f: LogisticRegression(max_iter=300).fit(snv_c.transform(Xc[m]), yc[m])
              for f, m in _folds(len(Xc)).items()}
    classification = ExecutionTrace([
        TraceStep(0, "chemotools.scatter.StandardNormalVariate", shared=snv_c, stateless=True),
        TraceStep(1, "sklearn.linear_model.LogisticRegression", per_fold=logreg, is_model=True),
    ], task_type="classification")
    store = WorkspaceStore(root / "ws")
    reg_id, cls_id = _save(store, regression), _save(store, classification)
    reg_bundle = store.export_chain(reg_id, root / "exports" / "fermentation.n4a")
    cls_bundle = store.export_chain(cls_id, root / "exports" / "coffee.n4a")
    yield {"store": store, "root": root, "Xf": Xf, "wavelengths": wavelengths, "Xc": Xc,
           "reg": reg_id, "cls": cls_id, "reg_bundle": reg_bundle, "cls_bundle": cls_bundle}
    store.close()
    clear_replay_cache()


def test_bundle_predicts_exactly_what_replay_returns(workspace):
    w = workspace
    store = w["store"]
    np.testing.assert_array_equal(predict(w["reg_bundle"], w["Xf"]), store.replay_chain(w["reg"], w["Xf"]))
    np.testing.assert_array_equal(predict(w["cls_bundle"], w["Xc"]), store.replay_chain(w["cls"], w["Xc"]))
    np.testing.assert_array_equal(predict(w["cls_bundle"], w["Xc"], proba=True),
                                  store.replay_chain(w["cls"], w["Xc"], proba=True))
    # Without any cache: objects freshly unpickled from the zip give the same numbers.
    clear_replay_cache()
    np.testing.assert_array_equal(predict(w["reg_bundle"], w["Xf"], use_cache=False),
                                  store.replay_chain(w["reg"], w["Xf"], use_cache=False))
    classes = load_bundle(w["cls_bundle"]).classes
    assert list(classes) == sorted(classes) and set(predict(w["cls_bundle"], w["Xc"])) <= set(classes)


def test_manifest_records_format_hashes_and_versions(workspace):
    with zipfile.ZipFile(workspace["reg_bundle"]) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        chain = json.loads(archive.read("chain.json"))
        for name, entry in manifest["members"].items():
            assert hashlib.sha256(archive.read(name)).hexdigest() == entry["sha256"]
    assert manifest["format"] == "n4a-bundle" and manifest["format_version"] == 1
    assert manifest["model_class"] == "sklearn.cross_decomposition.PLSRegression"
    assert manifest["created_at"]
    assert {"numpy", "joblib", "scikit-learn", "chemotools", "python"} <= set(manifest["libraries"])
    assert names == set(manifest["members"]) | {"manifest.json"}
    assert chain["chain_id"] == workspace["reg"]
    assert len(manifest["artifacts"]) == 2 + 3 + 3  # SNV, SavGol, 3 scalers, 3 PLS models
    assert manifest["source"]["dataset_name"] == "data"


def _rewrite(src: Path, dst: Path, *, replace=None, extra=None, manifest_edit=None) -> Path:
    """Copy a bundle, replacing/adding members and optionally editing the manifest."""
    replace, extra = replace or {}, extra or {}
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members.update(replace)
    if manifest_edit is not None:
        manifest = json.loads(members["manifest.json"])
        manifest_edit(manifest)
        members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in {**members, **extra}.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return dst


def _artifact_member(bundle: Path) -> str:
    with zipfile.ZipFile(bundle) as archive:
        return next(n for n in archive.namelist() if n.startswith("artifacts/"))


def test_tampered_bundles_are_refused_before_unpickling(workspace, tmp_path):
    src, X = workspace["reg_bundle"], workspace["Xf"]
    marker = tmp_path / "payload-ran"
    evil = pickle.dumps(_SideEffect(marker))
    member = _artifact_member(src)

    def rehash(manifest):
        manifest["members"][member]["sha256"] = hashlib.sha256(evil).hexdigest()

    cases = {
        "swapped artifact": _rewrite(src, tmp_path / "a.n4a", replace={member: evil}),
        "swapped artifact, manifest rehashed": _rewrite(src, tmp_path / "b.n4a", replace={member: evil},
                                                        manifest_edit=rehash),
        "edited chain": _rewrite(src, tmp_path / "c.n4a", replace={
            "chain.json": json.dumps({"steps": [], "chain_id": "x"}).encode()}),
    }
    for label, bundle in cases.items():
        clear_replay_cache()
        with pytest.raises(BundleIntegrityError, match="refused|altered"):
            predict(bundle, X)
        assert not marker.exists(), label
    assert issubclass(BundleIntegrityError, ArtifactIntegrityError)


@pytest.mark.parametrize("name, message", [
    ("../escape.py", r"contains '\.\.'"),
    ("artifacts/../../escape.py", r"contains '\.\.'"),
    ("/etc/evil", "absolute path"),
    ("C:/evil", "drive"),
    ("artifacts\\evil", "unsafe name"),
    ("notes.txt", "not listed in its manifest"),
])
def test_unsafe_or_unlisted_members_are_refused(workspace, tmp_path, name, message):
    bundle = _rewrite(workspace["reg_bundle"], tmp_path / "evil.n4a", extra={name: b"x"})
    with pytest.raises(UnsafeBundleError, match=message):
        predict(bundle, workspace["Xf"])


def test_malformed_bundles_are_refused(workspace, tmp_path):
    not_zip = tmp_path / "plain.n4a"
    not_zip.write_text("hello")
    with pytest.raises(UnsafeBundleError, match="not a zip"):
        predict(not_zip, workspace["Xf"])
    newer = _rewrite(workspace["reg_bundle"], tmp_path / "newer.n4a",
                     manifest_edit=lambda m: m.update(format_version=99))
    with pytest.raises(UnsafeBundleError, match="format version 99"):
        predict(newer, workspace["Xf"])
    with pytest.raises(FileNotFoundError):
        predict(tmp_path / "absent.n4a", workspace["Xf"])
    with pytest.raises(InvalidInputError, match="unknown export format"):
        workspace["store"].export_chain(workspace["reg"], tmp_path / "x.zip", format="zip")


def test_import_bundle_creates_a_replayable_chain(workspace, tmp_path):
    with WorkspaceStore(tmp_path / "other") as other:
        chain_id = import_bundle(other, workspace["reg_bundle"])
        chain = other.get_chain(chain_id)
        pipeline = other.get_pipeline(chain["pipeline_id"])
        run = other.get_run(pipeline["run_id"])
        assert run["status"] == "completed" and run["metadata"]["source"] == "bundle_import"
        assert run["metadata"]["source_chain_id"] == workspace["reg"]
        assert pipeline["status"] == "completed" and pipeline["dataset_name"] == "data"
        clear_replay_cache()
        np.testing.assert_array_equal(other.replay_chain(chain_id, workspace["Xf"]),
                                      predict(workspace["reg_bundle"], workspace["Xf"]))
        assert other.artifact_stats()["count"] == 8


def test_bundle_with_cloudpickle_artifact(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(25, 6))
    y = X @ rng.normal(size=6)
    log_abs = FunctionTransformer(lambda a: np.log1p(np.abs(a))).fit(X)
    model = PLSRegression(2).fit(log_abs.transform(X), y)
    trace = ExecutionTrace([
        TraceStep(0, "sklearn.preprocessing.FunctionTransformer", shared=log_abs, stateless=True),
        TraceStep(1, "sklearn.cross_decomposition.PLSRegression", per_fold={"0": model}, is_model=True),
    ])
    with WorkspaceStore(tmp_path / "ws") as store:
        chain_id = _save(store, trace)
        bundle = store.export_chain(chain_id, tmp_path / "lambda.n4a")
        clear_replay_cache()
        np.testing.assert_array_equal(predict(bundle, X, use_cache=False), model.predict(log_abs.transform(X)).ravel())


def _run_script(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_N4A, str(script), *args],
                            capture_output=True, text=True, cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_script_matches_bundle_from_csv(workspace, tmp_path):
    w = workspace
    script = w["store"].export_chain(w["reg"], tmp_path / "fermentation.n4a.py", format="n4a.py")
    X = w["Xf"][:9]
    with open(tmp_path / "spectra.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([repr(v) for v in w["wavelengths"]])
        writer.writerows([[repr(float(v)) for v in row] for row in X])
    result = _run_script(script, "spectra.csv", cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert lines[0] == "prediction"
    # Same engine and objects; only BLAS/SIMD summation order may differ with memory alignment.
    np.testing.assert_allclose(np.array([float(v) for v in lines[1:]]), predict(w["reg_bundle"], X),
                               rtol=1e-12, atol=0)


def test_script_classifier_parquet_probabilities(workspace, tmp_path):
    w = workspace
    script = w["store"].export_chain(w["cls"], tmp_path / "coffee.n4a.py", format="n4a.py")
    X = w["Xc"][::5]
    pq.write_table(pa.table({f"f{i}": X[:, i] for i in range(X.shape[1])}), tmp_path / "in.parquet")
    _run_script(script, "in.parquet", "--proba", "-o", "proba.parquet", cwd=tmp_path)
    _run_script(script, "in.parquet", "-o", "labels.csv", cwd=tmp_path)
    table = pq.read_table(tmp_path / "proba.parquet")
    classes = load_bundle(w["cls_bundle"]).classes
    assert table.column_names == [f"proba_{c}" for c in classes]
    proba = np.column_stack([table.column(c).to_numpy() for c in table.column_names])
    np.testing.assert_allclose(proba, predict(w["cls_bundle"], X, proba=True), rtol=1e-12, atol=1e-15)
    with open(tmp_path / "labels.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["prediction"]
    assert [r[0] for r in rows[1:]] == [str(v) for v in predict(w["cls_bundle"], X)]


def test_altered_script_is_refused(workspace, tmp_path):
    w = workspace
    script = w["store"].export_chain(w["reg"], tmp_path / "model.n4a.py", format="n4a.py")
    text = script.read_text()
    start = text.index('"""\n', text.index("_ARTIFACT_DATA = {")) + 4
    flipped = "B" if text[start + 40] != "B" else "C"
    script.write_text(text[:start + 40] + flipped + text[start + 41:])
    spec = importlib.util.spec_from_file_location("altered_model", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(module.IntegrityError, match="does not match its SHA-256"):
        module.predict(w["Xf"])


def test_script_and_bundle_of_a_classifier_without_predict_proba(workspace, tmp_path):
    from sklearn.linear_model import RidgeClassifier

    w = workspace
    X, y = w["Xc"], np.asarray(load_coffee(set_output="polars")[1].to_series().to_numpy())
    models = {f: RidgeClassifier(alpha=a).fit(X[m], y[m])
              for (f, m), a in zip(_folds(len(X)).items(), (0.01, 1.0, 100.0))}
    trace = ExecutionTrace([TraceStep(0, "sklearn.linear_model.RidgeClassifier", per_fold=models,
                                      is_model=True)], task_type="classification")
    chain_id = _save(w["store"], trace)
    bundle = w["store"].export_chain(chain_id, tmp_path / "ridge.n4a")
    script = w["store"].export_chain(chain_id, tmp_path / "ridge.n4a.py", format="n4a.py")
    expected = w["store"].replay_chain(chain_id, X)
    np.testing.assert_array_equal(predict(bundle, X), expected)
    pq.write_table(pa.table({f"f{i}": X[:, i] for i in range(X.shape[1])}), tmp_path / "in.parquet")
    _run_script(script, "in.parquet", "-o", "labels.csv", cwd=tmp_path)
    with open(tmp_path / "labels.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert [r[0] for r in rows[1:]] == [str(v) for v in expected]
    refused = subprocess.run([sys.executable, "-c", RUN_WITHOUT_N4A, str(script), "in.parquet",
                              "--proba"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert refused.returncode != 0 and "no predict_proba" in refused.stderr
