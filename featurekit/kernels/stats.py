"""Per-feature statistics of a frame, mergeable across batches (pure, polars only).

What is computed, per feature column (``count`` is every row, null or not):

* numeric features (integers, floats, decimals): ``count``, ``nulls``, ``nans``, and over
  the *valid* values (neither null nor NaN): ``min``, ``max``, ``mean``, ``std`` (sample,
  ``ddof=1``), the quantiles ``p01 p05 p25 p50 p75 p95 p99`` (linear interpolation, as
  ``pl.Series.quantile(q, "linear")``), ``distinct`` and a histogram of
  :data:`HISTOGRAM_BINS` equal-width bins from ``min`` to ``max`` (edges
  ``min + i * (max - min) / bins``, the last one ``max``): bin ``i`` holds
  ``edges[i] <= x < edges[i + 1]``, the last bin also ``max``; when ``min == max``, one bin;
* categorical features (strings, categoricals, enums, booleans): ``count``, ``nulls``,
  ``distinct`` and the :data:`TOP_VALUES` most frequent values with their counts (ties:
  the smaller value first);
* anything else (datetimes, lists, structs): ``count`` and ``nulls``.

How: :func:`partial_stats` reads a frame once, in one lazy query (null and NaN counts,
plus each feature's valid values), and summarizes it as a :class:`StatsState` per
feature; states of batches merge (:meth:`StatsState.merge`) and :func:`finish` turns
them into :class:`FeatureStats`. :func:`compute_stats` is the in-memory case: one batch
whose summary keeps every value, so every statistic is exact.

Exact under batching vs approximate:

* always exact: ``count``, ``nulls``, ``nans``, ``min``, ``max``; ``mean`` and ``std``
  are exact up to float rounding (Chan's parallel update of count, mean and squared
  deviations);
* ``distinct`` is a K-minimum-values sketch of 64-bit hashes (K = :data:`DISTINCT_SKETCH`):
  exact below K distinct values, an estimate (relative error about ``1/sqrt(K)``) above,
  and *identical* whether the rows came in one batch or many (the K smallest hashes of a
  union are the K smallest of the parts' K smallest). Hashes are stable within one polars
  version, so compare estimates within one;
* quantiles and histogram counts come from a value summary of at most
  :data:`SKETCH_SIZE` points per feature: exact while a run holds at most that many
  valid values, otherwise within about ``count / SKETCH_SIZE`` ranks (histogram counts
  rounded to integers);
* top values keep the counts of at most :data:`TOP_SKETCH` distinct values per merge
  step: exact while a feature has at most that many distinct values, otherwise the
  counts of values cut from a batch are lost (frequent values stay frequent).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import polars as pl

from featurekit.core.errors import SchemaError

__all__ = [
    "DISTINCT_SKETCH",
    "HISTOGRAM_BINS",
    "QUANTILES",
    "SKETCH_SIZE",
    "TOP_SKETCH",
    "TOP_VALUES",
    "FeatureStats",
    "StatsKind",
    "StatsState",
    "compute_stats",
    "feature_kind",
    "finish",
    "merge_states",
    "partial_stats",
    "stats_frame",
]

StatsKind = Literal["numeric", "categorical", "other"]

#: Quantiles reported, with their column names.
QUANTILES: tuple[tuple[str, float], ...] = (
    ("p01", 0.01),
    ("p05", 0.05),
    ("p25", 0.25),
    ("p50", 0.50),
    ("p75", 0.75),
    ("p95", 0.95),
    ("p99", 0.99),
)
HISTOGRAM_BINS = 10
TOP_VALUES = 10
#: Values kept per numeric feature for quantiles and histograms under batching.
SKETCH_SIZE = 8192
#: Smallest hashes kept for the distinct estimate.
DISTINCT_SKETCH = 4096
#: Distinct categorical values whose counts a merge keeps.
TOP_SKETCH = 10_000
_HASH_SEED = 0x5EED
_HASH_SPACE = float(2**64)


def feature_kind(dtype: pl.DataType) -> StatsKind:
    """Which statistics a column of ``dtype`` gets (drift uses the same split)."""
    if dtype.is_numeric():
        return "numeric"
    if dtype in (pl.String, pl.Boolean) or isinstance(dtype, pl.Categorical | pl.Enum):
        return "categorical"
    return "other"


@dataclass(frozen=True, eq=False)
class StatsState:
    """Mergeable summary of one feature over the rows seen so far.

    Attributes:
        feature, kind, dtype: the column, its :func:`feature_kind` and dtype text.
        count, nulls, nans, valid: rows, nulls, NaNs, and the rest (the valid values).
        min, max, mean, m2: extremes, mean and sum of squared deviations of valid values.
        values, weights: the value summary (numeric); ``weights`` None: every value kept.
        hashes: the smallest distinct hashes of valid values (the distinct sketch).
        top: ``value``/``count`` of categorical values; ``top_exact``: nothing cut.
    """

    feature: str
    kind: StatsKind
    dtype: str
    count: int
    nulls: int
    nans: int = 0
    valid: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    m2: float = 0.0
    values: pl.Series | None = None
    weights: pl.Series | None = None
    hashes: pl.Series | None = None
    top: pl.DataFrame | None = None
    top_exact: bool = True

    def merge(self, other: StatsState, *, sketch_size: int | None = SKETCH_SIZE) -> StatsState:
        """The summary of both parts' rows (``sketch_size`` None: keep every value)."""
        if (self.feature, self.kind) != (other.feature, other.kind):
            raise SchemaError(
                f"statistics of {self.feature!r} ({self.kind}) cannot merge with those of "
                f"{other.feature!r} ({other.kind}): batches must share one schema."
            )
        merged = replace(
            self,
            count=self.count + other.count,
            nulls=self.nulls + other.nulls,
            nans=self.nans + other.nans,
            valid=self.valid + other.valid,
            min=_pick(self.min, other.min, lowest=True),
            max=_pick(self.max, other.max, lowest=False),
            hashes=_merge_hashes(self.hashes, other.hashes),
        )
        if self.kind == "numeric":
            mean, m2 = _chan(self.valid, self.mean, self.m2, other.valid, other.mean, other.m2)
            values, weights = _merge_summaries(self, other, sketch_size)
            merged = replace(merged, mean=mean, m2=m2, values=values, weights=weights)
        if self.kind == "categorical":
            top, exact = _merge_top(self.top, other.top)
            merged = replace(
                merged, top=top, top_exact=exact and self.top_exact and other.top_exact
            )
        return merged


@dataclass(frozen=True)
class FeatureStats:
    """Final statistics of one feature (see the module docstring for each field)."""

    feature: str
    kind: StatsKind
    dtype: str
    count: int
    nulls: int
    nans: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    quantiles: tuple[float | None, ...]
    distinct: int | None
    histogram_edges: tuple[float, ...]
    histogram_counts: tuple[int, ...]
    top_values: tuple[str, ...]
    top_counts: tuple[int, ...]


def partial_stats(
    frame: pl.DataFrame | pl.LazyFrame,
    features: Sequence[str] | None = None,
    *,
    sketch_size: int | None = SKETCH_SIZE,
) -> dict[str, StatsState]:
    """Summarize one batch, reading it once; ``sketch_size`` None keeps every value."""
    lazy = frame.lazy()
    schema = lazy.collect_schema()
    names = list(features) if features is not None else list(schema.names())
    missing = [n for n in names if n not in schema]
    if missing:
        raise SchemaError(
            f"statistics: features {missing} are not in the rows (columns: {schema.names()})."
        )
    exprs: list[pl.Expr] = [pl.len().alias("__fk_rows")]
    for i, name in enumerate(names):
        col, dtype = pl.col(name), schema[name]
        kind = feature_kind(dtype)
        exprs.append(col.null_count().alias(f"n{i}"))
        if kind == "numeric" and dtype.is_float():
            exprs.append(col.is_nan().sum().alias(f"nan{i}"))
            exprs.append(col.drop_nulls().drop_nans().implode().alias(f"v{i}"))
        elif kind == "numeric":
            exprs.append(pl.lit(0).alias(f"nan{i}"))
            exprs.append(col.drop_nulls().implode().alias(f"v{i}"))
        elif kind == "categorical":
            exprs.append(col.drop_nulls().cast(pl.String).implode().alias(f"v{i}"))
    row = lazy.select(exprs).collect()
    rows = int(row.item(0, "__fk_rows"))
    states = {}
    for i, name in enumerate(names):
        dtype = schema[name]
        kind = feature_kind(dtype)
        base = StatsState(name, kind, str(dtype), count=rows, nulls=int(row.item(0, f"n{i}")))
        if kind == "numeric":
            values = row.item(0, f"v{i}")
            base = _numeric_state(base, values, int(row.item(0, f"nan{i}")), sketch_size)
        elif kind == "categorical":
            base = _categorical_state(base, row.item(0, f"v{i}"))
        states[name] = base
    return states


def merge_states(
    left: Mapping[str, StatsState],
    right: Mapping[str, StatsState],
    *,
    sketch_size: int | None = SKETCH_SIZE,
) -> dict[str, StatsState]:
    """Merge two batches' summaries, feature by feature (features of either side kept)."""
    out = dict(left)
    for name, state in right.items():
        out[name] = out[name].merge(state, sketch_size=sketch_size) if name in out else state
    return out


def compute_stats(
    frame: pl.DataFrame | pl.LazyFrame, features: Sequence[str] | None = None
) -> tuple[FeatureStats, ...]:
    """Exact statistics of an in-memory frame (one read), one per feature.

    Example:
        >>> compute_stats(pl.DataFrame({"fare": [1.0, 2.0, None]}))[0].mean
        1.5
    """
    return finish(partial_stats(frame, features, sketch_size=None).values())


def finish(states: Iterable[StatsState]) -> tuple[FeatureStats, ...]:
    """Turn summaries into final statistics, in the order given."""
    return tuple(_finish(s) for s in states)


def stats_frame(stats: Iterable[FeatureStats]) -> pl.DataFrame:
    """One row per feature; columns as named in the module docstring."""
    rows = []
    for s in stats:
        row: dict[str, object] = {
            "feature": s.feature,
            "kind": s.kind,
            "dtype": s.dtype,
            "count": s.count,
            "nulls": s.nulls,
            "nans": s.nans,
            "min": s.min,
            "max": s.max,
            "mean": s.mean,
            "std": s.std,
        }
        row.update({label: q for (label, _), q in zip(QUANTILES, s.quantiles, strict=True)})
        row.update(
            distinct=s.distinct,
            histogram_edges=list(s.histogram_edges),
            histogram_counts=list(s.histogram_counts),
            top_values=list(s.top_values),
            top_counts=list(s.top_counts),
        )
        rows.append(row)
    return pl.DataFrame(rows, schema=_SCHEMA)


_COLUMNS: dict[str, pl.DataType] = {
    **{
        "feature": pl.String(),
        "kind": pl.String(),
        "dtype": pl.String(),
        "count": pl.Int64(),
        "nulls": pl.Int64(),
        "nans": pl.Int64(),
        "min": pl.Float64(),
        "max": pl.Float64(),
        "mean": pl.Float64(),
        "std": pl.Float64(),
    },
    **{label: pl.Float64() for label, _ in QUANTILES},
    "distinct": pl.Int64(),
    "histogram_edges": pl.List(pl.Float64),
    "histogram_counts": pl.List(pl.Int64),
    "top_values": pl.List(pl.String),
    "top_counts": pl.List(pl.Int64),
}
_SCHEMA = pl.Schema(_COLUMNS)


# ---- building states ----------------------------------------------------------------------
def _numeric_state(
    base: StatsState, raw: pl.Series, nans: int, sketch_size: int | None
) -> StatsState:
    values = raw.cast(pl.Float64)
    n = values.len()
    if n == 0:
        return replace(base, nans=nans, values=values, hashes=pl.Series([], dtype=pl.UInt64))
    mean = float(values.mean())  # type: ignore[arg-type]
    m2 = float(values.var(ddof=0)) * n  # type: ignore[arg-type]
    summary, weights = values, None
    if sketch_size is not None and n > sketch_size:
        # on one core: a run summarizes beside its Delta writer, and a parallel sort of
        # 10M values costs a fifth more CPU time (370 ms against 310) for it to share
        summary, weights = _compact(values.sort(multithreaded=False), None, sketch_size)
    # hash the values as stored, so large integers (ids) stay apart; for floats, + 0.0
    # makes -0.0 and 0.0 one value, as they compare equal
    hashes = _smallest((raw + 0.0 if raw.dtype.is_float() else raw).hash(_HASH_SEED))
    return replace(
        base,
        nans=nans,
        valid=n,
        min=float(values.min()),  # type: ignore[arg-type]
        max=float(values.max()),  # type: ignore[arg-type]
        mean=mean,
        m2=m2,
        values=summary,
        weights=weights,
        hashes=hashes,
    )


def _categorical_state(base: StatsState, values: pl.Series) -> StatsState:
    counts = values.value_counts(name="count").rename({values.name: "value"})
    top, exact = _cut_top(counts.cast({"count": pl.Int64}))
    return replace(
        base,
        valid=values.len(),
        hashes=_smallest(values.hash(_HASH_SEED)),
        top=top,
        top_exact=exact,
    )


def _smallest(hashes: pl.Series) -> pl.Series:
    """The :data:`DISTINCT_SKETCH` smallest distinct hashes, ascending.

    First from the smallest :data:`DISTINCT_SKETCH` hashes (a selection, not a sort of
    all): when they are distinct, they are the answer, as every hash below the largest of
    them is among them. Otherwise (values that repeat), from the unique hashes of all.
    Ten million distinct values: 14 ms, against 156 for the unique and sort of all.
    """
    if hashes.len() > DISTINCT_SKETCH:
        candidates = hashes.bottom_k(DISTINCT_SKETCH).unique()
        if candidates.len() == DISTINCT_SKETCH:
            return candidates.sort()
    return hashes.unique().sort().head(DISTINCT_SKETCH)


def _merge_hashes(a: pl.Series | None, b: pl.Series | None) -> pl.Series | None:
    if a is None or b is None:
        return a if b is None else b
    return _smallest(pl.concat([a, b]))


def _cut_top(counts: pl.DataFrame) -> tuple[pl.DataFrame, bool]:
    ordered = counts.sort(["count", "value"], descending=[True, False])
    return ordered.head(TOP_SKETCH), ordered.height <= TOP_SKETCH


def _merge_top(a: pl.DataFrame | None, b: pl.DataFrame | None) -> tuple[pl.DataFrame | None, bool]:
    if a is None or b is None:
        return (a if b is None else b), True
    summed = pl.concat([a, b]).group_by("value").agg(pl.col("count").sum())
    return _cut_top(summed)


def _pick(a: float | None, b: float | None, *, lowest: bool) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return min(a, b) if lowest else max(a, b)


def _chan(
    na: int, ma: float | None, m2a: float, nb: int, mb: float | None, m2b: float
) -> tuple[float | None, float]:
    """Chan et al.'s pairwise update: mean and squared deviations of the union, exactly."""
    if ma is None or nb == 0:
        return (mb, m2b) if ma is None else (ma, m2a)
    if mb is None:
        return ma, m2a
    n = na + nb
    delta = mb - ma
    return ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n


# ---- value summaries (quantiles and histograms) --------------------------------------------
def _compact(
    values: pl.Series, weights: pl.Series | None, size: int | None
) -> tuple[pl.Series, pl.Series | None]:
    """At most ``size`` points, each standing for an equal share of the total weight.

    ``values`` sorted ascending. Point i is the value at cumulative weight
    ``(i + 0.5) / size`` of the total, so every quantile moves by at most one share.
    """
    if size is None or values.len() <= size:
        return values, weights
    n = values.len()
    cumulative = None if weights is None else weights.cum_sum()
    total = float(n) if cumulative is None else float(cumulative[-1])
    targets = (pl.int_range(0, size, eager=True).cast(pl.Float64) + 0.5) * total / size
    if cumulative is None:  # each value weighs 1: the running count reaches t at ceil(t) - 1
        at = (targets.ceil() - 1).cast(pl.Int64).clip(0, n - 1)
    else:
        at = cumulative.search_sorted(targets, side="left").clip(0, n - 1)
    share = pl.repeat(total / size, size, dtype=pl.Float64, eager=True).alias("")
    return values.gather(at), share


def _merge_summaries(
    a: StatsState, b: StatsState, size: int | None
) -> tuple[pl.Series | None, pl.Series | None]:
    if a.values is None or b.values is None:
        return (a.values, a.weights) if b.values is None else (b.values, b.weights)
    values = pl.concat([a.values, b.values])
    if a.weights is None and b.weights is None and (size is None or values.len() <= size):
        return values, None
    weights = pl.concat([_weights_of(a.values, a.weights), _weights_of(b.values, b.weights)])
    order = values.arg_sort()
    return _compact(values.gather(order), weights.gather(order), size or values.len())


def _weights_of(values: pl.Series, weights: pl.Series | None) -> pl.Series:
    if weights is not None:
        return weights
    return pl.repeat(1.0, values.len(), dtype=pl.Float64, eager=True).alias("")


def _finish(s: StatsState) -> FeatureStats:
    quantiles: tuple[float | None, ...] = (None,) * len(QUANTILES)
    edges: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    std = None
    if s.kind == "numeric" and s.values is not None and s.valid:
        std = math.sqrt(s.m2 / (s.valid - 1)) if s.valid > 1 else None
        quantiles = _quantiles(s.values, s.weights)
        assert s.min is not None and s.max is not None
        edges, counts = _histogram(s.values, s.weights, s.min, s.max)
    top_values: tuple[str, ...] = ()
    top_counts: tuple[int, ...] = ()
    if s.top is not None:
        head = s.top.head(TOP_VALUES)
        top_values = tuple(head["value"].to_list())
        top_counts = tuple(int(c) for c in head["count"].to_list())
    return FeatureStats(
        feature=s.feature,
        kind=s.kind,
        dtype=s.dtype,
        count=s.count,
        nulls=s.nulls,
        nans=s.nans,
        min=s.min,
        max=s.max,
        mean=s.mean,
        std=std,
        quantiles=quantiles,
        distinct=_distinct(s.hashes) if s.kind != "other" else None,
        histogram_edges=edges,
        histogram_counts=counts,
        top_values=top_values,
        top_counts=top_counts,
    )


def _quantiles(values: pl.Series, weights: pl.Series | None) -> tuple[float | None, ...]:
    if weights is None:
        return tuple(values.quantile(q, "linear") for _, q in QUANTILES)
    cumulative = weights.cum_sum()
    total = float(cumulative[-1])
    out = []
    for _, q in QUANTILES:
        at = min(int(cumulative.search_sorted(q * total, side="left")), values.len() - 1)
        out.append(float(values[at]))
    return tuple(out)


def _histogram(
    values: pl.Series, weights: pl.Series | None, low: float, high: float
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    if high == low:
        total = values.len() if weights is None else round(float(weights.sum()))
        return (low, high), (total,)
    bins = HISTOGRAM_BINS
    width = (high - low) / bins
    edges = tuple([low + i * width for i in range(bins)] + [high])
    # by comparison with the edges, not by arithmetic: (x - low) / width rounds differently
    # in different engines, an edge comparison does not
    inner = pl.Series(edges[1:-1], dtype=pl.Float64)
    index = inner.search_sorted(values, side="right").cast(pl.Int64)
    frame = pl.DataFrame({"bin": index, "w": _weights_of(values, weights)})
    summed = frame.group_by("bin").agg(pl.col("w").sum())
    by_bin = dict(zip(summed["bin"].to_list(), summed["w"].to_list(), strict=True))
    return edges, tuple(round(by_bin.get(i, 0.0)) for i in range(bins))


def _distinct(hashes: pl.Series | None) -> int:
    if hashes is None or hashes.len() < DISTINCT_SKETCH:
        return 0 if hashes is None else hashes.len()
    kth = float(hashes[DISTINCT_SKETCH - 1]) + 1.0
    return round((DISTINCT_SKETCH - 1) * _HASH_SPACE / kth)
