"""Spectral datasets: chemotools' bundled data and CSV/Parquet files.

A dataset is a matrix of spectra ``X`` (samples x wavelengths), a target ``y``, the
wavelengths (from the feature column names), an optional held-out test set, and
a content hash (``dataset_hash``) over all of them.

Bundled chemotools datasets (``chemotools:<name>`` in a config):

``fermentation``
    The 21 off-line training spectra with their glucose reference values, plus a
    held-out test set of 34 real on-line spectra paired with the HPLC glucose
    values. The on-line spectra were recorded every 1.25 minutes; each HPLC sample
    (time in hours) is paired with the spectrum recorded closest to it (row
    ``time * 60 / 1.25``, skipping the flat spectra at the end of the file).
``fermentation_train``
    The 21 training spectra alone.
``fermentation_test``
    The 34 paired on-line spectra alone (target ``glucose`` by default; ``xylose``,
    ``acetic_acid``, ``ethanol`` and ``furfural`` are also available).
``coffee``
    60 ATR-FTIR spectra of coffee from three origins (classification, target ``labels``).

Files: every column except the target and ``drop_columns`` is a feature and
its name must be a number (the wavelength). ``test_path`` names a file with the
same columns, used as the held-out test partition.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from n4a_store.sweep.config import DatasetConfig, parse_dataset_config
from n4a_store.sweep.errors import DatasetError

SPECTRUM_INTERVAL_MIN = 1.25


@dataclass
class SpectraDataset:
    """Spectra, target and wavelengths of one dataset, with an optional held-out test set.

    Attributes:
        name: Dataset name used in the store.
        X: Spectra, float64, shape (n_samples, n_wavelengths).
        y: Targets: float64 for regression, labels (str or int) for classification.
        wavelengths: Feature axis, float64, shape (n_wavelengths,).
        task_type: ``"regression"`` or ``"classification"``.
        dataset_hash: SHA-256 hex of the content (X, y, wavelengths, test set).
        X_test: Held-out test spectra, or ``None``.
        y_test: Held-out test targets, or ``None``.
        train_rows: Row numbers of ``X`` in the source (used as ``sample_indices``).
        test_rows: Row numbers of ``X_test`` in its source.
        target: Name of the target column.
        source: ``"chemotools:<name>"`` or the file path.
        classes: Sorted class labels (classification), else ``None``.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    wavelengths: np.ndarray
    task_type: str
    dataset_hash: str
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    train_rows: np.ndarray | None = None
    test_rows: np.ndarray | None = None
    target: str = ""
    source: str = ""
    classes: list[Any] | None = None

    @property
    def n_samples(self) -> int:
        """Number of training samples."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of wavelengths."""
        return int(self.X.shape[1])

    @property
    def has_test(self) -> bool:
        """True when a held-out test set exists."""
        return self.X_test is not None

    def metadata(self) -> dict[str, Any]:
        """The dataset's description for ``begin_run(datasets=[...])``."""
        out: dict[str, Any] = {
            "name": self.name,
            "hash": self.dataset_hash,
            "source": self.source,
            "target": self.target,
            "task_type": self.task_type,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "n_test": 0 if self.X_test is None else int(self.X_test.shape[0]),
            "wavelength_range": [float(self.wavelengths[0]), float(self.wavelengths[-1])],
        }
        if self.classes is not None:
            out["classes"] = [_json_label(c) for c in self.classes]
        return out

    def encode_labels(self, labels: np.ndarray) -> np.ndarray:
        """Class labels -> integer codes (positions in :attr:`classes`), for storing arrays."""
        assert self.classes is not None
        lookup = {label: code for code, label in enumerate(self.classes)}
        return np.array([lookup[label] for label in labels.tolist()], dtype=np.int64)


def load_dataset(
    source: DatasetConfig | dict[str, Any] | str,
    *,
    task_type: str | None = None,
    model_task_hint: str | None = None,
    seed: int = 0,
) -> SpectraDataset:
    """Load a dataset described in a sweep config.

    Args:
        source: A :class:`DatasetConfig`, its dict form, or ``"chemotools:<name>"``.
        task_type: The sweep's task type, used when the dataset config names none.
        model_task_hint: Task type suggested by the sweep's models (used for numeric targets
            when nothing else decides).
        seed: Seed of the ``test_fraction`` split.

    Task type: the dataset config's ``task_type``, else ``task_type``, else
    classification for a non-numeric target, else ``model_task_hint``, else regression.

    Raises:
        DatasetError: missing file or column, no spectral columns, mismatched test file.
    """
    dc = source if isinstance(source, DatasetConfig) else parse_dataset_config(source)
    if dc.source == "chemotools":
        X, y, wl, X_test, y_test, target = _load_chemotools(dc)
        origin = f"chemotools:{dc.ref}"
    else:
        X, y, wl, target = _load_file(Path(dc.ref), dc.target or "", dc.drop_columns)
        X_test = y_test = None
        if dc.test_path is not None:
            X_test, y_test, wl_test, _ = _load_file(Path(dc.test_path), target, dc.drop_columns)
            if not np.array_equal(wl, wl_test):
                raise DatasetError(
                    f"test file {dc.test_path} has different feature columns than {dc.ref}"
                )
        origin = dc.ref
    resolved = dc.task_type or task_type or _infer_task_type(y, model_task_hint)
    if resolved == "regression":
        y = _as_float(y, target, dc.name)
        y_test = None if y_test is None else _as_float(y_test, target, dc.name)
    train_rows = np.arange(X.shape[0], dtype=np.int64)
    test_rows = None if X_test is None else np.arange(X_test.shape[0], dtype=np.int64)
    if dc.test_fraction is not None:
        if X_test is not None:
            raise DatasetError(f"dataset {dc.name!r} already has a test set; drop test_fraction")
        X, y, X_test, y_test, train_rows, test_rows = _split(X, y, dc.test_fraction, resolved, seed)
    classes = None
    if resolved == "classification":
        labels = y if y_test is None else np.concatenate([y, y_test])
        classes = sorted(set(labels.tolist()))
    return SpectraDataset(
        name=dc.name,
        X=np.ascontiguousarray(X, dtype=np.float64),
        y=y,
        wavelengths=np.asarray(wl, dtype=np.float64),
        task_type=resolved,
        dataset_hash=dataset_hash(X, y, wl, X_test, y_test),
        X_test=None if X_test is None else np.ascontiguousarray(X_test, dtype=np.float64),
        y_test=y_test,
        train_rows=train_rows,
        test_rows=test_rows,
        target=target,
        source=origin,
        classes=classes,
    )


def dataset_hash(
    X: np.ndarray,
    y: np.ndarray,
    wavelengths: np.ndarray,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
) -> str:
    """SHA-256 hex of a dataset's content: shapes and values of X, y, wavelengths and test set."""
    h = hashlib.sha256(b"n4a-dataset-v1")
    for part in (X, y, wavelengths, X_test, y_test):
        if part is None:
            h.update(b"|none")
            continue
        arr = np.asarray(part)
        h.update(f"|{arr.shape}|{arr.dtype.kind}|".encode())
        if arr.dtype.kind in "fiub":
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        else:
            h.update(json.dumps([str(v) for v in arr.tolist()]).encode("utf-8"))
    return h.hexdigest()


def _json_label(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def _infer_task_type(y: np.ndarray, hint: str | None) -> str:
    if y.dtype.kind not in "fiu":
        return "classification"
    if hint is not None:
        return hint
    return "regression"


def _as_float(y: np.ndarray, target: str, name: str) -> np.ndarray:
    try:
        return np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f"dataset {name!r}: target {target!r} is not numeric; set task_type: classification"
        ) from exc


def _split(X, y, fraction, task_type, seed):  # type: ignore[no-untyped-def]
    from sklearn.model_selection import train_test_split

    rows = np.arange(X.shape[0], dtype=np.int64)
    strat = y if task_type == "classification" else None
    tr, te = train_test_split(rows, test_size=fraction, random_state=seed, shuffle=True, stratify=strat)
    tr, te = np.sort(tr), np.sort(te)
    return X[tr], y[tr], X[te], y[te], tr, te


def _load_chemotools(dc: DatasetConfig):  # type: ignore[no-untyped-def]
    from chemotools import datasets as cds

    if dc.ref in ("fermentation", "fermentation_train"):
        target = dc.target or "glucose"
        spectra, ref = cds.load_fermentation_train(set_output="polars")
        X, y, wl = _split_frame(spectra, ref, target, dc.name)
        if dc.ref == "fermentation_train":
            return X, y, wl, None, None, target
        X_test, y_test, wl_test = _fermentation_test(target, dc.name)
        if not np.array_equal(wl, wl_test):
            raise DatasetError("chemotools fermentation train and test wavelengths differ")
        return X, y, wl, X_test, y_test, target
    if dc.ref == "fermentation_test":
        target = dc.target or "glucose"
        X, y, wl = _fermentation_test(target, dc.name)
        return X, y, wl, None, None, target
    if dc.ref == "coffee":
        target = dc.target or "labels"
        spectra, labels = cds.load_coffee(set_output="polars")
        X, y, wl = _split_frame(spectra, labels, target, dc.name)
        return X, y, wl, None, None, target
    raise DatasetError(f"unknown chemotools dataset {dc.ref!r}")


def _fermentation_test(target: str, name: str):  # type: ignore[no-untyped-def]
    from chemotools import datasets as cds

    spectra, hplc = cds.load_fermentation_test(set_output="polars")
    if target not in hplc.columns or target == "time":
        raise DatasetError(f"dataset {name!r}: no target {target!r}; available: {hplc.columns[1:]}")
    X_all = spectra.to_numpy().astype(np.float64)
    recorded = np.flatnonzero(X_all.std(axis=1) > 0)  # the last spectra of the file are flat
    position = hplc["time"].to_numpy() * 60.0 / SPECTRUM_INTERVAL_MIN
    rows = recorded[np.abs(recorded[None, :] - position[:, None]).argmin(axis=1)]
    X = X_all[rows]
    wl = np.array([float(c) for c in spectra.columns])
    return X, hplc[target].to_numpy(), wl


def _split_frame(spectra: pl.DataFrame, ref: pl.DataFrame, target: str, name: str):  # type: ignore[no-untyped-def]
    if target not in ref.columns:
        raise DatasetError(f"dataset {name!r}: no target {target!r}; available: {ref.columns}")
    wl = np.array([float(c) for c in spectra.columns])
    return spectra.to_numpy().astype(np.float64), ref[target].to_numpy(), wl


def _read_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pl.read_csv(path)
        if suffix == ".tsv":
            return pl.read_csv(path, separator="\t")
    except Exception as exc:  # polars raises several error types
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    raise DatasetError(f"unsupported dataset file type {suffix!r} ({path}); use .csv or .parquet")


def read_spectra_table(
    path: Path, drop_columns: tuple[str, ...] = (), target: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV/Parquet file of spectra: returns (X, wavelengths) from its numeric-named columns.

    Columns named ``target`` or in ``drop_columns`` are skipped; any other column whose name
    is not a number is an error.
    """
    frame = _read_table(path)
    skip = set(drop_columns) | ({target} if target else set())
    return _features(frame, [c for c in frame.columns if c not in skip], path)


def _features(frame: pl.DataFrame, columns: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    wavelengths = []
    for col in columns:
        try:
            wavelengths.append(float(col))
        except ValueError:
            raise DatasetError(
                f"{path}: column {col!r} is not a wavelength (feature columns must be named by "
                "numbers); declare it as the target or a column to drop"
            ) from None
    if not wavelengths:
        raise DatasetError(f"{path}: no spectral columns (columns named by wavelength)")
    sub = frame.select(columns)
    bad = [c for c, dt in zip(columns, sub.dtypes, strict=True) if not dt.is_numeric()]
    if bad:
        raise DatasetError(f"{path}: feature column {bad[0]!r} is not numeric")
    nulls = [c for c, n in zip(columns, sub.null_count().row(0), strict=True) if n]
    if nulls:
        raise DatasetError(f"{path}: feature column {nulls[0]!r} has missing values")
    return sub.to_numpy().astype(np.float64), np.array(wavelengths, dtype=np.float64)


def _load_file(path: Path, target: str, drop: tuple[str, ...]):  # type: ignore[no-untyped-def]
    frame = _read_table(path)
    if target not in frame.columns:
        raise DatasetError(f"{path}: no target column {target!r}; columns start {frame.columns[:5]}")
    missing = [c for c in drop if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: drop_columns names unknown column {missing[0]!r}")
    if frame[target].null_count():
        raise DatasetError(f"{path}: target column {target!r} has missing values")
    columns = [c for c in frame.columns if c != target and c not in drop]
    X, wl = _features(frame, columns, path)
    return X, frame[target].to_numpy(), wl, target
