"""Training sweeps: configs with generators, cross-validation, scoring, written through the store.

Plain Python, no Dagster import. The public API::

    cfg = load_sweep_config("sweep.yaml")      # or a dict, Path, "builtin:<name>"
    specs = expand_pipelines(cfg)              # list[PipelineSpec]
    ds = load_dataset(cfg.datasets[0])         # SpectraDataset
    res = run_pipeline(store, run_id, spec, ds, cfg)   # PipelineResult
    summary = run_sweep(cfg, workspace_path, jobs=1)   # SweepSummary
    cfg = builtin_config("nirs-regression")

The config format is described in ``docs/sweeps.md``.
"""

from __future__ import annotations

from n4a_store.sweep.builtin import builtin_config, list_builtin_configs
from n4a_store.sweep.config import CVConfig, DatasetConfig, SweepConfig, load_sweep_config
from n4a_store.sweep.datasets import SpectraDataset, dataset_hash, load_dataset
from n4a_store.sweep.errors import DatasetError, SweepConfigError, SweepError
from n4a_store.sweep.expansion import PipelineSpec, StepSpec, expand_pipelines
from n4a_store.sweep.runner import (
    PipelineResult,
    SweepSummary,
    leaderboard,
    load_sweep_datasets,
    run_pipeline,
    run_sweep,
)
from n4a_store.sweep.scoring import METRICS, default_metric, higher_is_better

__all__ = [
    "CVConfig",
    "DatasetConfig",
    "DatasetError",
    "METRICS",
    "PipelineResult",
    "PipelineSpec",
    "SpectraDataset",
    "StepSpec",
    "SweepConfig",
    "SweepConfigError",
    "SweepError",
    "SweepSummary",
    "builtin_config",
    "dataset_hash",
    "default_metric",
    "expand_pipelines",
    "higher_is_better",
    "leaderboard",
    "list_builtin_configs",
    "load_dataset",
    "load_sweep_config",
    "load_sweep_datasets",
    "run_pipeline",
    "run_sweep",
]
