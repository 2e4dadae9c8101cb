"""Brute-force oracle and property tests for the point-in-time join kernel.

The oracle below is written independently of ``featurekit.kernels.pit`` in plain Python loops over
rows (no polars joins), straight from DESIGN.md "Point-in-time semantics":

For each label row with keys k and timestamp t, a view row r is a *candidate* when
  * every key of r is non-null and equal to the label's key (label keys non-null too),
  * r.event_ts is non-null and r.event_ts <= t,
  * ttl is None or t - r.event_ts <= ttl (inclusive edge),
  * in "knowledge" mode, if the view has a created_timestamp column: r.created_ts <= t.
    CHOICE: a row whose created_ts is null is treated as *never known*, so it is never a
    candidate in knowledge mode (the kernel's author was told the same). In "event" mode
    created_ts plays no part in eligibility.
Among candidates the winner has the greatest event_ts; ties go to the greatest created_ts
(when the view has a created column, in both modes); remaining ties go to the LATER row in
the view frame's order. No candidate, or a label with any null key or a null timestamp:
null for every feature of that view.

The contract does not say how a null created_ts ranks against a non-null one when two
rows tie on event_ts in "event" mode (the only mode where null-created rows can be
candidates). The oracle therefore computes both readings ("null ranks lowest" and "null
ranks highest") and the property accepts the kernel's output if it matches either one.

Timestamps are compared as UTC instants; naive datetimes are read as UTC, never as local
time. Output: the labels unchanged (same rows, order, columns, values, dtypes) plus one
column per requested feature in order of views then features, named ``feature`` or, when
that name is requested from more than one view or equals a label column,
``f"{view}__{feature}"``; feature columns keep their original dtype.

The oracle reads instants as exact integer nanoseconds (cross-checked against Python's
datetime reading for us/ms columns), so sub-microsecond differences count.

Properties checked against the kernel:
  * test_pit_join_matches_oracle: whole output == oracle (200 examples; minute grid, keys
    0..3/None, 1-3 views with different key sets, mixed zones/units, TTL edges, ties,
    duplicates, null keys/times/created/features, sorted and unsorted view frames);
  * test_pit_join_matches_oracle_sub_microsecond: the same with ns/us/ms nudges;
  * knowledge mode never attaches a row created after the label time;
  * when nothing arrives late, knowledge mode == event mode;
  * the order of the views only changes the column order;
  * several views at once == each view alone.
Hand-written examples pin exact values; non-datetime label timestamps raise SchemaError.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from featurekit.core.errors import SchemaError
from featurekit.kernels.pit import ViewFrame, pit_join

# --------------------------------------------------------------------------------------
# Oracle
# --------------------------------------------------------------------------------------


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A Python datetime as an aware UTC instant; naive means UTC (never machine-local)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_UNIT = {"ns": 1, "us": 1_000, "ms": 1_000_000}


def instants_ns(series: pl.Series) -> list[int | None]:
    """Exact UTC instants in integer nanoseconds since the epoch; naive means UTC.

    Python datetimes stop at microseconds, so the exact value comes from the stored
    integer (polars stores tz-aware datetimes as UTC epoch offsets, naive ones as wall
    time, which read as UTC is the same number). For us/ms columns it is cross-checked
    against the Python-datetime reading (``_utc``), so the oracle does not just trust
    polars' representation.
    """
    dtype = series.dtype
    assert isinstance(dtype, pl.Datetime), dtype
    scale = _NS_PER_UNIT[dtype.time_unit]
    exact = [None if v is None else v * scale for v in series.to_physical().to_list()]
    if dtype.time_unit != "ns":
        for e, py in zip(exact, series.to_list(), strict=True):
            if py is None:
                assert e is None
            else:
                assert e == (_utc(py) - _EPOCH) // timedelta(microseconds=1) * 1_000
    return exact


def _ttl_ns(ttl: timedelta) -> int:
    return ttl // timedelta(microseconds=1) * 1_000


def oracle_column_names(labels_columns: Sequence[str], views: Sequence[ViewFrame]) -> list[str]:
    """Output names of the feature columns, in order of views then features."""
    in_views = Counter(f for v in views for f in set(v.features))
    label_cols = set(labels_columns)
    names = []
    for v in views:
        for f in v.features:
            clash = in_views[f] > 1 or f in label_cols
            names.append(f"{v.name}__{f}" if clash else f)
    return names


def oracle_pick(
    label_keys: Sequence[Any],
    t: int | None,
    view: ViewFrame,
    *,
    point_in_time: str,
    null_created: str = "low",
) -> int | None:
    """Index of the view row a label (keys, UTC instant t in ns) gets, or None."""
    if t is None or any(k is None for k in label_keys):
        return None
    rows = view.frame
    key_values = [rows[k].to_list() for k in view.keys]
    event = instants_ns(rows[view.timestamp])
    has_created = view.created_timestamp is not None
    created = instants_ns(rows[view.created_timestamp]) if has_created else [None] * rows.height

    best_rank = None
    best_idx = None
    for i in range(rows.height):
        row_keys = [kv[i] for kv in key_values]
        if any(k is None for k in row_keys):
            continue
        if any(rk != lk for rk, lk in zip(row_keys, label_keys, strict=True)):
            continue
        ev = event[i]
        if ev is None or ev > t:
            continue
        if view.ttl is not None and t - ev > _ttl_ns(view.ttl):
            continue
        cr = created[i]
        if point_in_time == "knowledge" and has_created and (cr is None or cr > t):
            continue
        if not has_created:
            created_rank: tuple = (1, 0)
        elif cr is None:
            created_rank = (0, 0) if null_created == "low" else (2, 0)
        else:
            created_rank = (1, cr)
        rank = (ev, created_rank, i)
        if best_rank is None or rank > best_rank:
            best_rank, best_idx = rank, i
    return best_idx


def oracle_pit_join(
    labels: pl.DataFrame,
    *,
    timestamp: str,
    views: Sequence[ViewFrame],
    point_in_time: str = "knowledge",
    null_created: str = "low",
) -> pl.DataFrame:
    """What pit_join must return, computed row by row."""
    label_times = instants_ns(labels[timestamp])
    names = iter(oracle_column_names(labels.columns, views))
    new_columns = []
    for view in views:
        # label keys by the view's key columns (names are shared with the labels)
        label_key_lists = [labels[k].to_list() for k in view.keys]
        picks = [
            oracle_pick(
                [kl[j] for kl in label_key_lists],
                label_times[j],
                view,
                point_in_time=point_in_time,
                null_created=null_created,
            )
            for j in range(labels.height)
        ]
        for feature in view.features:
            values = view.frame[feature].to_list()
            out = [None if p is None else values[p] for p in picks]
            new_columns.append(pl.Series(next(names), out, dtype=view.frame.schema[feature]))
    return labels.with_columns(new_columns) if new_columns else labels.clone()


def assert_matches_oracle(
    labels: pl.DataFrame,
    *,
    timestamp: str,
    views: Sequence[ViewFrame],
    point_in_time: str,
) -> pl.DataFrame:
    """Run the kernel and compare with the oracle (either reading of null created ranks)."""
    labels_before = labels.clone()
    actual = pit_join(labels, timestamp=timestamp, views=views, point_in_time=point_in_time)
    # the kernel must not mutate its input
    assert_frame_equal(labels, labels_before)
    expected = oracle_pit_join(
        labels, timestamp=timestamp, views=views, point_in_time=point_in_time
    )
    try:
        assert_frame_equal(actual, expected)
    except AssertionError:
        alternative = oracle_pit_join(
            labels,
            timestamp=timestamp,
            views=views,
            point_in_time=point_in_time,
            null_created="high",
        )
        if alternative.equals(expected):
            raise
        try:
            assert_frame_equal(actual, alternative)
        except AssertionError:
            assert_frame_equal(actual, expected)  # report against the primary reading
    return actual


# --------------------------------------------------------------------------------------
# Frame builders
# --------------------------------------------------------------------------------------

# 06:50 UTC on the day New York springs forward (07:00 UTC): the 0..20 minute domain
# crosses a DST transition in one of the zones used.
BASE = dt.datetime(2024, 3, 10, 6, 50, tzinfo=UTC)
TZS = [None, "UTC", "America/New_York", "Asia/Tokyo", "Asia/Kolkata"]
UNITS = ["ns", "us", "ms"]


BASE_NS = (BASE - _EPOCH) // timedelta(microseconds=1) * 1_000
MINUTE_NS = 60 * 10**9


def ts_series(name: str, offsets_ns: Sequence[int | None], tz: str | None, unit: str) -> pl.Series:
    """Instants BASE + offset (ns), stored naive (UTC wall time) or in zone ``tz``.

    The unit cast truncates sub-unit offsets for us/ms columns (the oracle reads the
    stored value, so it sees exactly what the kernel sees).
    """
    ns = [None if o is None else BASE_NS + o for o in offsets_ns]
    s = pl.Series(name, ns, dtype=pl.Int64).cast(pl.Datetime("ns")).cast(pl.Datetime(unit))
    if tz is None:
        return s
    return s.dt.replace_time_zone("UTC").dt.convert_time_zone(tz)


def _as_utc(column: str, frame: pl.DataFrame) -> pl.Expr:
    """Test-data helper: a datetime column as Datetime('ns', 'UTC'), naive read as UTC."""
    expr = pl.col(column)
    if frame.schema[column].time_zone is None:
        expr = expr.dt.replace_time_zone("UTC")
    return expr.dt.convert_time_zone("UTC").cast(pl.Datetime("ns", "UTC"))


def at(hh: int, mm: int, ss: int = 0, us: int = 0) -> dt.datetime:
    """A naive datetime on a fixed day (naive means UTC)."""
    return dt.datetime(2024, 1, 15, hh, mm, ss, us)


# --------------------------------------------------------------------------------------
# Hypothesis strategies
# --------------------------------------------------------------------------------------

KEY_SETS = [("driver_id",), ("city",), ("driver_id", "city"), ("city", "driver_id")]
DRIVERS = st.sampled_from([None, 0, 1, 2, 3, 0, 1, 2, 3])  # keys 0..3, sometimes null
CITIES = st.sampled_from([None, "c0", "c1", "c2", "c3", "c0", "c1", "c2", "c3"])
# "label" and "ts" can clash with label columns; "f"/"g" often clash across views.
FEATURE_POOL = ["f", "g", "label", "h", "ts"]
FEATURE_DTYPES = [pl.Float64, pl.Float32, pl.Int64, pl.Int32, pl.String]
# sub-minute nudges in ns: mostly none (ties stay common), else ns/us/ms boundaries
JITTER = st.sampled_from([0] * 4 + [1, 500, 999, 1_000, 999_999])


def _feature_value(uid: int, dtype: pl.DataType) -> Any:
    if dtype in (pl.Float64, pl.Float32):
        return float(uid)
    if dtype == pl.String:
        return f"r{uid}"
    return uid


def _offsets(draw: st.DrawFn, minutes: Sequence[int | None], jitter: bool) -> list[int | None]:
    """Minutes -> ns offsets; with ``jitter`` some get a sub-ms/us/ns nudge."""
    if not jitter:
        return [None if m is None else m * MINUTE_NS for m in minutes]
    nudges = draw(st.lists(JITTER, min_size=len(minutes), max_size=len(minutes)))
    return [None if m is None else m * MINUTE_NS + j for m, j in zip(minutes, nudges, strict=True)]


def _units(jitter: bool) -> st.SearchStrategy[str]:
    # with jitter, favour ns columns: only they keep sub-microsecond differences
    return st.sampled_from(["ns", "ns", "ns", "us", "ms"] if jitter else UNITS)


@st.composite
def view_frames(draw: st.DrawFn, index: int, jitter: bool = False) -> ViewFrame:
    keys = draw(st.sampled_from(KEY_SETS))
    ts_col = draw(st.sampled_from(["event_ts", "ts"]))
    created_col = draw(st.sampled_from([None, "created_ts"]))
    features = draw(
        st.lists(
            # a label key column the view is not keyed on may be a feature too (it clashes)
            st.sampled_from(
                [f for f in FEATURE_POOL if f != ts_col]
                + [k for k in ("driver_id", "city") if k not in keys]
            ),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    ttl_minutes = draw(st.sampled_from([None, None, 1, 2, 3, 5, 7, 10]))
    ttl = None if ttl_minutes is None else timedelta(minutes=ttl_minutes)
    n = draw(st.integers(0, 10))
    # small per-view pools of entities and minutes, so equal keys and equal times are common
    entities = draw(st.lists(st.tuples(DRIVERS, CITIES), min_size=1, max_size=4))
    row_entities = draw(st.lists(st.sampled_from(entities), min_size=n, max_size=n))
    minutes = draw(st.lists(st.sampled_from([None, *range(21)]), min_size=1, max_size=5))
    event_min = draw(st.lists(st.sampled_from(minutes), min_size=n, max_size=n))
    created_min = []
    for m in event_min:
        delta = draw(st.sampled_from([None, -3, -1, 0, 0, 0, 1, 2, 5, 10]))
        if m is None:
            created_min.append(None if delta is None else 10)
        else:
            created_min.append(None if delta is None else m + delta)
    data: dict[str, pl.Series] = {}
    if "driver_id" in keys:
        drivers = [e[0] for e in row_entities]
        data["driver_id"] = pl.Series("driver_id", drivers, dtype=pl.Int64)
    if "city" in keys:
        cities = [e[1] for e in row_entities]
        data["city"] = pl.Series("city", cities, dtype=pl.String)
    data[ts_col] = ts_series(
        ts_col,
        _offsets(draw, event_min, jitter),
        draw(st.sampled_from(TZS)),
        draw(_units(jitter)),
    )
    if created_col is not None:
        data[created_col] = ts_series(
            created_col,
            _offsets(draw, created_min, jitter),
            draw(st.sampled_from(TZS)),
            draw(_units(jitter)),
        )
    for fi, f in enumerate(features):
        dtype = draw(st.sampled_from(FEATURE_DTYPES))
        nulls = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        values = [
            None if nulls[i] and i % 3 == 0 else _feature_value(1000 * index + 100 * fi + i, dtype)
            for i in range(n)
        ]
        data[f] = pl.Series(f, values, dtype=dtype)
    data["extra"] = pl.Series("extra", list(range(n)), dtype=pl.Int64)  # never attached
    order = list(data)
    if draw(st.booleans()):
        order = order[::-1]  # column order of the frame must not matter
    frame = pl.DataFrame([data[c] for c in order])
    # Stored tables usually come sorted: also feed frames already in (keys, event, created)
    # order, with and without null rows, so a kernel's "already sorted" fast paths run.
    # (Test-data preparation only; the oracle itself never sorts or joins.)
    layout = draw(st.sampled_from(["as drawn", "sorted", "sorted, no nulls"]))
    time_cols = [ts_col, *([created_col] if created_col else [])]
    if layout == "sorted, no nulls":
        frame = frame.drop_nulls([*keys, *time_cols])
    if layout != "as drawn":
        frame = frame.sort([*keys, *time_cols], nulls_last=False, maintain_order=True)
    return ViewFrame(
        name=f"view{index}",
        frame=frame,
        keys=keys,
        timestamp=ts_col,
        created_timestamp=created_col,
        features=tuple(features),
        ttl=ttl,
    )


@st.composite
def scenarios(draw: st.DrawFn, jitter: bool = False) -> tuple[pl.DataFrame, list[ViewFrame], str]:
    n_views = draw(st.integers(1, 3))
    views = [draw(view_frames(i, jitter)) for i in range(n_views)]
    # instants at which some view row happens (and its TTL edges), so labels land exactly
    # on event times and on t - ttl,
    # and on created times (knowledge edges); with jitter also one ns either side
    at_rows: set[int] = set()
    ttl_edges: set[int] = set()
    nudges = (-1, 0, 1) if jitter else (0,)
    for v in views:
        instants = instants_ns(v.frame[v.timestamp])
        if v.created_timestamp is not None:
            instants += instants_ns(v.frame[v.created_timestamp])
        for e in instants:
            if e is not None:
                at_rows.update(e - BASE_NS + d for d in nudges)
                for k in (1, 2, 3, 5, 7, 10):
                    ttl_edges.update(e - BASE_NS + k * MINUTE_NS + d for d in nudges)
    grid = st.sampled_from([None, *range(-2, 23)]).map(
        lambda m: None if m is None else m * MINUTE_NS
    )
    if jitter:
        grid = st.tuples(grid, JITTER).map(lambda p: None if p[0] is None else p[0] + p[1])
    if at_rows:
        on_rows = st.sampled_from(sorted(at_rows))
        grid = st.one_of(grid, on_rows, on_rows, st.sampled_from(sorted(ttl_edges)))
    offset = grid
    # label entities: mostly ones some view has rows for, else anything
    seen = [
        (d, c)
        for v in views
        for d, c in zip(
            v.frame["driver_id"] if "driver_id" in v.keys else [None] * v.frame.height,
            v.frame["city"] if "city" in v.keys else [None] * v.frame.height,
            strict=True,
        )
    ]
    entity = st.tuples(DRIVERS, CITIES)
    if seen:
        # a view keyed on one column leaves the other free: fill it from the domain
        entity = st.one_of(
            entity,
            st.tuples(st.sampled_from(seen), DRIVERS, CITIES).map(
                lambda p: (
                    p[1] if p[0][0] is None else p[0][0],
                    p[2] if p[0][1] is None else p[0][1],
                )
            ),
            st.sampled_from(seen),
        )
    row = st.tuples(entity, offset).map(lambda p: (p[0][0], p[0][1], p[1]))
    rows = draw(st.lists(row, min_size=0, max_size=8))
    if rows and draw(st.booleans()):  # explicit duplicates
        rows = rows + draw(st.lists(st.sampled_from(rows), min_size=1, max_size=3))
        rows = draw(st.permutations(rows))
    labels = pl.DataFrame(
        [
            pl.Series("driver_id", [r[0] for r in rows], dtype=pl.Int64),
            pl.Series("city", [r[1] for r in rows], dtype=pl.String),
            ts_series("ts", [r[2] for r in rows], draw(st.sampled_from(TZS)), draw(_units(jitter))),
            pl.Series("label", list(range(len(rows))), dtype=pl.Int64),
        ]
    )
    mode = draw(st.sampled_from(["knowledge", "event"]))
    return labels, views, mode


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------


def _note_scenario(labels: pl.DataFrame, views: Sequence[ViewFrame], mode: str) -> None:
    """Print a falsifying example in full (polars reprs truncate wide frames)."""

    def rows(frame: pl.DataFrame) -> str:
        exact = frame.with_columns(pl.col(pl.Datetime).cast(pl.String))  # keeps ns digits
        return "\n".join(f"    {r}" for r in exact.rows(named=True)) or "    (no rows)"

    note(f"point_in_time={mode!r}\nlabels {dict(labels.schema)}:\n{rows(labels)}")
    for v in views:
        note(
            f"view {v.name!r} keys={v.keys} timestamp={v.timestamp!r} "
            f"created={v.created_timestamp!r} features={v.features} ttl={v.ttl}\n"
            f"  schema {dict(v.frame.schema)}:\n{rows(v.frame)}"
        )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_pit_join_matches_oracle(scenario: tuple[pl.DataFrame, list[ViewFrame], str]) -> None:
    labels, views, mode = scenario
    _note_scenario(labels, views, mode)
    actual = assert_matches_oracle(labels, timestamp="ts", views=views, point_in_time=mode)
    assert actual.columns[: labels.width] == labels.columns


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(jitter=True))
def test_pit_join_matches_oracle_sub_microsecond(
    scenario: tuple[pl.DataFrame, list[ViewFrame], str],
) -> None:
    """Same property with ns/us/ms nudges: instants are compared exactly, not truncated."""
    labels, views, mode = scenario
    _note_scenario(labels, views, mode)
    assert_matches_oracle(labels, timestamp="ts", views=views, point_in_time=mode)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_knowledge_mode_never_leaks_late_rows(
    scenario: tuple[pl.DataFrame, list[ViewFrame], str],
) -> None:
    """In knowledge mode every attached value comes from a row with created_ts <= t."""
    labels, views, _ = scenario
    out = pit_join(labels, timestamp="ts", views=views, point_in_time="knowledge")
    names = oracle_column_names(labels.columns, views)
    label_times = instants_ns(labels["ts"])
    pos = 0
    for v in views:
        if v.created_timestamp is not None:
            created = instants_ns(v.frame[v.created_timestamp])
            for f, name in zip(v.features, names[pos : pos + len(v.features)], strict=True):
                values = v.frame[f].to_list()  # unique per row, except nulls
                for j, got in enumerate(out[name].to_list()):
                    if got is None:
                        continue
                    (i,) = [i for i, val in enumerate(values) if val == got]
                    assert created[i] is not None
                    assert created[i] <= label_times[j], (name, j, got)
        pos += len(v.features)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_modes_agree_when_nothing_arrives_late(
    scenario: tuple[pl.DataFrame, list[ViewFrame], str],
) -> None:
    """If every row was known by its own event time, knowledge and event modes agree."""
    labels, views, _ = scenario
    punctual = []
    for v in views:
        frame = v.frame
        if v.created_timestamp is not None:
            c, e = v.created_timestamp, v.timestamp
            # created := min(created, event), as Datetime("ns", "UTC"); a null created
            # becomes the event time (a null event keeps the row ineligible anyway)
            frame = frame.with_columns(
                pl.when(pl.col(c).is_null() | (_as_utc(e, frame) < _as_utc(c, frame)))
                .then(_as_utc(e, frame))
                .otherwise(_as_utc(c, frame))
                .alias(c)
            )
        punctual.append(
            ViewFrame(v.name, frame, v.keys, v.timestamp, v.created_timestamp, v.features, v.ttl)
        )
    knowledge = pit_join(labels, timestamp="ts", views=punctual, point_in_time="knowledge")
    event = pit_join(labels, timestamp="ts", views=punctual, point_in_time="event")
    assert_frame_equal(knowledge, event)
    assert_matches_oracle(labels, timestamp="ts", views=punctual, point_in_time="knowledge")


@settings(max_examples=40, deadline=None)
@given(scenarios(), st.permutations(list(range(3))))
def test_view_order_only_affects_column_order(
    scenario: tuple[pl.DataFrame, list[ViewFrame], str], perm: list[int]
) -> None:
    """Passing the same views in another order yields the same columns, reordered."""
    labels, views, mode = scenario
    reordered = [views[i] for i in perm if i < len(views)]
    a = pit_join(labels, timestamp="ts", views=views, point_in_time=mode)
    b = pit_join(labels, timestamp="ts", views=reordered, point_in_time=mode)
    assert sorted(a.columns) == sorted(b.columns)
    assert_frame_equal(a, b.select(a.columns))


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_each_view_independent(scenario: tuple[pl.DataFrame, list[ViewFrame], str]) -> None:
    """Joining several views at once equals joining them one at a time (modulo naming)."""
    labels, views, mode = scenario
    together = pit_join(labels, timestamp="ts", views=views, point_in_time=mode)
    names = oracle_column_names(labels.columns, views)
    pos = 0
    for v in views:
        alone = pit_join(labels, timestamp="ts", views=[v], point_in_time=mode)
        alone_names = oracle_column_names(labels.columns, [v])
        for f_alone, f_together in zip(
            alone_names, names[pos : pos + len(v.features)], strict=True
        ):
            assert_frame_equal(
                alone.select(pl.col(f_alone).alias("x")),
                together.select(pl.col(f_together).alias("x")),
            )
        pos += len(v.features)


# --------------------------------------------------------------------------------------
# Hand-written examples with exact expected values
# --------------------------------------------------------------------------------------


def _view(
    rows: list[tuple],
    *,
    name: str = "stats",
    keys: tuple[str, ...] = ("driver_id",),
    created: bool = True,
    ttl: timedelta | None = None,
    features: tuple[str, ...] = ("f",),
) -> ViewFrame:
    """rows: (driver_id, event_ts, [created_ts,] *feature values)."""
    cols: dict[str, list] = {k: [] for k in keys}
    cols["event_ts"] = []
    if created:
        cols["created_ts"] = []
    for f in features:
        cols[f] = []
    for r in rows:
        for c, v in zip(cols, r, strict=True):
            cols[c].append(v)
    schema: dict[str, Any] = {k: pl.Int64 for k in keys}
    schema["event_ts"] = pl.Datetime("us")
    if created:
        schema["created_ts"] = pl.Datetime("us")
    for f in features:
        schema[f] = pl.Float64
    return ViewFrame(
        name=name,
        frame=pl.DataFrame(cols, schema=schema),
        keys=keys,
        timestamp="event_ts",
        created_timestamp="created_ts" if created else None,
        features=features,
        ttl=ttl,
    )


def _labels(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        {"driver_id": [r[0] for r in rows], "ts": [r[1] for r in rows]},
        schema={"driver_id": pl.Int64, "ts": pl.Datetime("us")},
    )


def _join(labels: pl.DataFrame, views: list[ViewFrame], mode: str = "knowledge") -> pl.DataFrame:
    return assert_matches_oracle(labels, timestamp="ts", views=views, point_in_time=mode)


def test_late_row_knowledge_vs_event() -> None:
    view = _view(
        [
            (1, at(10, 0), at(10, 0), 1.0),
            (1, at(10, 5), at(10, 30), 2.0),  # arrived late
        ]
    )
    labels = _labels([(1, at(10, 10)), (1, at(10, 30)), (1, at(9, 59))])
    assert _join(labels, [view], "knowledge")["f"].to_list() == [1.0, 2.0, None]
    assert _join(labels, [view], "event")["f"].to_list() == [2.0, 2.0, None]


def test_null_created_is_never_known() -> None:
    view = _view([(1, at(10, 0), at(10, 0), 1.0), (1, at(10, 5), None, 2.0)])
    labels = _labels([(1, at(10, 10)), (1, at(23, 0))])
    assert _join(labels, [view], "knowledge")["f"].to_list() == [1.0, 1.0]
    assert _join(labels, [view], "event")["f"].to_list() == [2.0, 2.0]


def test_ttl_edge_inclusive() -> None:
    view = _view([(1, at(10, 0), at(10, 0), 1.0)], ttl=timedelta(minutes=10))
    labels = _labels(
        [
            (1, at(10, 0)),  # exactly at the event time
            (1, at(10, 10)),  # exactly t - ttl: included
            (1, at(10, 10, 0, 1)),  # one microsecond past the edge
            (1, at(9, 59, 59, 999999)),  # before the event
        ]
    )
    assert _join(labels, [view])["f"].to_list() == [1.0, 1.0, None, None]


def test_ttl_falls_back_to_nothing_not_to_older_row() -> None:
    view = _view(
        [(1, at(9, 0), at(9, 0), 1.0), (1, at(10, 0), at(10, 0), 2.0)],
        ttl=timedelta(minutes=30),
    )
    labels = _labels([(1, at(10, 20)), (1, at(10, 31)), (1, at(9, 30)), (1, at(9, 31))])
    assert _join(labels, [view])["f"].to_list() == [2.0, None, 1.0, None]


def test_tie_on_event_greatest_created_wins() -> None:
    view = _view(
        [
            (1, at(10, 0), at(10, 3), 2.0),
            (1, at(10, 0), at(10, 1), 1.0),  # later in frame order but created earlier
        ]
    )
    labels = _labels([(1, at(10, 10)), (1, at(10, 2))])
    assert _join(labels, [view], "knowledge")["f"].to_list() == [2.0, 1.0]
    assert _join(labels, [view], "event")["f"].to_list() == [2.0, 2.0]


def test_full_duplicate_later_row_wins() -> None:
    view = _view([(1, at(10, 0), at(10, 0), 1.0), (1, at(10, 0), at(10, 0), 2.0)])
    labels = _labels([(1, at(10, 0))])
    assert _join(labels, [view])["f"].to_list() == [2.0]
    no_created = _view(
        [(1, at(10, 0), 1.0), (1, at(10, 0), 2.0), (1, at(9, 0), 3.0)], created=False
    )
    assert _join(labels, [no_created])["f"].to_list() == [2.0]


def test_null_feature_value_is_picked_not_skipped() -> None:
    """The winning row's null is returned; the kernel must not fall back to an older value."""
    view = _view([(1, at(10, 0), at(10, 0), 1.0), (1, at(10, 5), at(10, 5), None)])
    labels = _labels([(1, at(10, 6))])
    assert _join(labels, [view])["f"].to_list() == [None]


def test_labels_kept_verbatim_duplicates_null_keys_order() -> None:
    view = _view(
        [
            (1, at(10, 0), at(10, 0), 1.0),
            (2, at(10, 0), at(10, 0), 2.0),
            (None, at(10, 0), at(10, 0), 9.0),  # null key row: never a candidate
            (2, None, at(10, 0), 8.0),  # null event time: never a candidate
        ]
    )
    labels = pl.DataFrame(
        {
            "driver_id": [2, None, 1, 2, 2, 1, 3],
            "ts": [at(10, 1), at(10, 1), at(10, 1), at(10, 1), None, at(9, 0), at(10, 1)],
            "y": ["a", "b", "c", "a", "e", "f", "g"],
            "tags": [[1], [], None, [1], [2, 3], [4], [5]],
        },
        schema={
            "driver_id": pl.Int64,
            "ts": pl.Datetime("ms"),
            "y": pl.String,
            "tags": pl.List(pl.Int8),
        },
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Paris"))
    out = _join(labels, [view])
    assert_frame_equal(out.select(labels.columns), labels)
    assert out["f"].to_list() == [2.0, None, 1.0, 2.0, None, None, None]


def test_column_naming_on_clash() -> None:
    a = _view([(1, at(10, 0), at(10, 0), 1.0, 2.0, 3.0)], name="a", features=("f", "g", "y"))
    b = _view([(1, at(10, 0), at(10, 0), 4.0, 5.0)], name="b", features=("f", "h"))
    labels = _labels([(1, at(10, 0))]).with_columns(y=pl.lit("lbl"))
    out = _join(labels, [a, b])
    assert out.columns == ["driver_id", "ts", "y", "a__f", "g", "a__y", "b__f", "h"]
    assert out.row(0) == (1, at(10, 0), "lbl", 1.0, 2.0, 3.0, 4.0, 5.0)


def test_multi_key_and_several_views_with_different_entities() -> None:
    by_driver_city = ViewFrame(
        name="dc",
        frame=pl.DataFrame(
            {
                "city": ["x", "y", "x", "x"],
                "driver_id": [1, 1, 2, 1],
                "event_ts": [at(10, 0), at(10, 1), at(10, 2), at(10, 3)],
                "trips": [10, 20, 30, 40],
            },
            schema={
                "city": pl.String,
                "driver_id": pl.Int32,
                "event_ts": pl.Datetime("ns"),
                "trips": pl.Int16,
            },
        ),
        keys=("driver_id", "city"),
        timestamp="event_ts",
        created_timestamp=None,
        features=("trips",),
        ttl=None,
    )
    by_city = ViewFrame(
        name="c",
        frame=pl.DataFrame(
            [
                pl.Series("city", ["x", "y"]),
                pl.Series("ts", [at(9, 0), at(10, 2)], dtype=pl.Datetime("ms"))
                .dt.replace_time_zone("UTC")
                .dt.convert_time_zone("Asia/Tokyo"),
                pl.Series("rain", [0.5, 1.5], dtype=pl.Float32),
            ]
        ),
        keys=("city",),
        timestamp="ts",
        created_timestamp=None,
        features=("rain",),
        ttl=timedelta(hours=1),
    )
    labels = pl.DataFrame(
        {
            "driver_id": [1, 1, 2, 1, 1],
            "city": ["x", "y", "x", "x", None],
            "ts": [at(10, 2), at(10, 2), at(10, 2), at(10, 3), at(10, 3)],
        },
        schema={"driver_id": pl.Int32, "city": pl.String, "ts": pl.Datetime("us")},
    )
    out = _join(labels, [by_driver_city, by_city])
    assert out["trips"].to_list() == [10, 20, 30, 40, None]
    assert out["trips"].dtype == pl.Int16
    assert out["rain"].to_list() == [None, 1.5, None, None, None]
    assert out["rain"].dtype == pl.Float32


def test_mixed_time_zones_and_units() -> None:
    """Labels in New York (ms), view naive (ns = UTC), created column in Tokyo (us)."""
    utc = [dt.datetime(2024, 1, 15, 15, m, tzinfo=UTC) for m in (0, 5)]
    frame = pl.DataFrame(
        [
            pl.Series("driver_id", [7, 7], dtype=pl.Int64),
            pl.Series("event_ts", [u.replace(tzinfo=None) for u in utc], dtype=pl.Datetime("ns")),
            pl.Series(
                "created_ts",
                [utc[0], utc[1] + timedelta(minutes=20)],
                dtype=pl.Datetime("us", "UTC"),
            ).dt.convert_time_zone("Asia/Tokyo"),
            pl.Series("f", [1.0, 2.0]),
        ]
    )
    view = ViewFrame("v", frame, ("driver_id",), "event_ts", "created_ts", ("f",), None)
    # 10:10 in New York (EST, UTC-5) is 15:10 UTC; 10:30 is 15:30 UTC.
    labels = pl.DataFrame(
        [
            pl.Series("driver_id", [7, 7, 7], dtype=pl.Int64),
            pl.Series(
                "ts",
                [
                    dt.datetime(2024, 1, 15, 15, 10, tzinfo=UTC),
                    dt.datetime(2024, 1, 15, 15, 25, tzinfo=UTC),
                    dt.datetime(2024, 1, 15, 14, 59, tzinfo=UTC),
                ],
                dtype=pl.Datetime("ms", "UTC"),
            ).dt.convert_time_zone("America/New_York"),
        ]
    )
    out = _join(labels, [view], "knowledge")
    assert out["f"].to_list() == [1.0, 2.0, None]
    assert out["ts"].dtype == pl.Datetime("ms", "America/New_York")
    assert _join(labels, [view], "event")["f"].to_list() == [2.0, 2.0, None]


def test_nanosecond_instants_are_compared_exactly() -> None:
    """A row 100 ns after the label is in the label's future; the TTL edge is exact to 1 ns."""
    e = pl.Series("event_ts", [BASE_NS, BASE_NS + 500], dtype=pl.Int64).cast(pl.Datetime("ns"))
    frame = pl.DataFrame([pl.Series("driver_id", [1, 1]), e, pl.Series("f", [1.0, 2.0])])
    view = ViewFrame("v", frame, ("driver_id",), "event_ts", None, ("f",), None)
    t = pl.Series("ts", [BASE_NS + 400, BASE_NS + 500], dtype=pl.Int64).cast(pl.Datetime("ns"))
    labels = pl.DataFrame([pl.Series("driver_id", [1, 1]), t])
    assert _join(labels, [view])["f"].to_list() == [1.0, 2.0]
    ttl_view = ViewFrame(
        "v", frame.head(1), ("driver_id",), "event_ts", None, ("f",), timedelta(minutes=1)
    )
    edge = pl.Series("ts", [BASE_NS + MINUTE_NS, BASE_NS + MINUTE_NS + 1], dtype=pl.Int64)
    labels = pl.DataFrame([pl.Series("driver_id", [1, 1]), edge.cast(pl.Datetime("ns"))])
    assert _join(labels, [ttl_view])["f"].to_list() == [1.0, None]


def test_naive_means_utc_whatever_tz_env_says() -> None:
    """With TZ set to a non-UTC zone, naive timestamps are still read as UTC."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/Los_Angeles"
    time.tzset()
    try:
        assert time.timezone != 0  # the process really is in a non-UTC local zone
        view = _view(
            [(1, at(10, 0), at(10, 0), 1.0), (1, at(12, 0), at(12, 0), 2.0)],
            ttl=timedelta(hours=1),
        )
        # 10:30 UTC / 12:30 UTC given as aware labels; the naive view rows are UTC
        labels = pl.DataFrame(
            [
                pl.Series("driver_id", [1, 1, 1], dtype=pl.Int64),
                pl.Series(
                    "ts",
                    [
                        dt.datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
                        dt.datetime(2024, 1, 15, 12, 30, tzinfo=UTC),
                        dt.datetime(2024, 1, 15, 9, 30, tzinfo=UTC),
                    ],
                    dtype=pl.Datetime("us", "UTC"),
                ).dt.convert_time_zone("America/Los_Angeles"),
            ]
        )
        out = _join(labels, [view])
        # were naive read as Los Angeles time (UTC-8), every row would be in the future
        assert out["f"].to_list() == [1.0, 2.0, None]
        naive_labels = _labels([(1, at(10, 30)), (1, at(12, 30)), (1, at(9, 30))])
        assert _join(naive_labels, [view])["f"].to_list() == [1.0, 2.0, None]
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_empty_labels_and_empty_view() -> None:
    view = _view([(1, at(10, 0), at(10, 0), 1.0)])
    empty_labels = _labels([])
    out = _join(empty_labels, [view])
    assert out.height == 0
    assert out.columns == ["driver_id", "ts", "f"]
    empty_view = _view([])
    out = _join(_labels([(1, at(10, 0))]), [empty_view])
    assert out["f"].to_list() == [None]


@pytest.mark.parametrize(
    "values, dtype",
    [
        (["2024-01-15 10:00:00"], pl.String),
        ([dt.date(2024, 1, 15)], pl.Date),
        ([1705312800], pl.Int64),
    ],
)
def test_non_datetime_label_timestamp_is_schema_error(values: list, dtype: pl.DataType) -> None:
    labels = pl.DataFrame(
        {"driver_id": [1], "label_time": values},
        schema={"driver_id": pl.Int64, "label_time": dtype},
    )
    view = _view([(1, at(10, 0), at(10, 0), 1.0)])
    with pytest.raises(SchemaError, match="label_time"):
        pit_join(labels, timestamp="label_time", views=[view])
