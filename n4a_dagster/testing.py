"""Helpers for testing n4a Dagster code: a tiny real sweep config on chemotools data, and a
model whose fit can be switched to fail."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from sklearn.cross_decomposition import PLSRegression


def tiny_sweep_config(
    directory: str | Path,
    *,
    n_components: tuple[int, ...] = (2, 3),
    n_splits: int = 2,
    name: str = "tiny",
    filename: str = "tiny_sweep.yaml",
) -> Path:
    """Write a small regression sweep on chemotools' fermentation spectra; return its path.

    The sweep has (no preprocessing | SNV) x PLS(``n_components``) pipelines with
    ``n_splits``-fold cross-validation. A component count above the number of training
    samples per fold (e.g. 40) makes that pipeline fail, which tests failure isolation.
    """
    config: dict[str, Any] = {
        "name": name,
        "datasets": ["chemotools:fermentation"],
        "task_type": "regression",
        "metric": "rmse",
        "cv": {"n_splits": n_splits, "shuffle": True, "seed": 0},
        "seed": 0,
        "pipeline": [
            {"_or_": [None, {"class": "chemotools.scatter.StandardNormalVariate"}]},
            {"class": "sklearn.cross_decomposition.PLSRegression",
             "params": {"n_components": {"_or_": list(n_components)}, "scale": False}},
        ],
    }
    path = Path(directory) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


#: Set this environment variable (to anything non-empty) to make :class:`SwitchableFailPLS` fail.
FAIL_FIT_ENV = "N4A_TEST_FAIL_FIT"


class SwitchableFailPLS(PLSRegression):
    """PLSRegression whose ``fit`` raises while env ``N4A_TEST_FAIL_FIT`` is set.

    Lets a test make the same pipeline partition (same config, same partition key) succeed,
    then fail, then succeed again.
    """

    def fit(self, X: Any, y: Any = None) -> Any:
        """Fit like PLSRegression, or raise RuntimeError while the switch is on."""
        if os.environ.get(FAIL_FIT_ENV):
            raise RuntimeError(f"fit failed on purpose ({FAIL_FIT_ENV} is set)")
        return super().fit(X, y)


def tiny_classification_config(directory: str | Path, *, name: str = "tiny_clf",
                               filename: str = "tiny_clf.yaml") -> Path:
    """Write a small classification sweep on chemotools' coffee spectra (SNV, logistic
    regression with C in 1 | 10, 2-fold CV); return its path."""
    config: dict[str, Any] = {
        "name": name, "datasets": ["chemotools:coffee"], "task_type": "classification",
        "cv": {"n_splits": 2, "shuffle": True, "seed": 0}, "seed": 0,
        "pipeline": [{"class": "chemotools.scatter.StandardNormalVariate"},
                     {"class": "sklearn.linear_model.LogisticRegression",
                      "params": {"C": {"_or_": [1.0, 10.0]}, "max_iter": 500}}],
    }
    path = Path(directory) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def apply_sensor_result(instance: Any, result: Any) -> None:
    """Apply a ``SensorResult``'s asset events and partition requests to ``instance`` in the
    order the sensor daemon applies them (events first, then the requests)."""
    from dagster import AddDynamicPartitionsRequest

    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                if instance.has_dynamic_partition(request.partitions_def_name, key):
                    instance.delete_dynamic_partition(request.partitions_def_name, key)


#: Directory of the pause switch of :class:`PausingPLS` (unset: it never pauses).
PAUSE_DIR_ENV = "N4A_TEST_PAUSE_DIR"
#: How long a paused fit waits before it gives up and fits (it is meant to be killed first).
PAUSE_SECONDS = 90.0


class PausingPLS(PLSRegression):
    """PLSRegression whose first ``fit`` anywhere stops until it is killed, while armed.

    Armed when ``$N4A_TEST_PAUSE_DIR/armed`` exists. The first fit to create
    ``$N4A_TEST_PAUSE_DIR/claimed`` (atomically, so one fit across all processes and hosts
    sharing the directory) writes its pid there and sleeps (at most :data:`PAUSE_SECONDS`), so
    a test can kill the process running that step; every other fit runs normally.
    """

    def fit(self, X: Any, y: Any = None) -> Any:
        """Fit like PLSRegression, unless this is the armed, claimed fit: then wait."""
        directory = os.environ.get(PAUSE_DIR_ENV)
        if directory and (Path(directory) / "armed").exists():
            try:
                fd = os.open(Path(directory) / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return super().fit(X, y)
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            import time

            deadline = time.monotonic() + PAUSE_SECONDS
            while time.monotonic() < deadline and (Path(directory) / "armed").exists():
                time.sleep(0.05)
        return super().fit(X, y)


def pausing_sweep_config(directory: str | Path, *, n_components: tuple[int, ...] = (2, 3, 4),
                         name: str = "pausing") -> Path:
    """A (none | SNV) x :class:`PausingPLS` (``n_components``) regression sweep on chemotools'
    fermentation spectra (3-fold CV); return its path."""
    path = tiny_sweep_config(directory, n_components=n_components, n_splits=3, name=name,
                             filename=f"{name}_sweep.yaml")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["pipeline"][-1]["class"] = f"{__name__}.PausingPLS"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
