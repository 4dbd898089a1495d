"""Errors raised by the sweep runner."""

from __future__ import annotations

from n4a_store.errors import InvalidInputError, N4AError


class SweepConfigError(InvalidInputError):
    """A sweep config is invalid. The message names the step (index and class) and the key.

    Attributes:
        step_idx: Index of the offending step in the ``pipeline`` list, or ``None``.
        step_class: Class path of that step when known.
        key: The offending key (``"params.n_components"``, ``"cv.n_splits"``...), or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        step_idx: int | None = None,
        step_class: str | None = None,
        key: str | None = None,
    ) -> None:
        self.step_idx = step_idx
        self.step_class = step_class
        self.key = key
        where = []
        if step_idx is not None:
            where.append(f"pipeline step {step_idx}" + (f" ({step_class})" if step_class else ""))
        if key is not None:
            where.append(f"key {key!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class DatasetError(InvalidInputError):
    """A dataset cannot be loaded: missing file, missing target column, no spectral columns."""


class SweepError(N4AError):
    """A sweep could not run at all (as opposed to one pipeline failing)."""
