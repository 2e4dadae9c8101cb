"""Windowed aggregations against a brute-force oracle on random events and labels."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import polars as pl
import pytest
from agg_oracle import close, oracle
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import featurekit.kernels.aggregate as aggregate_module
from featurekit.core.definitions import Aggregation
from featurekit.kernels import aggindex
from featurekit.kernels.bucketing import bucket_ids
from featurekit.kernels.pit import ViewFrame, pit_join
from featurekit.offline.engine import BucketedView, Spilled, join_within

BASE = datetime(2026, 5, 1)
FUNCTIONS = ["count", "sum", "mean", "min", "max", "last", "stddev"]


def minute(m: int | None) -> datetime | None:
    return None if m is None else BASE + timedelta(minutes=m)


event_st = st.tuples(
    st.sampled_from([None, 0, 1, 2]),
    st.one_of(st.none(), st.integers(0, 40)),
    st.sampled_from([None, -2, 0, 0, 0, 1, 3, 10, 30]),
    st.one_of(st.none(), st.integers(-5, 20)),
)
label_st = st.tuples(st.sampled_from([None, 0, 1, 2]), st.one_of(st.none(), st.integers(-5, 60)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(event_st, max_size=25),
    labels=st.lists(label_st, min_size=1, max_size=15),
    windows=st.lists(st.sampled_from([None, 1, 5, 10, 25]), min_size=1, max_size=3),
    functions=st.lists(st.sampled_from(FUNCTIONS), min_size=1, max_size=4, unique=True),
    knowledge=st.booleans(),
    floats=st.booleans(),
    path=st.sampled_from(["index", "index", "axis", "per_entity"]),
    complete=st.booleans(),
)
@example(  # an event exactly at t and exactly at t - window; a late one; equal times
    events=[(1, 10, 0, 5), (1, 15, 0, 7), (1, 15, 20, 9), (1, 5, 0, 1)],
    labels=[(1, 15), (1, 20), (1, 35)],
    windows=[5, None],
    functions=["count", "sum", "last", "max"],
    knowledge=True,
    floats=False,
    path="index",
    complete=False,
)
@example(  # equal event times, the later-known row first; a label with an event in flight
    events=[(1, 15, 20, 9), (1, 15, 0, 7), (1, 30, 10, 1)],
    labels=[(1, 35)],
    windows=[None, 25],
    functions=["last", "count"],
    knowledge=True,
    floats=False,
    path="index",
    complete=False,
)
@example(  # index path, nothing in flight: events exactly at t and exactly at t - window
    events=[(1, 10, 0, 5), (1, 15, 0, 7), (1, 5, 0, None), (1, 15, 0, 2), (2, 14, 0, 3)],
    labels=[(1, 15), (1, 20), (1, 10), (2, 19), (1, 4)],
    windows=[5, None],
    functions=["count", "sum", "max", "last", "mean", "min"],
    knowledge=False,
    floats=False,
    path="index",
    complete=False,
)
@example(  # the latest-known event is in flight one minute before it is known: the
    # in-flight search reaches back exactly the largest lateness
    events=[(1, 10, 30, 5), (1, 20, 0, 7), (1, 25, 1, 2)],
    labels=[(1, 39), (1, 40), (1, 25)],
    windows=[None],
    functions=["count", "sum", "max"],
    knowledge=True,
    floats=False,
    path="index",
    complete=True,
)
def test_aggregations_match_oracle(
    events: list[tuple[Any, Any, Any, Any]],
    labels: list[tuple[Any, Any]],
    windows: list[int | None],
    functions: list[str],
    knowledge: bool,
    floats: bool,
    path: str,
    complete: bool,
) -> None:
    if complete:  # no null values: the index path's no-null shortcuts (counts are lengths)
        events = [(k, e, d, 0 if v is None else v) for k, e, d, v in events]
    rows = [
        (k, minute(e), None if e is None or d is None else minute(e + d), v)
        for k, e, d, v in events
    ]
    if floats:
        rows = [(k, e, c, None if v is None else v / 3) for k, e, c, v in rows]
    dtype = pl.Float64 if floats else pl.Int64
    frame = pl.DataFrame(
        {
            "k": pl.Series([r[0] for r in rows], dtype=pl.Int64),
            "e": pl.Series([r[1] for r in rows], dtype=pl.Datetime("us")),
            "c": pl.Series([r[2] for r in rows], dtype=pl.Datetime("us")),
            "v": pl.Series([r[3] for r in rows], dtype=dtype),
        }
    )
    label_rows = [(k, minute(t)) for k, t in labels]
    label_frame = pl.DataFrame(
        {
            "k": pl.Series([k for k, _ in label_rows], dtype=pl.Int64),
            "t": pl.Series([t for _, t in label_rows], dtype=pl.Datetime("us")),
        }
    )
    specs = tuple(
        Aggregation("v", fn, None if w is None else timedelta(minutes=w), f"v_{fn}_{w}")
        for w in dict.fromkeys(windows)
        for fn in functions
    )
    view = ViewFrame("agg", frame, ("k",), "e", "c", tuple(s.name for s in specs), None, specs)
    # index: prefix sums and sparse tables; axis: sliding kernels on one shared axis;
    # per_entity: the fallback that slides windows per entity (no shared axis fits)
    with (
        mock.patch.object(aggregate_module, "AXIS_LIMIT", 0 if path == "per_entity" else 2**62),
        mock.patch.object(aggindex, "ENABLED", path == "index"),
    ):
        got = pit_join(
            label_frame,
            timestamp="t",
            views=[view],
            point_in_time="knowledge" if knowledge else "event",
        )
    for spec in specs:
        expected = oracle(label_rows, rows, spec, knowledge)
        actual = got[spec.name].to_list()
        assert all(close(a, b) for a, b in zip(actual, expected, strict=True)), (
            spec,
            actual,
            expected,
        )


def test_in_flight_search_covers_lateness_off_the_time_grid() -> None:
    """Events on whole minutes, created 30.5 minutes later: the in-flight search must reach
    back 31 minutes, or the label one second before the late event is known counts it."""
    frame = pl.DataFrame(
        {
            "k": [1, 1],
            "e": [BASE + timedelta(minutes=10), BASE + timedelta(minutes=20)],
            "c": [BASE + timedelta(minutes=40, seconds=30), BASE + timedelta(minutes=20)],
            "v": [5, 7],
        }
    )
    labels = pl.DataFrame(
        {"k": [1, 1], "t": [BASE + timedelta(minutes=40), BASE + timedelta(minutes=41)]}
    )
    spec = Aggregation("v", "sum", None, "v_sum")
    view = ViewFrame("agg", frame, ("k",), "e", "c", ("v_sum",), None, (spec,))
    got = pit_join(labels, timestamp="t", views=[view], point_in_time="knowledge")
    assert got["v_sum"].to_list() == [7, 12]


UNSIGNED_TOPS = [
    (pl.UInt8, 255),
    (pl.UInt16, 65_535),
    (pl.UInt32, 2**32 - 1),
    (pl.UInt64, 2**64 - 1),
]


@pytest.mark.parametrize(("dtype", "top"), UNSIGNED_TOPS)
@pytest.mark.parametrize("path", ["index", "axis", "per_entity"])
@pytest.mark.parametrize("knowledge", [True, False])
def test_unsigned_values_at_their_top_match_oracle(
    dtype: pl.DataType, top: int, path: str, knowledge: bool
) -> None:
    """Unsigned columns up to their largest value, on every path. UInt64 may only be
    counted, compared or taken last: materialize refuses to sum it (its sums do not fit
    Int64), so its values reach the kernel for those functions alone."""
    values = [top, top - 1, None, 3, top, 0, 7]
    events = [  # (key, minute, created delay, value); one event in flight
        (1, 0, 0, values[0]),
        (1, 1, 0, values[1]),
        (1, 2, 0, values[2]),
        (1, 3, 30, values[3]),
        (2, 0, 0, values[4]),
        (2, 4, 0, values[5]),
        (2, 5, 0, values[6]),
    ]
    rows = [(k, minute(e), minute(e + d), v) for k, e, d, v in events]
    frame = pl.DataFrame(
        {
            "k": pl.Series([r[0] for r in rows], dtype=pl.Int64),
            "e": pl.Series([r[1] for r in rows], dtype=pl.Datetime("us")),
            "c": pl.Series([r[2] for r in rows], dtype=pl.Datetime("us")),
            "v": pl.Series([r[3] for r in rows], dtype=dtype),
        }
    )
    label_rows = [(1, minute(m)) for m in (0, 1, 3, 4, 40)] + [(2, minute(m)) for m in (4, 5, 9)]
    label_frame = pl.DataFrame(
        {
            "k": pl.Series([k for k, _ in label_rows], dtype=pl.Int64),
            "t": pl.Series([t for _, t in label_rows], dtype=pl.Datetime("us")),
        }
    )
    functions = FUNCTIONS if dtype != pl.UInt64 else ["count", "min", "max", "last"]
    specs = tuple(
        Aggregation("v", fn, None if w is None else timedelta(minutes=w), f"v_{fn}_{w}")
        for w in (None, 2)
        for fn in functions
    )
    view = ViewFrame("agg", frame, ("k",), "e", "c", tuple(s.name for s in specs), None, specs)
    with (
        mock.patch.object(aggregate_module, "AXIS_LIMIT", 0 if path == "per_entity" else 2**62),
        mock.patch.object(aggindex, "ENABLED", path == "index"),
    ):
        got = pit_join(
            label_frame,
            timestamp="t",
            views=[view],
            point_in_time="knowledge" if knowledge else "event",
        )
    for spec in specs:
        expected = oracle(label_rows, rows, spec, knowledge)
        actual = got[spec.name].to_list()
        assert all(close(a, b) for a, b in zip(actual, expected, strict=True)), (
            spec,
            actual,
            expected,
        )
        if spec.function in ("min", "max", "last"):
            assert got.schema[spec.name] == dtype


def _bucket_reader(frame: pl.DataFrame, view: ViewFrame, buckets: int) -> BucketedView:
    """The engine's view of ``frame`` stored in ``buckets`` buckets (read by filtering)."""
    ids = bucket_ids(frame, view.keys, buckets)

    def read(labels: pl.DataFrame, bucket: int | None) -> ViewFrame:
        rows = frame if bucket is None else frame.filter(ids == bucket)
        return replace(view, frame=rows)

    return BucketedView(read, buckets, view.keys, {"k": "Int64"})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(event_st, max_size=25),
    labels=st.lists(label_st, min_size=1, max_size=15),
    windows=st.lists(st.sampled_from([None, 1, 5, 10, 25]), min_size=1, max_size=2),
    functions=st.lists(st.sampled_from(FUNCTIONS), min_size=1, max_size=3, unique=True),
    knowledge=st.booleans(),
    buckets=st.sampled_from([2, 4]),
    spill=st.booleans(),
)
def test_aggregations_match_oracle_bucket_by_bucket(
    events: list[tuple[Any, Any, Any, Any]],
    labels: list[tuple[Any, Any]],
    windows: list[int | None],
    functions: list[str],
    knowledge: bool,
    buckets: int,
    spill: bool,
) -> None:
    """Each bucket joined on its own (and, with ``spill``, written out of core under a
    tiny memory budget) gives the oracle's answers, in label order."""
    rows = [
        (k, minute(e), None if e is None or d is None else minute(e + d), v)
        for k, e, d, v in events
    ]
    frame = pl.DataFrame(
        {
            "k": pl.Series([r[0] for r in rows], dtype=pl.Int64),
            "e": pl.Series([r[1] for r in rows], dtype=pl.Datetime("us")),
            "c": pl.Series([r[2] for r in rows], dtype=pl.Datetime("us")),
            "v": pl.Series([r[3] for r in rows], dtype=pl.Int64),
        }
    )
    label_rows = [(k, minute(t)) for k, t in labels]
    label_frame = pl.DataFrame(
        {
            "k": pl.Series([k for k, _ in label_rows], dtype=pl.Int64),
            "t": pl.Series([t for _, t in label_rows], dtype=pl.Datetime("us")),
        }
    )
    specs = tuple(
        Aggregation("v", fn, None if w is None else timedelta(minutes=w), f"v_{fn}_{w}")
        for w in dict.fromkeys(windows)
        for fn in functions
    )
    view = ViewFrame("agg", frame, ("k",), "e", "c", tuple(s.name for s in specs), None, specs)
    mode = "knowledge" if knowledge else "event"
    with tempfile.TemporaryDirectory() as tmp:
        out = join_within(
            label_frame,
            timestamp="t",
            views=[_bucket_reader(frame, view, buckets)],
            point_in_time=mode,
            budget=1 if spill else None,
            scratch=lambda: tmp,
        )
        got = out.scan(tmp).collect() if isinstance(out, Spilled) else out
    assert isinstance(out, Spilled) == spill
    assert got.select("k", "t").equals(label_frame)
    whole = pit_join(label_frame, timestamp="t", views=[view], point_in_time=mode)
    assert got.equals(whole)  # the same frame as one kernel call, dtypes included
    for spec in specs:
        expected = oracle(label_rows, rows, spec, knowledge)
        actual = got[spec.name].to_list()
        assert all(close(a, b) for a, b in zip(actual, expected, strict=True)), (spec, actual)
