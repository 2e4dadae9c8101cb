"""Brute-force oracle for windowed aggregations, shared by property and integration tests."""

from __future__ import annotations

import math
import statistics
from datetime import datetime
from typing import Any

from featurekit.core.definitions import Aggregation

EARLIEST = datetime(1, 1, 1)  # naive, like the test data: sorts before any created time


def oracle(
    labels: list[tuple[Any, Any]],
    events: list[tuple[Any, Any, Any, Any]],
    spec: Aggregation,
    knowledge: bool,
) -> list[Any]:
    """Plain loops over the definition: (t - w, t], known by t, nulls ignored."""
    out = []
    for key, t in labels:
        if key is None or t is None:
            out.append(0 if spec.function == "count" else None)
            continue
        chosen = []
        for pos, (k, e, c, v) in enumerate(events):
            if k != key or e is None or e > t or v is None:
                continue
            if spec.window is not None and e <= t - spec.window:
                continue
            if knowledge and (c is None or c > t):
                continue
            chosen.append(((e, c if c is not None else EARLIEST, pos), v))
        values = [v for _, v in chosen]
        if spec.function == "count":
            out.append(len(values))
        elif not values:
            out.append(None)
        elif spec.function == "sum":
            out.append(sum(values))
        elif spec.function == "mean":
            out.append(sum(values) / len(values))
        elif spec.function == "min":
            out.append(min(values))
        elif spec.function == "max":
            out.append(max(values))
        elif spec.function == "last":
            out.append(max(chosen, key=lambda item: item[0])[1])
        else:
            out.append(statistics.stdev(values) if len(values) > 1 else None)
    return out


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)
