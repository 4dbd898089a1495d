"""n4a_dagster: the Dagster integration of the n4a workspace store.

A thin layer over :mod:`n4a_store` and :mod:`n4a_store.sweep`: sweep assets with
lineage (runs, pipelines, chains, prediction arrays), IO managers writing
through the store, maintenance sensors and jobs, a nightly schedule and asset
checks. ``defs`` is the code location loaded by ``workspace.yaml``.
"""

from __future__ import annotations

from .definitions import build_definitions, defs
from .io_managers import N4AChainIOManager, N4APredictionArraysIOManager, N4ARecordIOManager
from .resources import N4AStoreResource, N4ASweepResource
from .values import ChainToSave, PredictionArraysRef, PredictionsToSave, StoredChain

__all__ = [
    "ChainToSave",
    "N4AChainIOManager",
    "N4APredictionArraysIOManager",
    "N4ARecordIOManager",
    "N4AStoreResource",
    "N4ASweepResource",
    "PredictionArraysRef",
    "PredictionsToSave",
    "StoredChain",
    "build_definitions",
    "defs",
]
