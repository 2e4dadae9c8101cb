"""Aggregation views through the store: exact at every label, incremental, late events."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from agg_oracle import close, oracle
from conftest import StoreRoot
from test_online_support import redis_server

import featurekit as fk

BASE = datetime(2026, 2, 1)
RIDER = fk.Entity("rider", keys=["rider_id"])


def at(hours: float) -> datetime:
    return BASE + timedelta(hours=float(hours))


def completed(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.filter(pl.col("status") == "completed")


def trips_frame(seed: int, n: int, late_share: float = 0.1) -> pl.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    hours = rng.integers(0, 24 * 20, n)
    delay = np.where(rng.random(n) < late_share, rng.integers(1, 72, n), 0)
    return pl.DataFrame(
        {
            "trip_id": np.arange(n) + seed * 100_000,
            "rider_id": rng.integers(0, 6, n),
            "event_ts": [at(h) for h in hours],
            "ingested_at": [at(h + d) for h, d in zip(hours, delay, strict=True)],
            "fare": np.round(rng.random(n) * 50, 2),
            "seats": rng.integers(1, 4, n),
            "status": rng.choice(["completed", "cancelled"], n, p=[0.85, 0.15]),
        }
    ).with_columns(
        pl.when(pl.col("trip_id") % 13 == 0).then(None).otherwise(pl.col("fare")).alias("fare")
    )


AGGS = [
    fk.Aggregation("fare", "sum", window="7d"),
    fk.Aggregation("fare", "mean", window="1h"),
    fk.Aggregation("trip_id", "count", window="30d"),
    fk.Aggregation("fare", "max", window="7d", name="max_fare_7d"),
    fk.Aggregation("fare", "min", window="2d"),
    fk.Aggregation("fare", "last", window="1d"),
    fk.Aggregation("fare", "stddev", window="7d"),
    fk.Aggregation("seats", "sum", window=None),
]


def make_view(path: Path) -> fk.FeatureView:
    trips = fk.Source("trips", path, timestamp="event_ts", created_timestamp="ingested_at")
    return fk.feature_view(entity=RIDER, sources=[trips], aggregations=AGGS)(completed)


def expected(labels: pl.DataFrame, events: pl.DataFrame, knowledge: bool) -> dict[str, list]:
    done = events.filter(pl.col("status") == "completed")
    label_rows = list(zip(labels["rider_id"].to_list(), labels["label_ts"].to_list(), strict=True))
    out = {}
    for agg in AGGS:
        rows = list(
            zip(
                done["rider_id"].to_list(),
                done["event_ts"].to_list(),
                done["ingested_at"].to_list(),
                done[agg.column].to_list(),
                strict=True,
            )
        )
        spec = agg
        out[agg.name] = oracle(label_rows, rows, spec, knowledge)
    return out


def assert_close(got: list, want: list) -> None:
    assert all(close(a, b) for a, b in zip(got, want, strict=True)), (got, want)


def test_training_set_is_exact_at_every_label(tmp_path: Path, store_root: StoreRoot) -> None:
    path = tmp_path / "trips.parquet"
    first = trips_frame(1, 300)
    first.write_parquet(path)
    view = make_view(path)
    store = store_root.open()
    store.materialize(view)
    # late events (old event times, new ingestion) and new events land; incremental run
    second = trips_frame(2, 150, late_share=0.5).with_columns(
        pl.col("ingested_at") + timedelta(days=21)
    )
    events = pl.concat([first, second])
    events.write_parquet(path)
    assert store.materialize(view).mode == "incremental"
    assert store.materialize(view).mode == "noop"
    assert store.read("completed").height == events.filter(pl.col("status") == "completed").height

    labels = pl.DataFrame(
        {
            "rider_id": [0, 1, 2, 3, 4, 5, None, 0, 0],
            "label_ts": [at(h) for h in (30, 100, 200, 300, 400, 479, 100, 24 * 45, 24 * 20 + 5)],
        }
    ).with_columns(pl.col("rider_id").cast(pl.Int64))
    labels = pl.concat(
        [labels, labels.with_columns(label_ts=pl.col("label_ts") + timedelta(hours=7))]
    )
    for mode, knowledge in (("knowledge", True), ("event", False)):
        ts = store.training_set(
            labels,
            features=["completed:*"],
            timestamp="label_ts",
            point_in_time=mode,  # type: ignore[arg-type]
        )
        got = ts.to_polars()
        assert got.columns == [*labels.columns, *(a.name for a in AGGS)]
        want = expected(labels, events, knowledge)
        for agg in AGGS:
            assert_close(got[agg.name].to_list(), want[agg.name])
        assert got.schema["trip_id_count_30d"] == pl.Int64
        assert got.schema["seats_sum_lifetime"] == pl.Int64
        assert store.training_set_by_id(ts.id).to_polars().equals(got)


def test_default_names_and_selected_features(tmp_path: Path) -> None:
    path = tmp_path / "trips.parquet"
    trips_frame(3, 50).write_parquet(path)
    store = fk.Store(tmp_path / "store", progress=False)
    record = store.register(make_view(path))
    assert list(record.features) == [a.name for a in AGGS]
    assert list(record.features)[:3] == ["fare_sum_7d", "fare_mean_1h", "trip_id_count_30d"]
    store.materialize(make_view(path))
    labels = pl.DataFrame({"rider_id": [1], "label_ts": [at(200)]})
    out = store.training_set(labels, ["completed:fare_sum_7d", "completed:max_fare_7d"], "label_ts")
    assert out.to_polars().columns == ["rider_id", "label_ts", "fare_sum_7d", "max_fare_7d"]


def test_aggregation_changes_make_new_versions(tmp_path: Path) -> None:
    path = tmp_path / "trips.parquet"
    trips_frame(3, 50).write_parquet(path)
    store = fk.Store(tmp_path / "store", progress=False)
    trips = fk.Source("trips", path, timestamp="event_ts", created_timestamp="ingested_at")
    a = fk.feature_view(
        entity=RIDER, sources=[trips], aggregations=[fk.Aggregation("fare", "sum", "7d")]
    )(completed)
    b = fk.feature_view(
        entity=RIDER, sources=[trips], aggregations=[fk.Aggregation("fare", "sum", "8d")]
    )(completed)
    assert store.register(a).version == 1
    changed = store.register(b)
    assert (changed.version, changed.reason) == (2, ["options"])


@pytest.mark.parametrize(
    ("aggregations", "error", "message"),
    [
        (
            [fk.Aggregation("status", "sum", "7d")],
            fk.SchemaError,
            "needs a numeric column, but 'status' is String",
        ),
        (
            [fk.Aggregation("fair", "max", "7d")],
            fk.SchemaError,
            "reads column 'fair'.*Did you mean 'fare'",
        ),
    ],
)
def test_bad_aggregations_are_clear(tmp_path: Path, aggregations, error, message) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "trips.parquet"
    trips_frame(3, 20).write_parquet(path)
    trips = fk.Source("trips", path, timestamp="event_ts")
    view = fk.feature_view(entity=RIDER, sources=[trips], aggregations=aggregations)(completed)
    with pytest.raises(error, match=message):
        fk.Store(tmp_path / "store").register(view)


def test_aggregation_definition_errors() -> None:
    with pytest.raises(fk.DefinitionError, match="unknown function 'median'.*Did you mean 'mean'"):
        fk.Aggregation("fare", "median", "7d")
    with pytest.raises(fk.DefinitionError, match="must be positive"):
        fk.Aggregation("fare", "sum", "-1d")
    with pytest.raises(fk.DefinitionError, match="must be positive"):
        fk.Aggregation("fare", "sum", "0s")
    with pytest.raises(fk.DefinitionError, match="does not parse. Accepted forms"):
        fk.Aggregation("fare", "sum", "a week")
    assert fk.Aggregation("fare", "sum", "7 days").name == "fare_sum_7d"
    src = fk.Source(
        "trips",
        pl.DataFrame({"rider_id": [1], "event_ts": [BASE], "fare": [1.0]}),
        timestamp="event_ts",
    )
    with pytest.raises(fk.DefinitionError, match="ttl= does not apply to aggregations"):
        fk.feature_view(
            entity=RIDER,
            sources=[src],
            ttl="1d",
            aggregations=[fk.Aggregation("fare", "sum", "1d")],
        )(completed)
    with pytest.raises(fk.DefinitionError, match="used twice"):
        fk.feature_view(
            entity=RIDER, sources=[src], aggregations=[fk.Aggregation("fare", "sum", "1d")] * 2
        )(completed)


def test_aggregation_lineage(tmp_path: Path) -> None:
    path = tmp_path / "trips.parquet"
    trips_frame(3, 50).write_parquet(path)
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(make_view(path))
    edges = store.lineage("feature:completed@1:fare_sum_7d", downstream=False).to_dict()["edges"]
    found = {
        (e["source"].rsplit(":", 1)[1], e["transformation"], e.get("subtype"))
        for e in edges
        if e["target"] == "feature:completed@1:fare_sum_7d" and e["kind"] == "derives"
    }
    assert ("fare", "DIRECT", "AGGREGATION") in found
    assert ("rider_id", "INDIRECT", "GROUP_BY") in found
    assert ("event_ts", "INDIRECT", "WINDOW") in found
    assert not any(col == "status" and kind == "DIRECT" for col, kind, _ in found)


@pytest.mark.parametrize("online", ["sqlite", "redis", "s3+sqlite"])
def test_online_equals_offline_at_the_lookup_instant(
    tmp_path: Path, online: str, request: pytest.FixtureRequest
) -> None:
    """For every function and window, online == training_set(labels at the lookup instant)."""
    from datetime import UTC

    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    events = trips_frame(5, 400, late_share=0.3).with_columns(
        # put the data around "now", some events ingested in the future (not yet known)
        pl.col("event_ts") - BASE + now - timedelta(days=20),
        pl.col("ingested_at") - BASE + now - timedelta(days=20),
    )
    path = tmp_path / "trips.parquet"
    events.write_parquet(path)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server()) if online == "redis" else None
        if online == "s3+sqlite":  # an S3 root with a local SQLite online store
            from s3_emulator import storage_options

            options = storage_options(request.getfixturevalue("s3_endpoint"))
            store = StoreRoot("s3", tmp_path, options).open()
        else:
            store = fk.Store(tmp_path / "store", progress=False, online=url)
        check_online(store, path, now)


def check_online(store: fk.Store, path: Path, now: datetime) -> None:
    store.materialize(make_view(path))
    trips = fk.Source("trips", path, timestamp="event_ts", created_timestamp="ingested_at")
    finite = [a for a in AGGS if a.window is not None]  # online keeps only the widest window
    recent = fk.feature_view(name="recent", entity=RIDER, sources=[trips], aggregations=finite)
    store.materialize(recent(completed))
    riders = [0, 1, 2, 3, 4, 5, 99, 2]  # 99: never seen; 2 twice
    for later in (timedelta(seconds=5), timedelta(hours=30), timedelta(days=9)):
        at = now + timedelta(days=1) + later
        wanted = ["completed:*", "recent:*"]
        got = store.get_online_features(wanted, {"rider_id": riders}, at=at, with_metadata=True)
        labels = pl.DataFrame({"rider_id": riders, "label_ts": [at] * len(riders)})
        offline = store.training_set(labels, wanted, "label_ts").to_polars()
        assert got.columns[: offline.width - 1] == [c for c in offline.columns if c != "label_ts"]
        for name in offline.columns[2:]:
            assert_close(got[name].to_list(), offline[name].to_list())
            assert got.schema[name] == offline.schema[name]
        assert got["completed__status"].to_list()[6] == "not_found"
