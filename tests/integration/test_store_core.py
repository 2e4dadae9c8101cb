"""Materialize views to Delta and build point-in-time training sets through fk.Store."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path

import polars as pl
import pytest
from conftest import at, trips_frame
from deltalake import DeltaTable
from views_trips import driver, fare_view, trips_source

import featurekit as fk


def labels_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "driver_id": [1, 2, 1, None, 2, 1, 1],
            "label_ts": [at(10), at(6), at(12), at(12), at(29.5), at(-1), at(10)],
            "y": [1, 0, 1, 0, 1, 0, 1],
        }
    )


def test_materialize_writes_sorted_delta_table_with_commit_metadata(
    store: fk.Store, data_dir: Path
) -> None:
    view = fare_view(data_dir)
    result = store.materialize(view)
    assert (result.version, result.mode, result.rows_written) == (1, "full", 5)
    uri = store.root / "features" / "fare_features" / "v1"
    table = DeltaTable(str(uri))
    info = table.history()[0]
    assert info["featurekit.fingerprint"] == result.fingerprint
    assert info["featurekit.run_id"] == result.run_id
    rows = pl.read_delta(str(uri))
    assert rows.columns == ["driver_id", "event_ts", "ingested_at", "fare", "fare_x2"]
    assert rows.equals(rows.sort("driver_id", "event_ts"))
    assert rows.schema["event_ts"] == pl.Datetime("us", "UTC")
    assert store.views() == ["fare_features"]


def test_rematerializing_never_duplicates_rows(store: fk.Store, data_dir: Path) -> None:
    view = fare_view(data_dir)
    store.materialize(view)
    assert store.materialize(view).mode == "noop"
    store.materialize(view, start=at(0), end=at(50))
    store.materialize(view, full_refresh=True)
    assert store.read("fare_features").height == 5


def test_incremental_run_picks_up_late_rows(store: fk.Store, data_dir: Path) -> None:
    view = fare_view(data_dir)
    store.materialize(view)
    late = pl.DataFrame(
        {
            "driver_id": [1, 2],
            "event_ts": [at(2), at(41)],
            "ingested_at": [at(60), at(41.5)],  # the first is 58 hours late
            "fare": [70.0, 80.0],
            "status": ["ok", "ok"],
        }
    )
    pl.concat([trips_frame(), late]).write_parquet(data_dir / "trips.parquet")
    result = store.materialize(view)
    assert result.mode == "incremental"
    assert result.window.start is not None
    assert result.window.start.replace(tzinfo=None) == at(2)
    rows = store.read("fare_features")
    assert sorted(rows["fare"].to_list()) == [10.0, 20.0, 30.0, 50.0, 60.0, 70.0, 80.0]
    assert store.materialize(view).mode == "noop"
    runs = store.runs("fare_features")
    assert [r.mode for r in runs] == ["full", "incremental"]


def test_training_set_is_point_in_time_correct(store: fk.Store, data_dir: Path) -> None:
    view = fare_view(data_dir)
    store.materialize(view)
    ts = store.training_set(labels_frame(), features=["fare_features:fare"], timestamp="label_ts")
    out = ts.to_polars()
    assert out.select("driver_id", "label_ts", "y").equals(labels_frame())
    # driver 1 @10h: row at 10h was ingested at 10.1h -> not known yet -> row at 0h
    # driver 2 @6h: row at 5h was ingested at 29h -> not known; row at 1h -> 30.0
    # driver 1 @12h: row at 10h -> 20.0 ; null key -> null
    # driver 2 @29.5h: the late 5h row is now known and beats 1h -> 60.0
    # driver 1 @-1h: before any row -> null ; duplicate label (1 @10h) -> same as first
    assert out["fare"].to_list() == [10.0, 30.0, 20.0, None, 60.0, None, 10.0]
    event = store.training_set(
        labels_frame(), features=["fare_features:fare"], timestamp="label_ts", point_in_time="event"
    )
    assert event.to_polars()["fare"].to_list() == [20.0, 60.0, 20.0, None, 60.0, None, 20.0]
    assert event.manifest.point_in_time == "event"
    assert event.id != ts.id


def test_ttl_is_inclusive_and_overridable(store: fk.Store, data_dir: Path) -> None:
    view = fare_view(data_dir, ttl="10h")
    store.materialize(view)
    # driver 1's row at 10h is exactly 10h old at 20h (kept), a microsecond later it is not
    labels = pl.DataFrame(
        {"driver_id": [1, 1], "label_ts": [at(20), at(20) + timedelta(microseconds=1)]}
    )
    out = store.training_set(labels, features=["fare_features:fare"], timestamp="label_ts")
    assert out.to_polars()["fare"].to_list() == [20.0, None]
    longer = store.training_set(
        labels, features=["fare_features:fare"], timestamp="label_ts", ttl={"fare_features": "1d"}
    )
    assert longer.to_polars()["fare"].to_list() == [20.0, 20.0]


def test_naive_aware_and_other_zones_compare_as_instants(store: fk.Store, data_dir: Path) -> None:
    store.materialize(fare_view(data_dir))
    naive = labels_frame()
    tokyo = naive.with_columns(
        pl.col("label_ts").dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Tokyo")
    )
    a = store.training_set(naive, features=["fare_features:fare"], timestamp="label_ts")
    b = store.training_set(tokyo, features=["fare_features:fare"], timestamp="label_ts")
    assert a.to_polars()["fare"].to_list() == b.to_polars()["fare"].to_list()
    assert b.to_polars().schema["label_ts"] == pl.Datetime("us", "Asia/Tokyo")


def test_several_views_entities_and_name_clashes(store: fk.Store, data_dir: Path) -> None:
    rider = fk.Entity("rider", keys=["rider_id", "city"])
    ratings = pl.DataFrame(
        {
            "rider_id": [7, 7, 8],
            "city": ["a", "b", "a"],
            "event_ts": [at(0), at(0), at(0)],
            "fare": [1.0, 2.0, 3.0],  # clashes with fare_features:fare
        }
    )
    src = fk.Source("rider_src", ratings, timestamp="event_ts")
    rider_view = fk.feature_view(
        name="rider_fares",
        entity=rider,
        sources=[src],
        sql="SELECT rider_id, city, event_ts, fare FROM rider_src",
    )
    store.materialize(fare_view(data_dir))
    store.materialize(rider_view)
    labels = pl.DataFrame(
        {"driver_id": [1, 2], "rider_id": [7, 8], "city": ["b", "a"], "label_ts": [at(12), at(12)]}
    )
    out = store.training_set(
        labels,
        features=["fare_features:fare", "rider_fares:*", "fare_features:fare_x2"],
        timestamp="label_ts",
    ).to_polars()
    assert out.columns == [
        "driver_id",
        "rider_id",
        "city",
        "label_ts",
        "fare_features__fare",
        "fare_x2",
        "rider_fares__fare",
    ]
    assert out["fare_features__fare"].to_list() == [20.0, 30.0]
    assert out["rider_fares__fare"].to_list() == [2.0, 3.0]


def test_view_object_resolves_to_its_own_version(store: fk.Store, data_dir: Path) -> None:
    view = fare_view(data_dir)
    store.materialize(view)
    out = store.training_set(labels_frame(), features=[view], timestamp="label_ts").to_polars()
    assert out.columns[-2:] == ["fare", "fare_x2"]
    other_ttl = fare_view(data_dir, ttl="3d")
    with pytest.raises(fk.NotFoundError, match="not in this store; run store.materialize"):
        store.training_set(labels_frame(), features=[other_ttl], timestamp="label_ts")


def test_chained_and_sql_views(store: fk.Store, data_dir: Path) -> None:
    base = fare_view(data_dir)

    def big_fares(fare_features: pl.LazyFrame) -> pl.LazyFrame:
        return fare_features.select(
            "driver_id", "event_ts", "ingested_at", (pl.col("fare") > 25).alias("is_big")
        )

    chained = fk.feature_view(entity=driver, sources=[base])(big_fares)
    sql = fk.feature_view(
        name="fare_sql",
        entity=driver,
        sources=[trips_source(data_dir)],
        sql="SELECT driver_id, event_ts, ingested_at, fare + 1 AS fare_plus_one FROM trips "
        "WHERE status = 'ok'",
    )
    store.materialize(chained)
    store.materialize(sql)
    chained_rows = store.read("big_fares")
    assert chained_rows["is_big"].to_list() == [False, False, True, True, True]
    assert store.read("fare_sql")["fare_plus_one"].to_list() == [11.0, 21.0, 51.0, 31.0, 61.0]
    versions = store.versions("big_fares")
    assert versions[0].parts["upstream"] == {"fare_features": store.register(base).fingerprint}


def test_store_root_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    with pytest.raises(fk.StorageError, match="is not a featurekit store"):
        fk.Store(folder)
    assert (folder / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in folder.iterdir()) == ["precious.txt"]


def test_store_written_by_newer_format_is_refused(tmp_path: Path) -> None:
    fk.Store(tmp_path / "s")
    marker = tmp_path / "s" / "_featurekit" / "store.json"
    marker.write_text('{"format_version": 99}')
    with pytest.raises(fk.StorageError, match="newer featurekit"):
        fk.Store(tmp_path / "s")
    assert marker.read_text() == '{"format_version": 99}'


def test_as_of_reads_tables_as_they_stood(store: fk.Store, data_dir: Path) -> None:
    import time
    from datetime import datetime

    view = fare_view(data_dir, ttl=None)
    store.materialize(view)
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    changed = trips_frame().with_columns(
        pl.col("fare") + 1000, pl.col("ingested_at") + timedelta(days=100)
    )
    pl.concat(
        [trips_frame(), changed.with_columns(pl.col("event_ts") + timedelta(minutes=1))]
    ).write_parquet(data_dir / "trips.parquet")
    store.materialize(view)
    labels = pl.DataFrame({"driver_id": [1], "label_ts": [at(5000)]})
    now = store.training_set(labels, features=["fare_features:fare"], timestamp="label_ts")
    then = store.training_set(
        labels, features=["fare_features:fare"], timestamp="label_ts", as_of=between
    )
    assert now.to_polars()["fare"].to_list() == [1050.0]
    assert then.to_polars()["fare"].to_list() == [50.0]
    assert then.manifest.as_of is not None
    assert then.manifest.views[0].delta_version == 0


def test_open_without_create_and_list_of_paths(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(fk.StorageError, match="no featurekit store at"):
        fk.Store(tmp_path / "typo", create=False)
    assert not (tmp_path / "typo").exists()
    trips = trips_frame()
    trips.head(3).write_parquet(data_dir / "part1.parquet")
    trips.tail(3).write_parquet(data_dir / "part2.parquet")
    src = fk.Source(
        "trips",
        [data_dir / "part1.parquet", data_dir / "part2.parquet"],
        timestamp="event_ts",
        created_timestamp="ingested_at",
    )
    from views_trips import fare_features

    view = fk.feature_view(entity=driver, sources=[src])(fare_features)
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(view)
    assert fk.Store(tmp_path / "store", create=False).read("fare_features").height == 5


def test_csv_and_delta_sources(tmp_path: Path, store: fk.Store) -> None:
    from deltalake import write_deltalake
    from views_trips import fare_features

    trips = trips_frame()
    trips.write_csv(tmp_path / "trips.csv")  # ISO strings: parsed, naive means UTC
    write_deltalake(
        str(tmp_path / "trips_delta"),
        trips.with_columns(
            pl.col("event_ts", "ingested_at").dt.replace_time_zone("UTC")
        ).to_arrow(),
    )
    results = {}
    for name, location in [("csv", tmp_path / "trips.csv"), ("delta", tmp_path / "trips_delta")]:
        src = fk.Source("trips", location, timestamp="event_ts", created_timestamp="ingested_at")
        assert src.kind == name
        view = fk.feature_view(name=f"fares_{name}", entity=driver, sources=[src])(fare_features)
        store.materialize(view)
        results[name] = store.read(f"fares_{name}").drop("ingested_at")
    assert results["csv"].equals(results["delta"])
    assert results["csv"]["fare"].to_list() == [10.0, 20.0, 50.0, 30.0, 60.0]


def test_as_of_before_the_first_run_gives_nulls(store: fk.Store, data_dir: Path) -> None:
    from datetime import datetime

    before = datetime.now(UTC)
    store.materialize(fare_view(data_dir, ttl=None))
    labels = pl.DataFrame({"driver_id": [1], "label_ts": [at(100)]})
    pinned = store.training_set(
        labels, features=["fare_features@1:fare"], timestamp="label_ts", as_of=before
    )
    assert pinned.to_polars()["fare"].to_list() == [None]
    assert store.training_set_by_id(pinned.id).to_polars().equals(pinned.to_polars())
    with pytest.raises(fk.NotFoundError, match="had no version yet"):
        store.training_set(
            labels, features=["fare_features:fare"], timestamp="label_ts", as_of=before
        )
