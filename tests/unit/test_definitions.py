"""Entities, sources, feature references, durations: validated at definition, no disk."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import featurekit as fk
from featurekit.core.timeutil import format_duration, parse_duration


def test_entity_keys() -> None:
    driver = fk.Entity("driver", keys=["driver_id"])
    assert driver.keys == ("driver_id",)
    assert fk.Entity("pair", keys="a").keys == ("a",)
    with pytest.raises(fk.DefinitionError, match="needs at least one key"):
        fk.Entity("driver", keys=[])
    with pytest.raises(fk.DefinitionError, match="lists a key twice"):
        fk.Entity("driver", keys=["a", "a"])
    with pytest.raises(fk.DefinitionError, match="entity name 'bad name' is not valid"):
        fk.Entity("bad name", keys=["a"])


def test_source_kinds_are_guessed(tmp_path: Path) -> None:
    assert fk.Source("a", "x/trips.parquet", timestamp="ts").kind == "parquet"
    assert fk.Source("a", "x/*.parquet", timestamp="ts").kind == "parquet"
    assert fk.Source("a", "x/trips.csv", timestamp="ts").kind == "csv"
    assert fk.Source("a", "s3://bucket/table", timestamp="ts").kind == "delta"
    assert fk.Source("a", tmp_path, timestamp="ts").kind == "delta"
    frame = pl.DataFrame({"ts": [datetime(2026, 1, 1)]})
    assert fk.Source("a", frame, timestamp="ts").kind == "frame"
    assert fk.Source("a", frame.to_arrow(), timestamp="ts").kind == "frame"
    with pytest.raises(fk.DefinitionError, match="cannot tell the format of 'x/trips.json'"):
        fk.Source("a", "x/trips.json", timestamp="ts")
    with pytest.raises(fk.DefinitionError, match="timestamp column 'when' is not in the frame"):
        fk.Source("a", frame, timestamp="when")
    with pytest.raises(fk.DefinitionError, match="got int"):
        fk.Source("a", 3, timestamp="ts")


def test_defining_touches_no_disk(tmp_path: Path) -> None:
    before = sorted(tmp_path.rglob("*"))
    src = fk.Source("trips", tmp_path / "missing.parquet", timestamp="ts")

    @fk.feature_view(entity=fk.Entity("d", keys=["k"]), sources=[src], ttl="1d")
    def view(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips

    assert view.ttl == timedelta(days=1)
    assert sorted(tmp_path.rglob("*")) == before


def test_view_stays_a_plain_callable() -> None:
    frame = pl.DataFrame({"k": [1], "ts": [datetime(2026, 1, 1)], "v": [2.0]})
    src = fk.Source("events", frame, timestamp="ts")

    @fk.feature_view(entity=fk.Entity("d", keys=["k"]), sources=[src])
    def doubled(events: pl.LazyFrame) -> pl.LazyFrame:
        return events.with_columns(pl.col("v") * 2)

    assert doubled(frame.lazy()).collect()["v"].to_list() == [4.0]
    sql = fk.feature_view(
        name="sql_view",
        entity=fk.Entity("d", keys=["k"]),
        sources=[src],
        sql="SELECT k, ts, v + 1 AS w FROM events",
    )
    assert sql(frame).collect()["w"].to_list() == [3.0]


def test_parameters_must_bind_to_inputs() -> None:
    frame = pl.DataFrame({"k": [1], "ts": [datetime(2026, 1, 1)]})
    src = fk.Source("events", frame, timestamp="ts")
    with pytest.raises(
        fk.DefinitionError, match="parameter 'event' is not bound.*Did you mean 'events'"
    ):

        @fk.feature_view(entity=fk.Entity("d", keys=["k"]), sources=[src])
        def view(event: pl.LazyFrame) -> pl.LazyFrame:
            return event


def test_view_arguments_are_checked() -> None:
    frame = pl.DataFrame({"k": [1], "ts": [datetime(2026, 1, 1)]})
    src = fk.Source("events", frame, timestamp="ts")
    entity = fk.Entity("d", keys=["k"])
    with pytest.raises(fk.DefinitionError, match="needs at least one source"):
        fk.feature_view(name="x", entity=entity, sources=[], sql="SELECT 1")
    with pytest.raises(fk.DefinitionError, match="entity must be an fk.Entity"):
        fk.feature_view(name="x", entity="d", sources=[src], sql="SELECT k, ts FROM events")  # type: ignore[arg-type]
    with pytest.raises(fk.DefinitionError, match="lists input 'events' twice"):
        fk.feature_view(name="x", entity=entity, sources=[src, src], sql="SELECT k FROM events")
    with pytest.raises(fk.DefinitionError, match="ttl '7 dayz' does not parse"):
        fk.feature_view(
            name="x", entity=entity, sources=[src], ttl="7 dayz", sql="SELECT k FROM events"
        )


def test_runtime_lambda_needs_explicit_version() -> None:
    frame = pl.DataFrame({"k": [1], "ts": [datetime(2026, 1, 1)]})
    src = fk.Source("events", frame, timestamp="ts")
    namespace: dict[str, object] = {}
    exec("def built(events):\n    return events\n", namespace)  # no source file behind it
    decorate = fk.feature_view(entity=fk.Entity("d", keys=["k"]), sources=[src])
    with pytest.raises(fk.VersionError, match="Pass an explicit version"):
        decorate(namespace["built"])  # type: ignore[arg-type]
    pinned = fk.feature_view(entity=fk.Entity("d", keys=["k"]), sources=[src], version="1")(
        namespace["built"]  # type: ignore[arg-type]
    )
    assert pinned.version == "1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(minutes=90)),
        ("7 days", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
        (timedelta(hours=1), timedelta(hours=1)),
    ],
)
def test_durations(text: str | timedelta, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7 dayz", "", "-1d", "abc", "0s"])
def test_bad_durations_list_accepted_forms(text: str) -> None:
    with pytest.raises(fk.DefinitionError, match="duration"):
        parse_duration(text)


def test_equal_durations_format_equally() -> None:
    assert format_duration(parse_duration("1d")) == format_duration(parse_duration("24h"))


def test_feature_refs() -> None:
    assert fk.FeatureRef.parse("v:f") == fk.FeatureRef(view="v", version=None, feature="f")
    assert str(fk.FeatureRef.parse("v@3:f")) == "v@3:f"
    assert fk.FeatureRef.parse("v:*").feature == "*"
    for bad in ["v", "v@x:f", ":f", "v@0:f"]:
        with pytest.raises(fk.DefinitionError):
            fk.FeatureRef.parse(bad)


@pytest.mark.parametrize(
    ("span", "label"),
    [
        (timedelta(days=7), "7d"),
        (timedelta(hours=48), "2d"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=1.5), "1500ms"),  # not "1s": nothing is rounded away
        (timedelta(microseconds=7), "7us"),
    ],
)
def test_durations_are_shown_in_the_largest_unit_that_divides_them(
    span: timedelta, label: str
) -> None:
    from featurekit.core.timeutil import duration_label

    assert duration_label(span) == label


def test_aggregate_names_use_the_same_duration_labels() -> None:
    assert fk.Aggregation("fare", "sum", "168h").name == "fare_sum_7d"
    assert fk.Aggregation("fare", "sum", "90m").name == "fare_sum_90m"
    assert fk.Aggregation("fare", "count").name == "fare_count_lifetime"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1500ms", timedelta(milliseconds=1500)),  # not 1500 minutes with a plural 's'
        ("7us", timedelta(microseconds=7)),
        ("5 mins", timedelta(minutes=5)),
        ("2 hours", timedelta(hours=2)),
        ("30 secs", timedelta(seconds=30)),
    ],
)
def test_milliseconds_and_microseconds_are_not_read_as_plurals(
    text: str, expected: timedelta
) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("span", [timedelta(seconds=1.5), timedelta(microseconds=7)])
def test_every_duration_label_parses_back(span: timedelta) -> None:
    from featurekit.core.timeutil import duration_label

    assert parse_duration(duration_label(span)) == span
