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
    fv = fk.feature_view(entity=ENTITY, sources=[src], name="v", **view)(passthrough)  # type: ignore[arg-type]
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
    result = store.materialize(fv, start="2026-03-01", end="2026-03-02T00:00:00+00:00")  # type: ignore[arg-type]
    assert result.rows_written == 1
    labels = pl.DataFrame({"driver_id": [1], "ts": [datetime(2026, 3, 5)]})
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    by_text = store.training_set(labels, features=["v:value"], timestamp="ts", as_of=future)  # type: ignore[arg-type]
    by_value = store.training_set(
        labels, features=["v:value"], timestamp="ts", as_of=datetime.fromisoformat(future)
    )
    assert by_text.id == by_value.id
    assert by_text.to_polars()["value"].to_list() == [1.0]
    day = store.training_set(labels, features=["v:value"], timestamp="ts", as_of=date(2100, 1, 1))  # type: ignore[arg-type]
    assert day.to_polars()["value"].to_list() == [1.0]
    now = datetime.now(UTC) + timedelta(minutes=1)
    online = store.get_online_features(["v:value"], {"driver_id": [1]}, at=now.isoformat())  # type: ignore[arg-type]
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
        store.materialize(fv, start=20260301)  # type: ignore[arg-type]


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
