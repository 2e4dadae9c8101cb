"""The whole path (materialize in two runs, late rows, Delta, pruning, training set) vs the oracle.

The kernel has its own oracle tests; this one proves that what the store adds (write-time
tie resolution, incremental runs, reading pinned Delta versions, pruning by label time)
changes no answer.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
from conftest import StoreRoot
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_pit_oracle import oracle_pit_join

import featurekit as fk
from featurekit.kernels.pit import ViewFrame

BASE = datetime(2026, 3, 1)
ENTITY = fk.Entity("driver", keys=["driver_id"])


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
)
# exact duplicates within a run (the later row wins) and across runs (the later run wins)
@example(
    first=[(1, 5, 0), (1, 5, 0)],
    late=[(2, 1, 0)],
    labels=[(1, 20)],
    ttl=None,
    mode="knowledge",
    zone=None,
)
@example(
    first=[(1, 5, 0)],
    late=[(1, 5, 0)],
    labels=[(1, 20), (1, 100)],
    ttl=None,
    mode="event",
    zone=None,
)
def test_store_matches_oracle(
    store_root: StoreRoot,
    first: list[tuple[int | None, int, int]],
    late: list[tuple[int | None, int, int]],
    labels: list[tuple[int | None, int]],
    ttl: int | None,
    mode: str,
    zone: str | None,
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

        with warnings.catch_warnings():
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
        got = store.training_set(
            label_frame,
            features=["passthrough:value"],
            timestamp="label_ts",
            point_in_time=mode,  # type: ignore[arg-type]
        ).to_polars()
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
