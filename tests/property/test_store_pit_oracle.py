"""The whole path (materialize in two runs, late rows, Delta, pruning, training set) vs the oracle.

The kernel has its own oracle tests; this one proves that what the store adds (write-time
tie resolution, incremental runs, reading pinned Delta versions, pruning by label time)
changes no answer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from unittest import mock

import polars as pl
from conftest import StoreRoot
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_pit_oracle import oracle_pit_join

import featurekit as fk
from featurekit.kernels.pit import ViewFrame

BASE = datetime(2026, 3, 1)
ENTITY = fk.Entity("driver", keys=["driver_id"])


@contextmanager
def bucketed(n: int) -> Iterator[None]:
    """Full runs write ``n`` buckets, whatever the view's size (docs/scale.md)."""
    with mock.patch("featurekit.offline.buckets.choose_buckets", lambda size, dtypes: n):
        yield


def passthrough(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", "value")


def minutes(values: list[int | None]) -> pl.Series:
    return pl.Series([None if m is None else BASE + timedelta(minutes=m) for m in values])


rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 3)),  # key (null sometimes)
        st.integers(0, 12),  # event minute (narrow: ties are common)
        st.integers(-1, 6),  # created = event + this
    ),
    min_size=1,
    max_size=30,
)
labels_st = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(0, 3)), st.integers(-5, 50)), min_size=1, max_size=25
)


def source_frame(spec: list[tuple[int | None, int, int]], offset: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "driver_id": pl.Series([k for k, _, _ in spec], dtype=pl.Int64),
            "event_ts": minutes([e for _, e, _ in spec]),
            "ingested_at": minutes([e + c for _, e, c in spec]),
            "value": pl.Series([float(offset + i) for i in range(len(spec))]),
        }
    )


@settings(
    max_examples=40,
    deadline=None,
    # store_root.open() makes a fresh store per example, so the fixture is safe to share
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    first=rows,
    late=rows,
    labels=labels_st,
    ttl=st.sampled_from([None, 5, 10]),
    mode=st.sampled_from(["knowledge", "event"]),
    zone=st.sampled_from([None, "UTC", "America/New_York", "Asia/Kolkata"]),
    buckets=st.sampled_from([1, 4]),
    budget=st.sampled_from([None, 1]),  # 1 byte: training sets written out of core
)
# exact duplicates within a run (the later row wins) and across runs (the later run wins)
@example(
    first=[(1, 5, 0), (1, 5, 0)],
    late=[(2, 1, 0)],
    labels=[(1, 20)],
    ttl=None,
    mode="knowledge",
    zone=None,
    buckets=4,
    budget=1,
)
@example(
    first=[(1, 5, 0)],
    late=[(1, 5, 0)],
    labels=[(1, 20), (1, 100)],
    ttl=None,
    mode="event",
    zone=None,
    buckets=4,
    budget=1,
)
def test_store_matches_oracle(
    store_root: StoreRoot,
    first: list[tuple[int | None, int, int]],
    late: list[tuple[int | None, int, int]],
    labels: list[tuple[int | None, int]],
    ttl: int | None,
    mode: str,
    zone: str | None,
    buckets: int,
    budget: int | None,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "trips.parquet"
        a = source_frame(first, 0)
        # the second batch arrives later than everything in the first (late rows included)
        shift = max(e + c for _, e, c in first) + 1
        b = source_frame([(k, e, max(c, shift - e)) for k, e, c in late], 1000)
        a.write_parquet(path)
        src = fk.Source("trips", path, timestamp="event_ts", created_timestamp="ingested_at")
        view = fk.feature_view(
            entity=ENTITY, sources=[src], ttl=None if ttl is None else timedelta(minutes=ttl)
        )(passthrough)
        store = store_root.open()
        import warnings

        with warnings.catch_warnings(), bucketed(buckets):
            warnings.simplefilter("ignore", fk.FeatureKitWarning)  # null keys are dropped
            store.materialize(view)
            pl.concat([a, b]).write_parquet(path)
            second = store.materialize(view)
        assert second.mode in ("incremental", "noop")

        label_frame = pl.DataFrame(
            {
                "driver_id": pl.Series([k for k, _ in labels], dtype=pl.Int64),
                "label_ts": minutes([m for _, m in labels]),
            }
        )
        if zone is not None:
            label_frame = label_frame.with_columns(
                pl.col("label_ts").dt.replace_time_zone("UTC").dt.convert_time_zone(zone)
            )
        reader = store_root.open(str(store.root), memory_budget=budget)
        ts = reader.training_set(
            label_frame,
            features=["passthrough:value"],
            timestamp="label_ts",
            point_in_time=mode,  # type: ignore[arg-type]
        )
        if store_root.kind == "local":  # spilled results are written under the store root
            spilled = list(Path(str(store.root)).glob("training_sets/*/result"))
            assert (len(spilled) > 0) == (budget is not None)
        got = ts.to_polars()
        whole = pl.concat([a, b])  # what the view outputs over the full source, in order
        expected = oracle_pit_join(
            label_frame,
            timestamp="label_ts",
            views=[
                ViewFrame(
                    "passthrough",
                    whole,
                    ("driver_id",),
                    "event_ts",
                    "ingested_at",
                    ("value",),
                    None if ttl is None else timedelta(minutes=ttl),
                )
            ],
            point_in_time=mode,
        )
        assert got["value"].to_list() == expected["value"].to_list()
        assert got.select("driver_id", "label_ts").equals(label_frame)


# ---- nanosecond inputs ------------------------------------------------------------------
# Delta keeps microseconds. featurekit stores every event and created time rounded UP to
# the next microsecond (docs/pit.md): a row is never known earlier than it really was, so
# a value arriving nanoseconds after a label can never leak into it. The expectation
# below is the oracle run on the source with exactly that rounding (integer arithmetic,
# independent of featurekit), and each pick is also checked against the exact ns times.

NUDGES = [0, 1, 200, 800, 999, 1_000, 1_001]  # ns around microsecond boundaries


def _ceil_us(ns: int) -> int:
    return -(-ns // 1_000) * 1_000


def _ns_times(values: list[int | None]) -> pl.Series:
    """Nanosecond datetimes at BASE + ns offsets (naive: UTC)."""
    base = int((BASE - datetime(1970, 1, 1)) / timedelta(microseconds=1)) * 1_000
    raw = pl.Series([None if v is None else base + v for v in values], dtype=pl.Int64)
    return raw.cast(pl.Datetime("ns"))


ns_rows = st.lists(
    st.tuples(
        st.integers(0, 2),  # key
        st.integers(0, 3),  # event, in microseconds
        st.sampled_from(NUDGES),  # event nudge, ns
        st.integers(0, 2),  # created - event, in microseconds
        st.sampled_from(NUDGES),  # created nudge, ns
    ),
    min_size=1,
    max_size=20,
)
ns_labels = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 6), st.sampled_from(NUDGES)),
    min_size=1,
    max_size=15,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=ns_rows,
    labels=ns_labels,
    mode=st.sampled_from(["knowledge", "event"]),
    ttl_ns=st.sampled_from([None, 2_000]),
    buckets=st.sampled_from([1, 4]),
)
# the leak: a value known 800 ns after the label used to be stored 800 ns early
@example(spec=[(1, 1, 800, 0, 0)], labels=[(1, 1, 0)], mode="event", ttl_ns=None, buckets=1)
@example(spec=[(1, 0, 0, 1, 800)], labels=[(1, 1, 0)], mode="knowledge", ttl_ns=None, buckets=4)
def test_store_matches_oracle_on_nanosecond_data(
    spec: list[tuple[int, int, int, int, int]],
    labels: list[tuple[int, int, int]],
    mode: str,
    ttl_ns: int | None,
    buckets: int,
) -> None:
    event = [e * 1_000 + en for _, e, en, _, _ in spec]
    created = [ev + c * 1_000 + cn for ev, (_, _, _, c, cn) in zip(event, spec, strict=True)]
    source = pl.DataFrame(
        {
            "driver_id": pl.Series([k for k, *_ in spec], dtype=pl.Int64),
            "event_ts": _ns_times(event),
            "ingested_at": _ns_times(created),
            "value": pl.Series([float(i) for i in range(len(spec))]),
        }
    )
    ttl = None if ttl_ns is None else timedelta(microseconds=ttl_ns // 1_000)
    label_ns = [t * 1_000 + n for _, t, n in labels]
    label_frame = pl.DataFrame(
        {
            "driver_id": pl.Series([k for k, *_ in labels], dtype=pl.Int64),
            "label_ts": _ns_times(label_ns),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source.write_parquet(folder / "trips.parquet")
        src = fk.Source(
            "trips", folder / "trips.parquet", timestamp="event_ts", created_timestamp="ingested_at"
        )
        view = fk.feature_view(entity=ENTITY, sources=[src], ttl=ttl)(passthrough)
        store = fk.Store(folder / "store", progress=False)
        with bucketed(buckets):
            store.materialize(view)
        got = store.training_set(
            label_frame,
            features=["passthrough:value"],
            timestamp="label_ts",
            point_in_time=mode,  # type: ignore[arg-type]
        ).to_polars()
    stored = source.with_columns(
        event_ts=_ns_times([_ceil_us(v) for v in event]),
        ingested_at=_ns_times([_ceil_us(v) for v in created]),
    )
    expected = oracle_pit_join(
        label_frame,
        timestamp="label_ts",
        views=[
            ViewFrame(
                "passthrough",
                stored,
                ("driver_id",),
                "event_ts",
                "ingested_at",
                ("value",),
                ttl,
            )
        ],
        point_in_time=mode,
    )
    assert got["value"].to_list() == expected["value"].to_list()
    assert got.select("driver_id", "label_ts").equals(label_frame)
    for t, value in zip(label_ns, got["value"].to_list(), strict=True):
        if value is not None:  # never a row that happened, or was known, after the label
            row = int(value)
            assert event[row] <= t
            if mode == "knowledge":
                assert created[row] <= t
