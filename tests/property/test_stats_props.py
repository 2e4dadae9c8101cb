"""Feature statistics equal a plain computation on the same rows, batched or not."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurekit.kernels.stats import (
    HISTOGRAM_BINS,
    QUANTILES,
    FeatureStats,
    compute_stats,
    finish,
    merge_states,
    partial_stats,
    stats_frame,
)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
floats = st.one_of(st.none(), st.just(math.nan), finite, st.sampled_from([0.0, -0.0, 1.5]))
ints = st.one_of(st.none(), st.integers(min_value=-50, max_value=50))
words = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "dd", "é", ""]))


@st.composite
def frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(min_value=0, max_value=60))
    return pl.DataFrame(
        {
            "fare": draw(st.lists(floats, min_size=n, max_size=n)),
            "trips": draw(st.lists(ints, min_size=n, max_size=n)),
            "city": draw(st.lists(words, min_size=n, max_size=n)),
        },
        schema={"fare": pl.Float64, "trips": pl.Int64, "city": pl.String},
    )


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def expected_numeric(values: list[float | None]) -> dict[str, object]:
    """Plain Python and polars on the valid values, independent of the module."""
    valid = [float(v) for v in values if v is not None and not math.isnan(v)]
    series = pl.Series(valid, dtype=pl.Float64)
    out: dict[str, object] = {
        "count": len(values),
        "nulls": sum(v is None for v in values),
        "nans": sum(v is not None and math.isnan(v) for v in values),
        "min": min(valid) if valid else None,
        "max": max(valid) if valid else None,
        "mean": series.mean() if valid else None,
        "std": series.std() if len(valid) > 1 else None,
        "quantiles": tuple(series.quantile(q, "linear") for _, q in QUANTILES)
        if valid
        else (None,) * len(QUANTILES),
        "distinct": len(set(valid)),
    }
    if valid:
        lo, hi = min(valid), max(valid)
        if lo == hi:
            out["histogram"] = ((lo, hi), (len(valid),))
        else:
            width = (hi - lo) / HISTOGRAM_BINS
            edges = [lo + i * width for i in range(HISTOGRAM_BINS)] + [hi]
            counts = [0] * HISTOGRAM_BINS
            for v in valid:
                counts[bisect.bisect_right(edges[1:-1], v)] += 1
            out["histogram"] = (tuple(edges), tuple(counts))
    else:
        out["histogram"] = ((), ())
    return out


def check_numeric(stats: FeatureStats, values: list[float | None]) -> None:
    want = expected_numeric(values)
    assert (stats.count, stats.nulls, stats.nans) == (want["count"], want["nulls"], want["nans"])
    assert (stats.min, stats.max) == (want["min"], want["max"])
    assert close(stats.mean, want["mean"])  # type: ignore[arg-type]
    assert close(stats.std, want["std"])  # type: ignore[arg-type]
    assert stats.quantiles == want["quantiles"]
    assert stats.distinct == want["distinct"]
    edges, counts = want["histogram"]  # type: ignore[misc]
    assert stats.histogram_edges == edges
    assert stats.histogram_counts == counts


@settings(max_examples=150, deadline=None)
@given(frames())
def test_stats_equal_a_plain_computation(frame: pl.DataFrame) -> None:
    fare, trips, city = compute_stats(frame)
    check_numeric(fare, frame["fare"].to_list())
    check_numeric(trips, frame["trips"].to_list())
    words_seen = [w for w in frame["city"].to_list() if w is not None]
    ranked = sorted(Counter(words_seen).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert city.kind == "categorical"
    assert (city.count, city.nulls, city.distinct) == (
        frame.height,
        frame["city"].null_count(),
        len(set(words_seen)),
    )
    assert list(zip(city.top_values, city.top_counts, strict=True)) == ranked
    assert city.mean is None and city.histogram_counts == ()


@settings(max_examples=150, deadline=None)
@given(frames(), st.lists(st.integers(min_value=0, max_value=60), max_size=5))
def test_batched_stats_equal_in_memory_stats(frame: pl.DataFrame, cuts: list[int]) -> None:
    bounds = sorted({0, frame.height, *(c for c in cuts if c < frame.height)})
    states = None
    for start, stop in itertools.pairwise(bounds):
        part = partial_stats(frame.slice(start, stop - start))
        states = part if states is None else merge_states(states, part)
    if states is None:
        states = partial_stats(frame)
    batched = finish(states.values())
    whole = compute_stats(frame)
    for b, w in zip(batched, whole, strict=True):
        assert (b.count, b.nulls, b.nans, b.min, b.max) == (w.count, w.nulls, w.nans, w.min, w.max)
        assert close(b.mean, w.mean) and close(b.std, w.std)
        # below the sketch sizes the rest is exact too
        assert (b.quantiles, b.distinct, b.histogram_edges, b.histogram_counts) == (
            w.quantiles,
            w.distinct,
            w.histogram_edges,
            w.histogram_counts,
        )
        assert (b.top_values, b.top_counts) == (w.top_values, w.top_counts)


def test_large_batched_quantiles_stay_within_the_sketch_rank_error() -> None:
    n, size = 20_000, 500
    values = [(i * 7919) % n / 10 for i in range(n)]  # a permutation of 0.0 .. 1999.9
    frame = pl.DataFrame({"x": values})
    states = None
    for start in range(0, n, 3_000):
        part = partial_stats(frame.slice(start, 3_000), sketch_size=size)
        states = part if states is None else merge_states(states, part, sketch_size=size)
    assert states is not None
    (approx,) = finish(states.values())
    (exact,) = compute_stats(frame)
    assert (approx.count, approx.min, approx.max) == (n, 0.0, 1999.9)
    assert approx.mean == pytest.approx(exact.mean, rel=1e-12)
    assert approx.std == pytest.approx(exact.std, rel=1e-12)
    rank_error = 2 * n / size  # values are 0.1 apart, so a rank is 0.1
    for a, e in zip(approx.quantiles, exact.quantiles, strict=True):
        assert a is not None and e is not None
        assert abs(a - e) <= rank_error * 0.1
    assert sum(approx.histogram_counts) == n
    for a, e in zip(approx.histogram_counts, exact.histogram_counts, strict=True):
        assert abs(a - e) <= rank_error
    assert approx.distinct == exact.distinct  # the distinct sketch merges exactly


def test_distinct_keeps_large_integers_apart_and_missing_features_are_named() -> None:
    from featurekit.core.errors import SchemaError

    ids = pl.DataFrame({"trip_id": [2**60, 2**60 + 1, 2**60 + 2]})
    assert compute_stats(ids)[0].distinct == 3  # as floats they would be one value
    with pytest.raises(SchemaError) as caught:
        compute_stats(ids, ["trip", "trip_id"])
    assert str(caught.value) == (
        "statistics: features ['trip'] are not in the rows (columns: ['trip_id'])."
    )


def test_stats_frame_schema_and_other_kinds() -> None:
    from datetime import datetime

    frame = pl.DataFrame({"ts": [datetime(2026, 1, 1), None], "flag": [True, None], "n": [3, 3]})
    table = stats_frame(compute_stats(frame))
    assert table["feature"].to_list() == ["ts", "flag", "n"]
    assert table["kind"].to_list() == ["other", "categorical", "numeric"]
    assert table.row(0, named=True)["nulls"] == 1
    assert table.row(0, named=True)["distinct"] is None
    n = table.row(2, named=True)
    assert (n["min"], n["max"], n["std"], n["p50"]) == (3.0, 3.0, 0.0, 3.0)
    assert (n["histogram_edges"], n["histogram_counts"]) == ([3.0, 3.0], [2])
    assert table.columns[:10] == [
        "feature", "kind", "dtype", "count", "nulls", "nans", "min", "max", "mean", "std",
    ]  # fmt: skip
    assert table.columns[10:] == [
        "p01", "p05", "p25", "p50", "p75", "p95", "p99", "distinct",
        "histogram_edges", "histogram_counts", "top_values", "top_counts",
    ]  # fmt: skip


def test_the_distinct_estimate_does_not_depend_on_how_often_values_repeat() -> None:
    # above the sketch's 4096 hashes: the smallest are found among the smallest few when
    # the values are distinct, and among all of them when repeats crowd the smallest few;
    # either way the sketch holds the same distinct hashes, so the same estimate
    values = [(i * 7919) % 50_000 / 8 for i in range(50_000)]
    once = pl.DataFrame({"x": values})
    thrice = pl.DataFrame({"x": values * 3})
    (a,), (b,) = compute_stats(once), compute_stats(thrice)
    assert a.distinct == b.distinct
    assert abs(a.distinct - 50_000) <= 50_000 * 4 / 64  # four standard errors of 1/sqrt(4096)
