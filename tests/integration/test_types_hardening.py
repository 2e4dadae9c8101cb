"""Ordinary data types and time inputs work end to end, or fail early by name.

Real Delta tables on tmp_path: nanosecond times, ISO strings, dates, unsigned integers,
and what a user may pass as ``as_of``/``start``/``end``/``at``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import featurekit as fk

ENTITY = fk.Entity("driver", keys=["driver_id"])
T0 = datetime(2026, 3, 1, 12)


def passthrough(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips


def store_with(
    tmp_path: Path, frame: pl.DataFrame | Path, *, created: str | None = None, **view: object
) -> tuple[fk.Store, fk.FeatureView]:
    src = fk.Source("trips", frame, timestamp="event_ts", created_timestamp=created)
    fv = fk.feature_view(entity=ENTITY, sources=[src], name="v", **view)(passthrough)  # type: ignore[call-overload]
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(fv)
    return store, fv


def ns_times(*offsets: int) -> pl.Series:
    """T0 + ``offsets`` nanoseconds, as naive (UTC) nanosecond datetimes."""
    base = int((T0 - datetime(1970, 1, 1)) / timedelta(microseconds=1)) * 1_000
    return pl.Series([base + o for o in offsets], dtype=pl.Int64).cast(pl.Datetime("ns"))


# ---- nanosecond times are stored rounded up, never down ---------------------------------


def test_value_known_800ns_after_a_label_does_not_leak(tmp_path: Path) -> None:
    rows = pl.DataFrame({"driver_id": [1, 2], "event_ts": ns_times(800, 0), "value": [1.0, 2.0]})
    store, _ = store_with(tmp_path, rows)
    labels = pl.DataFrame({"driver_id": [1, 2, 1], "ts": ns_times(0, 0, 1_000)})
    out = store.training_set(labels, features=["v:value"], timestamp="ts").to_polars()
    # driver 1's event is 800 ns after the first label: stored at +1 us, it is not seen
    assert out["value"].to_list() == [None, 2.0, 1.0]
    stored = store.training_set(labels, features=["v:value"], timestamp="ts")
    assert stored.explain(0).to_polars()["status"].to_list() == ["future"]


def test_created_time_800ns_after_a_label_does_not_leak(tmp_path: Path) -> None:
    rows = pl.DataFrame(
        {
            "driver_id": [1],
            "event_ts": ns_times(-5_000),
            "ingested_at": ns_times(800),
            "value": [1.0],
        }
    )
    store, _ = store_with(tmp_path, rows, created="ingested_at")
    labels = pl.DataFrame({"driver_id": [1, 1], "ts": ns_times(0, 1_000)})
    out = store.training_set(labels, features=["v:value"], timestamp="ts").to_polars()
    assert out["value"].to_list() == [None, 1.0]
    event = store.training_set(labels, features=["v:value"], timestamp="ts", point_in_time="event")
    assert event.to_polars()["value"].to_list() == [1.0, 1.0]


def test_stored_times_are_the_next_microsecond(tmp_path: Path) -> None:
    before_1970 = pl.Series([-1_500], dtype=pl.Int64).cast(pl.Datetime("ns"))  # 1969, -1.5 us
    rows = pl.DataFrame(
        {
            "driver_id": [1, 2, 3, 4],
            "event_ts": pl.concat([ns_times(800, 1_000, 1_001), before_1970]),
            "value": [1.0, 2.0, 3.0, 4.0],
        }
    )
    store, _ = store_with(tmp_path, rows)
    stored = store.read("v").sort("driver_id")
    micros = stored["event_ts"].dt.epoch("us").to_list()
    base = int((T0 - datetime(1970, 1, 1)) / timedelta(microseconds=1))
    assert micros == [base + 1, base + 1, base + 2, -1]


def test_iso_strings_with_nanoseconds_round_up(tmp_path: Path) -> None:
    path = tmp_path / "trips.csv"
    path.write_text(
        "driver_id,event_ts,value\n"
        "1,2026-03-01T12:00:00.000000800,1.0\n"
        "2,2026-03-01T12:00:00.000000000,2.0\n"
    )
    store, _ = store_with(tmp_path, path)
    labels = pl.DataFrame({"driver_id": [1, 2], "ts": ns_times(0, 0)})
    out = store.training_set(labels, features=["v:value"], timestamp="ts").to_polars()
    assert out["value"].to_list() == [None, 2.0]


# ---- time arguments and source strings ---------------------------------------------------


def test_iso_strings_and_dates_are_accepted_as_instants(tmp_path: Path) -> None:
    rows = pl.DataFrame(
        {
            "driver_id": [1, 1],
            "event_ts": [datetime(2026, 3, 1), datetime(2026, 3, 3)],
            "value": [1.0, 2.0],
        }
    )
    src = fk.Source("trips", rows, timestamp="event_ts")
    fv = fk.feature_view(entity=ENTITY, sources=[src], name="v")(passthrough)
    store = fk.Store(tmp_path / "store", progress=False)
    result = store.materialize(fv, start="2026-03-01", end="2026-03-02T00:00:00+00:00")
    assert result.rows_written == 1
    labels = pl.DataFrame({"driver_id": [1], "ts": [datetime(2026, 3, 5)]})
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    by_text = store.training_set(labels, features=["v:value"], timestamp="ts", as_of=future)
    by_value = store.training_set(
        labels, features=["v:value"], timestamp="ts", as_of=datetime.fromisoformat(future)
    )
    assert by_text.id == by_value.id
    assert by_text.to_polars()["value"].to_list() == [1.0]
    day = store.training_set(labels, features=["v:value"], timestamp="ts", as_of=date(2100, 1, 1))
    assert day.to_polars()["value"].to_list() == [1.0]
    now = datetime.now(UTC) + timedelta(minutes=1)
    online = store.get_online_features(["v:value"], {"driver_id": [1]}, at=now.isoformat())
    assert online["value"].to_list() == [1.0]


@pytest.mark.parametrize(
    ("argument", "call"),
    [
        ("start", lambda s, fv, lb: s.materialize(fv, start="yesterday")),
        ("end", lambda s, fv, lb: s.materialize(fv, end="2026-13-45")),
        ("as_of", lambda s, fv, lb: s.training_set(lb, ["v:value"], "ts", as_of="yesterday")),
        ("at", lambda s, fv, lb: s.get_online_features(["v:value"], {"driver_id": [1]}, at="now")),
    ],
)
def test_unparsable_time_arguments_are_named(tmp_path: Path, argument: str, call) -> None:  # type: ignore[no-untyped-def]
    rows = pl.DataFrame({"driver_id": [1], "event_ts": [datetime(2026, 3, 1)], "value": [1.0]})
    store, fv = store_with(tmp_path, rows)
    labels = pl.DataFrame({"driver_id": [1], "ts": [datetime(2026, 3, 5)]})
    with pytest.raises(fk.DefinitionError) as info:
        call(store, fv, labels)
    assert str(info.value).startswith(f"{argument} '")
    assert "is not an ISO 8601 date or time. Pass a datetime or a string such as" in str(info.value)


def test_time_argument_of_another_type_is_named(tmp_path: Path) -> None:
    rows = pl.DataFrame({"driver_id": [1], "event_ts": [datetime(2026, 3, 1)], "value": [1.0]})
    store, fv = store_with(tmp_path, rows)
    with pytest.raises(
        fk.DefinitionError,
        match=r"^start must be a datetime, a date or an ISO 8601 string, got int 20260301\.$",
    ):
        store.materialize(fv, start=20260301)  # type: ignore[arg-type,index,dict-item]


def test_unparsable_source_timestamp_names_the_source(tmp_path: Path) -> None:
    path = tmp_path / "trips.csv"
    path.write_text("driver_id,event_ts,value\n1,2026-03-01T00:00:00,1.0\n2,not a time,2.0\n")
    src = fk.Source("trips", path, timestamp="event_ts")
    fv = fk.feature_view(entity=ENTITY, sources=[src], name="v")(passthrough)
    store = fk.Store(tmp_path / "store", progress=False)
    with pytest.raises(fk.SchemaError) as info:
        store.materialize(fv)
    assert str(info.value) == (
        "source 'trips' timestamp column 'event_ts' has 1 value(s) that are not ISO 8601 "
        "date-times, e.g. ['not a time']. Fix those rows, or parse the column yourself with "
        "a format, e.g. pl.col('event_ts').str.to_datetime('%d/%m/%Y %H:%M')."
    )
    assert store.views() == [] or all(not store.versions(v) for v in store.views())


# ---- dtypes: each works end to end, or is refused when the training set is built --------

U64_MAX = 2**64 - 1
FEATURE_VALUES = {
    "date": pl.Series([date(2026, 1, 1), None]),
    "time": pl.Series([datetime(2026, 1, 1, 13, 5, 1, 7).time(), None]),
    "duration": pl.Series([timedelta(days=3, microseconds=5), None]),
    "uint8": pl.Series([255, None], dtype=pl.UInt8),
    "uint16": pl.Series([65_535, None], dtype=pl.UInt16),
    "uint32": pl.Series([4_000_000_000, None], dtype=pl.UInt32),
    "uint64": pl.Series([U64_MAX, None], dtype=pl.UInt64),
    "int8": pl.Series([-128, None], dtype=pl.Int8),
    "float32": pl.Series([1.5, None], dtype=pl.Float32),
    "array": pl.Series([[1, 2], None], dtype=pl.Array(pl.Int64, 2)),
    "enum": pl.Series(["b", None], dtype=pl.Enum(["a", "b"])),
    "list_uint8": pl.Series([[1, 255], None], dtype=pl.List(pl.UInt8)),
    "struct_uint64": pl.Series([{"a": U64_MAX}, None], dtype=pl.Struct({"a": pl.UInt64})),
}


@pytest.mark.parametrize("kind", list(FEATURE_VALUES))
def test_feature_dtypes_keep_their_dtype_and_values(tmp_path: Path, kind: str) -> None:
    values = FEATURE_VALUES[kind]
    rows = pl.DataFrame({"driver_id": [1, 2], "event_ts": [datetime(2026, 3, 1)] * 2, "f": values})
    store, _ = store_with(tmp_path, rows)
    labels = pl.DataFrame({"driver_id": [2, 1, 3], "ts": [datetime(2026, 3, 5)] * 3})
    ts = store.training_set(labels, features=["v:f"], timestamp="ts")
    out = ts.to_polars()
    assert out.schema["f"] == values.dtype
    first, second = values.to_list()
    assert out["f"].to_list() == [second, first, None]
    again = store.training_set_by_id(ts.id).to_polars()
    assert again.equals(out)
    assert again.schema == out.schema
    online = store.get_online_features(["v:f"], {"driver_id": [1, 2]})
    assert online.schema["f"] == values.dtype
    assert online["f"].to_list() == values.to_list()


LABEL_VALUES = {
    **FEATURE_VALUES,
    "decimal": pl.Series([1.25, None]).cast(pl.Decimal(10, 2)),
    "binary": pl.Series([b"\x00x", None]),
    "categorical": pl.Series(["x", None], dtype=pl.Categorical),
    "list_decimal": pl.Series([[1.5], None]).cast(pl.List(pl.Decimal(10, 1))),
    "array_enum": pl.Series([["x", "y"], None], dtype=pl.Array(pl.Enum(["x", "y"]), 2)),
    "null": pl.Series([None, None], dtype=pl.Null),
    "datetime_ns_zone": pl.Series([datetime(2026, 1, 1), None]).cast(
        pl.Datetime("ns", "Europe/Paris")
    ),
}


@pytest.mark.parametrize("kind", list(LABEL_VALUES))
def test_label_columns_of_every_kept_dtype_rebuild_exactly(tmp_path: Path, kind: str) -> None:
    rows = pl.DataFrame({"driver_id": [1], "event_ts": [datetime(2026, 3, 1)], "value": [7.0]})
    store, _ = store_with(tmp_path, rows)
    labels = pl.DataFrame(
        {"driver_id": [1, 2], "ts": [datetime(2026, 3, 5)] * 2, "label": LABEL_VALUES[kind]}
    )
    ts = store.training_set(labels, features=["v:value"], timestamp="ts")
    out = ts.to_polars()
    assert out.select(labels.columns).equals(labels)
    assert out["value"].to_list() == [7.0, None]
    again = store.training_set_by_id(ts.id).to_polars()
    assert again.equals(out)
    assert again.schema == out.schema


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (
            pl.Series([object(), None], dtype=pl.Object),
            "has dtype Object: arbitrary Python objects have no stable stored form",
        ),
        (
            pl.Series([2**100, None], dtype=pl.Int128),
            "has dtype Int128: Arrow, which stores the labels, has no 128-bit integers",
        ),
        (
            pl.Series([[1], None], dtype=pl.List(pl.Int128)),
            "has dtype List(Int128): its items: Arrow, which stores the labels, has no "
            "128-bit integers",
        ),
    ],
)
def test_label_columns_that_could_never_rebuild_are_refused_when_built(
    tmp_path: Path, values: pl.Series, reason: str
) -> None:
    rows = pl.DataFrame({"driver_id": [1], "event_ts": [datetime(2026, 3, 1)], "value": [7.0]})
    store, _ = store_with(tmp_path, rows)
    labels = pl.DataFrame({"driver_id": [1, 2], "ts": [datetime(2026, 3, 5)] * 2, "label": values})
    with pytest.raises(fk.SchemaError) as info:
        store.training_set(labels, features=["v:value"], timestamp="ts")
    assert str(info.value).startswith(
        f"label column 'label' {reason}, so a training set built from these labels could "
        "not be stored and rebuilt exactly."
    )
    assert store.training_sets() == []
    assert not (store.root / "training_sets").exists() or not any(
        (store.root / "training_sets").iterdir()
    )


@pytest.mark.parametrize("dtype", [pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64])
def test_unsigned_keys_work_offline_and_online(tmp_path: Path, dtype: pl.DataType) -> None:
    top = {pl.UInt8: 255, pl.UInt16: 65_535, pl.UInt32: 4_294_967_295, pl.UInt64: U64_MAX}[dtype]  # type: ignore[arg-type,index,dict-item]
    keys = pl.Series([top, 7], dtype=dtype)
    rows = pl.DataFrame(
        {"driver_id": keys, "event_ts": [datetime(2026, 3, 1)] * 2, "value": [1.0, 2.0]}
    )
    store, _ = store_with(tmp_path, rows)
    labels = pl.DataFrame(
        {"driver_id": pl.Series([7, top, 8], dtype=dtype), "ts": [datetime(2026, 3, 5)] * 3}
    )
    ts = store.training_set(labels, features=["v:value"], timestamp="ts")
    assert ts.to_polars()["value"].to_list() == [2.0, 1.0, None]
    assert ts.to_polars().schema["driver_id"] == dtype
    assert store.training_set_by_id(ts.id).to_polars().equals(ts.to_polars())
    online = store.get_online_features(["v:value"], {"driver_id": pl.Series([top, 7], dtype=dtype)})  # type: ignore[arg-type,index,dict-item]
    assert online["value"].to_list() == [1.0, 2.0]
    assert online.schema["driver_id"] == dtype
    assert store.read("v").schema["driver_id"] == dtype


def test_signed_label_keys_next_to_uint64_keys_above_the_signed_range(tmp_path: Path) -> None:
    rows = pl.DataFrame(
        {
            "driver_id": pl.Series([U64_MAX, 5], dtype=pl.UInt64),
            "event_ts": [datetime(2026, 3, 1)] * 2,
            "value": [1.0, 2.0],
        }
    )
    store, _ = store_with(tmp_path, rows)
    labels = pl.DataFrame({"driver_id": [-1, 5], "ts": [datetime(2026, 3, 5)] * 2})
    out = store.training_set(labels, features=["v:value"], timestamp="ts").to_polars()
    assert out["value"].to_list() == [None, 2.0]
    assert out.schema["driver_id"] == pl.Int64


def test_date_columns_everywhere(tmp_path: Path) -> None:
    rows = pl.DataFrame(
        {
            "driver_id": [1, 1],
            "event_ts": [date(2026, 3, 1), date(2026, 3, 3)],
            "known": [date(2026, 3, 2), date(2026, 3, 3)],
            "day": [date(2020, 1, 1), date(2020, 1, 2)],
        }
    )
    store, _ = store_with(tmp_path, rows, created="known")
    labels = pl.DataFrame(
        {
            "driver_id": [1, 1, 1],
            "ts": [datetime(2026, 3, 1, 12), datetime(2026, 3, 2, 12), datetime(2026, 3, 4)],
            "label_day": [date(2026, 1, 1), None, date(2026, 1, 3)],
        }
    )
    ts = store.training_set(labels, features=["v:day"], timestamp="ts")
    assert ts.to_polars()["day"].to_list() == [None, date(2020, 1, 1), date(2020, 1, 2)]
    assert store.training_set_by_id(ts.id).to_polars().equals(ts.to_polars())


def test_range_run_keeps_a_row_that_rounds_up_onto_its_start(tmp_path: Path) -> None:
    # stored at T0 (rounded up from T0 - 200 ns), the row belongs to [T0, ...): a range
    # run from T0 replaces it, so it must also read it, though its raw time is before T0
    path = tmp_path / "trips.parquet"
    pl.DataFrame(
        {"driver_id": [1, 2], "event_ts": ns_times(-200, -1_200), "value": [1.0, 2.0]}
    ).write_parquet(path)
    store, fv = store_with(tmp_path, path)
    store.materialize(fv, start=T0, end=T0 + timedelta(hours=1))
    stored = store.read("v").sort("driver_id")
    micros = stored["event_ts"].dt.epoch("us").to_list()
    base = int((T0 - datetime(1970, 1, 1)) / timedelta(microseconds=1))
    assert micros == [base, base - 1]
    assert stored["value"].to_list() == [1.0, 2.0]


def test_labels_at_the_start_of_time_with_a_ttl_and_a_window(tmp_path: Path) -> None:
    # "label time - ttl" is before year 1: no lower bound, not an OverflowError
    rows = pl.DataFrame({"driver_id": [1], "event_ts": [datetime(1, 1, 1)], "value": [1.0]})
    src = fk.Source("trips", rows, timestamp="event_ts")
    store = fk.Store(tmp_path / "store", progress=False)
    plain = fk.feature_view(entity=ENTITY, sources=[src], ttl="7d", name="v")(passthrough)
    windowed = fk.feature_view(
        entity=ENTITY,
        sources=[src],
        name="a",
        aggregations=[fk.Aggregation("value", "sum", window="100y")],
    )(passthrough)
    store.materialize(plain)
    store.materialize(windowed)
    labels = pl.DataFrame({"driver_id": [1, 1], "ts": [datetime(1, 1, 1), datetime(1, 1, 9)]})
    out = store.training_set(
        labels, features=["v:value", "a:value_sum_36500d"], timestamp="ts"
    ).to_polars()
    assert out["value"].to_list() == [1.0, None]  # 8 days old at the second label
    assert out["value_sum_36500d"].to_list() == [1.0, 1.0]


def test_range_run_from_the_first_instant_over_nanosecond_source(tmp_path: Path) -> None:
    path = tmp_path / "trips.parquet"
    pl.DataFrame({"driver_id": [1], "event_ts": ns_times(5), "value": [1.0]}).write_parquet(path)
    store, fv = store_with(tmp_path, path)
    result = store.materialize(fv, start=datetime(1, 1, 1), end=datetime(9999, 1, 1))
    assert result.rows_written == 1


def day_view(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.with_columns(pl.col("event_ts").dt.date())


def test_date_times_in_view_output_and_labels_say_how_to_cast(tmp_path: Path) -> None:
    rows = pl.DataFrame({"driver_id": [1], "event_ts": [datetime(2026, 3, 1)], "value": [1.0]})
    src = fk.Source("trips", rows, timestamp="event_ts")
    daily = fk.feature_view(entity=ENTITY, sources=[src], name="daily")(day_view)
    store = fk.Store(tmp_path / "store", progress=False)
    hint = (
        "must be a datetime, got Date. Cast it, e.g. pl.col('{c}').cast(pl.Datetime('us')) "
        "(midnight UTC); if a value is only complete at the end of its day, add "
        "pl.duration(days=1)."
    )
    with pytest.raises(fk.SchemaError) as info:
        store.materialize(daily)
    assert str(info.value).endswith("timestamp column 'event_ts' " + hint.format(c="event_ts"))
    store.materialize(fk.feature_view(entity=ENTITY, sources=[src], name="v")(passthrough))
    labels = pl.DataFrame({"driver_id": [1], "ts": [date(2026, 3, 5)]})
    with pytest.raises(fk.SchemaError) as info:
        store.training_set(labels, features=["v:value"], timestamp="ts")
    assert str(info.value) == "label timestamp column 'ts' " + hint.format(c="ts")


def test_nested_dtypes_delta_cannot_hold_round_trip_exactly(tmp_path: Path) -> None:
    from featurekit.storage import delta

    frame = pl.DataFrame(
        {
            "times": pl.Series([[datetime(2026, 1, 1, 1, 2).time()], None]),
            "spans": pl.Series([{"a": timedelta(seconds=3)}, None]),
            "bytes": pl.Series([[1, 255], None], dtype=pl.Array(pl.UInt8, 2)),
            "enums": pl.Series([["a"], None], dtype=pl.List(pl.Enum(["a", "b"]))),
            "deep": pl.Series([[[1], [65_535]], None], dtype=pl.Array(pl.List(pl.UInt16), 2)),
            "wide": pl.Series([2**100, None], dtype=pl.Int128),
        }
    )
    uri = str(tmp_path / "table")
    delta.write_rows(uri, frame, metadata={})
    back = delta.read_rows(uri, version=0)
    assert back.schema == frame.schema
    assert back.equals(frame)
