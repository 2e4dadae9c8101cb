"""Batched (streaming) materialization writes exactly the table the in-memory path writes."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import featurekit as fk
from featurekit.core.errors import DefinitionError, UserCodeError
from featurekit.offline.batching import MAX_BATCHES, batch_count, key_partitions, parse_size

BASE = datetime(2026, 3, 1)
TINY = 600  # bytes: a budget that splits even a handful of rows into several batches


def rows_frame(spec: list[tuple[int | None, int, int]], string_keys: bool) -> pl.DataFrame:
    keys = [k for k, _, _ in spec]
    return pl.DataFrame(
        {
            "driver_id": pl.Series(
                [None if k is None else f"d{k}" for k in keys] if string_keys else keys,
                dtype=pl.String if string_keys else pl.Int64,
            ),
            "event_ts": pl.Series(
                [BASE + timedelta(minutes=e) for _, e, _ in spec], dtype=pl.Datetime("us")
            ),
            "ingested_at": pl.Series(
                [BASE + timedelta(minutes=e + c) for _, e, c in spec], dtype=pl.Datetime("us")
            ),
            "value": pl.Series([float(i) for i in range(len(spec))], dtype=pl.Float64),
        }
    )


def passthrough(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", "value")


def build(
    folder: Path, frame: pl.DataFrame, budget: int | None, aggregated: bool
) -> tuple[fk.Store, fk.FeatureView]:
    path = folder / "trips.parquet"
    frame.write_parquet(path)
    src = fk.Source("trips", path, timestamp="event_ts", created_timestamp="ingested_at")
    entity = fk.Entity("driver", keys=["driver_id"])
    if aggregated:
        view = fk.feature_view(
            entity=entity,
            sources=[src],
            aggregations=[
                fk.Aggregation("value", "last", window="1h"),
                fk.Aggregation("value", "sum", window="10m"),
            ],
        )(passthrough)
    else:
        view = fk.feature_view(entity=entity, sources=[src], ttl="30m")(passthrough)
    store = fk.Store(folder / "store", progress=False, online=False, memory_budget=budget)
    return store, view


spec_st = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 6)),  # key (null sometimes)
        st.integers(0, 10),  # event minute: exact ties are common
        st.integers(0, 3),  # created = event + this
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=spec_st,
    later=spec_st,
    string_keys=st.booleans(),
    aggregated=st.booleans(),
)
@example(first=[(1, 5, 0), (1, 5, 0), (2, 5, 0)], later=[], string_keys=False, aggregated=False)
def test_batched_equals_in_memory(
    tmp_path_factory: pytest.TempPathFactory,
    first: list[tuple[int | None, int, int]],
    later: list[tuple[int | None, int, int]],
    string_keys: bool,
    aggregated: bool,
) -> None:
    """Same stored rows (per entity, in order), same run results, same training set."""
    a = rows_frame(first, string_keys)
    shift = 20  # the later rows are ingested after everything in the first run
    b = rows_frame([(k, e, c + shift) for k, e, c in later], string_keys).with_columns(
        pl.col("value") + 1000
    )
    labels = pl.DataFrame(
        {
            "driver_id": a["driver_id"].append(b["driver_id"]).head(20),
            "label_ts": [BASE + timedelta(minutes=m) for m in range(0, 40, 2)][
                : min(20, a.height + b.height)
            ],
        }
    )
    tables, results, sets = [], [], []
    for budget in (None, TINY):
        folder = tmp_path_factory.mktemp("store")
        store, view = build(folder, a, budget, aggregated)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fk.FeatureKitWarning)  # null keys are dropped
            runs = [store.materialize(view)]
            pl.concat([a, b]).write_parquet(folder / "trips.parquet")
            runs.append(store.materialize(view))
        results.append([(r.mode, r.rows_written) for r in runs])
        # the table's files may be read in any order (each run adds its own); what must match
        # is what the kernel sees: the rows in a stable (keys, event, created) order, ties
        # (aggregation views keep exact duplicates) in the order the view produced them
        identity = ["driver_id", "event_ts", "ingested_at"]
        tables.append(store.read(view.name).sort(identity, maintain_order=True))
        ts = store.training_set(labels, features=[view], timestamp="label_ts")
        sets.append(ts.to_polars())
    assert results[0] == results[1]
    assert tables[0].equals(tables[1])
    assert sets[0].equals(sets[1])


def test_batches_are_really_used(tmp_path: Path) -> None:
    """A tiny budget splits the run; the integer key gives ordered, disjoint key ranges."""
    frame = rows_frame([(k % 7, k % 11, k % 3) for k in range(200)], string_keys=False)
    lf = frame.lazy()
    assert batch_count(10_000, TINY) > 1
    parts = key_partitions(lf, ["driver_id"], 4)
    sizes = [frame.filter(p).height for p in parts]
    assert sum(sizes) == frame.height and len(parts) == 4
    hashed = key_partitions(lf.with_columns(pl.col("driver_id").cast(pl.String)), ["driver_id"], 3)
    assert (
        sum(
            frame.with_columns(pl.col("driver_id").cast(pl.String)).filter(p).height for p in hashed
        )
        == 200
    )
    store, view = build(tmp_path, frame, TINY, aggregated=False)
    store.materialize(view)
    stored = store.read(view.name)
    assert stored.height == frame.unique(["driver_id", "event_ts", "ingested_at"]).height


def test_failing_batch_commits_nothing(tmp_path: Path) -> None:
    """User code failing in a later batch aborts the one commit; the error is the user's."""
    frame = rows_frame([(k % 7, k % 11, k % 3) for k in range(200)], string_keys=False)
    frame.write_parquet(tmp_path / "trips.parquet")
    src = fk.Source(
        "trips", tmp_path / "trips.parquet", timestamp="event_ts", created_timestamp="ingested_at"
    )
    entity = fk.Entity("driver", keys=["driver_id"])

    def explode(trips: pl.LazyFrame) -> pl.LazyFrame:
        # fails only for the last key range, i.e. while a later batch is computed
        return trips.select(
            "driver_id",
            "event_ts",
            "ingested_at",
            pl.when(pl.col("driver_id") < 6)
            .then(pl.col("value"))
            .otherwise(pl.col("value").cast(pl.String).str.to_integer(strict=True))
            .alias("value"),
        )

    view = fk.feature_view(entity=entity, sources=[src])(explode)
    store = fk.Store(tmp_path / "store", progress=False, online=False, memory_budget=TINY)
    with pytest.raises(UserCodeError):
        store.materialize(view)
    assert store.views() == []
    assert not (tmp_path / "store" / "features" / "explode" / "v1" / "_delta_log").exists() or (
        not list((tmp_path / "store" / "features" / "explode" / "v1" / "_delta_log").iterdir())
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8GiB", 8 * 1024**3), ("512MB", 512 * 10**6), (1000, 1000), ("1.5 kib", 1536), (None, None)],
)
def test_parse_size(text: str | int | None, expected: int | None) -> None:
    assert parse_size(text) == expected


def test_parse_size_rejects_nonsense() -> None:
    with pytest.raises(DefinitionError, match="is not a size; use e.g. '8GiB'"):
        parse_size("lots")


@pytest.mark.parametrize("budget", [1, 2, 3, 4])
def test_a_budget_of_a_few_bytes_means_the_smallest_batches(budget: int) -> None:
    # the room left for a batch rounds down to zero bytes: as many batches as allowed
    assert batch_count(10_000, budget) == MAX_BATCHES
    assert batch_count(0, budget) == 1


@pytest.mark.parametrize("budget", [0, -8])
def test_a_budget_of_no_bytes_is_refused(budget: int) -> None:
    with pytest.raises(DefinitionError, match=f"memory budget must be positive, got {budget}"):
        batch_count(10_000, budget)


def test_a_one_byte_budget_materializes_the_in_memory_table(tmp_path: Path) -> None:
    frame = rows_frame([(k % 5, k % 13, k % 2) for k in range(60)], string_keys=False)
    tables = []
    for budget in (None, 1):
        folder = tmp_path / f"budget_{budget}"
        folder.mkdir()
        store, view = build(folder, frame, budget, aggregated=False)
        store.materialize(view)
        identity = ["driver_id", "event_ts", "ingested_at"]
        tables.append(store.read(view.name).sort(identity, maintain_order=True))
    assert tables[1].equals(tables[0])
