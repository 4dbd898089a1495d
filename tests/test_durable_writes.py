"""Files are flushed before they are renamed into place, directories after, once per commit.

``os.fsync`` is wrapped by a recorder that calls the real function, so the
real files are really synced; the recorder only tells which descriptors were.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conftest import write_pipeline
from n4a_store import WorkspaceStore
from n4a_store.fileio import atomic_path, batched_directory_syncs, write_atomic


@pytest.fixture
def synced(monkeypatch) -> list[tuple[str, bool]]:
    """(path, is_directory) of every fsync, in order; the real fsync still runs."""
    calls: list[tuple[str, bool]] = []
    real = os.fsync

    def recording_fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        calls.append((target, stat.S_ISDIR(os.fstat(fd).st_mode)))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return calls


def test_write_atomic_syncs_file_then_directory(tmp_path, synced):
    target = write_atomic(tmp_path / "new" / "a.bin", b"data")
    assert target.read_bytes() == b"data"
    files = [p for p, is_dir in synced if not is_dir]
    dirs = [p for p, is_dir in synced if is_dir]
    assert len(files) == 1 and files[0].endswith(".tmp")        # the content, before the rename
    assert str(tmp_path / "new") in dirs and str(tmp_path) in dirs  # new name and new directory
    assert not [p for p in (tmp_path / "new").iterdir() if p.name.endswith(".tmp")]


def test_atomic_path_syncs_what_the_block_wrote(tmp_path, synced):
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x" * 100)
    assert [is_dir for _, is_dir in synced] == [False, True]


def test_batched_block_syncs_each_directory_once_at_the_end(tmp_path, synced):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    with batched_directory_syncs() as syncs:
        for i in range(6):
            write_atomic(tmp_path / "ab"[i % 2] / f"{i}.bin", b"x")
        assert not [p for p, is_dir in synced if is_dir]  # deferred
    dirs = [p for p, is_dir in synced if is_dir]
    assert sorted(dirs) == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert syncs.synced == 2
    assert len([p for p, is_dir in synced if not is_dir]) == 6


def test_failed_batched_block_syncs_no_directory(tmp_path, synced):
    with pytest.raises(RuntimeError):
        with batched_directory_syncs():
            write_atomic(tmp_path / "c.bin", b"x")
            raise RuntimeError("commit failed")
    assert not [p for p, is_dir in synced if is_dir]


def test_pipeline_commit_syncs_every_new_file_and_each_directory_once(
        workspace, fitted, regression_data, synced):
    with WorkspaceStore(workspace) as store:
        run_id = store.begin_run("run", {}, [])
        ids = write_pipeline(store, run_id, fitted, regression_data, complete=False)
        synced.clear()
        store.complete_pipeline(ids["pipeline_id"], 0.1, 0.2, "rmse", 10)
        artifact_files = [p for p in (workspace / "artifacts").rglob("*.joblib")]
        array_files = list((workspace / "arrays").rglob("*.parquet"))
    store_files = {str(p) for p in artifact_files + array_files}
    tmp_syncs = [p for p, is_dir in synced if not is_dir and p.endswith(".tmp")]
    assert len(tmp_syncs) == len(store_files) == 5  # 4 artifacts + 1 array part file
    dirs = [p for p, is_dir in synced if is_dir]
    assert len(dirs) == len(set(dirs))                # each directory once per commit
    expected = {str(Path(p).parent) for p in store_files}
    assert expected <= set(dirs)


def test_a_file_write_failing_on_a_helper_thread_fails_the_commit_and_leaves_nothing(
        workspace, fitted, regression_data, monkeypatch):
    """Commit files are written on helper threads; one failing write rolls everything back."""
    from n4a_store.artifacts.files import ArtifactFiles

    store = WorkspaceStore(workspace)
    run_id = store.begin_run("r", {}, [])
    real = ArtifactFiles.write
    calls = []

    def failing_write(self, artifact_id, fmt, data):
        calls.append(artifact_id)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, artifact_id, fmt, data)

    monkeypatch.setattr(ArtifactFiles, "write", failing_write)
    with pytest.raises(OSError, match="No space left"):
        write_pipeline(store, run_id, fitted, regression_data)
    assert store.list_pipelines().height == 0 or store.list_pipelines()["status"][0] != "completed"
    assert not list((workspace / "artifacts").rglob("*.joblib"))  # written ones were removed
    assert not list((workspace / "arrays").rglob("*.parquet"))  # the staged part too
    assert not list(workspace.rglob("*.tmp"))
    monkeypatch.setattr(ArtifactFiles, "write", real)
    [pid] = list(store._uow.open)  # the pipeline's rows stayed buffered: the retry commits them
    store.complete_pipeline(pid, 0.1, 0.2, "rmse", 5)
    assert store.query_predictions(pipeline_id=pid).height == 9
    assert store.verify().ok
    store.close()
