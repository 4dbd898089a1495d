"""Column whitelists and value coercion for the catalog.

No text from a caller is ever spliced into SQL: identifiers a caller may name
(ranking metric, ``group_by``, filters) are checked against the sets below and
only the whitelisted identifier is used; values always travel as parameters.

Every value is also checked here against what its column can hold, at the call
that gives it, so a value the catalog cannot store is refused with
:class:`~n4a_store.errors.InvalidInputError` before it is buffered (and can
never make a later commit fail): integers must fit their column's width
(``INTEGER`` 32 bits, ``BIGINT`` 64 bits), text must be a ``str`` without NUL
characters or lone surrogates (which UTF-8 cannot encode), and JSON values may
only hold such strings and integers that fit in 64 bits.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import date, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii
from pathlib import PurePath
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import InvalidInputError

PREDICTION_COLUMNS: tuple[str, ...] = (
    "prediction_id", "pipeline_id", "chain_id", "run_id", "dataset_name", "model_name",
    "model_class", "fold_id", "partition", "val_score", "test_score", "train_score", "metric",
    "task_type", "n_samples", "n_features", "scores", "best_params", "branch_id", "branch_name",
    "exclusion_count", "exclusion_rate", "preprocessings", "has_arrays", "created_at",
)

#: Numeric prediction columns that ``top_predictions`` may rank by.
RANKABLE_COLUMNS = frozenset({
    "val_score", "test_score", "train_score", "exclusion_rate", "exclusion_count",
    "n_samples", "n_features",
})

#: Prediction columns that ``top_predictions(group_by=...)`` may group on.
GROUPABLE_COLUMNS = frozenset({
    "dataset_name", "model_name", "model_class", "fold_id", "partition", "metric", "task_type",
    "branch_id", "branch_name", "preprocessings", "pipeline_id", "chain_id", "run_id",
})

#: Keyword filters accepted by ``query_predictions`` and ``export_predictions_parquet``.
PREDICTION_FILTERS = frozenset({
    "dataset_name", "model_class", "partition", "fold_id", "branch_id", "pipeline_id", "run_id",
    "model_name", "chain_id", "task_type", "metric",
})

#: Catalog columns holding JSON text, per table.
JSON_COLUMNS: dict[str, tuple[str, ...]] = {
    "runs": ("config", "datasets", "summary", "metadata"),
    "pipelines": ("expanded_config", "generator_choices"),
    "chains": ("steps", "fold_artifacts", "shared_artifacts", "branch_path"),
    "predictions": ("scores", "best_params"),
    "logs": ("details",),
}

LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})


def check_column(name: str, allowed: frozenset[str], what: str) -> str:
    """Return ``name`` if it is an allowed identifier, else raise InvalidInputError."""
    if not isinstance(name, str) or name not in allowed:
        raise InvalidInputError(
            f"unknown {what} {name!r}; expected one of: {', '.join(sorted(allowed))}"
        )
    return name


def finite_or_none(value: Any, field: str) -> float | None:
    """Coerce a score to float; NaN and +/-inf become None (stored as NULL, ranked last)."""
    if type(value) is float:  # the common case, without the coercion below
        return value if math.isfinite(value) else None
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{field} must be a number, got {value!r}") from exc
    return number if math.isfinite(number) else None


def int_or_none(value: Any, field: str, bits: int = 64) -> int | None:
    """Coerce to int or None, refusing floats with a fractional part and non-numbers.

    The result must fit a signed integer of ``bits`` bits (32 for ``INTEGER``
    columns, 64 for ``BIGINT``); anything larger raises InvalidInputError.
    """
    if type(value) is int and value.bit_length() < bits:
        return value  # the common case: |value| < 2**(bits-1) fits (-2**(bits-1) is checked below)
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{field} must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)) and float(value).is_integer():
        number = int(value)
    else:
        raise InvalidInputError(f"{field} must be an integer, got {_short(value)}")
    limit = 1 << (bits - 1)
    if not -limit <= number < limit:
        raise InvalidInputError(
            f"{field} must fit in a signed {bits}-bit integer "
            f"({-limit} to {limit - 1}), got {_short(number)}")
    return number


def _short(value: Any, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters, for error messages."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else f"{text[:width]}... ({len(text)} characters)"


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as catalog text, or None if it can."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"contains a lone surrogate {value[error.start]!r} at position {error.start}"
    return None


def text_or_none(value: Any, field: str) -> str | None:
    """Return ``value`` if it is None or a storable ``str``, else raise InvalidInputError.

    Storable text has no NUL character and no lone surrogate (``"\\ud800"``).
    Non-strings are refused rather than converted.
    """
    if type(value) is str and value.isascii() and "\x00" not in value:
        return value  # ASCII (checked in constant time) cannot hold a lone surrogate
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a string, got {type(value).__name__} {_short(value)}")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInputError(f"{field} {problem}; it cannot be stored")
    return value


#: ids are UUIDs or SHA-256 digests; anything longer than this cannot name a stored object
MAX_ID_CHARS = 256
#: integer-valued prediction filters; the others are text
_INT_FILTERS = frozenset({"branch_id"})


def check_id(value: Any, field: str) -> str:
    """An id argument: a storable string of at most :data:`MAX_ID_CHARS`, else InvalidInputError.

    A well-formed id that names nothing is not an error here (reads return None).
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a string id, got {type(value).__name__} {_short(value)}")
    text_or_none(value, field)
    if len(value) > MAX_ID_CHARS:
        raise InvalidInputError(
            f"{field} is {len(value)} characters long; ids have at most {MAX_ID_CHARS}")
    return value


def check_ids(values: Any, field: str) -> list[str]:
    """A list (or tuple) of ids, each checked by :func:`check_id`."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, set, frozenset)):
        raise InvalidInputError(f"{field} must be a list of string ids, got {type(values).__name__}")
    return [check_id(v, field) for v in values]


def filter_value(name: str, value: Any) -> Any:
    """A prediction filter's value, typed like its column (None: no filter), else InvalidInputError."""
    if value is None:
        return None
    if name in _INT_FILTERS:
        return int_or_none(value, name)
    if name == "fold_id" and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))  # fold ids given as integers are stored as text
    return text_or_none(value, name)


def check_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """Check a row buffered for ``table`` against its column types; return it.

    Text columns must hold storable text or None, integer columns integers
    that fit their width: the last line of defence that keeps an unstorable
    value from reaching (and failing) a commit.
    """
    texts, integers = _column_checks(table)
    for name in texts:
        if name in row:
            text_or_none(row[name], name)
    for name, bits in integers:
        if name in row:
            int_or_none(row[name], name, bits)
    return row


@functools.lru_cache(maxsize=None)
def _column_checks(table: str) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """(text columns, (integer column, bit width)) of a buffered table's schema."""
    from .pending import SCHEMAS  # pending imports pyarrow only; no cycle

    fields = list(SCHEMAS[table])
    return (tuple(f.name for f in fields if pa.types.is_string(f.type)),
            tuple((f.name, f.type.bit_width) for f in fields if pa.types.is_integer(f.type)))


#: Integers inside JSON values must lie in [JSON_INT_MIN, JSON_INT_MAX]: 64 bits,
#: signed or unsigned, which every JSON reader of the catalog (DuckDB, polars) holds.
JSON_INT_MIN = -(1 << 63)
JSON_INT_MAX = (1 << 64) - 1


def _finite_floats(values: list[Any]) -> bool:
    """True when every value is exactly a finite float (checked in C loops, no Python per value).

    A sum that overflows answers False too: the general path then checks each value.
    """
    if set(map(type, values)) != {float}:
        return False
    try:
        return math.isfinite(math.fsum(values))
    except OverflowError:  # huge values whose partial sums overflow
        return False


def _plain(obj: Any, field: str) -> Any:
    """``obj`` as plain JSON values (dict, list, str, int, float, bool, None), checked."""
    kind = type(obj)  # the exact types first: the same results, without the isinstance chain
    if kind is str:
        return _json_text(obj, field)
    if kind is float:
        return obj if math.isfinite(obj) else None
    if kind is dict:
        return {_json_text(str(k), field): _plain(v, field) for k, v in obj.items()}
    if kind is list:
        if len(obj) > 8 and _finite_floats(obj):  # a vector in a step's parameters
            return obj
        return [_plain(v, field) for v in obj]
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return _json_text(obj, field)
    if isinstance(obj, (int, np.integer)):
        number = int(obj)
        if not JSON_INT_MIN <= number <= JSON_INT_MAX:
            raise InvalidInputError(
                f"{field} holds the integer {_short(number)}, which does not fit in 64 bits")
        return number
    if isinstance(obj, (float, np.floating)):
        number = float(obj)
        return number if math.isfinite(number) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, dict):
        return {_json_text(str(k), field): _plain(v, field) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v, field) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_plain(v, field) for v in obj.tolist()]
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    raise InvalidInputError(
        f"{field} must be JSON-serialisable; found a value of type {type(obj).__name__}"
    )


def _json_text(text: str, field: str) -> str:
    if type(text) is str and text.isascii():
        return text  # ASCII holds no lone surrogate
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidInputError(
            f"{field} holds a string with a lone surrogate {text[error.start]!r}; "
            f"it cannot be stored") from None
    return text


def _scalar_json(value: Any) -> str | None:
    """JSON text of a float, 64-bit int, ASCII str, bool or None of exactly that type
    (as the encoder writes it after :func:`_plain`); None for any other value."""
    kind = type(value)
    if kind is float:
        return repr(value) if math.isfinite(value) else "null"
    if kind is int:
        return repr(value) if JSON_INT_MIN <= value <= JSON_INT_MAX else None
    if kind is str:
        return encode_basestring_ascii(value) if value.isascii() else None
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    return None


def _flat_json(obj: Any) -> str | None:
    """JSON text of a dict (ASCII ``str`` keys) or a list of :func:`_scalar_json` values,
    the usual scores, parameters and choices; None for anything else (left to the encoder)."""
    kind = type(obj)
    if kind is dict:
        parts = []
        for key, value in obj.items():
            if type(key) is not str or not key.isascii():
                return None
            text = _scalar_json(value)
            if text is None:
                return None
            parts.append(f"{encode_basestring_ascii(key)}:{text}")
        return "{" + ",".join(parts) + "}"
    if kind is list:
        parts = [_scalar_json(value) for value in obj]
        return None if None in parts else "[" + ",".join(parts) + "]"  # type: ignore[arg-type]
    return None


#: one encoder for every call (``json.dumps`` with options builds a new one each time)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _c_encoder() -> Any:
    """The C encoder ``_ENCODER.encode`` would build on each call, built once (None without it).

    No circular-reference markers: it only encodes :func:`_plain` output, a fresh tree.
    """
    if c_make_encoder is None:
        return None
    try:
        return c_make_encoder(None, _ENCODER.default, encode_basestring_ascii, None,
                              _ENCODER.key_separator, _ENCODER.item_separator,
                              False, False, True)
    except TypeError:  # another signature: use the encoder's own path
        return None


_C_ENCODE = _c_encoder()


def _encode(plain: Any) -> str:
    """JSON text of :func:`_plain` output, as ``_ENCODER.encode`` writes it."""
    if _C_ENCODE is None:
        return _ENCODER.encode(plain)
    return "".join(_C_ENCODE(plain, 0))


def to_json(obj: Any, field: str) -> str | None:
    """Serialise to JSON text; numpy scalars become numbers, non-finite floats become null.

    Refused with InvalidInputError: values that are not JSON-like, strings (values
    or keys) holding a lone surrogate, integers beyond 64 bits, and structures
    nested too deeply (or containing themselves).
    """
    if obj is None:
        return None
    text = _flat_json(obj)
    if text is not None:
        return text
    try:
        return _encode(_plain(obj, field))
    except RecursionError:
        raise InvalidInputError(f"{field} is nested too deeply (or contains itself)") from None


def from_json(text: str | None) -> Any:
    """Parse JSON text stored by :func:`to_json` (None stays None)."""
    return None if text is None else json.loads(text)


def decode_json_columns(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A copy of a catalog row of ``table`` with its JSON-text columns decoded."""
    out = dict(row)
    for key in JSON_COLUMNS.get(table, ()):
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out
