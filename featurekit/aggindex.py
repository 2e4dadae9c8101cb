"""Windowed aggregates by index arithmetic over the sorted events (numpy, no I/O).

With events sorted by (entity, event time) on one integer axis (see
:mod:`featurekit.aggregate`), the events of a label's window ``(t - w, t]`` are a contiguous
index range ``(lo, hi]``, found by binary search. Then:

- count and sum are differences of prefix sums,
- mean is their ratio,
- min and max come from a sparse table (range extremes in O(1) per label),
- last is the latest non-null index at or before ``hi``, if it is after ``lo``,
- in knowledge mode, a sparse-table maximum of created times over the widest window flags
  the labels with an event "in flight", which the caller recomputes exactly.

Cost: O(events + labels × windows × log events), without sliding anything over the
labels-and-events timeline. ``stddev`` and min/max of non-numeric columns are left to the
timeline path, which computes them with polars' sliding kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from featurekit.frames import in_order

_IDX = "__fk_label_idx"
_T = "__fk_t"
_E = "__fk_e"
_C = "__fk_c"
_POS = "__fk_pos"
FLIGHT = "__fk_in_flight"

#: Set to False (tests do) to send every aggregation down the timeline path.
ENABLED = True


def supported(specs: Sequence[Any], schema: pl.Schema) -> bool:
    """Whether every aggregate can be computed here."""
    for spec in specs:
        dtype = schema[spec.column]
        if spec.function == "stddev":
            return False
        if spec.function in ("min", "max") and not (
            dtype.is_numeric() or dtype.is_temporal() or dtype == pl.Boolean
        ):
            return False
    return ENABLED


def aggregate_by_index(
    left: pl.DataFrame,
    events: pl.DataFrame,
    keys: list[str],
    specs: Sequence[Any],
    *,
    grain: int,
    start: int,
    stride: int,
    knowledge: bool,
) -> pl.DataFrame:
    """Aggregates at every label of ``left`` (columns: label index, one per spec, in-flight).

    ``grain``/``start``/``stride`` define the axis ``entity * stride + (t - start) // grain``
    (physical time units); the caller checked that it fits 64 bits.
    """
    order = [*keys, _E, *([_C] if _C in events.columns else []), _POS]
    if not in_order(events, order, strict=False):
        events = events.sort(order)
    first = _entity_starts(events, keys)
    entities = events.filter(first).select(keys).with_row_index("__fk_entity")
    starts = np.flatnonzero(first.to_numpy())
    entity_of_event = np.cumsum(first.to_numpy()) - 1
    ev_axis = (
        entity_of_event * stride + (events.get_column(_E).to_physical().to_numpy() - start) // grain
    )

    located = left.select(_IDX, _T, *keys).join(
        entities, on=keys, how="left", maintain_order="left"
    )
    known = located.filter(pl.col("__fk_entity").is_not_null())
    entity = known.get_column("__fk_entity").to_numpy().astype(np.int64)
    t_phys = known.get_column(_T).to_physical().to_numpy()
    lab_axis = entity * stride + (t_phys - start) // grain
    hi = np.searchsorted(ev_axis, lab_axis, side="right") - 1
    first_of_entity = starts[entity]

    bounds: dict[Any, np.ndarray] = {}
    for window in {s.window for s in specs} | ({_widest(specs)} if knowledge else set()):
        if window is None:
            lo = first_of_entity - 1
        else:
            reach = _physical_window(window, events.schema[_E]) // grain
            lo = np.searchsorted(ev_axis, lab_axis - reach, side="right") - 1
        bounds[window] = np.maximum(lo, first_of_entity - 1)
    columns: dict[str, pl.Series] = {_IDX: known.get_column(_IDX)}
    cache: dict[str, _Column] = {}
    for spec in specs:
        lo = bounds[spec.window]
        top = np.maximum(hi, lo)  # labels before their entity's first event: empty range
        if spec.column not in cache:
            cache[spec.column] = _Column(events.get_column(spec.column), entity_of_event)
        column = cache[spec.column]
        columns[spec.name] = column.aggregate(spec.function, lo, top, first_of_entity, spec.name)
    if knowledge and _C in events.columns:
        lo = bounds[_widest(specs)]
        top = np.maximum(hi, lo)
        created = events.get_column(_C).to_physical().to_numpy()
        table = _SparseTable(created, np.maximum, np.iinfo(np.int64).min)
        latest = table.query(lo, top)
        columns[FLIGHT] = pl.Series(FLIGHT, (top > lo) & (latest > t_phys))
    return pl.DataFrame(columns)


class _Column:
    """One aggregated column's arrays, built once and shared by all its aggregates."""

    def __init__(self, series: pl.Series, entity: np.ndarray) -> None:
        self.entity = entity
        self.dtype = series.dtype
        self.present = series.is_not_null().to_numpy()
        self.values = _values(series)
        self.count = _prefix(self.present.astype(np.int64))
        self._sums: np.ndarray | None = None
        self._tables: dict[str, _SparseTable] = {}
        self._latest: np.ndarray | None = None

    def aggregate(
        self, function: str, lo: np.ndarray, top: np.ndarray, first: np.ndarray, name: str
    ) -> pl.Series:
        n = self.count[top + 1] - self.count[lo + 1]
        empty = pl.Series(n == 0)
        if function == "count":
            return pl.Series(name, n)
        if function in ("sum", "mean"):
            sums = self.window_sums(lo, top, first)
            if function == "sum":
                return pl.Series(name, sums).set(empty, None)  # type: ignore[arg-type]
            with np.errstate(invalid="ignore", divide="ignore"):
                return pl.Series(name, sums / np.where(n == 0, 1, n)).set(empty, None)  # type: ignore[arg-type]
        if function in ("min", "max"):
            extreme = self.table(function).query(lo, top)
            return _typed(name, extreme, self.dtype).set(empty, None)  # type: ignore[arg-type]
        # last: the latest non-null event at or before the range's end (inside: n > 0)
        if self._latest is None:
            positions = np.arange(len(self.present))
            self._latest = np.maximum.accumulate(np.where(self.present, positions, -1))
        at = self._latest[np.maximum(top, 0)] if len(self.present) else np.zeros(len(top), int)
        picked = self.values[np.where(n > 0, at, 0)] if len(self.values) else at
        return _typed(name, picked, self.dtype).set(empty, None)  # type: ignore[arg-type]

    def window_sums(self, lo: np.ndarray, top: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Sums over ``(lo, top]``. Integers: exact differences of one prefix sum. Floats:
        prefix sums restart at every entity, so rounding stays relative to one entity's
        total, never to the whole table's."""
        integer = self.values.dtype.kind in "iub"
        if self._sums is None:
            kind = np.int64 if integer else np.float64
            summable = np.where(self.present, self.values.astype(kind), 0)
            if integer:
                self._sums = _prefix(summable)
            else:
                frame = pl.DataFrame({"entity": self.entity, "value": summable})
                running = frame.select(pl.col("value").cum_sum().over("entity")).to_series()
                self._sums = running.to_numpy()
        if integer:
            sums: np.ndarray = self._sums[top + 1] - self._sums[lo + 1]
            return sums
        upto = np.where(top >= 0, self._sums[np.maximum(top, 0)], 0.0)
        before = np.where(lo >= first, self._sums[np.maximum(lo, 0)], 0.0)
        return np.where(top > lo, upto - before, 0.0)

    def table(self, function: str) -> _SparseTable:
        if function not in self._tables:
            pick = np.minimum if function == "min" else np.maximum
            fill = _sentinel(self.values.dtype, function)
            self._tables[function] = _SparseTable(
                np.where(self.present, self.values, fill), pick, fill
            )
        return self._tables[function]


class _SparseTable:
    """Range extremes in O(1): level j holds the extreme of every run of 2**j values.

    Levels are built lazily, only as high as the longest range asked for.
    """

    def __init__(self, values: np.ndarray, pick: Any, fill: Any) -> None:
        self.levels = [values]
        self.pick = pick
        self.fill = fill

    def query(self, lo: np.ndarray, top: np.ndarray) -> np.ndarray:
        """The extreme of ``values[lo+1 : top+1]`` per row (``fill`` where empty)."""
        length = top - lo
        out = np.full(len(lo), self.fill, dtype=self.levels[0].dtype)
        valid = length > 0
        if not valid.any():
            return out
        level_of = np.zeros(len(lo), dtype=np.int64)
        level_of[valid] = np.floor(np.log2(length[valid])).astype(np.int64)
        while len(self.levels) <= int(level_of.max()):
            prev, step = self.levels[-1], 1 << (len(self.levels) - 1)
            self.levels.append(self.pick(prev[:-step], prev[step:]))
        for j in np.unique(level_of[valid]):
            rows = valid & (level_of == j)
            a = lo[rows] + 1
            b = top[rows] - (1 << int(j)) + 1
            out[rows] = self.pick(self.levels[j][a], self.levels[j][b])
        return out


def _entity_starts(frame: pl.DataFrame, keys: list[str]) -> pl.Series:
    changed = [pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys]
    return frame.select(pl.any_horizontal(changed).fill_null(True)).to_series()


def _values(series: pl.Series) -> np.ndarray:
    """Numeric (physical) values with nulls as 0; the mask of real values is kept apart."""
    physical = series.to_physical()
    if physical.dtype == pl.Boolean:
        physical = physical.cast(pl.Int8)
    return physical.fill_null(0).to_numpy()


def _typed(name: str, values: np.ndarray, dtype: pl.DataType) -> pl.Series:
    series = pl.Series(name, values)
    if dtype.is_temporal() or dtype == pl.Boolean:
        return series.cast(dtype)
    return series.cast(dtype) if series.dtype != dtype else series


def _prefix(values: np.ndarray) -> np.ndarray:
    """Prefix sums with a leading 0: ``p[j] - p[i]`` is the sum of ``values[i:j]``."""
    out = np.empty(len(values) + 1, dtype=values.dtype)
    out[0] = 0
    np.cumsum(values, out=out[1:])
    return out


def _sentinel(kind: np.dtype[Any], function: str) -> Any:
    if kind.kind == "f":
        return np.inf if function == "min" else -np.inf
    info = np.iinfo(kind)
    return info.max if function == "min" else info.min


def _widest(specs: Sequence[Any]) -> Any:
    windows = [s.window for s in specs]
    return None if any(w is None for w in windows) else max(windows)


def _physical_window(window: Any, dtype: pl.DataType) -> int:
    from datetime import timedelta

    micros = int(window / timedelta(microseconds=1))
    unit = getattr(dtype, "time_unit", "us")
    return micros * 1000 if unit == "ns" else micros
