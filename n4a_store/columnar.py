"""Rows (dicts) to columns: the one pass both the catalog buffers and the array codec need."""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Sequence


@functools.lru_cache(maxsize=None)
def _getter(names: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    return operator.itemgetter(*names)


def transpose(rows: Sequence[dict[str, Any]], names: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """The values of ``names`` as one tuple per name, a key absent from a row being None.

    Each row is read once, by one ``itemgetter`` call, and the values are transposed by
    ``zip``: for thousands of rows this is about twice as fast as walking every row once
    per column (what ``pa.Table.from_pylist`` does). ``names`` holds at least two names.
    """
    if not rows:
        return [() for _ in names]
    try:
        return list(zip(*map(_getter(names), rows)))
    except KeyError:  # some row lacks a key: None there
        return [tuple(r.get(name) for r in rows) for name in names]
