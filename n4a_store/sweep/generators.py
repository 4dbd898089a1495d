"""Generator keys that expand one pipeline config into a sweep.

Two keys are recognised anywhere in a pipeline (as a whole step, inside a
step's ``params``, inside a nested value, even inside another generator's
alternatives):

``{"_or_": [a, b, ...]}``
    One pipeline per alternative. As a whole step, an alternative may be a step
    dict, a list of step dicts (spliced into the pipeline in place) or ``null``
    (the step is left out).

``{"_range_": [start, stop, step]}``
    Numeric values ``start, start + step, ...`` up to and **including** ``stop``
    when it is reached exactly (``[2, 10, 2]`` gives 2, 4, 6, 8, 10). ``step``
    defaults to 1 (``[start, stop]``) and may be negative when
    ``stop < start``. Integers stay integers; float values are rounded to
    12 significant digits so ``[0.1, 0.3, 0.1]`` gives 0.1, 0.2, 0.3.

Every generator site multiplies the number of pipelines (cartesian product, in
document order, the first site varying slowest). A dict holding a generator key
must hold nothing else.

Expansion also records, per pipeline, which choice was made at each site: a
list of ``{"path", "generator", "index", "value"}`` dicts, ``path`` written like
``pipeline[1].params.n_components`` (alternatives of an ``_or_`` appear as
``..._or_[2]`` in the paths of generators nested in them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

OR_KEY = "_or_"
RANGE_KEY = "_range_"
GENERATOR_KEYS = (OR_KEY, RANGE_KEY)


class GeneratorError(ValueError):
    """A generator key is malformed; the message names where it is."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


def is_generator(node: Any) -> bool:
    """True when ``node`` is a dict holding a generator key."""
    return isinstance(node, dict) and any(key in node for key in GENERATOR_KEYS)


def range_values(spec: Any, path: str = "_range_") -> list[int | float]:
    """Return the values of a ``_range_`` spec (stop inclusive when reached exactly)."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"start", "stop", "step"}
        if unknown or "start" not in spec or "stop" not in spec:
            raise GeneratorError(path, "_range_ as a dict needs keys start, stop and optional step")
        spec = [spec["start"], spec["stop"], spec.get("step", 1)]
    if not isinstance(spec, list | tuple) or len(spec) not in (2, 3):
        raise GeneratorError(path, "_range_ must be [start, stop] or [start, stop, step]")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in spec):
        raise GeneratorError(path, f"_range_ values must be numbers, got {list(spec)!r}")
    start, stop = spec[0], spec[1]
    step = spec[2] if len(spec) == 3 else 1
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise GeneratorError(path, "_range_ values must be finite")
    if step == 0:
        raise GeneratorError(path, "_range_ step must not be 0")
    if (stop - start) * step < 0:
        raise GeneratorError(
            path, f"_range_ [{start}, {stop}, {step}] is empty: step points away from stop"
        )
    all_int = all(isinstance(v, int) for v in (start, stop, step))
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > 100_000:
        raise GeneratorError(path, f"_range_ gives {count} values (limit 100000)")
    if all_int:
        return [start + i * step for i in range(count)]
    return [float(f"{start + i * step:.12g}") for i in range(count)]


def validate_generators(node: Any, path: str) -> None:
    """Check every generator key under ``node``; raise :class:`GeneratorError` naming the path."""
    if isinstance(node, dict):
        if is_generator(node):
            keys = [k for k in GENERATOR_KEYS if k in node]
            if len(node) != 1:
                others = sorted(k for k in node if k != keys[0])
                raise GeneratorError(
                    path, f"a dict with {keys[0]!r} must hold nothing else (found also {others})"
                )
            key = keys[0]
            if key == OR_KEY:
                alternatives = node[OR_KEY]
                if not isinstance(alternatives, list) or not alternatives:
                    raise GeneratorError(path, "_or_ must be a non-empty list of alternatives")
                for i, alt in enumerate(alternatives):
                    validate_generators(alt, f"{path}._or_[{i}]")
            else:
                range_values(node[RANGE_KEY], path)
            return
        for key, value in node.items():
            validate_generators(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            validate_generators(value, f"{path}[{i}]")


def count_expansions(node: Any) -> int:
    """Number of concrete values ``node`` expands to, without building them."""
    if isinstance(node, dict):
        if OR_KEY in node and len(node) == 1:
            return sum(count_expansions(alt) for alt in node[OR_KEY])
        if RANGE_KEY in node and len(node) == 1:
            return len(range_values(node[RANGE_KEY]))
        return math.prod(count_expansions(v) for v in node.values())
    if isinstance(node, list):
        return math.prod(count_expansions(v) for v in node)
    return 1


Choice = dict[str, Any]


def iter_expansions(node: Any, path: str) -> Iterator[tuple[Any, list[Choice]]]:
    """Yield ``(concrete value, choices)`` for every expansion of ``node``, in document order."""
    if isinstance(node, dict) and len(node) == 1 and OR_KEY in node:
        for i, alternative in enumerate(node[OR_KEY]):
            for value, choices in iter_expansions(alternative, f"{path}._or_[{i}]"):
                choice = {"path": path, "generator": OR_KEY, "index": i, "value": value}
                yield value, [choice, *choices]
        return
    if isinstance(node, dict) and len(node) == 1 and RANGE_KEY in node:
        for i, value in enumerate(range_values(node[RANGE_KEY], path)):
            yield value, [{"path": path, "generator": RANGE_KEY, "index": i, "value": value}]
        return
    if isinstance(node, dict):
        keys = list(node)
        per_key = [list(iter_expansions(node[k], f"{path}.{k}")) for k in keys]
        for combo in itertools.product(*per_key):
            yield (
                {k: v for k, (v, _) in zip(keys, combo, strict=True)},
                [c for _, choices in combo for c in choices],
            )
        return
    if isinstance(node, list):
        per_item = [list(iter_expansions(v, f"{path}[{i}]")) for i, v in enumerate(node)]
        for combo in itertools.product(*per_item):
            yield [v for v, _ in combo], [c for _, choices in combo for c in choices]
        return
    yield node, []


def expand(node: Any, path: str = "config") -> list[tuple[Any, list[Choice]]]:
    """Validate and fully expand ``node``: a list of ``(concrete value, choices)``."""
    validate_generators(node, path)
    return list(iter_expansions(node, path))
