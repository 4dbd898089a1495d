"""ArrayStore: dense prediction arrays in Zstd Parquet, one directory per dataset.

Layout under ``<base_dir>/arrays/``::

    <dataset>/part-<time>-<id>.parquet   one immutable file per write batch
    <dataset>/data-<time>-<id>.parquet   the file left by compact()
    _tombstones/<id>.txt                 prediction ids marked deleted

A save writes one new file (temporary name, then an atomic rename), so it
never rereads or rewrites what is stored and concurrent writers never collide.
Reads go through an in-memory index (see :mod:`.index`) and read only the row
group holding the wanted rows. Deletes append a tombstone file; ``compact()``
streams a dataset's files into one file without the tombstoned rows.
"""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InvalidInputError
from ..fileio import atomic_path, write_atomic
from .base import StagedArrays
from .codec import (ARRAY_COLUMNS, SCHEMA, WRITER_OPTIONS, normalize_record, records_to_table,
                    row_arrays, rows_to_records)
from .index import DatasetIndex
from .layout import (
    ROW_GROUP_SIZE,
    TOMBSTONE_DIR,
    dataset_dirname,
    dataset_from_dirname,
    new_data_name,
    new_part_name,
)


class ArrayStore:
    """Parquet-backed storage for prediction arrays (the default array backend)."""

    kind = "parquet"

    def __init__(self, base_dir: Path) -> None:
        """Initialize. Creates the ``arrays/`` subdirectory of ``base_dir`` automatically."""
        self.root = Path(base_dir) / "arrays"
        self.root.mkdir(parents=True, exist_ok=True)
        self._tomb_dir = self.root / TOMBSTONE_DIR
        self._indexes: dict[str, DatasetIndex] = {}
        self._tomb_files: set[str] = set()
        self._tombstones: set[str] = set()
        self._mutex = threading.RLock()

    # -- writing ------------------------------------------------------------------
    def save_batch(self, records: list[dict]) -> None:
        """Append prediction arrays for a batch of records (one new file per dataset).

        Every record is validated before anything is written: a bad record
        (missing id, inconsistent lengths, wrong shape) raises InvalidInputError
        and leaves the store unchanged.
        """
        self.write_batch(records)

    def write_batch(self, records: list[dict]) -> list[Path]:
        """Like :meth:`save_batch`, returning the files written (for rollback).

        Each record dict gets ``_location = (file name, row)`` set in place: a
        hint that lets :meth:`load_at` read it without the index.
        """
        plan, locations = self._plan(records)
        for record, location in zip(records, locations):
            record["_location"] = location
        self._write(plan)
        return [path for path, _, _ in plan]

    def _plan(self, records: list[dict], trusted: bool = False,
              ) -> tuple[list[tuple[Path, pa.Table, str]], list[tuple[str, int]]]:
        """Validate ``records`` and choose their files, writing nothing.

        Returns (final path, table, dataset) per dataset and, per record in order, its
        (file name, row). ``trusted`` records came out of ``normalize_record`` already.
        """
        normalized = list(records) if trusted else [normalize_record(r) for r in records]
        ids = [r["prediction_id"] for r in normalized]
        if len(set(ids)) < len(ids):
            seen: set[str] = set()
            for pid in ids:
                if pid in seen:
                    raise InvalidInputError(f"prediction {pid!r} appears twice in the batch")
                seen.add(pid)
        by_dataset: dict[str, list[int]] = defaultdict(list)
        for index, record in enumerate(normalized):
            by_dataset[record["dataset_name"]].append(index)
        plan = []
        locations: list[tuple[str, int]] = [("", 0)] * len(normalized)
        for dataset, indexes in by_dataset.items():
            name = new_part_name()
            for row, index in enumerate(indexes):
                locations[index] = (name, row)
            final = self.root / dataset_dirname(dataset) / name
            plan.append((final, records_to_table([normalized[i] for i in indexes]), dataset))
        return plan, locations

    def _write(self, plan: list[tuple[Path, pa.Table, str]]) -> None:
        """Write planned files durably (atomic_path creates directories durably); undo on failure."""
        written: list[Path] = []
        try:
            for final, table, dataset in plan:
                with atomic_path(final) as tmp:
                    pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, **WRITER_OPTIONS)
                written.append(final)
                with self._mutex:
                    index = self._indexes.get(dataset)
                    if index is not None:
                        index.add_file(final.name, table.column("prediction_id").to_pylist())
        except BaseException:
            self.discard_files(written)
            raise

    def stage(self, records: list[dict], session: object = None, *,
              defer_files: bool = False, normalized: bool = False) -> StagedArrays:
        """Write records for a catalog commit; references are ``<file>#<row>``.

        With ``defer_files`` the files are written by the returned ``write`` (which the
        caller runs before COMMIT, on any thread); otherwise before this returns.
        """
        plan, locations = self._plan(records, normalized)
        refs = {record["prediction_id"]: f"{name}#{row}"
                for record, (name, row) in zip(records, locations)}
        paths = [path for path, _, _ in plan]
        if not defer_files:
            self._write(plan)
            return StagedArrays(refs=refs, undo=lambda: self.discard_files(paths))
        return StagedArrays(refs=refs, undo=lambda: self.discard_files(paths),
                            write=lambda: self._write(plan))

    def discard_files(self, paths: list[Path]) -> None:
        """Remove files returned by :meth:`write_batch` (rollback of a failed commit)."""
        for path in paths:
            path.unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------
    def _index(self, dataset_name: str, refresh: bool = True) -> DatasetIndex:
        index = self._indexes.get(dataset_name)
        if index is None:
            index = DatasetIndex(self.root / dataset_dirname(dataset_name))
            self._indexes[dataset_name] = index
        if refresh:
            index.refresh()
        return index

    def _refresh_tombstones(self) -> set[str]:
        try:
            names = os.listdir(self._tomb_dir)
        except FileNotFoundError:
            return self._tombstones
        for name in names:
            if name.endswith(".txt") and name not in self._tomb_files:
                try:
                    text = (self._tomb_dir / name).read_text()
                except FileNotFoundError:
                    continue
                self._tombstones.update(line for line in text.splitlines() if line)
                self._tomb_files.add(name)
        return self._tombstones

    def load(self, prediction_id: str, dataset_name: str) -> dict | None:
        """Load arrays for a single prediction, or None if absent or deleted."""
        found = self.load_batch([prediction_id], dataset_name)
        return found[0] if found else None

    def load_batch(self, prediction_ids: list[str], dataset_name: str) -> list[dict]:
        """Load arrays for several predictions of one dataset, in the order asked.

        Ids that are absent or deleted are skipped. Each needed row group is read once.
        """
        dataset_dirname(dataset_name)  # InvalidInputError for a name no dataset can have
        with self._mutex:
            for attempt in range(3):
                try:
                    return self._load_batch(prediction_ids, dataset_name)
                except FileNotFoundError:  # a concurrent compaction replaced a file
                    self._indexes.pop(dataset_name, None)
            return self._load_batch(prediction_ids, dataset_name)

    def _load_batch(self, prediction_ids: list[str], dataset_name: str) -> list[dict]:
        # the index is refreshed (directory listed) only when an id is not found in it
        index = self._index(dataset_name, refresh=False)
        if any(index.locate(pid) is None for pid in prediction_ids):
            index.refresh()
        tombstones = self._refresh_tombstones()
        wanted: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
        for position, pid in enumerate(prediction_ids):
            if pid in tombstones:
                continue
            found = index.locate(pid)
            if found is None:
                continue
            name, row = found
            group, offset = index.row_group_of(name, row)
            wanted[(name, group)].append((position, offset))
        results: dict[int, dict] = {}
        for (name, group), members in wanted.items():
            table = index.parquet(name).read_row_group(group)
            records = rows_to_records(table, [offset for _, offset in members])
            for (position, _), record in zip(members, records):
                results[position] = record
        return [results[p] for p in sorted(results)]

    def load_at(self, prediction_id: str, dataset_name: str, file_name: str | None,
                row: int | None, *, arrays_only: bool = False) -> dict | None:
        """Load one prediction using a location hint from :meth:`write_batch`.

        Falls back to :meth:`load` when the hint is missing or stale (the file
        was compacted away), so the answer is always the same as ``load``.
        ``arrays_only`` reads just the id and array columns of the row group (a point
        read whose metadata comes from the catalog) and returns those keys.
        """
        dataset_dirname(dataset_name)
        if file_name is None or row is None:
            return self.load(prediction_id, dataset_name)
        with self._mutex:
            if prediction_id in self._refresh_tombstones():
                return None
            index = self._indexes.get(dataset_name)
            if index is None:
                index = DatasetIndex(self.root / dataset_dirname(dataset_name))
                self._indexes[dataset_name] = index  # filled lazily, on a miss
            try:
                group, offset = index.row_group_of(file_name, row)
                table = index.parquet(file_name).read_row_group(
                    group, columns=list(ARRAY_COLUMNS) if arrays_only else None, use_threads=False)
            except (FileNotFoundError, IndexError, OSError):
                return self.load(prediction_id, dataset_name)
            if offset >= table.num_rows or table.column("prediction_id")[offset].as_py() != prediction_id:
                return self.load(prediction_id, dataset_name)
            return row_arrays(table, offset) if arrays_only else rows_to_records(table, [offset])[0]

    def load_ref(self, prediction_id: str, dataset_name: str, ref: str | None, *,
                 arrays_only: bool = False) -> dict | None:
        """Load one prediction using the reference :meth:`stage` returned (or :meth:`load`).

        ``arrays_only``: only the id and array keys are needed (see :meth:`load_at`).
        """
        if ref and "#" in ref:
            name, _, row = ref.rpartition("#")
            if row.isdigit():
                return self.load_at(prediction_id, dataset_name, name, int(row), arrays_only=arrays_only)
        return self.load(prediction_id, dataset_name)

    def exists(self, prediction_id: str, dataset_name: str) -> bool:
        """True when arrays are stored (and not deleted) for the prediction."""
        return self.load(prediction_id, dataset_name) is not None

    def list_keys(self, dataset_name: str) -> list[str]:
        """Prediction ids with stored, not deleted, arrays in a dataset."""
        dataset_dirname(dataset_name)  # InvalidInputError for a name no dataset can have
        with self._mutex:
            tombstones = self._refresh_tombstones()
            return [i for i in dict.fromkeys(self.all_ids(dataset_name)) if i not in tombstones]

    def list_datasets(self) -> list[str]:
        """Return dataset names that have Parquet array files."""
        out = []
        for entry in sorted(os.listdir(self.root)):
            if entry == TOMBSTONE_DIR or entry.startswith("."):
                continue
            directory = self.root / entry
            if directory.is_dir() and DatasetIndex(directory).current_files():
                out.append(dataset_from_dirname(entry))
        return out

    def all_ids(self, dataset_name: str) -> list[str]:
        """Every prediction id with rows in a dataset's files (tombstoned ones included)."""
        dataset_dirname(dataset_name)  # InvalidInputError for a name no dataset can have
        with self._mutex:
            return self._index(dataset_name).all_ids()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per dataset: number of files, rows stored, rows tombstoned but not yet compacted.

        Files and rows come from the directory and Parquet footers; the id index is
        only built when there are tombstones to match.
        """
        with self._mutex:
            tombstones = self._refresh_tombstones()
            out: dict[str, dict[str, int]] = {}
            for dataset in self.list_datasets():
                index = self._index(dataset, refresh=bool(tombstones))
                files = index.current_files()
                out[dataset] = {
                    "files": len(files),
                    "rows": sum(index.file_rows(name) for name in files),
                    "tombstoned": index.contains(tombstones) if tombstones else 0,
                }
            return out

    # -- deleting -----------------------------------------------------------------
    def delete(self, prediction_ids: list[str]) -> None:
        """Mark predictions for deletion (tombstone). Apply with compact()."""
        ids = [p for p in prediction_ids if p]
        if not ids:
            return
        self._tomb_dir.mkdir(exist_ok=True)
        name = f"{uuid.uuid4().hex}.txt"
        write_atomic(self._tomb_dir / name, ("\n".join(ids) + "\n").encode("utf-8"))
        with self._mutex:
            self._tombstones.update(ids)
            self._tomb_files.add(name)

    @contextmanager
    def _compaction_lock(self, directory: Path) -> Iterator[None]:
        fd = os.open(directory / ".compact.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def compact(self, dataset_name: str | None = None) -> int:
        """Rewrite Parquet files, removing tombstoned rows. Returns rows removed.

        Each compacted dataset is left with exactly one file. Rows are streamed
        row group by row group, so memory stays bounded on large datasets.
        Concurrent writers are safe: files written during compaction are kept.
        """
        if dataset_name is not None:
            dataset_dirname(dataset_name)
        with self._mutex:
            tomb_files_at_start = set()
            if self._tomb_dir.exists():
                tomb_files_at_start = {n for n in os.listdir(self._tomb_dir) if n.endswith(".txt")}
            tombstones = set(self._refresh_tombstones())
            datasets = [dataset_name] if dataset_name is not None else self.list_datasets()
            removed = 0
            for dataset in datasets:
                removed += self._compact_one(dataset, tombstones)
            if dataset_name is None:
                for name in tomb_files_at_start:
                    (self._tomb_dir / name).unlink(missing_ok=True)
                self._tomb_files -= tomb_files_at_start
            return removed

    def _compact_one(self, dataset: str, tombstones: set[str]) -> int:
        directory = self.root / dataset_dirname(dataset)
        if not directory.is_dir():
            return 0
        with self._compaction_lock(directory):
            index = DatasetIndex(directory)
            files = index.current_files()
            if not files:
                return 0
            if len(files) == 1 and not index_has(index, files[0], tombstones):
                return 0
            name = new_data_name()
            removed = 0
            seen: set[str] = set()
            with atomic_path(directory / name) as tmp:
                with pq.ParquetWriter(tmp, SCHEMA, **WRITER_OPTIONS) as writer:
                    for file_name in reversed(files):  # newest first: newest copy of an id wins
                        handle = pq.ParquetFile(directory / file_name)
                        for group in range(handle.metadata.num_row_groups):
                            table = handle.read_row_group(group)
                            ids = table.column("prediction_id").to_pylist()
                            keep = [not (i in tombstones or i in seen) for i in ids]
                            removed += sum(1 for i, k in zip(ids, keep) if not k and i not in seen)
                            seen.update(ids)
                            if not all(keep):
                                table = table.filter(pa.array(keep))
                            if table.num_rows:
                                writer.write_table(table.cast(SCHEMA), row_group_size=ROW_GROUP_SIZE)
            for file_name in files:
                (directory / file_name).unlink(missing_ok=True)
            self._indexes.pop(dataset, None)
            return removed


def index_has(index: DatasetIndex, file_name: str, tombstones: set[str]) -> bool:
    """True when ``file_name`` holds a tombstoned id."""
    if not tombstones:
        return False
    ids = pq.read_table(index.directory / file_name, columns=["prediction_id"]).column(0).to_pylist()
    return any(i in tombstones for i in ids)
