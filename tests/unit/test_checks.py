"""Data-quality checks: every built-in rule, both severities, pandera, reports and errors."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
import polars as pl
import pytest
from hypothesis import given, settings

import featurekit as fk
from featurekit.core.checks import (
    FAILED_CHECKS_COLUMN,
    Check,
    CheckReport,
    as_checks,
    evaluate_checks,
    with_default_checks,
)
from featurekit.core.errors import (
    DefinitionError,
    FeatureKitError,
    FeatureKitWarning,
    SchemaError,
    ValidationError,
)
from featurekit.offline.resolve import resolve

T0 = datetime(2026, 1, 1)
NOW = datetime(2026, 1, 3, 1)


def trips() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "driver_id": [1, 1, 2, 3, 4, 4],
            "event_ts": [T0, T0, T0 + timedelta(days=1), T0 + timedelta(days=2), T0, T0],
            "fare": [1.0, -2.0, None, -3.0, 5.0, 5.0],
            "rating": [1, 7, 3, None, 4, 4],
        }
    )


def run(*checks: Check | object, frame: pl.DataFrame | None = None) -> CheckReport:
    return evaluate_checks(
        trips() if frame is None else frame,
        checks,
        keys=["driver_id"],
        timestamp="event_ts",
        now=NOW,
    )


def only(report: CheckReport) -> tuple[bool, int, list[int]]:
    """(passed, failing count, failing row positions) of the single check in report."""
    (result,) = report.results
    rows = [] if result.mask is None else result.mask.arg_true().to_list()
    return result.passed, result.failing, rows


def test_expression_check_fails_rows_where_false_and_passes_nulls() -> None:
    report = run(Check(pl.col("fare") >= 0, name="fare_non_negative"))
    assert only(report) == (False, 2, [1, 3])
    result = report.results[0]
    assert result.samples["fare"].to_list() == [-2.0, -3.0]
    assert result.detail == '2 of 6 rows fail ([(col("fare")) >= (dyn int: 0)])'


def test_expression_reducing_to_one_value_is_a_frame_level_check() -> None:
    assert only(run(Check(pl.col("fare").max() < 4, name="small"))) == (False, 0, [])
    assert only(run(Check(pl.col("fare").max() < 9, name="small"))) == (True, 0, [])


def test_not_null() -> None:
    assert only(run(Check.not_null("fare"))) == (False, 1, [2])
    assert Check.not_null("fare").name == "fare_not_null"


def test_unique_reports_same_key_and_time_rows_that_differ_only() -> None:
    # driver 1 has two rows at T0 with different fares; driver 4 two identical rows
    assert only(run(Check.unique())) == (False, 2, [0, 1])
    assert only(run(Check.unique(ignore_identical=False))) == (False, 4, [0, 1, 4, 5])
    assert only(run(Check.unique(["driver_id"], ignore_identical=False))) == (
        False,
        4,
        [0, 1, 4, 5],
    )
    assert Check.unique("driver_id").name == "unique_driver_id"


def test_between_is_inclusive_and_open_ended_with_none() -> None:
    assert only(run(Check.between("rating", 1, 5))) == (False, 1, [1])
    assert only(run(Check.between("rating", 2, None))) == (False, 1, [0])
    assert only(run(Check.between("fare", 0))) == (False, 2, [1, 3])
    assert only(run(Check.between("fare", None, 1.0))) == (False, 2, [4, 5])


def test_row_count() -> None:
    assert only(run(Check.row_count(min=1, max=6))) == (True, 0, [])
    report = run(Check.row_count(min=7))
    assert only(report) == (False, 0, [])
    assert report.results[0].detail == "6 rows, fewer than the minimum 7"
    assert run(Check.row_count(max=5)).results[0].detail == "6 rows, more than the maximum 5"


def test_fresh_compares_latest_event_time_with_now_as_utc_instants() -> None:
    # latest event is T0 + 2d = 2026-01-03 00:00 (naive: UTC); now is one hour later
    assert only(run(Check.fresh("2h"))) == (True, 0, [])
    stale = run(Check.fresh("30m"))
    assert only(stale) == (False, 0, [])
    assert stale.results[0].detail == (
        "latest event time 2026-01-03T00:00:00+00:00 is 1:00:00 old, over 0:30:00"
    )
    # an aware `now` in another zone is the same instant
    from zoneinfo import ZoneInfo

    later = datetime(2026, 1, 3, 2, tzinfo=ZoneInfo("Europe/Berlin"))  # 01:00 UTC
    report = evaluate_checks(
        trips(), [Check.fresh("61m")], keys=["driver_id"], timestamp="event_ts", now=later
    )
    assert report.results[0].passed


def test_fresh_fails_without_event_times() -> None:
    report = run(Check.fresh("2h"), frame=trips().clear())
    assert only(report) == (False, 0, [])
    assert report.results[0].detail == "no event times in 'event_ts' to judge freshness"


def test_severities_split_errors_from_warnings() -> None:
    report = run(
        Check.not_null("fare", severity="warn"),
        Check.between("rating", 1, 5),
        Check.row_count(min=1),
    )
    assert [r.name for r in report.warnings] == ["fare_not_null"]
    assert [r.name for r in report.errors] == ["rating_between"]
    assert not report.passed
    warn_only = run(Check.not_null("fare", severity="warn"))
    assert warn_only.passed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_only.raise_or_warn("driver_stats")
    assert [type(w.message) for w in caught] == [FeatureKitWarning]
    assert str(caught[0].message).startswith(
        "view 'driver_stats': 1 warn-level checks failed:\n- 'fare_not_null' (warn): "
        "1 of 6 rows fail (fare is not null)."
    )


def test_validation_error_lists_each_failed_check_with_count_and_samples() -> None:
    report = run(
        Check(pl.col("fare") >= 0, name="fare_non_negative"),
        Check.row_count(min=10),
        Check.not_null("fare", severity="warn"),
        Check.row_count(min=1, name="has_rows"),
    )
    with pytest.raises(ValidationError) as caught:
        report.raise_or_warn("driver_stats")
    err = caught.value
    assert isinstance(err, FeatureKitError)
    assert [f.name for f in err.failures] == ["fare_non_negative", "row_count"]
    assert str(err) == (
        "view 'driver_stats' failed 2 of 4 checks:\n"
        "- 'fare_non_negative' (error): 2 of 6 rows fail "
        '([(col("fare")) >= (dyn int: 0)]).\n'
        "  Sample failing rows:\n"
        "    {'driver_id': 1, 'event_ts': datetime.datetime(2026, 1, 1, 0, 0), 'fare': -2.0, "
        "'rating': 7}\n"
        "    {'driver_id': 3, 'event_ts': datetime.datetime(2026, 1, 3, 0, 0), 'fare': -3.0, "
        "'rating': None}\n"
        "- 'row_count' (error): 6 rows, fewer than the minimum 10.\n"
        "Fix the data or the view; a check declared with severity='warn' reports without "
        "blocking."
    )


def test_samples_are_capped_at_five_rows() -> None:
    frame = pl.DataFrame({"driver_id": range(20), "event_ts": [T0] * 20, "fare": [-1.0] * 20})
    report = run(Check.between("fare", 0), frame=frame)
    assert report.results[0].failing == 20
    assert report.results[0].samples["driver_id"].to_list() == [0, 1, 2, 3, 4]
    assert str(report.error("v")).count("'driver_id'") == 5


def test_failing_rows_name_every_failed_check_and_are_capped() -> None:
    frame = trips()
    report = run(
        Check(pl.col("fare") >= 0, name="fare_non_negative"),
        Check.unique(),
        Check.not_null("fare", severity="warn"),
        Check.row_count(min=100),
        frame=frame,
    )
    quarantined = report.failing_rows(frame)
    assert quarantined["driver_id"].to_list() == [1, 1, 3]
    assert quarantined[FAILED_CHECKS_COLUMN].to_list() == [
        ["unique"],
        ["fare_non_negative", "unique"],
        ["fare_non_negative"],
    ]
    every = report.failing_rows(frame, severity="all")
    assert every["driver_id"].to_list() == [1, 1, 2, 3]
    assert every[FAILED_CHECKS_COLUMN].to_list()[2] == ["fare_not_null"]
    assert report.failing_rows(frame, limit=1).height == 1
    with pytest.raises(SchemaError, match="the frame has 2 rows, the report was computed on 6"):
        report.failing_rows(frame.head(2))


def test_report_to_polars() -> None:
    table = run(Check.not_null("fare"), Check.row_count(min=1)).to_polars()
    assert table.to_dicts() == [
        {
            "name": "fare_not_null",
            "severity": "error",
            "passed": False,
            "failing": 1,
            "detail": "1 of 6 rows fail (fare is not null)",
        },
        {
            "name": "row_count",
            "severity": "error",
            "passed": True,
            "failing": 0,
            "detail": "6 rows",
        },
    ]


def test_checks_on_a_lazy_frame_and_an_empty_frame() -> None:
    report = run(Check.not_null("fare"), Check.unique(), frame=trips().clear())
    assert report.passed and report.rows == 0
    lazy = evaluate_checks(
        trips().lazy(), [Check.not_null("fare")], keys=["driver_id"], timestamp="event_ts"
    )
    assert lazy.results[0].failing == 1


def test_a_check_on_a_missing_column_names_the_check_and_the_columns() -> None:
    with pytest.raises(SchemaError) as caught:
        run(Check(pl.col("price") > 0, name="price_positive"))
    assert str(caught.value).startswith(
        "check 'price_positive' ([(col(\"price\")) > (dyn int: 0)]) names a column the view's "
        "output does not hold: "
    )
    assert "Output columns: ['driver_id', 'event_ts', 'fare', 'rating']." in str(caught.value)
    with pytest.raises(SchemaError, match="check 'x_not_null'"):
        run(Check.not_null("x"))


def test_malformed_checks_are_definition_errors_with_the_fix() -> None:
    with pytest.raises(DefinitionError) as caught:
        run(Check(pl.col("fare") * 2, name="doubled"))
    assert str(caught.value) == (
        "check 'doubled' ([(col(\"fare\")) * (dyn int: 2)]) gives Float64, not a boolean: "
        "write a condition that is true on good rows, e.g. pl.col('fare') >= 0."
    )
    with pytest.raises(DefinitionError, match=r"needs a name: fk.Check\(expr, name="):
        Check(pl.col("fare") >= 0)  # type: ignore[call-arg]
    with pytest.raises(DefinitionError, match="severity must be 'error' or 'warn', got 'fatal'"):
        Check.not_null("fare", severity="fatal")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="takes a polars expression or a pandera"):
        Check("fare >= 0")
    with pytest.raises(DefinitionError, match=r"check names \['fare_not_null'\] are used twice"):
        as_checks([Check.not_null("fare"), Check.not_null("fare", severity="warn")])
    with pytest.raises(DefinitionError, match="check name 'a b' is not valid"):
        Check(pl.col("fare") >= 0, name="a b")
    with pytest.raises(DefinitionError, match="needs a low or a high bound"):
        Check.between("fare")
    with pytest.raises(DefinitionError, match="min is above max"):
        Check.row_count(min=3, max=1)
    with pytest.raises(DefinitionError, match="Check.fresh max_age 'soon' does not parse"):
        Check.fresh("soon")


def test_checks_compare_by_value_and_are_frozen() -> None:
    a = Check(pl.col("fare") >= 0, name="f")
    assert a == Check(pl.col("fare") >= 0, name="f")
    assert a != Check(pl.col("fare") >= 1, name="f")
    assert Check.fresh("2h") == Check.fresh(timedelta(hours=2))
    assert len({Check.not_null("a"), Check.not_null("a")}) == 1
    with pytest.raises(AttributeError):
        a.name = "g"  # type: ignore[misc]


def test_pandera_schema_and_model_are_checks() -> None:
    pa = pytest.importorskip("pandera.polars")

    schema = pa.DataFrameSchema(
        {"fare": pa.Column(float, pa.Check.ge(0), nullable=True)}, name="trip_rules"
    )

    class Rules(pa.DataFrameModel):
        rating: int = pa.Field(in_range={"min_value": 1, "max_value": 5}, nullable=True)

    report = run(schema, Check(Rules, severity="warn"))
    fare, rating = report.results
    assert (fare.name, fare.severity, fare.failing) == ("trip_rules", "error", 2)
    assert fare.mask is not None and fare.mask.arg_true().to_list() == [1, 3]
    assert fare.detail == "2 of 6 rows fail (fare: greater_than_or_equal_to(0))"
    assert (rating.name, rating.severity, rating.failing) == ("Rules", "warn", 1)
    assert rating.samples["rating"].to_list() == [7]
    # a schema-level failure (missing column) fails without failing rows
    missing = run(pa.DataFrameSchema({"tip": pa.Column(float)}, name="tips"))
    assert only(missing) == (False, 0, [])
    assert missing.results[0].detail == "0 of 6 rows fail (tips: column_in_dataframe)"
    assert run(pa.DataFrameSchema({"fare": pa.Column(float, nullable=True)})).passed


def test_checks_on_a_view_are_not_part_of_its_fingerprint() -> None:
    driver = fk.Entity("driver", keys=["driver_id"])
    source = fk.Source("trips", trips(), timestamp="event_ts")

    def driver_fares(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select("driver_id", "event_ts", "fare")

    plain = fk.feature_view(driver_fares, entity=driver, sources=[source])
    checked = fk.feature_view(
        driver_fares,
        entity=driver,
        sources=[source],
        checks=[Check.not_null("fare"), Check.fresh("2h", severity="warn")],
    )
    assert checked.checks == (Check.not_null("fare"), Check.fresh("2h", severity="warn"))
    assert plain.checks == ()
    assert checked.options() == plain.options()
    assert resolve(checked).fingerprint == resolve(plain).fingerprint
    assert "checks" not in checked.model_dump()
    with pytest.raises(DefinitionError, match="are used twice"):
        fk.feature_view(
            driver_fares,
            entity=driver,
            sources=[source],
            checks=[Check.not_null("fare"), Check.not_null("fare")],
        )


def test_now_defaults_to_the_clock() -> None:
    recent = pl.DataFrame(
        {"driver_id": [1], "event_ts": [datetime.now(UTC) - timedelta(minutes=5)]}
    )
    report = evaluate_checks(recent, [Check.fresh("1h")], keys=["driver_id"], timestamp="event_ts")
    assert report.passed


def test_every_view_reports_differing_duplicates_at_least_as_a_warning() -> None:
    added = with_default_checks([Check.not_null("fare")])
    assert added == (Check.not_null("fare"), Check.unique(severity="warn"))
    report = run(*added)
    assert [r.name for r in report.warnings] == ["unique"] and report.errors[0].name == (
        "fare_not_null"
    )
    # a declared unique() on the default columns, at any severity, replaces the default
    assert with_default_checks([Check.unique()]) == (Check.unique(),)
    assert with_default_checks([Check.unique(severity="warn", name="dups")]) == (
        Check.unique(severity="warn", name="dups"),
    )
    # unique on other columns does not; the default then avoids the taken name
    declared = Check.unique(["trip_id"], name="unique")
    assert with_default_checks([declared]) == (
        declared,
        Check.unique(name="default_unique", severity="warn"),
    )
    assert with_default_checks(None) == (Check.unique(severity="warn"),)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 3)),
            st.one_of(st.none(), st.integers(0, 2)),
            st.one_of(st.none(), st.sampled_from([1.0, 2.0, float("nan")])),
        ),
        max_size=40,
    ),
    identical=st.booleans(),
)
def test_unique_flags_the_rows_a_window_over_every_row_flags(
    rows: list[tuple[int | None, int | None, float | None]], identical: bool
) -> None:
    """Uniqueness is judged on the few rows whose columns' hash repeats: the same rows
    as the plain window over every row, with null keys, NaNs and identical rows."""
    frame = pl.DataFrame(
        {
            "driver_id": [r[0] for r in rows],
            "event_ts": [None if r[1] is None else T0 + timedelta(hours=r[1]) for r in rows],
            "fare": [r[2] for r in rows],
        },
        schema={"driver_id": pl.Int64, "event_ts": pl.Datetime("us"), "fare": pl.Float64},
    )
    cols = ["driver_id", "event_ts"]
    window = pl.struct(pl.all()).n_unique().over(cols) if identical else pl.len().over(cols)
    want = frame.select((window > 1).fill_null(False)).to_series().to_list()
    (result,) = run(Check.unique(ignore_identical=identical), frame=frame).results
    assert result.mask is not None
    assert result.mask.to_list() == want
