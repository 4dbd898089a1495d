"""Dagster resources: where the workspace store lives and which sweep to run.

:class:`N4AStoreResource` never keeps a :class:`~n4a_store.WorkspaceStore` open
between calls. Every step process (the multiprocess executor starts one per
step) opens the store when it needs it and closes it when the step is done, so
the store's own file lock arbitrates between concurrent steps, sensors, the
webserver and the ``n4a`` command line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource
from pydantic import Field

from n4a_store.errors import InvalidInputError

if TYPE_CHECKING:
    from n4a_store import WorkspaceStore
    from n4a_store.config import StoreConfig
    from n4a_store.sweep import PipelineSpec, SpectraDataset, SweepConfig

DEFAULT_WORKSPACE = "./workspace"
DEFAULT_SWEEP_CONFIG = "builtin:nirs-regression"
WORKSPACE_ENV = "N4A_WORKSPACE"
SWEEP_CONFIG_ENV = "N4A_SWEEP_CONFIG"


def default_workspace() -> str:
    """The workspace location from ``N4A_WORKSPACE``, else ``./workspace``."""
    return os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE


PLOTS_ENV = "N4A_PLOTS"


def default_plots() -> bool:
    """``N4A_PLOTS``: draw each pipeline partition's plots (default on; ``0``/``false`` off)."""
    return os.environ.get(PLOTS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def default_sweep_config() -> str:
    """The sweep config from ``N4A_SWEEP_CONFIG``, else the bundled ``builtin:nirs-regression``."""
    return os.environ.get(SWEEP_CONFIG_ENV) or DEFAULT_SWEEP_CONFIG


def workspace_path_from_location(location: str) -> Path:
    """The directory holding a store's files (the workspace, or a PostgreSQL store's file root).

    Raises:
        InvalidInputError: for an empty or unparseable location.
    """
    return store_config_from_location(location).path  # type: ignore[attr-defined, no-any-return]


def store_config_from_location(location: str) -> "StoreConfig":
    """Parse a path or store URI (``file://``, ``postgresql://…?file_root=…``) into a config."""
    from n4a_store.config import parse_to_config

    if not location or not location.strip():
        raise InvalidInputError("the n4a store location is empty; set N4A_WORKSPACE or `workspace`")
    return parse_to_config(location)


class N4AStoreResource(ConfigurableResource):
    """Gives a :class:`~n4a_store.WorkspaceStore` for one workspace, opened per use.

    Use ``with n4a_store.open_store() as store: ...`` inside an asset, op, sensor or check.
    The store is closed (and its buffered writes committed) when the block ends.
    """

    workspace: str = Field(
        default_factory=default_workspace,
        description=("Store location: a directory, a file:// URI or postgresql://…?file_root=… "
                     "(env N4A_WORKSPACE)."),
    )
    lock_timeout: float = Field(
        default=60.0,
        description="Seconds to wait for another process holding the workspace catalog.",
    )

    def store_config(self) -> "StoreConfig":
        """The parsed store configuration."""
        return store_config_from_location(self.workspace)

    def workspace_path(self) -> Path:
        """The absolute directory of the store's files (exports go under it)."""
        return workspace_path_from_location(self.workspace)

    def display_uri(self) -> str:
        """Where the store lives, without any password (for metadata and messages)."""
        return self.store_config().display_uri()

    def exists(self) -> bool:
        """True when the store already holds a catalog (nothing is created)."""
        return self.store_config().exists()

    @contextmanager
    def open_store(self) -> Iterator[WorkspaceStore]:
        """Open the workspace store for the duration of a ``with`` block, then close it."""
        from n4a_store import WorkspaceStore

        store = WorkspaceStore(self.store_config(), lock_timeout=self.lock_timeout)
        try:
            yield store
        finally:
            store.close()


class N4ASweepResource(ConfigurableResource):
    """Which sweep the sweep job and the sweep assets run.

    ``config`` is a YAML/JSON file path or ``builtin:<name>`` (env ``N4A_SWEEP_CONFIG``,
    default ``builtin:nirs-regression``).
    """

    config: str = Field(
        default_factory=default_sweep_config,
        description="Sweep config: a YAML/JSON path or builtin:<name> (env N4A_SWEEP_CONFIG).",
    )
    run_name: str = Field(
        default="",
        description="Name of the store run; empty means the sweep config's name.",
    )
    plots: bool = Field(
        default_factory=default_plots,
        description="Draw each pipeline partition's predicted-vs-true/residual or confusion "
                    "plots (about 0.3 s of matplotlib per pipeline step; env N4A_PLOTS=0 "
                    "turns them off for sweeps of many fast pipelines).",
    )

    def load(self) -> SweepConfig:
        """The validated sweep config (cached per process)."""
        return _load_config(self.config)

    def specs(self) -> list[PipelineSpec]:
        """Every expanded pipeline of the sweep, in expansion order (cached per process)."""
        return list(_expand(self.config))

    def spec(self, key: str) -> PipelineSpec:
        """The expanded pipeline whose partition key is ``key``.

        Raises:
            InvalidInputError: when no pipeline of the configured sweep has that key.
        """
        for spec in _expand(self.config):
            if spec.key == key:
                return spec
        raise InvalidInputError(
            f"pipeline {key!r} is not a pipeline of the configured sweep {self.config!r}: the "
            f"partition was registered by another sweep config, or the config changed since. "
            f"Materialize it with that sweep configured (N4A_SWEEP_CONFIG or resources.n4a_sweep)"
        )

    def dataset(self, name: str) -> SpectraDataset:
        """Load the sweep's dataset called ``name`` (cached per process)."""
        return _load_dataset(self.config, name)

    def dataset_names(self) -> list[str]:
        """Names of the sweep's datasets, in config order."""
        return [d.name for d in self.load().datasets]

    def name(self) -> str:
        """The store run name for this sweep."""
        return self.run_name or self.load().name


@lru_cache(maxsize=8)
def _load_config(source: str) -> Any:
    from n4a_store.sweep import load_sweep_config

    return load_sweep_config(source)


@lru_cache(maxsize=8)
def _expand(source: str) -> tuple[Any, ...]:
    from n4a_store.sweep import expand_pipelines

    return tuple(expand_pipelines(_load_config(source)))


@lru_cache(maxsize=16)
def _load_dataset(source: str, name: str) -> Any:
    from n4a_store.sweep import load_dataset
    from n4a_store.sweep.runner import model_task_hint

    cfg = _load_config(source)
    for dataset_cfg in cfg.datasets:
        if dataset_cfg.name == name:  # loaded exactly as run_sweep loads it
            return load_dataset(dataset_cfg, task_type=cfg.task_type,
                                model_task_hint=model_task_hint(list(_expand(source))),
                                seed=cfg.seed)
    raise InvalidInputError(
        f"dataset {name!r} is not in sweep {source!r} (datasets: {[d.name for d in cfg.datasets]})"
    )
