"""The fast paths of the write calls give what the general paths give.

``to_json`` writes flat dicts and lists itself and encodes everything else with one
C encoder built at import; ``new_id`` hands out ids made a batch at a time; ``now``
reads the clock without a time-zone round trip; ``prediction_row`` checks its
usual texts in one pass. Each must agree with the slower path it stands in for,
and refuse bad input with the same error.
"""

from __future__ import annotations

import json
import math
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from n4a_store import InvalidInputError
from n4a_store.catalog import columns
from n4a_store.catalog.columns import int_or_none, to_json
from n4a_store.workspace import writes


def _reference(obj: Any) -> Any:
    """What the catalog stores for the values generated below, built independently."""
    if isinstance(obj, dict):
        return {str(k): _reference(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_reference(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.floats(), st.integers(-(1 << 63), (1 << 64) - 1), _TEXT,
    st.floats(width=32).map(np.float32), st.integers(-(1 << 63), (1 << 63) - 1).map(np.int64),
    st.booleans().map(np.bool_), st.sampled_from(["a\"b", "back\\slash", "line\nbreak", "\x01"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=12,
)
_FLAT = st.one_of(st.dictionaries(_TEXT, _SCALARS, max_size=6), st.lists(_SCALARS, max_size=6))


def _dumps(obj: Any, given: Any = ...) -> str | None:
    """The text stored for ``obj``, the JSON form of ``given`` (by default ``obj`` itself).

    Only an absent value (``given`` None) stays None: a non-finite float given alone
    is stored as the text ``null``.
    """
    given = obj if given is ... else given
    return None if given is None else json.dumps(obj, separators=(",", ":"))


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_to_json_agrees_with_the_encoder(obj: Any) -> None:
    text = to_json(obj, "value")
    assert text == _dumps(columns._plain(obj, "value"), obj) == _dumps(_reference(obj), obj)
    if obj is not None:
        assert text == columns._ENCODER.encode(columns._plain(obj, "value"))


@settings(max_examples=400, deadline=None)
@given(_FLAT)
def test_flat_fast_path_agrees_with_the_general_path(obj: Any) -> None:
    fast = columns._flat_json(obj)
    if fast is not None:
        assert fast == columns._ENCODER.encode(columns._plain(obj, "value"))
    assert to_json(obj, "value") == _dumps(_reference(obj), obj)


@settings(max_examples=200, deadline=None)
@given(_VALUES)
def test_pure_encoder_fallback_agrees(obj: Any) -> None:
    plain = columns._plain(obj, "value")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(columns, "_C_ENCODE", None)
        assert columns._encode(plain) == columns._ENCODER.encode(plain)
        assert to_json(obj, "value") == _dumps(_reference(obj), obj)


@pytest.mark.parametrize("obj, text", [
    ({"rmse": 0.5}, '{"rmse":0.5}'),
    ({}, "{}"), ([], "[]"), ((), "[]"),
    ({"a": float("nan"), "b": float("inf"), "c": -float("inf")}, '{"a":null,"b":null,"c":null}'),
    ({"n": np.int64(3), "x": np.float32(0.5), "t": np.bool_(True)}, '{"n":3,"x":0.5,"t":true}'),
    ({"q\"k": "v\\", "none": None, "f": False}, '{"q\\"k":"v\\\\","none":null,"f":false}'),
    ({"big": (1 << 64) - 1, "small": -(1 << 63)},
     '{"big":18446744073709551615,"small":-9223372036854775808}'),
    ({"naïve": "模型"}, '{"na\\u00efve":"\\u6a21\\u578b"}'),
    ([1, 2.5, None, "x", True], '[1,2.5,null,"x",true]'),
    ({"a": [1, {"b": (2, 3)}]}, '{"a":[1,{"b":[2,3]}]}'),
    ("text", '"text"'), (1.5, "1.5"), (float("nan"), "null"), (True, "true"),
    (None, None),
])
def test_to_json_known_texts(obj: Any, text: str | None) -> None:
    assert to_json(obj, "value") == text


@pytest.mark.parametrize("obj, message", [
    ({"x": 1 << 64}, "value holds the integer 18446744073709551616, which does not fit in 64 bits"),
    ([-(1 << 63) - 1], "value holds the integer -9223372036854775809, which does not fit in 64 bits"),
    ({"x": "\ud800"}, "value holds a string with a lone surrogate '\\ud800'; it cannot be stored"),
    ({"\udfff": 1}, "value holds a string with a lone surrogate '\\udfff'; it cannot be stored"),
    ([object()], "value must be JSON-serialisable; found a value of type object"),
])
def test_to_json_refusals(obj: Any, message: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        to_json(obj, "value")
    assert str(error.value) == message


def test_to_json_refuses_deep_and_circular_structures() -> None:
    loop: list[Any] = []
    loop.append(loop)
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    for obj in (loop, deep):
        with pytest.raises(InvalidInputError, match="nested too deeply"):
            to_json(obj, "value")
    assert to_json([[[1]]], "value") == "[[[1]]]"  # the encoder is still usable after


@pytest.mark.parametrize("bits", [32, 64])
def test_int_or_none_bounds(bits: int) -> None:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    for value in (0, -1, 1, low, high, low + 1, high - 1):
        assert int_or_none(value, "n", bits) == value
    for value in (low - 1, high + 1):
        with pytest.raises(InvalidInputError, match=f"n must fit in a signed {bits}-bit integer"):
            int_or_none(value, "n", bits)
    with pytest.raises(InvalidInputError, match="n must be an integer, got True"):
        int_or_none(True, "n", bits)


def test_new_ids_are_unique_v4_across_batches_and_threads() -> None:
    seen: list[list[str]] = []

    def draw() -> None:
        seen.append([writes.new_id() for _ in range(3 * writes.ID_BATCH)])

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for batch in seen for i in batch]
    assert len(set(ids)) == len(ids) == 12 * writes.ID_BATCH
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_new_id_never_fails_when_threads_empty_the_pool_between_refill_and_pop(monkeypatch) -> None:
    """With a pool of one id and a tiny switch interval, threads race for every refill:
    each call still returns an id (none raises), and no id is handed out twice."""
    import sys

    monkeypatch.setattr(writes, "ID_BATCH", 1)
    interval = sys.getswitchinterval()
    errors: list[BaseException] = []
    seen: list[list[str]] = []

    def draw() -> None:
        try:
            seen.append([writes.new_id() for _ in range(20_000)])
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=draw) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    ids = [i for batch in seen for i in batch]
    assert len(set(ids)) == len(ids) == 80_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_its_own_ids() -> None:
    writes.new_id()  # the parent holds ids made ahead
    ahead = set(writes._IDS)
    assert ahead
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, ",".join(writes.new_id() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_ids = pipe.read().split(",")
    os.waitpid(child, 0)
    assert len(child_ids) == 5 and not ahead & set(child_ids)


def test_now_is_naive_utc_to_the_microsecond() -> None:
    before = datetime.now(timezone.utc).replace(tzinfo=None)
    stamp = writes.now()
    after = datetime.now(timezone.utc).replace(tzinfo=None)
    assert stamp.tzinfo is None and before <= stamp <= after
    assert after - before < timedelta(seconds=1)


def _prediction(**overrides: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    args: dict[str, Any] = dict(
        pipeline_id="p", chain_id="c", dataset_name="wheat", model_name="PLS",
        model_class="sklearn.PLSRegression", fold_id=0, partition="val", val_score=0.1,
        test_score=float("nan"), train_score=np.float32(0.25), metric="rmse",
        task_type="regression", n_samples=3, n_features=np.int64(4), scores={"rmse": 0.1},
        best_params={"n": [1, 2]}, branch_id=None, branch_name=None, exclusion_count=0,
        exclusion_rate=0.0, preprocessings="",
        arrays={"y_true": np.array([1.0, 2.0]), "y_pred": [1.0, 2.5], "y_proba": None,
                "sample_indices": None, "weights": None},
    )
    args.update(overrides)
    return writes.prediction_row(**args)


def test_prediction_row_values() -> None:
    row, record = _prediction()
    assert (row["fold_id"], row["test_score"], row["train_score"], row["n_features"]) == ("0", None, 0.25, 4)
    assert (row["scores"], row["best_params"], row["has_arrays"]) == ('{"rmse":0.1}', '{"n":[1,2]}', True)
    assert record is not None and record["y_pred"].tolist() == [1.0, 2.5]
    assert record["prediction_id"] == row["prediction_id"] and record["fold_id"] == "0"
    row, record = _prediction(model_name="naïve ✓ 模型", fold_id=np.int64(3),
                              arrays=dict.fromkeys(("y_true", "y_pred", "y_proba")))
    assert (row["model_name"], row["fold_id"], row["has_arrays"], record) == ("naïve ✓ 模型", "3", False, None)


@pytest.mark.parametrize("overrides, message", [
    ({"model_name": "a\x00b"}, "model_name contains a NUL character; it cannot be stored"),
    ({"metric": "\ud800"}, "metric contains a lone surrogate '\\ud800' at position 0; it cannot be stored"),
    ({"task_type": 3}, "task_type must be a string, got int 3"),
    ({"chain_id": b"c"}, "chain_id must be a string, got bytes b'c'"),
    ({"branch_name": "x", "preprocessings": 1.5, "model_class": None, "metric": 2},
     "preprocessings must be a string, got float 1.5"),
    ({"fold_id": True}, "fold_id must be a string or an integer, got bool"),
    ({"partition": "  "}, "partition must be a non-empty string, got '  '"),
    ({"n_samples": 1 << 63}, "n_samples must fit in a signed 64-bit integer"),
    ({"val_score": "high"}, "val_score must be a number, got 'high'"),
    ({"scores": {"x": 1 << 70}}, "scores holds the integer"),
])
def test_prediction_row_refusals(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        _prediction(**overrides)
    assert str(error.value).startswith(message)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(), st.floats(allow_nan=False, allow_infinity=False),
                          st.sampled_from([1e308, -1e308, 0.0, -0.0]), st.integers(-5, 5),
                          st.booleans(), st.none()), min_size=9, max_size=60))
def test_long_float_vectors_agree_with_the_general_path(values: list[Any]) -> None:
    """Vectors (a step's wavelengths, say) skip the per-value walk when every value is a
    finite float; anything else (NaN, inf, a sum that overflows, other types) takes the
    general path. Either way the text is what the reference gives."""
    floats_only = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 1.0
                   for v in values]
    for vector in (values, floats_only):
        assert to_json({"w": vector}, "value") == _dumps(_reference({"w": vector}))
        assert to_json(vector, "value") == _dumps(_reference(vector))
