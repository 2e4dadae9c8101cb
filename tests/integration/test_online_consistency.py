"""The point of the product: online lookups return exactly what a training set with labels
at the lookup instant returns (in-process on SQLite and Redis, and over HTTP), for a few
hundred entities incl. expired, missing, late-known and future rows, NaN/inf values,
on-demand features, two key columns, pinned versions and feature services.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from test_online_support import (
    entities,
    fare_ratio,
    from_json,
    http_server,
    labels_at,
    now_floor,
    pricing,
    redis_server,
    views,
    write_data,
)

import featurekit as fk
from featurekit.core.hashing import frame_hash

FEATURES: list[Any] = [
    "driver_stats:*",
    "zone_stats:surge",
    "zone_stats:last_seen",
    "zone_stats:active",
    fare_ratio,
]
FEATURE_COLUMNS = [
    "avg_fare",
    "trips_today",
    "rating",
    "surge",
    "last_seen",
    "active",
    "fare_ratio",
    "no_fare",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("online")
    (root / "data").mkdir()
    now = now_floor()
    write_data(root / "data", now)
    store = fk.Store(root / "store", progress=False)
    a, b = views(root / "data")
    store.materialize(a)
    store.materialize(b)
    return {"root": root, "store": store, "now": now, "views": (a, b)}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


def expected(store: fk.Store, when: datetime, features: Any = FEATURES) -> pl.DataFrame:
    ts = store.training_set(labels_at(entities(), when), features=features, timestamp="label_ts")
    return ts.to_polars()


def same(online: pl.DataFrame, offline: pl.DataFrame, columns: list[str]) -> None:
    """Exactly equal: values, nulls, NaN/inf, dtypes and row order (content hash)."""
    a, b = online.select(columns), offline.select(columns)
    assert a.schema == b.schema
    if frame_hash(a) != frame_hash(b):
        diff = a.with_row_index().filter(
            pl.any_horizontal(pl.col(c).ne_missing(b[c]) for c in columns)
        )
        raise AssertionError(f"online and training differ in {diff.height} rows:\n{diff}")


def test_in_process_matches_training_set_now_and_later(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    now = datetime.now(UTC)
    online = store.get_online_features(FEATURES, entities(), with_metadata=True, at=now)
    same(online, expected(store, now), FEATURE_COLUMNS)
    assert online.columns[:3] == ["driver_id", "zone", "amount"]
    assert online["driver_id"].to_list() == entities()["driver_id"]  # request order
    status = online["driver_stats__status"].value_counts()
    counts = dict(zip(status["driver_stats__status"], status["count"], strict=True))
    assert counts["present"] > 100 and counts["expired"] >= 40 and counts["not_found"] >= 50
    expired = online.filter(pl.col("driver_stats__status") == "expired")
    assert expired["avg_fare"].null_count() == expired.height  # never served as if fresh
    assert expired["driver_stats__event_ts"].null_count() == 0
    assert online["avg_fare"].is_nan().any() and online["avg_fare"].is_infinite().any()
    # late-known rows (kind 4) serve the older value now ...
    kind4 = online.filter(pl.col("driver_id") == 4)
    assert kind4["avg_fare"].to_list() == [3.0]
    # ... and 95 minutes later the late row and the future row (kind 3) have arrived
    later = now + timedelta(minutes=95)
    online_later = store.get_online_features(FEATURES, entities(), with_metadata=True, at=later)
    same(online_later, expected(store, later), FEATURE_COLUMNS)
    assert online_later.filter(pl.col("driver_id") == 4)["avg_fare"].to_list() == [4.0]
    assert online_later.filter(pl.col("driver_id") == 3)["avg_fare"].to_list() == [2.0]


def test_ttl_edge_is_inclusive_like_training(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    edge = world["now"].replace(tzinfo=UTC) + timedelta(minutes=90)  # fresh rows: exactly 2h old
    for when in (edge, edge + timedelta(microseconds=1)):
        online = store.get_online_features(FEATURES, entities(), with_metadata=True, at=when)
        same(online, expected(store, when), FEATURE_COLUMNS)
        status = online.filter(pl.col("driver_id") == 1)["driver_stats__status"].item()
        assert status == ("present" if when == edge else "expired")


def test_default_instant_is_now(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    before = datetime.now(UTC)
    online = store.get_online_features(FEATURES, entities())
    after = datetime.now(UTC)
    # no data boundary lies between before and after, so both instants give the same rows
    same(online, expected(store, before), FEATURE_COLUMNS)
    same(online, expected(store, after), FEATURE_COLUMNS)


def test_hidden_inputs_and_services(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    now = datetime.now(UTC)
    # fare_ratio reads avg_fare, which is not requested: computed, then dropped in both paths
    online = store.get_online_features(["zone_stats:surge", fare_ratio], entities(), at=now)
    offline = expected(store, now, ["zone_stats:surge", fare_ratio])
    assert "avg_fare" not in online.columns and "avg_fare" not in offline.columns
    same(online, offline, ["surge", "fare_ratio", "no_fare"])
    by_service = store.get_online_features(pricing, entities(), at=now)
    same(by_service, expected(store, now, [pricing]), ["surge", "fare_ratio", "no_fare"])


def test_pinned_versions_are_served(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_data(tmp_path / "data", now_floor())
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(views(tmp_path / "data")[0])
    # a new version (TTL 6h: the 5h-old rows are fresh again); the pinned v1 is still served
    a3, _ = views(tmp_path / "data", ttl="6h")
    store.materialize(a3)
    now = datetime.now(UTC)
    pinned = store.get_online_features(["driver_stats@1:avg_fare"], entities(), at=now)
    same(pinned, expected(store, now, ["driver_stats@1:avg_fare"]), ["avg_fare"])
    latest = store.get_online_features(
        ["driver_stats:avg_fare"], entities(), with_metadata=True, at=now
    )
    same(latest, expected(store, now, ["driver_stats:avg_fare"]), ["avg_fare"])
    assert latest["avg_fare"].null_count() < pinned["avg_fare"].null_count()


def test_training_set_with_on_demand_features_rebuilds(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    ts = store.training_set(
        labels_at(entities(), datetime.now(UTC)), features=[pricing], timestamp="label_ts"
    )
    assert ts.manifest.on_demand[0].name == "fare_ratio"
    again = fk.Store(store.root, progress=False).training_set_by_id(ts.id, on_demand=[fare_ratio])
    assert frame_hash(again.to_polars()) == frame_hash(ts.to_polars())
    with pytest.raises(fk.ReproducibilityError, match="on_demand=\\[fare_ratio\\]"):
        fk.Store(store.root, progress=False).training_set_by_id(ts.id)


def test_redis_matches_training_set(world: dict[str, Any], redis_url: str) -> None:
    store = fk.Store(world["store"].root, progress=False, online=redis_url)
    for view in world["views"]:
        result = store.materialize(view)  # offline no-op: fills the empty Redis store
        assert result.mode == "noop"
    now = datetime.now(UTC)
    online = store.get_online_features(FEATURES, entities(), with_metadata=True, at=now)
    same(online, expected(store, now), FEATURE_COLUMNS)
    embedded = world["store"].get_online_features(FEATURES, entities(), with_metadata=True, at=now)
    assert frame_hash(online) == frame_hash(embedded)


def test_http_matches_training_set(world: dict[str, Any], redis_url: str) -> None:
    from featurekit.serving.app import create_app

    for online in (None, redis_url):
        store = fk.Store(world["store"].root, progress=False, online=online)
        if online is not None:
            store.materialize(world["views"][0])
            store.materialize(world["views"][1])
        app = create_app(store, definitions=[fare_ratio, pricing])
        ents = entities()
        with http_server(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            body = {"features": ["driver_stats:*", "zone_stats:*"], "entities": ents}
            body["features"].append("fare_ratio:*")
            reply = client.post("/v1/features", json={**body, "with_metadata": True})
            assert reply.status_code == 200, reply.text
            data = reply.json()
            when = datetime.fromisoformat(data["lookup_ts"])
            offline = expected(store, when, ["driver_stats:*", "zone_stats:*", fare_ratio])
            columns = [c for c in FEATURE_COLUMNS]
            got = from_json(data["columns"], offline.select(["driver_id", *columns]))
            # JSON has no NaN/inf: they come back as null; everything else is exact
            floats = [c for c in columns if offline.schema[c] == pl.Float64]
            clean = offline.with_columns(
                pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c)
                for c in floats
            )
            same(got, clean, ["driver_id", *columns])
            assert data["columns"]["driver_stats__status"].count("expired") >= 40
            service = client.post(
                "/v1/features", json={"feature_service": "pricing", "entities": ents}
            )
            assert service.status_code == 200, service.text
            assert list(service.json()["columns"]) == [
                "driver_id",
                "zone",
                "amount",
                "surge",
                "fare_ratio",
                "no_fare",
            ]


def test_materialization_refreshes_online_and_noop_repairs(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    now = now_floor()
    write_data(tmp_path / "data", now)
    store = fk.Store(tmp_path / "store", progress=False)
    a, _ = views(tmp_path / "data")
    store.materialize(a)
    first = store.get_online_features(["driver_stats:trips_today"], {"driver_id": [1]})
    # new rows arrive; the next run refreshes the online snapshot
    trips = pl.read_parquet(tmp_path / "data" / "trips.parquet")
    extra = trips.filter(pl.col("driver_id") == 1).with_columns(
        pl.lit(now - timedelta(minutes=5)).alias("event_ts"),
        pl.lit(now - timedelta(minutes=4)).alias("ingested_at"),
        pl.lit(999, dtype=pl.Int64).alias("trips_today"),
    )
    pl.concat([trips, extra]).write_parquet(tmp_path / "data" / "trips.parquet")
    assert store.materialize(a, full_refresh=True).mode == "full"
    second = store.get_online_features(["driver_stats:trips_today"], {"driver_id": [1]})
    assert second["trips_today"].to_list() == [999] != first["trips_today"].to_list()
    # an online store that missed the run (e.g. it was down) is filled by a no-op run
    other = fk.Store(tmp_path / "store", progress=False, online="memory")
    with pytest.raises(fk.NotFoundError, match="has no online data"):
        other.get_online_features(["driver_stats:trips_today"], {"driver_id": [1]})
    assert other.materialize(a).mode == "noop"
    assert other.get_online_features(["driver_stats:trips_today"], {"driver_id": [1]}).equals(
        second
    )


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_pushed_rows_keep_online_equal_to_training_sets(tmp_path: Path, backend: str) -> None:
    """Pushes at random instants (older than served, future, NaN/inf, new drivers) over the
    same world: every entity, every instant around each push, on-demand features included."""
    import random

    (tmp_path / "data").mkdir()
    write_data(tmp_path / "data", now_floor())
    with contextlib.ExitStack() as stack:
        spec = None if backend == "sqlite" else stack.enter_context(redis_server())
        store = fk.Store(tmp_path / "store", progress=False, online=spec)
        a, b = views(tmp_path / "data")
        store.materialize(a)
        store.materialize(b)
        rng = random.Random(11)
        instants = []
        ids = entities()["driver_id"][:-1]  # the null key cannot be pushed
        for _ in range(6):
            at = datetime.now(UTC)
            rows = [
                {
                    "driver_id": rng.choice(ids),
                    "event_ts": at + timedelta(minutes=rng.choice([-300, -100, -30, -1, 0, 40])),
                    "avg_fare": rng.choice([1.5, 22.0, math.nan, math.inf]),
                    "trips_today": rng.randint(0, 30),
                    "rating": rng.choice([None, 4.5, 3.0]),
                }
                for _ in range(rng.randint(1, 25))
            ]
            instants.append(store.push(a, rows).ingested_at)
        checks = {instants[-1] + timedelta(minutes=m) for m in (1, 45, 125)}
        for when in instants:
            checks |= {when - timedelta(microseconds=1), when}
        for when in sorted(checks):
            online = store.get_online_features(FEATURES, entities(), at=when)
            same(online, expected(store, when), FEATURE_COLUMNS)
