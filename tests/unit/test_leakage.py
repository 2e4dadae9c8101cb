"""Leakage lint: a period stamped at its start warns, a period stamped at its end does not."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import polars as pl
import pytest

import featurekit as fk
from featurekit.core.errors import FeatureKitWarning, LeakageWarning
from featurekit.core.leakage import plan_findings, prefix_findings

DAY = datetime(2026, 1, 1)


def trips() -> pl.DataFrame:
    """Two drivers over three days, trips in the morning and the afternoon."""
    rows = []
    for day in range(3):
        for hour, fare in ((5, 10.0), (13, 20.0), (21, 5.0)):
            for driver in (1, 2):
                rows.append((driver, DAY + timedelta(days=day, hours=hour), fare * driver + day))
    return pl.DataFrame(rows, schema=["driver_id", "event_ts", "fare"], orient="row")


def daily_at_start(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.group_by("driver_id", pl.col("event_ts").dt.truncate("1d")).agg(
        pl.col("fare").sum().alias("fare_day")
    )


def daily_at_end(trips: pl.LazyFrame) -> pl.LazyFrame:
    day_end = pl.col("event_ts").dt.truncate("1d").dt.offset_by("1d")
    return trips.group_by("driver_id", day_end).agg(pl.col("fare").sum().alias("fare_day"))


def renamed_start(trips: pl.LazyFrame) -> pl.LazyFrame:
    """The truncated day column becomes the event time by a later rename."""
    return (
        trips.with_columns(pl.col("event_ts").dt.truncate("1d").alias("day"))
        .group_by("driver_id", "day")
        .agg(pl.col("fare").sum().alias("fare_day"))
        .rename({"day": "event_ts"})
    )


def dynamic_left(trips: pl.LazyFrame) -> pl.LazyFrame:
    return (
        trips.sort("event_ts")
        .group_by_dynamic("event_ts", every="1d", group_by="driver_id")
        .agg(pl.col("fare").sum().alias("fare_day"))
    )


def dynamic_right(trips: pl.LazyFrame) -> pl.LazyFrame:
    return (
        trips.sort("event_ts")
        .group_by_dynamic("event_ts", every="1d", group_by="driver_id", label="right")
        .agg(pl.col("fare").sum().alias("fare_day"))
    )


def running_total(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Point-in-time correct: each trip's row sums the driver's trips so far."""
    return trips.sort("event_ts").select(
        "driver_id", "event_ts", pl.col("fare").cum_sum().over("driver_id").alias("fare_so_far")
    )


def global_zscore(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Leaks through the whole input's mean, with a harmless-looking event time."""
    fare = pl.col("fare")
    return trips.select("driver_id", "event_ts", ((fare - fare.mean()) / fare.std()).alias("z"))


def lint_data(view: object) -> list[object]:
    return prefix_findings(
        lambda frames: view(frames["trips"]),  # type: ignore[operator]
        {"trips": (trips(), "event_ts")},
        timestamp="event_ts",
        view=view.__name__,  # type: ignore[attr-defined]
    )


def test_plan_flags_the_truncated_daily_stamp_with_the_fix() -> None:
    (finding,) = plan_findings(daily_at_start(trips().lazy()), "event_ts", view="daily")
    assert finding.method == "plan" and finding.column == "event_ts"
    assert finding.message == (
        "view 'daily': event time 'event_ts' is computed as "
        '\'col("event_ts").dt.truncate(["1d"])\', which moves each row\'s stamp back to the '
        "start of its period (1d by dt.truncate): a row summarizing a whole period is then "
        "visible before the period's data exists, and a label inside the period sees its "
        "future."
    )
    assert finding.fix == (
        "stamp the period's end: pl.col('event_ts').dt.truncate('1d').dt.offset_by('1d'), "
        "so each row becomes visible once its period is over (or opt the view out of the "
        "lint if the start is intended)."
    )
    assert str(finding) == f"{finding.message} Fix: {finding.fix}"


def test_plan_accepts_an_end_of_period_stamp() -> None:
    assert plan_findings(daily_at_end(trips().lazy()), "event_ts", view="daily") == []
    plus_a_day = (
        trips()
        .lazy()
        .group_by("driver_id", (pl.col("event_ts").dt.truncate("1d") + pl.duration(days=1)))
    )
    assert plan_findings(plus_a_day.agg(pl.len()), "event_ts", view="v") == []
    # the event time itself, a max of it, or a sort by a truncated key are fine
    assert plan_findings(running_total(trips().lazy()), "event_ts", view="v") == []
    by_day = trips().lazy().group_by("driver_id", pl.col("event_ts").dt.truncate("1d").alias("d"))
    assert plan_findings(by_day.agg(pl.col("event_ts").max()), "event_ts", view="v") == []
    sorted_by_day = trips().lazy().sort(pl.col("event_ts").dt.truncate("1d"))
    assert plan_findings(sorted_by_day, "event_ts", view="v") == []


@pytest.mark.parametrize(
    ("stamp", "flagged"),
    [
        (pl.col("event_ts").dt.truncate("1d").dt.offset_by("1h"), True),  # not far enough
        (pl.col("event_ts").dt.truncate("1d").dt.offset_by("-1d"), True),
        (pl.col("event_ts").dt.round("1h"), True),
        (pl.col("event_ts").dt.date().cast(pl.Datetime("us")), True),
        (pl.col("event_ts").dt.truncate("1w").dt.offset_by("7d"), False),
        (pl.col("event_ts").dt.truncate("1h").dt.offset_by("1d"), False),
    ],
)
def test_plan_judges_the_offset_against_the_period(stamp: pl.Expr, flagged: bool) -> None:
    lf = trips().lazy().group_by("driver_id", stamp.alias("event_ts")).agg(pl.len())
    assert bool(plan_findings(lf, "event_ts", view="v")) is flagged


def test_plan_sees_sql_views() -> None:
    sql = (
        "SELECT driver_id, date_trunc('day', event_ts) AS event_ts, SUM(fare) AS fare_day "
        "FROM trips GROUP BY driver_id, date_trunc('day', event_ts)"
    )
    leaky = pl.SQLContext(trips=trips().lazy()).execute(sql)
    assert len(plan_findings(leaky, "event_ts", view="v")) == 1
    fixed = sql.replace(
        "date_trunc('day', event_ts) AS", "date_trunc('day', event_ts) + INTERVAL '1 day' AS"
    )
    assert (
        plan_findings(pl.SQLContext(trips=trips().lazy()).execute(fixed), "event_ts", view="v")
        == []
    )


def test_data_flags_rows_stamped_before_their_data() -> None:
    (finding,) = lint_data(daily_at_start)
    assert finding.method == "data"  # type: ignore[attr-defined]
    message = finding.message  # type: ignore[attr-defined]
    assert message.startswith(
        "view 'daily_at_start': rows stamped at or before 2026-01-02T13:00:00+00:00 change "
        "when the source rows after that instant are removed (4 rows with them, 4 without), "
        "so they use data from after their own event time 'event_ts'. Example row: "
    )
    # the first cutoff (day 1, 21:00) ends a day, so nothing changes there; at day 2, 13:00
    # driver 1's row stamped at midnight sums (10 + 1) + (20 + 1) + (5 + 1) with the
    # evening trip and only 32 without it
    assert "'event_ts': datetime.datetime(2026, 1, 2, 0, 0), 'fare_day': 38.0}." in message
    assert "truncate('1d').dt.offset_by('1d')" in finding.fix  # type: ignore[attr-defined]


def test_both_follow_a_renamed_truncated_column() -> None:
    assert len(plan_findings(renamed_start(trips().lazy()), "event_ts", view="v")) == 1
    assert len(lint_data(renamed_start)) == 1


@pytest.mark.parametrize("view", [dynamic_left, global_zscore])
def test_data_catches_what_the_plan_cannot_see(view: object) -> None:
    assert plan_findings(view(trips().lazy()), "event_ts", view="v") == []  # type: ignore[operator]
    assert len(lint_data(view)) == 1


@pytest.mark.parametrize("view", [daily_at_end, dynamic_right, running_total])
def test_data_accepts_point_in_time_correct_views(view: object) -> None:
    assert lint_data(view) == []


def test_data_cuts_every_input_and_reads_naive_and_aware_times_alike() -> None:
    aware = trips().with_columns(pl.col("event_ts").dt.replace_time_zone("Asia/Tokyo"))

    def joined(trips: pl.LazyFrame, ratings: pl.LazyFrame) -> pl.LazyFrame:
        day = pl.col("event_ts").dt.truncate("1d")
        left = trips.group_by("driver_id", day).agg(pl.col("fare").sum())
        right = ratings.group_by("driver_id", day).agg(pl.col("fare").mean().alias("mean"))
        return left.join(right, on=["driver_id", "event_ts"])

    findings = prefix_findings(
        lambda f: joined(f["trips"], f["ratings"]),
        {"trips": (aware, "event_ts"), "ratings": (aware.lazy(), "event_ts")},
        timestamp="event_ts",
        view="joined",
    )
    assert [f.method for f in findings] == ["data"]


def test_a_view_with_too_few_instants_is_not_judged() -> None:
    one = trips().head(1)
    assert (
        prefix_findings(
            lambda f: daily_at_start(f["trips"]),
            {"trips": (one, "event_ts")},
            timestamp="event_ts",
            view="v",
        )
        == []
    )


def test_findings_warn_as_leakage_warnings() -> None:
    (finding,) = plan_findings(daily_at_start(trips().lazy()), "event_ts", view="daily")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finding.warn()
    assert [type(w.message) for w in caught] == [LeakageWarning]
    assert issubclass(LeakageWarning, FeatureKitWarning)
    assert str(caught[0].message) == str(finding)
    assert caught[0].filename == __file__


def test_the_view_object_can_be_linted_through_its_call() -> None:
    driver = fk.Entity("driver", keys=["driver_id"])
    source = fk.Source("trips", trips(), timestamp="event_ts")
    view = fk.feature_view(daily_at_start, entity=driver, sources=[source])
    output = view(trips=trips().lazy())
    assert isinstance(output, pl.LazyFrame)
    assert len(plan_findings(output, view.timestamp, view=view.name)) == 1


def test_a_sql_view_is_linted_by_both_detectors() -> None:
    driver = fk.Entity("driver", keys=["driver_id"])
    source = fk.Source("trips", trips(), timestamp="event_ts")
    view = fk.feature_view(
        name="daily_sql",
        entity=driver,
        sources=[source],
        sql=(
            "SELECT driver_id, date_trunc('day', event_ts) AS event_ts, SUM(fare) AS fare_day "
            "FROM trips GROUP BY driver_id, date_trunc('day', event_ts)"
        ),
    )
    output = view(trips=trips().lazy())
    assert isinstance(output, pl.LazyFrame)
    assert [f.method for f in plan_findings(output, "event_ts", view=view.name)] == ["plan"]
    findings = prefix_findings(
        lambda frames: view(**frames),
        {"trips": (trips(), "event_ts")},
        timestamp="event_ts",
        view=view.name,
    )
    assert [f.method for f in findings] == ["data"]
