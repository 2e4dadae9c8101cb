"""Exact windowed aggregations at each label's own time (polars in, polars out, no I/O).

For a label (keys k, time t) and an aggregation over window w, the events counted are those
of entity k with ``t - w < event_ts <= t`` and, in knowledge mode with a created column,
``created_ts <= t``. Nothing is rounded to tiles or hops.

How, in two passes that are both linear after sorting:

1. *Fast path.* Events and label probes are merged into one timeline per entity, sorted by
   time (events before probes at equal times), and polars' sliding-window kernels
   (``rolling_*_by``, closed on the right: exactly ``(t - w, t]``) are read off at the
   probes. ``last`` carries the latest non-null value and its time forward.
   This is exact in event mode, and in knowledge mode for every label with no event
   "in flight" (``event_ts <= t < created_ts``) inside its window.
2. *Knowledge fix-up.* Labels that do have an in-flight event are found with two as-of
   joins (an interval-stabbing query, cost proportional to delayed events plus hits) and
   recomputed by brute force over their entity's events; usually a small fraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import polars as pl

from featurekit.core.definitions import Aggregation
from featurekit.kernels import aggindex

TimeUnit = Literal["us", "ns"]

_T = "__fk_t"
_IDX = "__fk_label_idx"
_E = "__fk_e"
_C = "__fk_c"
_POS = "__fk_pos"
_IS_LABEL = "__fk_is_label"
_RANK = "__fk_label_rank"


def aggregate(
    left: pl.DataFrame,
    height: int,
    events: pl.DataFrame,
    *,
    keys: Sequence[str],
    specs: Sequence[Aggregation],
    knowledge: bool,
    unit: TimeUnit,
) -> pl.DataFrame:
    """Aggregation columns aligned to the labels (``height`` rows, in label order).

    ``left`` holds the labels' keys, UTC time ``__fk_t`` and row index ``__fk_label_idx``
    (nulls dropped), sorted by (keys, time). ``events`` holds the keys, UTC event time
    ``__fk_e``, created time ``__fk_c`` (knowledge mode) and the aggregated columns, with
    null keys/times (and, in knowledge mode, null created times) already dropped.
    """
    keys = list(keys)
    events = events.with_row_index(_POS)
    in_flight = knowledge and _C in events.columns
    at_labels = None
    if aggindex.supported(specs, events.schema):
        times = pl.concat([events.get_column(_E), left.get_column(_T)])
        entities = events.select(keys).n_unique()
        axis = _Axis.fit(times, entities, keys, specs, unit)
        if axis.stride:
            at_labels = aggindex.aggregate_by_index(
                left,
                events,
                keys,
                specs,
                grain=axis.grain,
                start=axis.start,
                stride=axis.stride,
                knowledge=in_flight,
            )
    if at_labels is None:
        at_labels = _by_timeline(left, events, keys, specs, unit, in_flight)
    if in_flight:
        affected = at_labels.filter(pl.col(_FLIGHT))
        if affected.height:
            exact = _brute_force(
                left.join(affected.select(_IDX), on=_IDX, how="semi"), events, keys, specs
            )
            at_labels = pl.concat(
                [at_labels.filter(~pl.col(_FLIGHT)).select(_IDX, *(s.name for s in specs)), exact],
                how="vertical_relaxed",
            )
    dtypes = {c: events.schema[c] for c in {s.column for s in specs}}
    index_type = pl.get_index_type()
    position = pl.repeat(None, height, dtype=index_type, eager=True).scatter(
        at_labels[_IDX], pl.int_range(0, at_labels.height, dtype=index_type, eager=True)
    )
    values = at_labels.select(
        pl.col(s.name).cast(result_dtype(s.function, dtypes[s.column])) for s in specs
    )
    aligned = values.gather(position)  # every column in one (parallel) gather
    return aligned.with_columns(pl.col(s.name).fill_null(0) for s in specs if s.function == "count")


def _by_timeline(
    left: pl.DataFrame,
    events: pl.DataFrame,
    keys: list[str],
    specs: Sequence[Aggregation],
    unit: TimeUnit,
    in_flight: bool,
) -> pl.DataFrame:
    """Every aggregate with polars' sliding kernels over the merged, sorted timeline."""
    timeline = _timeline(left, events, keys, specs)
    entities = int(timeline.select(_entity_starts(keys).sum()).item())
    axis = _Axis.fit(timeline.get_column(_T), entities, keys, specs, unit)
    timeline = axis.add(timeline)
    # counts and sums are shared by every aggregate of one (column, window)
    counts = {(s.column, s.window): f"__fk_n{i}" for i, s in enumerate(specs)}
    sums = {
        (s.column, s.window): f"__fk_s{i}"
        for i, s in enumerate(specs)
        if s.function in ("sum", "mean", "stddev")
    }
    timeline = timeline.with_columns(
        *(
            axis.roll(pl.col(col).is_not_null().cast(pl.Int64), "sum", window).alias(name)
            for (col, window), name in counts.items()
        ),
        *(
            axis.roll(_summable(col, timeline.schema[col]), "sum", window).alias(name)
            for (col, window), name in sums.items()
        ),
    )
    timeline = timeline.with_columns(
        _aggregate_expr(s, axis, counts[(s.column, s.window)], sums.get((s.column, s.window)))
        for s in specs
    )
    if in_flight:
        timeline = timeline.with_columns(_in_flight(specs, axis).alias(_FLIGHT))
    wanted = [_IDX, *(s.name for s in specs), *([_FLIGHT] if in_flight else [])]
    return timeline.select(_IS_LABEL, *wanted).filter(pl.col(_IS_LABEL) == 1).drop(_IS_LABEL)


def result_dtype(function: str, dtype: pl.DataType) -> pl.DataType:
    """The dtype an aggregate has, whatever path computed it."""
    if function == "count":
        return pl.Int64()
    if function in ("mean", "stddev"):
        return pl.Float64()
    if function == "sum":
        return pl.Int64() if dtype.is_integer() or dtype == pl.Boolean else pl.Float64()
    return dtype


_FLIGHT = aggindex.FLIGHT
#: Above this, the shared integer axis would overflow; windows then slide per entity.
AXIS_LIMIT = 2**62
_AX = "__fk_axis"
_GRAINS = (86_400_000_000, 3_600_000_000, 60_000_000, 1_000_000, 1_000, 1)  # in microseconds


def _divides(physical: pl.Series, step: int) -> bool:
    """Whether ``step`` divides every value; a sample rules most steps out cheaply."""
    if not bool((physical.head(1_000) % step == 0).all()):
        return False
    return bool((physical % step == 0).all())


@dataclass(frozen=True)
class _Axis:
    """How windows slide over the merged timeline.

    Fast mode puts every entity on its own stretch of one integer axis,
    ``entity * stride + (t - t0) / grain``, with strides wider than any window, so one
    sliding-window pass over the whole column never mixes entities. When that would
    overflow 64 bits, windows slide per entity (``over``), which is exact but slower.
    """

    keys: tuple[str, ...]
    unit: TimeUnit
    grain: int  # axis step, in the time unit
    start: int  # t0, physical value in the time unit
    stride: int  # 0: per-entity mode
    lifetime: int  # window (in axis steps) that covers an entity's whole history

    @classmethod
    def fit(
        cls,
        times: pl.Series,
        entities: int,
        keys: list[str],
        specs: Sequence[Aggregation],
        unit: TimeUnit,
    ) -> _Axis:
        """The coarsest axis that is exact for these times and windows, if it fits 64 bits."""
        per_us = 1000 if unit == "ns" else 1
        physical = times.to_physical()
        low, high = physical.min(), physical.max()
        if not isinstance(low, int) or not isinstance(high, int):
            return cls(tuple(keys), unit, 1, 0, 0, 1)
        windows = [_physical(s.window, unit) for s in specs if s.window is not None]
        grain = 1
        for size in _GRAINS:
            step = size * per_us
            if all(w % step == 0 for w in windows) and _divides(physical, step):
                grain = step
                break
        span = (high - low) // grain
        widest = max(windows, default=0) // grain
        stride = max(span + widest, 2 * span) + 2
        if (entities + 1) * stride >= AXIS_LIMIT:
            return cls(tuple(keys), unit, grain, low, 0, span + 1)
        return cls(tuple(keys), unit, grain, low, stride, span + 1)

    def add(self, timeline: pl.DataFrame) -> pl.DataFrame:
        if not self.stride:
            return timeline
        entity = _entity_starts(list(self.keys)).cum_sum().cast(pl.Int64)
        offset = (pl.col(_T).to_physical() - self.start) // self.grain
        return timeline.with_columns((entity * self.stride + offset).alias(_AX))

    def size(self, window: timedelta | None) -> str:
        if window is None:
            return f"{self.lifetime}i"
        return f"{_physical(window, self.unit) // self.grain}i"

    def roll(self, expr: pl.Expr, how: str, window: timedelta | None) -> pl.Expr:
        """``expr`` aggregated over ``(t - window, t]`` of the same entity, at every row."""
        rolled: pl.Expr
        if self.stride:
            rolled = getattr(expr, f"rolling_{how}_by")(_AX, self.size(window))
            return rolled
        keys = list(self.keys)
        if window is None:
            if how == "sum":
                return expr.fill_null(0).cum_sum().over(keys)
            if how in ("min", "max"):
                rolled = getattr(expr, f"cum_{how}")().forward_fill().over(keys)
                return rolled
            raise ValueError(how)  # mean/std over a lifetime are built from sums
        size = f"{_physical(window, self.unit)}{'ns' if self.unit == 'ns' else 'us'}"
        rolled = getattr(expr, f"rolling_{how}_by")(_T, size).over(keys)
        return rolled

    def position(self) -> pl.Expr:
        """Where a row sits on the axis (for 'last': is the carried value still inside?)."""
        return pl.col(_AX) if self.stride else pl.col(_T).to_physical() // self.grain

    def carry(self, expr: pl.Expr) -> pl.Expr:
        """Forward-fill within the entity."""
        filled = expr.forward_fill()
        return filled if self.stride else filled.over(list(self.keys))


def _physical(window: timedelta, unit: TimeUnit) -> int:
    micros = int(window / timedelta(microseconds=1))
    return micros * 1000 if unit == "ns" else micros


def _entity_starts(keys: list[str]) -> pl.Expr:
    """True on the first row of each entity in a frame sorted by the keys."""
    changed = [pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys]
    return pl.any_horizontal(changed).fill_null(True)


def _timeline(
    left: pl.DataFrame, events: pl.DataFrame, keys: list[str], specs: Sequence[Aggregation]
) -> pl.DataFrame:
    """Events and label probes in one frame, sorted by (keys, time, events first, created)."""
    columns = sorted({s.column for s in specs} - set(keys))
    created = [_C] if _C in events.columns else []
    order = [*keys, _T, _IS_LABEL, *created, _POS]
    return pl.concat(
        [
            events.select(
                *keys,
                pl.col(_E).alias(_T),
                pl.lit(0, pl.Int8).alias(_IS_LABEL),
                *created,
                _POS,
                *columns,
            ),
            left.select(*keys, _T, pl.lit(1, pl.Int8).alias(_IS_LABEL), _IDX),
        ],
        how="diagonal_relaxed",
    ).sort(order, nulls_last=True)


def _summable(column: str, dtype: pl.DataType) -> pl.Expr:
    """The column ready to sum: integers exactly as Int64, the rest as Float64; nulls as 0."""
    target = pl.Int64 if dtype.is_integer() or dtype == pl.Boolean else pl.Float64
    return pl.col(column).cast(target).fill_null(0)


def _aggregate_expr(
    spec: Aggregation, axis: _Axis, count_column: str, sum_column: str | None
) -> pl.Expr:
    """One aggregation over the merged timeline, read at every row."""
    col = pl.col(spec.column)
    count = pl.col(count_column)
    if spec.function == "count":
        return count.alias(spec.name)
    if spec.function == "sum":
        value = pl.col(sum_column or "")
    elif spec.function in ("min", "max"):
        value = axis.roll(col, spec.function, spec.window)
    elif spec.function in ("mean", "stddev"):
        x = col.cast(pl.Float64)
        total = pl.col(sum_column or "").cast(pl.Float64)
        if spec.function == "mean":
            value = total / count
        elif spec.window is not None:
            value = axis.roll(x, "std", spec.window)
        else:  # lifetime: from running sums of x and x squared
            # around the entity's first value: the variance does not move, and the squares
            # stay small enough that subtracting them does not cancel every digit (values
            # near 2**32 lost a difference of 1 entirely)
            shifted = x - x.drop_nulls().first().over(list(axis.keys))
            shifted_total = axis.roll(shifted.fill_null(0), "sum", None)
            squares = axis.roll((shifted * shifted).fill_null(0), "sum", None)
            spread = squares - shifted_total * shifted_total / count
            value = (spread / (count - 1)).clip(lower_bound=0).sqrt()
        if spec.function == "stddev":
            value = pl.when(count > 1).then(value)
    else:  # last: the latest non-null value, if its event is still inside the window
        seen = axis.carry(pl.when(col.is_not_null()).then(axis.position()))
        reach = axis.lifetime if spec.window is None else int(axis.size(spec.window)[:-1])
        value = pl.when(seen > axis.position() - reach).then(axis.carry(col))
    return pl.when(count > 0).then(value).alias(spec.name)


def _in_flight(specs: Sequence[Aggregation], axis: _Axis) -> pl.Expr:
    """At each label: is an event inside its widest window still unknown at t?"""
    windows = [s.window for s in specs]
    widest = None if any(w is None for w in windows) else max(w for w in windows if w)
    created = pl.col(_C).to_physical()
    latest = axis.roll(created, "max", widest)
    return latest.fill_null(-(2**62)) > pl.col(_T).to_physical()


def _brute_force(
    affected: pl.DataFrame, events: pl.DataFrame, keys: list[str], specs: Sequence[Aggregation]
) -> pl.DataFrame:
    """Every aggregation for a few labels, straight from the definition."""
    windows = [s.window for s in specs]
    widest = None if any(w is None for w in windows) else max(w for w in windows if w)
    pairs = affected.select(*keys, _T, _IDX).join(events, on=keys, how="inner")
    condition = (pl.col(_E) <= pl.col(_T)) & (pl.col(_C) <= pl.col(_T))
    if widest is not None:
        condition = condition & (pl.col(_E) > pl.col(_T) - widest)
    pairs = pairs.filter(condition).sort(_IDX, _E, _C, _POS)
    aggs = []
    for s in specs:
        inside = pl.lit(True) if s.window is None else pl.col(_E) > pl.col(_T) - s.window
        col = pl.col(s.column).filter(inside & pl.col(s.column).is_not_null())
        agg = {
            "count": col.count().cast(pl.Int64),
            # polars sums UInt32 in UInt32 (wrapping); sum in the result dtype instead
            "sum": col.cast(result_dtype("sum", events.schema[s.column])).sum(),
            "mean": col.cast(pl.Float64).mean(),
            "min": col.min(),
            "max": col.max(),
            "last": col.last(),
            "stddev": col.cast(pl.Float64).std(),
        }[s.function]
        if s.function != "count":
            agg = pl.when(col.count() > 0).then(agg)
        aggs.append(agg.alias(s.name))
    found = pairs.group_by(_IDX).agg(aggs)
    return affected.select(_IDX).join(found, on=_IDX, how="left")
