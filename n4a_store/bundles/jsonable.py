"""Plain JSON/YAML values from catalog rows and configs (datetimes, numpy values, NaN)."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any


def json_ready(value: Any, *, nan_to_none: bool = True) -> Any:
    """Convert datetimes, numpy scalars/arrays and tuples to plain JSON/YAML values.

    With ``nan_to_none`` (default) NaN and infinities become ``None``; otherwise they are
    kept, so that a strict ``json.dumps(..., allow_nan=False)`` refuses them.
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v, nan_to_none=nan_to_none) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v, nan_to_none=nan_to_none) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float):
        return None if nan_to_none and not math.isfinite(value) else value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return json_ready(item(), nan_to_none=nan_to_none)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return json_ready(tolist(), nan_to_none=nan_to_none)
    return value
