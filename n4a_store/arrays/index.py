"""In-memory index from prediction id to (file, row) for one dataset directory.

Built lazily by reading only the ``prediction_id`` column of each file, kept
sorted in a numpy byte-string array so a lookup is a binary search, and
refreshed incrementally when files appear (new writes) or vanish (compaction).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .layout import is_array_file

_OPEN_FILES = 32


class DatasetIndex:
    """Locate prediction rows in a dataset's Parquet files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: list[str | None] = []          # file slot -> name (None once removed)
        self._slot: dict[str, int] = {}
        self._bounds: dict[str, np.ndarray] = {}    # name -> cumulative row-group starts
        self.ids = np.empty(0, dtype="S1")
        self.slots = np.empty(0, dtype=np.int32)
        self.rows = np.empty(0, dtype=np.int64)
        self._open: OrderedDict[str, pq.ParquetFile] = OrderedDict()

    # -- maintenance --------------------------------------------------------------
    def current_files(self) -> list[str]:
        """Committed array files now in the directory, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_array_file(n))

    def refresh(self) -> None:
        """Bring the index in line with the files on disk."""
        on_disk = self.current_files()
        gone = set(self._slot) - set(on_disk)
        if gone:
            self._drop(gone)
        batch: list[tuple[str, list[str]]] = []
        for name in on_disk:
            if name not in self._slot:
                try:
                    ids = pq.read_table(self.directory / name, columns=["prediction_id"]).column(0)
                except FileNotFoundError:
                    continue
                batch.append((name, ids.to_pylist()))
        if batch:
            self.add_files(batch)

    def add_file(self, name: str, ids: list[str]) -> None:
        """Register a file whose ``prediction_id`` column is ``ids`` (in row order)."""
        self.add_files([(name, ids)])

    def add_files(self, files: list[tuple[str, list[str]]]) -> None:
        """Register several files at once: one sort and one merge for all of them."""
        files = [(name, ids) for name, ids in files if name not in self._slot]
        if not files:
            return
        id_parts, slot_parts, row_parts = [], [], []
        for name, ids in files:
            slot = len(self.files)
            self.files.append(name)
            self._slot[name] = slot
            if ids:
                id_parts.append(np.array([i.encode("utf-8") for i in ids]))
                slot_parts.append(np.full(len(ids), slot, dtype=np.int32))
                row_parts.append(np.arange(len(ids), dtype=np.int64))
        if not id_parts:
            return
        width = max([self.ids.dtype.itemsize] + [p.dtype.itemsize for p in id_parts])
        new = np.concatenate([p.astype(f"S{width}") for p in id_parts])
        order = np.argsort(new, kind="stable")
        new, new_slots, new_rows = new[order], np.concatenate(slot_parts)[order], np.concatenate(row_parts)[order]
        base = self.ids.astype(f"S{width}", copy=False)
        if not len(base):
            self.ids, self.slots, self.rows = new, new_slots, new_rows
            return
        at = np.searchsorted(base, new, side="right")
        self.ids = np.insert(base, at, new)
        self.slots = np.insert(self.slots, at, new_slots)
        self.rows = np.insert(self.rows, at, new_rows)

    def _drop(self, names: set[str]) -> None:
        dead = np.array([self._slot[n] for n in names], dtype=np.int32)
        keep = ~np.isin(self.slots, dead)
        self.ids, self.slots, self.rows = self.ids[keep], self.slots[keep], self.rows[keep]
        for name in names:
            self.files[self._slot.pop(name)] = None
            self._bounds.pop(name, None)
            self._open.pop(name, None)

    # -- lookups ------------------------------------------------------------------
    def locate(self, prediction_id: str) -> tuple[str, int] | None:
        """(file name, row) of the newest copy of ``prediction_id``, or None."""
        if not len(self.ids):
            return None
        key = prediction_id.encode("utf-8")
        if len(key) > self.ids.dtype.itemsize:
            return None
        hi = int(np.searchsorted(self.ids, key, side="right"))
        if hi == 0 or self.ids[hi - 1] != key:
            return None
        name = self.files[int(self.slots[hi - 1])]
        return (name, int(self.rows[hi - 1])) if name is not None else None

    def all_ids(self) -> list[str]:
        """Every prediction id present in the dataset's files."""
        return [i.decode("utf-8") for i in np.unique(self.ids)]

    def contains(self, ids: set[str]) -> int:
        """How many of ``ids`` have rows in the dataset's files."""
        if not ids or not len(self.ids):
            return 0
        probe = np.array([i.encode("utf-8") for i in ids])
        return int(np.isin(probe.astype(self.ids.dtype, copy=False), self.ids).sum())

    def parquet(self, name: str) -> pq.ParquetFile:
        """An open ParquetFile for ``name`` (small LRU of open handles)."""
        handle = self._open.get(name)
        if handle is None:
            handle = pq.ParquetFile(self.directory / name)
            self._open[name] = handle
            if len(self._open) > _OPEN_FILES:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(name)
        return handle

    def _row_bounds(self, name: str) -> np.ndarray:
        """Cumulative row-group starts of a file, from its footer (cached)."""
        bounds = self._bounds.get(name)
        if bounds is None:
            handle = self._open.get(name)  # an open file's footer is already parsed
            meta = handle.metadata if handle is not None else pq.read_metadata(self.directory / name)
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            self._bounds[name] = bounds
        return bounds

    def file_rows(self, name: str) -> int:
        """Rows in one file, read from its footer only."""
        return int(self._row_bounds(name)[-1])

    def row_group_of(self, name: str, row: int) -> tuple[int, int]:
        """(row group, row within it) for a file row (the file is opened for the read to follow)."""
        if name not in self._bounds:
            self.parquet(name)
        bounds = self._row_bounds(name)
        group = int(np.searchsorted(bounds, row, side="right")) - 1
        return group, row - int(bounds[group])

    def total_rows(self) -> int:
        """Rows indexed (including rows later tombstoned)."""
        return int(len(self.ids))
