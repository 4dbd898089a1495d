"""A bundle member whose stream inflates past its declared size is refused at once.

The bomb is a real zip file: a 64 MiB run of zeros deflated to ~64 KiB, whose
local and central headers are then rewritten to declare 1 KiB.
"""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from n4a_store import N4AError, WorkspaceStore, predict
from n4a_store.bundles.safety import UnsafeBundleError, read_verified_bundle

INFLATED = 64 * 1024**2
DECLARED = 1024


def _declare_size(data: bytearray, name: str, size: int) -> None:
    """Rewrite the uncompressed size of member ``name`` in its local and central headers."""
    encoded = name.encode()
    central = data.find(b"PK\x01\x02")
    while central != -1:
        name_len = struct.unpack_from("<H", data, central + 28)[0]
        if bytes(data[central + 46:central + 46 + name_len]) == encoded:
            struct.pack_into("<I", data, central + 24, size)
            local = struct.unpack_from("<I", data, central + 42)[0]
            struct.pack_into("<I", data, local + 22, size)
            return
        central = data.find(b"PK\x01\x02", central + 4)
    raise AssertionError(f"member {name} not found")


def make_bomb(path: Path) -> Path:
    """An .n4a-shaped zip whose first listed member is a lying 64 MiB stream."""
    chain = b"{}"
    manifest = {"format": "n4a-bundle", "format_version": 1, "artifacts": {},
                "members": {"artifacts/bomb.joblib": {"sha256": "0" * 64, "size_bytes": DECLARED},
                            "chain.json": {"sha256": "0" * 64, "size_bytes": len(chain)}}}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        archive.writestr("chain.json", chain)
        archive.writestr("artifacts/bomb.joblib", bytes(INFLATED))
    data = bytearray(path.read_bytes())
    _declare_size(data, "artifacts/bomb.joblib", DECLARED)
    path.write_bytes(bytes(data))
    return path


def test_bomb_member_is_refused_quickly_with_little_memory(tmp_path):
    bomb = make_bomb(tmp_path / "bomb.n4a")
    assert bomb.stat().st_size < 1024**2
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(UnsafeBundleError, match="bomb.joblib"):
        read_verified_bundle(bomb)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 8 * 1024**2  # not the 64 MiB the stream holds


def test_bomb_is_refused_by_predict_and_import_leaving_the_workspace_usable(tmp_path):
    bomb = make_bomb(tmp_path / "bomb.n4a")
    with pytest.raises(N4AError):
        predict(bomb, [[0.0]])
    with WorkspaceStore(tmp_path / "ws") as store:
        with pytest.raises(N4AError):
            store.import_bundle(bomb)
        run_id = store.begin_run("after", {}, [])
        store.complete_run(run_id, {})
        assert store.list_runs().height == 1  # the import wrote nothing
