"""Sweep configs bundled with n4a (``builtin:<name>`` in the command line)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from n4a_store.sweep.errors import SweepConfigError

if TYPE_CHECKING:
    from n4a_store.sweep.config import SweepConfig

_DIR = Path(__file__).resolve().parent


def list_builtin_configs() -> list[str]:
    """Names of the bundled sweep configs."""
    return sorted(p.stem for p in _DIR.glob("*.yaml"))


def builtin_path(name: str) -> Path:
    """Path of the bundled config ``name`` (``SweepConfigError`` listing the names if unknown)."""
    path = _DIR / f"{name}.yaml"
    if name not in list_builtin_configs():
        raise SweepConfigError(
            f"no builtin sweep config {name!r}; available: {', '.join(list_builtin_configs())}"
        )
    return path


def builtin_config(name: str = "nirs-regression") -> SweepConfig:
    """Load a bundled sweep config, e.g. ``"nirs-regression"`` or ``"nirs-classification"``."""
    from n4a_store.sweep.config import load_sweep_config

    return load_sweep_config(f"builtin:{name}")
