"""ArrayStore on its own: append-only writes, indexed reads, tombstones, compaction."""

from __future__ import annotations

import os

import numpy as np
import pytest

from n4a_store import ArrayStore, InvalidInputError


def _records(n, dataset="wheat", start=0, length=20):
    rng = np.random.default_rng(start)
    return [{"prediction_id": f"p{start + i:05d}", "dataset_name": dataset,
             "y_true": rng.normal(size=length), "y_pred": rng.normal(size=length),
             "model_name": "PLS", "fold_id": str(i % 5), "partition": "val", "metric": "rmse",
             "val_score": float(i), "task_type": "regression"} for i in range(n)]


def test_save_load_round_trip(tmp_path):
    store = ArrayStore(tmp_path)
    assert (tmp_path / "arrays").is_dir()
    records = _records(10)
    store.save_batch(records)
    loaded = store.load("p00003", "wheat")
    np.testing.assert_array_equal(loaded["y_true"], records[3]["y_true"])
    assert loaded["model_name"] == "PLS" and loaded["val_score"] == 3.0
    assert store.load("p00003", "corn") is None
    assert store.load("nope", "wheat") is None
    batch = store.load_batch(["p00007", "missing", "p00001"], "wheat")
    assert [r["prediction_id"] for r in batch] == ["p00007", "p00001"]
    assert store.list_datasets() == ["wheat"]


def test_saves_never_rewrite_existing_files(tmp_path):
    store = ArrayStore(tmp_path)
    store.save_batch(_records(5))
    directory = tmp_path / "arrays" / "wheat"
    first = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in directory.glob("*.parquet")}
    store.save_batch(_records(5, start=100))
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in directory.glob("*.parquet")}
    assert len(after) == 2
    for name, stamp in first.items():
        assert after[name] == stamp


def test_reads_touch_only_the_needed_row_group(tmp_path, monkeypatch):
    store = ArrayStore(tmp_path)
    store.save_batch(_records(600))  # several row groups
    store.load("p00000", "wheat")  # build the index
    import pyarrow.parquet as pq

    calls = []
    original = pq.ParquetFile.read_row_group

    def spy(self, i, *a, **kw):
        calls.append(i)
        return original(self, i, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    assert store.load("p00590", "wheat")["val_score"] == 590.0
    assert calls == [2]


def test_proba_and_optional_arrays(tmp_path):
    store = ArrayStore(tmp_path)
    proba = np.random.default_rng(1).random((4, 3))
    store.save_batch([{"prediction_id": "c1", "dataset_name": "coffee", "y_true": np.arange(4),
                       "y_pred": np.arange(4), "y_proba": proba, "sample_indices": np.arange(4) + 10,
                       "weights": np.ones(4)}])
    record = store.load("c1", "coffee")
    np.testing.assert_array_equal(record["y_proba"], proba)
    assert record["sample_indices"].tolist() == [10, 11, 12, 13]


def test_bad_batch_writes_nothing(tmp_path):
    store = ArrayStore(tmp_path)
    good = _records(3)
    bad = dict(good[0], prediction_id="bad", y_pred=np.zeros(3))
    with pytest.raises(InvalidInputError, match="prediction 'bad'"):
        store.save_batch(good + [bad])
    with pytest.raises(InvalidInputError, match="appears twice"):
        store.save_batch(good + [good[0]])
    with pytest.raises(InvalidInputError, match="dataset_name"):
        store.save_batch([dict(good[0], dataset_name="")])
    assert store.list_datasets() == []


def test_delete_and_compact(tmp_path):
    store = ArrayStore(tmp_path)
    for start in range(0, 50, 10):
        store.save_batch(_records(10, start=start))
    store.save_batch(_records(5, dataset="corn", start=1000))
    store.delete(["p00003", "p00042", "p01001"])
    assert store.load("p00003", "wheat") is None
    assert store.stats()["wheat"] == {"files": 5, "rows": 50, "tombstoned": 2}
    assert store.compact("wheat") == 2
    assert store.stats()["wheat"] == {"files": 1, "rows": 48, "tombstoned": 0}
    assert store.load("p00004", "wheat")["val_score"] == 4.0
    assert store.compact() == 1  # corn; leaves one file per dataset
    parquet_files = [n for n in os.listdir(tmp_path / "arrays" / "corn") if n.endswith(".parquet")]
    assert len(parquet_files) == 1 and parquet_files[0].startswith("data-")
    assert not os.listdir(tmp_path / "arrays" / "_tombstones")
    assert store.compact() == 0
    fresh = ArrayStore(tmp_path)
    assert len(fresh.load_batch([f"p{i:05d}" for i in range(50)], "wheat")) == 48


def test_dataset_names_are_encoded_safely(tmp_path):
    store = ArrayStore(tmp_path)
    for name in ("../escape", "_tombstones", "a/b", "é"):
        store.save_batch(_records(1, dataset=name, start=7))
    assert sorted(store.list_datasets()) == sorted(["../escape", "_tombstones", "a/b", "é"])
    assert not (tmp_path / "escape").exists()
    assert store.load("p00007", "../escape") is not None


def test_index_sees_files_written_by_another_instance(tmp_path):
    reader = ArrayStore(tmp_path)
    writer = ArrayStore(tmp_path)
    writer.save_batch(_records(3))
    assert reader.load("p00001", "wheat") is not None
    writer.save_batch(_records(3, start=10))
    assert reader.load("p00011", "wheat") is not None
    writer.compact()
    assert reader.load("p00011", "wheat") is not None


def test_stats_without_tombstones_reads_only_footers(tmp_path, monkeypatch):
    from n4a_store.arrays.index import DatasetIndex

    ArrayStore(tmp_path).save_batch(_records(7))
    ArrayStore(tmp_path).save_batch(_records(5, start=100))
    monkeypatch.setattr(DatasetIndex, "refresh", lambda self: pytest.fail("id index was built"))
    assert ArrayStore(tmp_path).stats() == {"wheat": {"files": 2, "rows": 12, "tombstoned": 0}}


def test_point_read_by_reference_reads_only_array_columns_and_agrees_with_load(tmp_path, monkeypatch):
    store = ArrayStore(tmp_path)
    rng = np.random.default_rng(7)
    records = [
        {"prediction_id": "num", "dataset_name": "mix", "y_true": rng.normal(size=6),
         "y_pred": rng.normal(size=6), "sample_indices": np.arange(6), "weights": np.ones(6)},
        {"prediction_id": "lab", "dataset_name": "mix", "y_true": np.array(["a", "b", "a"]),
         "y_pred": np.array(["a", "a", "b"]), "y_proba": rng.random((3, 2))},
        {"prediction_id": "bare", "dataset_name": "mix", "y_true": np.arange(2.0), "y_pred": np.arange(2.0)},
    ]
    staged = store.stage(records)
    import pyarrow.parquet as pq

    columns_read, footers = [], []
    original_read, original_meta = pq.ParquetFile.read_row_group, pq.read_metadata

    def spy_read(self, i, columns=None, **kw):
        columns_read.append(columns)
        return original_read(self, i, columns=columns, **kw)

    def spy_meta(*a, **kw):
        footers.append(a)
        return original_meta(*a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy_read)
    monkeypatch.setattr(pq, "read_metadata", spy_meta)
    fresh = ArrayStore(tmp_path)  # a cold reader: nothing cached
    for record in records:
        pid = record["prediction_id"]
        point = fresh.load_ref(pid, "mix", staged.refs[pid], arrays_only=True)
        full = fresh.load(pid, "mix")
        assert set(point) == {"prediction_id", "y_true", "y_pred", "y_proba", "sample_indices", "weights"}
        assert point["prediction_id"] == pid
        for key in ("y_true", "y_pred", "y_proba", "sample_indices", "weights"):
            if full[key] is None:
                assert point[key] is None, (pid, key)
            else:
                np.testing.assert_array_equal(point[key], full[key])
                assert point[key].dtype == full[key].dtype and point[key].shape == full[key].shape
        assert point["y_true"] is not None and point["y_true"].flags.writeable
    point_columns = [c for c in columns_read if c is not None]
    assert point_columns and all("model_name" not in c and "y_true" in c for c in point_columns)
    assert footers == []  # the open file's footer gives the row groups: no second parse
    # a stale reference (the file compacted away) still finds the row
    store.delete(["bare"])
    store.compact()
    assert ArrayStore(tmp_path).load_ref("num", "mix", staged.refs["num"], arrays_only=True)["y_true"] is not None
