"""Conversion between prediction-array records and Arrow tables.

Numeric ``y_true``/``y_pred`` are stored as ``list<double>``; label arrays
(strings, e.g. class names) go to ``y_true_labels``/``y_pred_labels`` as
``list<string>``. ``y_proba`` is stored flattened with its column count, so its
2-D shape comes back exactly.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa

from ..columnar import transpose
from ..errors import InvalidInputError
from .layout import dataset_dirname

#: Longest prediction id an array record may carry.
MAX_ID_CHARS = 256

META_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("prediction_id", pa.string()),
    ("dataset_name", pa.string()),
    ("model_name", pa.string()),
    ("fold_id", pa.string()),
    ("partition", pa.string()),
    ("metric", pa.string()),
    ("task_type", pa.string()),
    ("val_score", pa.float64()),
)

SCHEMA = pa.schema(
    [pa.field(name, dtype) for name, dtype in META_FIELDS]
    + [
        pa.field("y_true", pa.list_(pa.float64())),
        pa.field("y_pred", pa.list_(pa.float64())),
        pa.field("y_true_labels", pa.list_(pa.string())),
        pa.field("y_pred_labels", pa.list_(pa.string())),
        pa.field("y_proba", pa.list_(pa.float64())),
        pa.field("y_proba_cols", pa.int32()),
        pa.field("sample_indices", pa.list_(pa.int64())),
        pa.field("weights", pa.list_(pa.float64())),
    ]
)

ARRAY_KEYS = ("y_true", "y_pred", "y_proba", "sample_indices", "weights")

#: The columns a point read of one prediction's arrays needs: its id (to check the row)
#: and the array columns; the metadata columns are the catalog's to answer.
ARRAY_COLUMNS = ("prediction_id", "y_true", "y_pred", "y_true_labels", "y_pred_labels",
                 "y_proba", "y_proba_cols", "sample_indices", "weights")

#: Parquet writer settings: dictionary encoding and statistics only on the metadata
#: columns; on the float/int list columns they cost ~3.5x on the write and ~20% in size
#: and no reader uses them (rows are found through the id index).
WRITER_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": [name for name, _ in META_FIELDS],
    "write_statistics": ["prediction_id"],
}


def _as_1d(value: Any, key: str, pid: str) -> np.ndarray:
    """``value`` as a 1-D numpy array (an ndarray itself, as ``np.asarray`` would give it)."""
    if type(value) is np.ndarray:
        array = value
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:  # ragged lists, objects numpy cannot convert
            raise InvalidInputError(f"prediction {pid!r}: {key} is not an array: {exc}") from None
    if array.ndim != 1:
        raise InvalidInputError(
            f"prediction {pid!r}: {key} must be 1-D, got shape {array.shape}"
        )
    return array


_NUMERIC_KINDS = frozenset("biuf")


def _is_numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in _NUMERIC_KINDS


def _check_values(array: np.ndarray, key: str, pid: str) -> np.ndarray:
    """Refuse ``y_true``/``y_pred`` values that would be altered or fail when stored.

    Numeric arrays are kept; label arrays must hold strings (numpy ``str_`` or
    Python ``str`` objects) that UTF-8 can encode, since they are stored as text.
    """
    kind = array.dtype.kind
    if kind in "biuf":
        return array
    if kind == "O" and all(isinstance(v, str) for v in array.tolist()):
        labels = array.tolist()
    elif kind == "U":
        labels = array.tolist()
    else:
        raise InvalidInputError(
            f"prediction {pid!r}: {key} must hold numbers or string labels, got dtype {array.dtype}")
    try:
        "".join(labels).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"prediction {pid!r}: a label in {key} holds a lone surrogate; it cannot be stored") from None
    return array


def _check_meta(record: dict[str, Any], pid: str) -> None:
    """Metadata stored next to the arrays must be None or storable text (float for val_score)."""
    for name, dtype in META_FIELDS:
        value = record.get(name)
        if value is None or name == "prediction_id":
            continue
        if pa.types.is_string(dtype):
            if not isinstance(value, str):
                raise InvalidInputError(
                    f"prediction {pid!r}: {name} must be a string, got {type(value).__name__}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInputError(
                    f"prediction {pid!r}: {name} holds a lone surrogate; it cannot be stored") from None
        elif not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
            raise InvalidInputError(f"prediction {pid!r}: {name} must be a number, got {value!r}")


def _check_identity(record: dict[str, Any]) -> None:
    """The record's prediction id, dataset name and metadata fields are storable."""
    pid = record.get("prediction_id")
    if not isinstance(pid, str) or not pid or len(pid) > MAX_ID_CHARS \
            or any(c in pid for c in "\x00\r\n"):
        raise InvalidInputError(
            f"array record needs a prediction_id of 1-{MAX_ID_CHARS} characters without NUL "
            f"or line breaks, got {pid!r:.80}")
    try:
        pid.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("array record prediction_id holds a lone surrogate") from None
    dataset = record.get("dataset_name")
    if not isinstance(dataset, str) or not dataset:
        raise InvalidInputError(f"prediction {pid!r}: dataset_name must be a non-empty string")
    dataset_dirname(dataset)  # refuses names no directory can carry
    _check_meta(record, pid)


def normalize_record(record: dict[str, Any], *, checked_meta: bool = False) -> dict[str, Any]:
    """Validate one record and return it with numpy arrays; raise InvalidInputError on any problem.

    ``checked_meta`` is for callers that have already validated the id and the metadata
    fields (``save_prediction`` does, for the row it builds): only the arrays are checked.
    """
    if not isinstance(record, dict):
        raise InvalidInputError(f"an array record must be a dict, got {type(record).__name__}")
    if not checked_meta:
        _check_identity(record)
    pid = record["prediction_id"]
    y_true, y_pred = record.get("y_true"), record.get("y_pred")
    if y_true is None or y_pred is None:
        raise InvalidInputError(f"prediction {pid!r}: y_true and y_pred are both required")
    out = dict(record)
    y_true = _check_values(_as_1d(y_true, "y_true", pid), "y_true", pid)
    y_pred = _check_values(_as_1d(y_pred, "y_pred", pid), "y_pred", pid)
    n = len(y_true)
    if len(y_pred) != n:
        raise InvalidInputError(
            f"prediction {pid!r}: y_true has {n} values but y_pred has {len(y_pred)}"
        )
    out["y_true"], out["y_pred"] = y_true, y_pred
    proba = record.get("y_proba")
    if proba is not None:
        out["y_proba"] = _as_proba(proba, n, pid)
    for key, dtype in _OPTIONAL_1D:
        value = record.get(key)
        if value is not None:
            out[key] = _as_optional_1d(value, key, dtype, n, pid)
    return out


#: optional per-sample arrays of a record and the dtype each is stored as
_OPTIONAL_1D = (("sample_indices", np.int64), ("weights", np.float64))


def _as_proba(value: Any, n: int, pid: str) -> np.ndarray:
    """``y_proba`` as a float ``(n, n_classes)`` array (a 1-D one is one column)."""
    try:
        proba = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"prediction {pid!r}: y_proba must be numeric: {exc}") from None
    if proba.ndim == 1:
        proba = proba.reshape(-1, 1)
    if proba.ndim != 2 or proba.shape[0] != n:
        raise InvalidInputError(
            f"prediction {pid!r}: y_proba must have shape ({n}, n_classes), got {proba.shape}"
        )
    return proba


def _as_optional_1d(value: Any, key: str, dtype: Any, n: int, pid: str) -> np.ndarray:
    """``sample_indices`` or ``weights`` as ``n`` values of ``dtype``."""
    array = _as_1d(value, key, pid)
    if len(array) != n:
        raise InvalidInputError(
            f"prediction {pid!r}: {key} has {len(array)} values but y_true has {n}"
        )
    try:
        return array.astype(dtype, casting="same_kind" if key == "weights" else "unsafe")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"prediction {pid!r}: {key} must be numeric") from exc


def _list_column(values: Sequence[np.ndarray | None], dtype: pa.DataType) -> pa.Array:
    """A list column from one 1-D array (or None, a null) per row."""
    present = [v for v in values if v is not None]
    if not present:  # the usual case for optional arrays: no pass beyond this one
        return pa.nulls(len(values), type=pa.list_(dtype))
    complete = len(present) == len(values)
    sizes = map(len, present) if complete else (0 if v is None else len(v) for v in values)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(sizes, dtype=np.int64, count=len(values)), out=offsets[1:])
    if pa.types.is_string(dtype):
        flat = pa.array([str(x) for v in present for x in v.tolist()], type=pa.string())
    else:
        np_type = np.int64 if pa.types.is_integer(dtype) else np.float64
        flat = pa.array(np.concatenate(present, axis=None, dtype=np_type, casting="unsafe"), type=dtype)
    mask = None if complete else pa.array(
        np.fromiter((v is None for v in values), dtype=bool, count=len(values)))
    return pa.ListArray.from_arrays(pa.array(offsets), flat, type=pa.list_(dtype), mask=mask)


_ROW_PARTS = (*(name for name, _ in META_FIELDS), "y_true", "y_pred", "y_proba", "sample_indices",
              "weights")


def _targets(values: Sequence[np.ndarray]) -> tuple[list[np.ndarray | None] | Sequence[np.ndarray],
                                                     list[np.ndarray | None] | None]:
    """(numeric arrays, label arrays) of a target column, None where a row has the other kind."""
    if {v.dtype.kind for v in values} <= _NUMERIC_KINDS:  # a regression or numeric classes
        return values, None
    numeric = [v if _is_numeric(v) else None for v in values]
    return numeric, [None if number is not None else v for number, v in zip(numeric, values)]


def records_to_table(records: list[dict[str, Any]]) -> pa.Table:
    """Build an Arrow table (schema :data:`SCHEMA`) from normalised records.

    Each record is read once (:func:`transpose`); columns no record fills
    (probabilities, indices, weights, labels of a regression) are built as nulls
    without another pass over the records.
    """
    columns: dict[str, pa.Array] = {}
    parts = transpose(records, _ROW_PARTS)
    for (name, dtype), values in zip(META_FIELDS, parts):
        columns[name] = pa.array(values, type=dtype)
    y_true, y_pred, probas, indices, weights = parts[len(META_FIELDS):]
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        numeric, labels = _targets(values)
        columns[name] = _list_column(numeric, pa.float64())
        columns[f"{name}_labels"] = (pa.nulls(len(values), type=pa.list_(pa.string())) if labels is None
                                     else _list_column(labels, pa.string()))
    if any(p is not None for p in probas):
        columns["y_proba"] = _list_column([None if p is None else p.ravel() for p in probas], pa.float64())
        columns["y_proba_cols"] = pa.array([None if p is None else p.shape[1] for p in probas],
                                           type=pa.int32())
    else:
        columns["y_proba"] = pa.nulls(len(records), type=pa.list_(pa.float64()))
        columns["y_proba_cols"] = pa.nulls(len(records), type=pa.int32())
    columns["sample_indices"] = _list_column(indices, pa.int64())
    columns["weights"] = _list_column(weights, pa.float64())
    return pa.Table.from_arrays([columns[f.name] for f in SCHEMA], schema=SCHEMA)


class _ListColumn:
    """Fast row access to a list column: validity, offsets and values as numpy."""

    def __init__(self, column: pa.ChunkedArray | pa.Array, numpy_type: Any) -> None:
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        self.valid = array.is_valid().to_numpy(zero_copy_only=False)
        self.offsets = array.offsets.to_numpy()
        self.numpy_type = numpy_type
        if numpy_type is str:
            self.values = array.values
        else:
            self.values = array.values.to_numpy(zero_copy_only=False).astype(numpy_type, copy=False)

    def row(self, row: int) -> np.ndarray | None:
        if not self.valid[row]:
            return None
        start, stop = int(self.offsets[row]), int(self.offsets[row + 1])
        if self.numpy_type is str:
            return np.array(self.values.slice(start, stop - start).to_pylist(), dtype=object)
        return self.values[start:stop].copy()


#: (column, numpy type) of every list column a record's arrays come from
_LIST_TYPES: dict[str, Any] = {
    "y_true": np.float64, "y_pred": np.float64, "y_true_labels": str, "y_pred_labels": str,
    "y_proba": np.float64, "sample_indices": np.int64, "weights": np.float64,
}


def _arrays_of(cell: Callable[[str], np.ndarray | None], proba_cols: Callable[[], int]) -> dict[str, Any]:
    """A row's :data:`ARRAY_KEYS` from its list cells (labels stand in for numeric targets)."""
    y_true, y_pred, proba = cell("y_true"), cell("y_pred"), cell("y_proba")
    return {
        "y_true": y_true if y_true is not None else cell("y_true_labels"),
        "y_pred": y_pred if y_pred is not None else cell("y_pred_labels"),
        "y_proba": None if proba is None else proba.reshape(-1, proba_cols()),
        "sample_indices": cell("sample_indices"),
        "weights": cell("weights"),
    }


def rows_to_records(table: pa.Table, rows: Iterable[int]) -> list[dict[str, Any]]:
    """Extract records at ``rows`` of a table produced from :data:`SCHEMA`."""
    meta_lists = {name: table.column(name).to_pylist() for name, _ in META_FIELDS}
    lists = {name: _ListColumn(table.column(name), numpy_type) for name, numpy_type in _LIST_TYPES.items()}
    proba_cols = table.column("y_proba_cols").to_pylist()
    out: list[dict[str, Any]] = []
    for row in rows:
        record: dict[str, Any] = {name: meta_lists[name][row] for name, _ in META_FIELDS}
        record.update(_arrays_of(lambda name: lists[name].row(row), lambda: proba_cols[row]))
        out.append(record)
    return out


def _list_cell(table: pa.Table, name: str, row: int) -> np.ndarray | None:
    cell = table.column(name)[row]
    if not cell.is_valid:
        return None
    numpy_type = _LIST_TYPES[name]
    if numpy_type is str:
        return np.array(cell.values.to_pylist(), dtype=object)
    return cell.values.to_numpy(zero_copy_only=False).astype(numpy_type, copy=True)


def row_arrays(table: pa.Table, row: int) -> dict[str, Any]:
    """The arrays (:data:`ARRAY_KEYS`) and id of one row of a table holding :data:`ARRAY_COLUMNS`.

    The one-row counterpart of :func:`rows_to_records` for point reads: no column is
    converted whole, only the row's cells.
    """
    record: dict[str, Any] = {"prediction_id": table.column("prediction_id")[row].as_py()}
    record.update(_arrays_of(lambda name: _list_cell(table, name, row),
                             lambda: table.column("y_proba_cols")[row].as_py()))
    return record
