"""A 1-entity lookup of one view takes a shorter path than a batch; these pin that it
answers exactly what the same entity gets inside a batch: values, dtypes, statuses,
event times, nulls, errors, and a new snapshot or a push seen at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import featurekit as fk
from featurekit.core.errors import DefinitionError
from featurekit.online.errors import EntityError

rider = fk.Entity("rider", keys=["rider_id"])
trip = fk.Entity("trip", keys=["city", "trip_no"])
NOW = datetime.now(UTC).replace(tzinfo=None)


def rider_stats(riders: pl.LazyFrame) -> pl.LazyFrame:
    """A float, a string and a date per rider."""
    return riders.select("rider_id", "event_ts", "score", "tier", "since")


def trip_stats(trips: pl.LazyFrame) -> pl.LazyFrame:
    """One feature of a two-key entity."""
    return trips.select("city", "trip_no", "event_ts", "fare")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> fk.Store:
    root = tmp_path_factory.mktemp("single")
    pl.DataFrame(
        {
            "rider_id": [1, 2, 3],
            # rider 3 is older than the TTL: expired
            "event_ts": [
                NOW - timedelta(minutes=5),
                NOW - timedelta(hours=1),
                NOW - timedelta(days=3),
            ],
            "score": [0.5, None, 2.0],
            "tier": ["gold", "blue", None],
            "since": [datetime(2020, 1, 1).date(), None, datetime(2021, 6, 1).date()],
        },
        schema_overrides={"event_ts": pl.Datetime("us")},
    ).write_parquet(root / "riders.parquet")
    pl.DataFrame(
        {
            "city": ["ams", "ams", "rot"],
            "trip_no": [1, 2, 1],
            "event_ts": [NOW - timedelta(minutes=1)] * 3,
            "fare": [10.0, 12.5, 7.25],
        },
        schema_overrides={"event_ts": pl.Datetime("us")},
    ).write_parquet(root / "trips.parquet")
    riders = fk.Source("riders", root / "riders.parquet", timestamp="event_ts")
    trips = fk.Source("trips", root / "trips.parquet", timestamp="event_ts")
    store = fk.Store(root / "store", progress=False)
    store.materialize(fk.feature_view(entity=rider, sources=[riders], ttl="1d")(rider_stats))
    store.materialize(fk.feature_view(entity=trip, sources=[trips], ttl="1d")(trip_stats))
    return store


RIDER = ["rider_stats:score", "rider_stats:tier", "rider_stats:since"]


@pytest.mark.parametrize("metadata", [False, True])
def test_one_rider_equals_its_row_in_a_batch(store: fk.Store, metadata: bool) -> None:
    ids = [1, 2, 3, 99]  # present, nulls, expired, not found
    batch = store.get_online_features(RIDER, {"rider_id": ids}, with_metadata=metadata)
    for i, rider_id in enumerate(ids):
        one = store.get_online_features(RIDER, {"rider_id": [rider_id]}, with_metadata=metadata)
        row = batch.slice(i, 1)
        if metadata:  # event times and statuses are equal; the lookup instant differs
            assert one["rider_stats__status"].to_list() == row["rider_stats__status"].to_list()
        assert_frame_equal(one, row)
    if metadata:
        assert batch["rider_stats__status"].to_list() == [
            "present",
            "present",
            "expired",
            "not_found",
        ]


def test_one_rider_values_and_dtypes(store: fk.Store) -> None:
    one = store.get_online_features(RIDER, {"rider_id": [1]})
    assert one.schema == pl.Schema(
        {"rider_id": pl.Int64(), "score": pl.Float64(), "tier": pl.String(), "since": pl.Date()}
    )
    assert one.row(0) == (1, 0.5, "gold", datetime(2020, 1, 1).date())
    expired = store.get_online_features(RIDER, {"rider_id": [3]}, with_metadata=True)
    assert expired.row(0)[:4] == (3, None, None, None)
    assert expired["rider_stats__status"].to_list() == ["expired"]
    assert expired["rider_stats__event_ts"].dtype == pl.Datetime("us", "UTC")


def test_a_null_key_and_a_pass_through_column(store: fk.Store) -> None:
    nothing = store.get_online_features(RIDER, {"rider_id": [None]}, with_metadata=True)
    assert nothing.row(0)[:4] == (None, None, None, None)
    assert nothing["rider_stats__status"].to_list() == ["not_found"]
    passed = store.get_online_features(RIDER, {"rider_id": [1], "label": ["x"]})
    assert passed.columns == ["rider_id", "label", "score", "tier", "since"]
    assert passed.row(0) == (1, "x", 0.5, "gold", datetime(2020, 1, 1).date())


def test_two_keys(store: fk.Store) -> None:
    one = store.get_online_features(["trip_stats:fare"], {"city": ["ams"], "trip_no": [2]})
    assert one.row(0) == ("ams", 2, 12.5)
    batch = store.get_online_features(
        ["trip_stats:fare"], {"city": ["rot", "ams"], "trip_no": [1, 2]}
    )
    assert_frame_equal(
        store.get_online_features(["trip_stats:fare"], {"city": ["rot"], "trip_no": [1]}),
        batch.slice(0, 1),
    )


def test_errors_are_those_of_a_batch(store: fk.Store) -> None:
    with pytest.raises(EntityError, match=r"entity key 'rider_id' must be integers .* got '1'"):
        store.get_online_features(RIDER, {"rider_id": ["1"]})
    with pytest.raises(EntityError, match="out of range for Int64"):
        store.get_online_features(RIDER, {"rider_id": [2**63]})
    with pytest.raises(DefinitionError, match="is before the online snapshot of view"):
        store.get_online_features(RIDER, {"rider_id": [1]}, at=datetime(2000, 1, 1, tzinfo=UTC))


def scores(riders: pl.LazyFrame) -> pl.LazyFrame:
    """A score per rider, with the created time a push sets."""
    return riders.select("rider_id", "event_ts", "ingested_at", "score")


def test_a_new_snapshot_and_a_push_are_seen_at_once(tmp_path: Path) -> None:
    path = tmp_path / "riders.parquet"

    def write(*rows: tuple[float, int]) -> None:  # (score, minutes ago)
        at = [NOW - timedelta(minutes=m) for _, m in rows]
        pl.DataFrame(
            {
                "rider_id": [1] * len(rows),
                "event_ts": at,
                "ingested_at": at,
                "score": [s for s, _ in rows],
            },
            schema_overrides={"event_ts": pl.Datetime("us"), "ingested_at": pl.Datetime("us")},
        ).write_parquet(path)

    def score() -> object:
        return store.get_online_features(["scores:score"], {"rider_id": [1]}).item(0, "score")

    write((1.0, 5))
    source = fk.Source("riders", path, timestamp="event_ts", created_timestamp="ingested_at")
    view = fk.feature_view(entity=rider, sources=[source], ttl="1d")(scores)
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(view)
    assert score() == 1.0
    write((1.0, 5), (2.0, 1))  # a newer row: materialization takes it
    store.materialize(view)  # a new snapshot (a new id) of the same version
    assert score() == 2.0
    store.push("scores", [{"rider_id": 1, "event_ts": datetime.now(UTC), "score": 3.0}])
    assert score() == 3.0
