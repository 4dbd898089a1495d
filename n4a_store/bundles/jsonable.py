"""Plain JSON/YAML values from catalog rows (datetimes, numpy scalars, NaN)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any


def json_ready(value: Any) -> Any:
    """Convert catalog values (datetimes, numpy scalars, NaN) to plain JSON/YAML values."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return json_ready(item())
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return json_ready(tolist())
    return value
