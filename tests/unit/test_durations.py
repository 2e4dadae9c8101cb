"""Durations that parse but cannot be computed with are refused when a view is defined."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

import featurekit as fk
from featurekit.core.timeutil import MAX_DURATION, parse_duration
from featurekit.kernels.pit import ViewFrame, pit_join

ENTITY = fk.Entity("driver", keys=["driver_id"])
TOO_LONG = (
    "is longer than 100 years, the longest duration featurekit accepts. For no limit, pass None"
)


def passthrough(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips


@pytest.mark.parametrize(
    "text", ["3000y", "5000y", "1000000000d", "99999999999999999999999d", "101y", "36501d"]
)
def test_overlong_duration_text_is_a_definition_error(text: str) -> None:
    with pytest.raises(fk.DefinitionError) as info:
        parse_duration(text, what="ttl")
    assert str(info.value).startswith(f"ttl {text!r} {TOO_LONG}")


def test_overlong_timedelta_is_a_definition_error() -> None:
    with pytest.raises(fk.DefinitionError, match=TOO_LONG):
        parse_duration(timedelta.max, what="ttl")
    with pytest.raises(fk.DefinitionError, match=TOO_LONG):
        parse_duration(MAX_DURATION + timedelta(microseconds=1))


def test_the_bound_itself_is_accepted() -> None:
    assert parse_duration("100y") == timedelta(days=36500) == MAX_DURATION
    assert parse_duration("36500 days") == MAX_DURATION
    assert parse_duration("1h30m") == timedelta(minutes=90)


def test_overlong_ttl_and_window_fail_when_the_view_is_defined() -> None:
    src = fk.Source(
        "trips",
        pl.DataFrame({"driver_id": [1], "event_ts": [datetime(2026, 1, 1)]}),
        timestamp="event_ts",
    )
    with pytest.raises(fk.DefinitionError, match=f"view 'v' ttl '3000y' {TOO_LONG}"):
        fk.feature_view(entity=ENTITY, sources=[src], ttl="3000y", name="v")(passthrough)
    with pytest.raises(fk.DefinitionError, match=f"window of fare sum '5000y' {TOO_LONG}"):
        fk.Aggregation("fare", "sum", window="5000y")
    assert fk.Aggregation("fare", "sum", window=None).window is None  # lifetime spelled None


def test_ttl_age_of_a_clamped_row_does_not_wrap_around_at_nanosecond_labels() -> None:
    # a 1500 row is clamped to 1677 next to nanosecond labels; its age at 2021 (344 years)
    # does not fit a 64-bit nanosecond duration and used to wrap to a negative, "fresh" age
    rows = pl.DataFrame({"k": [1], "e": [datetime(1500, 1, 1)], "v": [3.0]})
    labels = pl.DataFrame({"k": [1], "t": [datetime(2021, 1, 1)]})
    view = ViewFrame("v", rows, ("k",), "e", None, ("v",), MAX_DURATION)
    nano = labels.with_columns(pl.col("t").cast(pl.Datetime("ns")))
    assert pit_join(nano, timestamp="t", views=[view])["v"].to_list() == [None]
    assert pit_join(labels, timestamp="t", views=[view])["v"].to_list() == [None]
    fresh = rows.with_columns(e=pl.lit(datetime(2021, 1, 1) - MAX_DURATION))  # edge: kept
    view = ViewFrame("v", fresh, ("k",), "e", None, ("v",), MAX_DURATION)
    assert pit_join(nano, timestamp="t", views=[view])["v"].to_list() == [3.0]
