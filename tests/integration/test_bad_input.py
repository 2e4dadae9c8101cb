"""Bad input gets a FeatureKitError that names what is wrong, and nothing stored changes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from conftest import at, trips_frame
from views_trips import driver, fare_view, trips_source

import featurekit as fk


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def filled(store: fk.Store, data_dir: Path) -> fk.Store:
    store.materialize(fare_view(data_dir))
    return store


def view_of(data_dir: Path, fn, **kwargs) -> fk.FeatureView:  # type: ignore[no-untyped-def]
    return fk.feature_view(entity=driver, sources=[trips_source(data_dir)], **kwargs)(fn)


def float_keys(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select(pl.col("driver_id").cast(pl.Float64), "event_ts", "fare")


def no_key(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("event_ts", "fare")


def no_timestamp(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "fare")


def string_timestamp(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", pl.col("event_ts").cast(pl.String), "fare")


def wrong_type(trips: pl.LazyFrame) -> int:
    return 42


def raises(trips: pl.LazyFrame) -> pl.LazyFrame:
    raise ZeroDivisionError("boom in user code")


def fails_late(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select(
        "driver_id", "event_ts", pl.col("status").cast(pl.Int64, strict=True).alias("bad")
    )


@pytest.mark.parametrize(
    ("fn", "error", "message"),
    [
        (float_keys, fk.SchemaError, "key column 'driver_id' is Float64; keys must be integers"),
        (no_key, fk.SchemaError, "output has no key column 'driver_id' of entity 'driver'"),
        (no_timestamp, fk.SchemaError, "output has no timestamp column 'event_ts'"),
        (
            string_timestamp,
            fk.SchemaError,
            "timestamp column 'event_ts' must be a datetime, got String",
        ),
        (wrong_type, fk.SchemaError, "returned int; a view must return a polars LazyFrame"),
        (raises, fk.UserCodeError, "view 'raises' raised ZeroDivisionError: boom in user code"),
        (fails_late, fk.UserCodeError, "view 'fails_late' \\(version 2\\) failed while computing"),
    ],
)
def test_bad_views_fail_clearly_and_store_nothing(
    filled: fk.Store,
    data_dir: Path,
    fn,
    error,
    message,  # type: ignore[no-untyped-def]
) -> None:
    before = snapshot(filled.root)
    if fn is fails_late:  # give it an existing version so the message names a number
        (filled.root / "_featurekit" / "views" / "fails_late").mkdir(parents=True)
        src = filled.root / "_featurekit" / "views" / "fare_features" / "v1.json"
        dst = filled.root / "_featurekit" / "views" / "fails_late" / "v1.json"
        dst.write_text(src.read_text().replace('"fare_features"', '"fails_late"'))
        before = snapshot(filled.root)
    with pytest.raises(error, match=message) as info:
        filled.materialize(view_of(data_dir, fn))
    assert isinstance(info.value, fk.FeatureKitError)
    after = {k: v for k, v in snapshot(filled.root).items() if "locks" not in k}
    assert after == {k: v for k, v in before.items() if "locks" not in k}
    if fn is raises:
        assert isinstance(info.value.__cause__, ZeroDivisionError)
        assert info.value.__cause__.__traceback__ is not None


def test_empty_source_is_refused(store: fk.Store, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    trips_frame().head(0).write_parquet(folder / "trips.parquet")
    with pytest.raises(fk.SchemaError, match="source 'trips' of view 'fare_features' has no rows"):
        store.materialize(fare_view(folder))
    assert store.views() == []


def test_label_timestamp_must_be_a_datetime(filled: fk.Store) -> None:
    labels = pl.DataFrame({"driver_id": [1], "label_ts": ["2026-01-01"]})
    with pytest.raises(
        fk.SchemaError, match="label timestamp column 'label_ts' must be a datetime"
    ):
        filled.training_set(labels, features=["fare_features:fare"], timestamp="label_ts")
    with pytest.raises(fk.SchemaError, match="no timestamp column 'ts'"):
        filled.training_set(labels, features=["fare_features:fare"], timestamp="ts")
    assert filled.training_sets() == []


def test_label_key_of_wrong_type_is_named(filled: fk.Store) -> None:
    labels = pl.DataFrame({"driver_id": ["1"], "label_ts": [at(12)]})
    with pytest.raises(
        fk.SchemaError, match="key column 'driver_id' is String in the labels but Int64"
    ):
        filled.training_set(labels, features=["fare_features:fare"], timestamp="label_ts")
    missing = pl.DataFrame({"rider": [1], "label_ts": [at(12)]})
    with pytest.raises(fk.SchemaError, match="labels have no key column 'driver_id'"):
        filled.training_set(missing, features=["fare_features:fare"], timestamp="label_ts")


@pytest.mark.parametrize(
    ("features", "error", "message"),
    [
        (
            ["fare_feature:fare"],
            fk.NotFoundError,
            "no view named 'fare_feature'.*Did you mean 'fare_features'",
        ),
        (["fare_features:fair"], fk.NotFoundError, "has no feature 'fair'.*Did you mean 'fare'"),
        (["fare_features@7:fare"], fk.NotFoundError, "has no version 7; it has versions \\[1\\]"),
        (["fare_features.fare"], fk.DefinitionError, "does not parse; use 'view:feature'"),
        ([], fk.DefinitionError, "at least one feature"),
        ([3], fk.DefinitionError, "got int"),
    ],
)
def test_unknown_features_suggest(filled: fk.Store, features, error, message) -> None:  # type: ignore[no-untyped-def]
    labels = pl.DataFrame({"driver_id": [1], "label_ts": [at(12)]})
    with pytest.raises(error, match=message):
        filled.training_set(labels, features=features, timestamp="label_ts")


def test_unknown_ttl_override_and_bad_mode(filled: fk.Store) -> None:
    labels = pl.DataFrame({"driver_id": [1], "label_ts": [at(12)]})
    with pytest.raises(fk.DefinitionError, match="ttl override names view 'fares'"):
        filled.training_set(labels, ["fare_features:fare"], "label_ts", ttl={"fares": "1d"})
    with pytest.raises(fk.DefinitionError, match="point_in_time must be 'knowledge' or 'event'"):
        filled.training_set(labels, ["fare_features:fare"], "label_ts", point_in_time="now")  # type: ignore[arg-type]


def test_source_timestamp_of_wrong_type(store: fk.Store, tmp_path: Path) -> None:
    folder = tmp_path / "ints"
    folder.mkdir()
    trips_frame().with_columns(pl.col("event_ts").dt.epoch("s")).write_parquet(
        folder / "trips.parquet"
    )
    with pytest.raises(
        fk.SchemaError,
        match="source 'trips' timestamp column 'event_ts' must be a datetime, got Int64",
    ):
        store.materialize(fare_view(folder))


def test_materialize_range_must_be_ordered(filled: fk.Store, data_dir: Path) -> None:
    with pytest.raises(fk.SchemaError, match="must be before end"):
        filled.materialize(fare_view(data_dir), start=at(10), end=at(5))


def shifts_back(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select(
        "driver_id", pl.col("event_ts") - pl.duration(hours=1), "ingested_at", "fare"
    )


def test_view_that_moves_rows_out_of_the_window_is_refused(store: fk.Store, data_dir: Path) -> None:
    view = view_of(data_dir, shifts_back)
    store.materialize(view)
    before = store.read("shifts_back")
    with pytest.raises(fk.SchemaError, match="outside the window.*full_refresh=True"):
        store.materialize(view, start=at(5), end=at(20))
    assert store.read("shifts_back").equals(before)
    assert store.materialize(view, full_refresh=True).rows_written == 6
