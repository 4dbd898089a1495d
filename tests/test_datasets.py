"""Datasets: chemotools' bundled spectra, CSV/Parquet files, content hashes, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from n4a_store.sweep import DatasetError, dataset_hash, load_dataset


def test_fermentation_train_with_paired_test_set():
    ds = load_dataset("chemotools:fermentation")
    assert ds.name == "fermentation" and ds.task_type == "regression" and ds.target == "glucose"
    assert ds.X.shape == (21, 1047) and ds.y.shape == (21,) and ds.y.dtype == np.float64
    assert ds.wavelengths.shape == (1047,) and ds.wavelengths[0] == 428.0
    assert ds.X_test.shape == (34, 1047) and ds.y_test.shape == (34,)
    assert np.all(ds.X_test.std(axis=1) > 0), "flat spectra must never be paired with a reference"
    assert ds.y_test[0] == pytest.approx(44.415671)
    assert len(ds.dataset_hash) == 64
    meta = ds.metadata()
    assert meta["hash"] == ds.dataset_hash and meta["n_test"] == 34 and meta["n_samples"] == 21


def test_fermentation_variants():
    train = load_dataset("chemotools:fermentation_train")
    assert train.X_test is None and train.X.shape == (21, 1047)
    online = load_dataset({"chemotools": "fermentation_test", "target": "ethanol"})
    assert online.X.shape == (34, 1047) and online.target == "ethanol"
    assert train.dataset_hash != load_dataset("chemotools:fermentation").dataset_hash
    with pytest.raises(DatasetError, match="no target 'sugar'"):
        load_dataset({"chemotools": "fermentation_test", "target": "sugar"})


def test_coffee_is_classification_with_stratified_holdout():
    ds = load_dataset({"chemotools": "coffee", "test_fraction": 0.25}, seed=1)
    assert ds.task_type == "classification"
    assert ds.classes == ["Brasil", "Ethiopia", "Vietnam"]
    assert ds.X.shape == (45, 1841) and ds.X_test.shape == (15, 1841)
    assert sorted(set(ds.train_rows) | set(ds.test_rows)) == list(range(60))
    assert {label: int((ds.y_test == label).sum()) for label in ds.classes} == {
        "Brasil": 5, "Ethiopia": 5, "Vietnam": 5}
    again = load_dataset({"chemotools": "coffee", "test_fraction": 0.25}, seed=1)
    assert again.dataset_hash == ds.dataset_hash
    assert load_dataset({"chemotools": "coffee", "test_fraction": 0.25}, seed=2).dataset_hash \
        != ds.dataset_hash
    assert list(ds.encode_labels(np.array(["Vietnam", "Brasil"]))) == [2, 0]


def _spectra_frame(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    wavelengths = [1000.0 + 2 * i for i in range(12)]
    X = rng.normal(size=(n, 12)).cumsum(axis=1)
    frame = pl.DataFrame({f"{w:g}": X[:, i] for i, w in enumerate(wavelengths)})
    return frame.with_columns(pl.Series("protein", X[:, 3] * 2.0),
                              pl.Series("sample", [f"s{i}" for i in range(n)]))


def test_csv_and_parquet_files_with_test_file(tmp_path: Path):
    _spectra_frame(20, 0).write_csv(tmp_path / "train.csv")
    _spectra_frame(8, 1).write_parquet(tmp_path / "test.parquet")
    ds = load_dataset({"path": str(tmp_path / "train.csv"), "target": "protein",
                       "drop_columns": ["sample"], "test_path": str(tmp_path / "test.parquet")})
    assert ds.name == "train" and ds.task_type == "regression"
    assert ds.X.shape == (20, 12) and ds.X_test.shape == (8, 12)
    assert ds.wavelengths.tolist() == [1000.0 + 2 * i for i in range(12)]
    expected = _spectra_frame(20, 0)
    assert np.allclose(ds.y, expected["protein"].to_numpy())
    assert np.allclose(ds.X[:, 0], expected["1000"].to_numpy())


def test_string_target_in_a_file_is_classification(tmp_path: Path):
    frame = _spectra_frame(12, 0).with_columns(
        pl.Series("grade", ["a", "b", "c"] * 4)).drop("protein", "sample")
    frame.write_parquet(tmp_path / "g.parquet")
    ds = load_dataset({"path": str(tmp_path / "g.parquet"), "target": "grade"})
    assert ds.task_type == "classification" and ds.classes == ["a", "b", "c"]


def test_content_hash_changes_with_any_value():
    rng = np.random.default_rng(0)
    X, y, wl = rng.normal(size=(5, 4)), rng.normal(size=5), np.arange(4.0)
    h = dataset_hash(X, y, wl)
    assert h == dataset_hash(X.copy(), y.copy(), wl.copy())
    X2 = X.copy()
    X2[2, 3] += 1e-9
    assert dataset_hash(X2, y, wl) != h
    assert dataset_hash(X, y, wl + 1) != h
    assert dataset_hash(X, y, wl, X[:2], y[:2]) != h


@pytest.mark.parametrize("mutate, needle", [
    (lambda f: f, "not a wavelength"),                       # 'sample' column not dropped
    (lambda f: f.drop("protein"), "no target column 'protein'"),
    (lambda f: f.drop("sample").with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("1000")).alias("1000")),
     "'1000' has missing values"),
])
def test_bad_files_are_refused_with_a_clear_message(tmp_path: Path, mutate, needle):
    path = tmp_path / "bad.csv"
    mutate(_spectra_frame(6, 0)).write_csv(path)
    with pytest.raises(DatasetError, match=needle):
        load_dataset({"path": str(path), "target": "protein"})


def test_missing_and_unsupported_files(tmp_path: Path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset({"path": str(tmp_path / "none.csv"), "target": "y"})
    (tmp_path / "x.xlsx").write_bytes(b"")
    with pytest.raises(DatasetError, match="unsupported"):
        load_dataset({"path": str(tmp_path / "x.xlsx"), "target": "y"})
