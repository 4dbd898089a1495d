"""Bundle origin: a fully re-hashed forgery passes integrity checks, so callers can
pin the file's SHA-256 or require an HMAC signature; both refuse before unpickling."""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression

from n4a_store import ExecutionTrace, TraceStep, WorkspaceStore, import_bundle, predict
from n4a_store.bundles.safety import BundleIntegrityError
from n4a_store.chains.replay import clear_replay_cache


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from n4a_store import ChainBuilder

    root = tmp_path_factory.mktemp("origin")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8))
    y = X[:, 0] + 0.1 * rng.normal(size=30)
    models = {str(f): PLSRegression(2).fit(X[f::2], y[f::2]) for f in range(2)}
    trace = ExecutionTrace([TraceStep(0, "sklearn.cross_decomposition.PLSRegression",
                                      per_fold=models, is_model=True)])
    store = WorkspaceStore(root / "ws")
    run_id = store.begin_run("r", {}, [])
    pid = store.begin_pipeline(run_id, "p", {}, [], "d", "h")
    chain_id = store.save_chain(pid, **ChainBuilder(trace, store).build())
    store.complete_pipeline(pid, 0.1, 0.1, "rmse", 1)
    yield {"store": store, "chain_id": chain_id, "X": X, "root": root}
    store.close()


def _forge(src: Path, dst: Path, marker: Path) -> Path:
    """Swap an artifact for a payload and rewrite every hash, ids included."""
    evil = pickle.dumps(_Payload(marker))
    evil_id = hashlib.sha256(evil).hexdigest()
    with zipfile.ZipFile(src) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    manifest = json.loads(members["manifest.json"])
    old_id = next(iter(manifest["artifacts"]))
    old_member = manifest["artifacts"][old_id]["member"]
    new_member = old_member.replace(old_id, evil_id)
    chain_text = members["chain.json"].decode().replace(old_id, evil_id).encode()
    members.pop(old_member)
    members[new_member] = evil
    members["chain.json"] = chain_text
    entry = manifest["artifacts"].pop(old_id)
    manifest["artifacts"][evil_id] = {**entry, "member": new_member}
    manifest["members"].pop(old_member)
    manifest["members"][new_member] = {"sha256": evil_id, "size_bytes": len(evil)}
    manifest["members"]["chain.json"]["sha256"] = hashlib.sha256(chain_text).hexdigest()
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return dst


def test_pinned_hash_refuses_a_rehashed_forgery(chain, tmp_path):
    bundle = chain["store"].export_chain(chain["chain_id"], tmp_path / "model.n4a")
    published = hashlib.sha256(bundle.read_bytes()).hexdigest()
    marker = tmp_path / "ran"
    forged = _forge(bundle, tmp_path / "forged.n4a", marker)
    clear_replay_cache()
    np.testing.assert_array_equal(predict(bundle, chain["X"], expected_sha256=published),
                                  chain["store"].replay_chain(chain["chain_id"], chain["X"]))
    with pytest.raises(BundleIntegrityError, match="expected"):
        predict(forged, chain["X"], expected_sha256=published)
    with pytest.raises(BundleIntegrityError, match="expected"):
        import_bundle(chain["store"], forged, expected_sha256=published)
    assert not marker.exists()


def test_signed_bundles(chain, tmp_path, monkeypatch):
    signed = chain["store"].export_chain(chain["chain_id"], tmp_path / "signed.n4a", key="s3cret")
    unsigned = chain["store"].export_chain(chain["chain_id"], tmp_path / "plain.n4a")
    marker = tmp_path / "ran"
    forged = _forge(signed, tmp_path / "forged.n4a", marker)
    clear_replay_cache()
    assert predict(signed, chain["X"], key="s3cret").shape == (30,)
    with pytest.raises(BundleIntegrityError, match="signature"):
        predict(forged, chain["X"], key="s3cret")
    with pytest.raises(BundleIntegrityError, match="signature"):
        predict(signed, chain["X"], key="other-key")
    with pytest.raises(BundleIntegrityError, match="not signed"):
        predict(unsigned, chain["X"], key="s3cret")
    monkeypatch.setenv("N4A_BUNDLE_KEY", "s3cret")  # the environment sets the key too
    with pytest.raises(BundleIntegrityError):
        chain["store"].import_bundle(forged)
    assert chain["store"].import_bundle(signed)
    assert not marker.exists()
