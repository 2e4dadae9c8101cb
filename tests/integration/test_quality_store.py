"""Checks gate materialization; statistics are computed in the same pass (real Delta tables)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import at
from views_trips import driver, fare_features, trips_source

import featurekit as fk
from featurekit.offline import quality
from featurekit.offline.quality import check_rows
from featurekit.offline.resolve import resolve
from featurekit.storage import delta


def checked_view(folder: Path, *checks: fk.Check) -> fk.FeatureView:
    return fk.feature_view(entity=driver, sources=[trips_source(folder)], checks=list(checks))(
        fare_features
    )


def add_trips(folder: Path, rows: dict[str, list[object]]) -> None:
    pl.concat([pl.read_parquet(folder / "trips.parquet"), pl.DataFrame(rows)]).write_parquet(
        folder / "trips.parquet"
    )


FARE_CAP = fk.Check(pl.col("fare") <= 45, name="fare_cap")
#: a trip that arrives after the first run: the next run is incremental
LATE_TRIP: dict[str, list[object]] = {
    "driver_id": [2],
    "event_ts": [at(60)],
    "ingested_at": [at(60)],
    "fare": [1.0],
    "status": ["ok"],
}


def test_error_check_commits_nothing_and_quarantines_failing_rows(
    tmp_path: Path, data_dir: Path
) -> None:
    store = fk.Store(tmp_path / "store", progress=False, online="memory")
    view = checked_view(data_dir, FARE_CAP, fk.Check.row_count(min=1))
    with pytest.raises(fk.ValidationError) as info:
        store.materialize(view)
    text = str(info.value)
    assert "view 'fare_features' failed 1 of 3 checks:" in text
    assert "- 'fare_cap' (error): 2 of 5 rows fail" in text
    assert "Nothing was committed (view 'fare_features' version 1)." in text
    assert "2 failing row(s) were written to the quarantine table" in text
    assert [r.name for r in info.value.failures] == ["fare_cap"]
    # nothing committed: no table, no registry version, nothing online
    assert not delta.table_exists(str(store.root / "features" / "fare_features" / "v1"))
    assert store.registry.versions("fare_features") == []
    quarantined = store.quarantine("fare_features")
    assert quarantined.sort("fare").select("driver_id", "fare", "__fk_failed_checks").rows() == [
        (1, 50.0, ["fare_cap"]),
        (2, 60.0, ["fare_cap"]),
    ]
    assert quarantined["run_id"].n_unique() == 1


def test_incremental_error_leaves_table_and_online_unchanged(
    tmp_path: Path, data_dir: Path
) -> None:
    store = fk.Store(tmp_path / "store", progress=False, online="memory")
    view = checked_view(data_dir, fk.Check(pl.col("fare") <= 100, name="fare_cap"))
    first = store.materialize(view)
    before = store.read("fare_features")
    online_before = store.get_online_features(["fare_features:fare"], {"driver_id": [1, 2]})
    add_trips(
        data_dir,
        {
            "driver_id": [1, 2],
            "event_ts": [at(50), at(51)],
            "ingested_at": [at(50), at(51)],
            "fare": [500.0, 70.0],
            "status": ["ok", "ok"],
        },
    )
    with pytest.raises(fk.ValidationError, match="'fare_cap' \\(error\\): 1 of 2 rows fail"):
        store.materialize(view)
    uri = str(store.root / "features" / "fare_features" / "v1")
    assert delta.current_version(uri) == first.delta_version
    assert store.read("fare_features").equals(before)
    assert [r.version for r in store.versions("fare_features")] == [1]
    after = store.get_online_features(["fare_features:fare"], {"driver_id": [1, 2]})
    assert after.equals(online_before)
    assert store.quarantine("fare_features")["fare"].to_list() == [500.0]


def test_warn_check_commits_records_and_warns(store: fk.Store, data_dir: Path) -> None:
    cap = fk.Check(pl.col("fare") <= 45, name="fare_cap", severity="warn")
    view = checked_view(data_dir, cap)
    with pytest.warns(fk.FeatureKitWarning, match="1 warn-level checks failed") as caught:
        result = store.materialize(view)
    assert any("The rows were committed." in str(w.message) for w in caught)
    assert result.rows_written == 5
    [run] = store.runs("fare_features")
    assert [(c.name, c.severity, c.passed, c.failing) for c in run.checks] == [
        ("fare_cap", "warn", False, 2),
        ("unique", "warn", True, 0),
    ]
    assert [c.name for c in result.checks] == ["fare_cap", "unique"]


def test_default_unique_warns_on_differing_duplicates(store: fk.Store, data_dir: Path) -> None:
    add_trips(
        data_dir,
        {
            "driver_id": [1],
            "event_ts": [at(10)],
            "ingested_at": [at(10.1)],
            "fare": [21.0],  # same driver and time as an existing trip, another fare
            "status": ["ok"],
        },
    )
    with pytest.warns(fk.FeatureKitWarning, match="'unique' \\(warn\\): 2 of 6 rows fail"):
        store.materialize(checked_view(data_dir))


def test_batched_run_judges_row_count_over_the_whole_run(tmp_path: Path, data_dir: Path) -> None:
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    ok = checked_view(
        data_dir, fk.Check.row_count(min=5), fk.Check.row_count(max=5, name="at_most")
    )
    result = store.materialize(ok, memory_budget=64)
    assert result.rows_written == 5
    assert [(c.name, c.passed) for c in result.checks] == [
        ("row_count", True),
        ("at_most", True),
        ("unique", True),
    ]
    batched = store.stats("fare_features")
    store2 = fk.Store(tmp_path / "store2", progress=False, online=False)
    store2.materialize(ok)
    in_memory = store2.stats("fare_features")
    columns = ["feature", "count", "nulls", "min", "max", "mean", "p50", "distinct"]
    assert batched.select(columns).equals(in_memory.select(columns))

    too_many = checked_view(data_dir, fk.Check.row_count(max=4))
    store3 = fk.Store(tmp_path / "store3", progress=False, online=False)
    with pytest.raises(fk.ValidationError, match="5 rows, more than the maximum 4"):
        store3.materialize(too_many, memory_budget=64)
    assert store3.registry.versions("fare_features") == []
    # a row-level error in a batch stops the run at that batch (driver 1's); its failing
    # rows are quarantined once the writer has let go
    with pytest.raises(fk.ValidationError, match="1 failing row\\(s\\) were written"):
        store3.materialize(checked_view(data_dir, FARE_CAP), memory_budget=64)
    assert store3.quarantine("fare_features")["fare"].to_list() == [50.0]


def test_stats_equal_a_plain_polars_computation(store: fk.Store, data_dir: Path) -> None:
    view = checked_view(data_dir)
    first = store.materialize(view)
    stats = store.stats("fare_features")
    rows = store.read("fare_features")
    assert stats["feature"].to_list() == ["fare", "fare_x2"]
    fare = stats.row(0, named=True)
    assert (fare["count"], fare["nulls"], fare["min"], fare["max"]) == (5, 0, 10.0, 60.0)
    assert fare["mean"] == pytest.approx(rows["fare"].mean())
    assert fare["std"] == pytest.approx(rows["fare"].std())
    assert fare["p50"] == pytest.approx(rows["fare"].quantile(0.5, "linear"))
    assert (fare["run_id"], fare["delta_version"], fare["rows"]) == (first.run_id, 0, 5)
    add_trips(data_dir, LATE_TRIP)
    second = store.materialize(view)
    assert store.stats("fare_features")["run_id"].to_list() == [second.run_id] * 2
    assert store.stats("fare_features", run=first.run_id)["count"].to_list() == [5, 5]
    assert store.stats("fare_features", run=1)["count"].to_list() == [1, 1]
    with pytest.raises(fk.NotFoundError, match="has no statistics for run 7"):
        store.stats("fare_features", run=7)


def test_stats_are_of_the_rows_written_when_tidying_drops_some(
    store: fk.Store, data_dir: Path
) -> None:
    # a one-batch run starts its statistics on the rows as produced; a row with a null key
    # and an exact duplicate are then dropped, so the statistics must be redone on the rest
    add_trips(
        data_dir,
        {
            "driver_id": [None, 1],
            "event_ts": [at(30), at(0)],
            "ingested_at": [at(30), at(0)],
            "fare": [1000.0, 10.0],
            "status": ["ok", "ok"],
        },
    )
    raw = pl.read_parquet(data_dir / "trips.parquet").filter(pl.col("status") == "ok")
    first = raw.filter(pl.col("driver_id").is_not_null()).head(1).row(0, named=True)
    add_trips(data_dir, {k: [v] for k, v in first.items()})  # the same row again
    with pytest.warns(fk.FeatureKitWarning):
        store.materialize(checked_view(data_dir, fk.Check.unique(severity="warn")))
    written = store.read("fare_features")
    fare = store.stats("fare_features").row(0, named=True)
    assert fare["count"] == fare["rows"] == written.height
    assert fare["max"] == written["fare"].max() < 1000.0
    assert fare["mean"] == pytest.approx(written["fare"].mean())


def test_statistics_that_fail_warn_after_the_commit_and_lose_only_themselves(
    store: fk.Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # statistics are summarized beside the write: a failure there cannot stop the commit,
    # so it is reported as a failure to save them is
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("no room for the statistics")

    monkeypatch.setattr(quality, "partial_stats", broken)
    with pytest.warns(fk.FeatureKitWarning, match="no room for the statistics"):
        result = store.materialize(checked_view(data_dir))
    assert result.rows_written == 5
    assert store.read("fare_features").height == 5
    with pytest.raises(fk.NotFoundError):
        store.stats("fare_features")
    monkeypatch.undo()
    add_trips(data_dir, LATE_TRIP)
    store.materialize(checked_view(data_dir))  # the next run's statistics are kept
    assert store.stats("fare_features")["count"].to_list() == [1, 1]


def test_check_rows_evaluates_view_checks_plus_defaults(data_dir: Path) -> None:
    resolved = resolve(checked_view(data_dir, FARE_CAP))
    rows = pl.DataFrame(
        {
            "driver_id": [1, 1],
            "event_ts": [datetime(2026, 1, 1, tzinfo=UTC)] * 2,
            "ingested_at": [datetime(2026, 1, 1, tzinfo=UTC)] * 2,
            "fare": [50.0, 10.0],
            "fare_x2": [100.0, 20.0],
        }
    )
    report = check_rows(resolved, rows, now=datetime(2026, 1, 2))
    assert report.to_polars().select("name", "passed", "failing").rows() == [
        ("fare_cap", False, 1),
        ("unique", False, 2),
    ]


def shifted_trips(folder: Path) -> None:
    """Two more days of trips for driver 1 and 2: fares ten times as high."""
    add_trips(
        folder,
        {
            "driver_id": [1, 2] * 10,
            "event_ts": [at(100 + i) for i in range(20)],
            "ingested_at": [at(100 + i) for i in range(20)],
            "fare": [500.0 + 10 * i for i in range(20)],
            "status": ["ok"] * 20,
        },
    )


def test_training_set_records_its_feature_statistics(store: fk.Store, data_dir: Path) -> None:
    store.materialize(checked_view(data_dir))
    labels = pl.DataFrame({"driver_id": [1, 2, 1], "ts": [at(11), at(2), at(45)]})
    ts = store.training_set(labels, features=["fare_features:fare"], timestamp="ts")
    baseline = store.stats(ts)
    assert baseline.select("view", "version", "feature", "column", "count", "nulls").rows() == [
        ("fare_features", 1, "fare", "fare", 3, 0)
    ]
    assert baseline["mean"].item() == pytest.approx(ts.to_polars()["fare"].mean())
    # the id does not change because statistics are recorded beside it
    again = store.training_set(labels, features=["fare_features:fare"], timestamp="ts")
    assert again.id == ts.id
    assert "<svg" in baseline._repr_html_() and "fk-stats" in baseline._repr_html_()


def test_drift_flags_a_shifted_window_and_not_an_identical_one(
    store: fk.Store, data_dir: Path
) -> None:
    view = checked_view(data_dir)
    store.materialize(view)
    shifted_trips(data_dir)
    store.materialize(view)
    same = store.drift("fare_features", reference=(at(0), at(50)), current=(at(0), at(50)))
    assert not same.drifted
    assert same.to_polars().filter(pl.col("metric") == "psi")["value"].to_list() == [0.0, 0.0]
    report = store.drift("fare_features", reference=(at(0), at(50)), current=(at(100), at(120)))
    assert isinstance(report, fk.DriftReport)
    assert report.drifted_features == ("fare", "fare_x2")
    assert (report.reference_rows, report.current_rows) == (5, 20)
    page = report._repr_html_()
    assert page is not None and page.count("<svg") == 2 and "fare (drifted)" in page
    # from a training set: its values of the view's features are the reference
    labels = pl.DataFrame({"driver_id": [1, 2] * 5, "ts": [at(45 + i) for i in range(10)]})
    ts = store.training_set(labels, features=["fare_features:fare"], timestamp="ts")
    by_ts = store.drift("fare_features", reference=ts.id, current=(at(100), at(120)))
    assert by_ts.drifted_features == ("fare",)
    assert by_ts.reference_rows == 10


def test_drift_refuses_an_empty_side(store: fk.Store, data_dir: Path) -> None:
    store.materialize(checked_view(data_dir))
    with pytest.raises(fk.SchemaError, match="the current .* holds no rows; widen its time range"):
        store.drift("fare_features", reference=(at(0), at(50)), current=(at(500), at(600)))


def mixed_features(rides: pl.LazyFrame) -> pl.LazyFrame:
    """Float (nulls, NaN), integer, string and boolean features."""
    return rides.select("driver_id", "event_ts", "fare", "stops", "city", "night")


def test_out_of_core_training_set_statistics_equal_in_memory_ones_read_in_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 400
    rides = pl.DataFrame(
        {
            "driver_id": [i % 37 for i in range(n)],
            "event_ts": [at(i / 10) for i in range(n)],
            "fare": [
                None if i % 11 == 0 else float("nan") if i % 13 == 0 else i * 0.5 for i in range(n)
            ],
            "stops": [i % 5 for i in range(n)],
            "city": [None if i % 7 == 0 else f"c{i % 4}" for i in range(n)],
            "night": [i % 3 == 0 for i in range(n)],
        }
    )
    rides.write_parquet(tmp_path / "rides.parquet")
    source = fk.Source("rides", tmp_path / "rides.parquet", timestamp="event_ts")
    view = fk.feature_view(entity=driver, sources=[source], ttl="1d")(mixed_features)
    labels = pl.DataFrame(
        {"driver_id": [i % 41 for i in range(300)], "ts": [at(i / 7) for i in range(300)]}
    )
    features = [f"mixed_features:{f}" for f in ("fare", "stops", "city", "night")]
    read: list[int] = []  # rows of each frame the statistics are computed from
    for name in ("partial_stats", "compute_stats"):
        kernel = getattr(quality, name)

        def counted(frame: pl.DataFrame, *args: object, _k: Any = kernel, **kw: Any) -> Any:
            read.append(frame.height)
            return _k(frame, *args, **kw)

        monkeypatch.setattr(quality, name, counted)

    baselines = []
    for budget in (None, 1):
        root = tmp_path / f"store_{budget}"
        fk.Store(root, progress=False, online=False).materialize(view)
        store = fk.Store(root, progress=False, online=False, memory_budget=budget)
        read.clear()
        ts = store.training_set(labels, features=features, timestamp="ts")
        baselines.append(store.stats(ts))
    # out of core, no read held more than a range of the rows, and the ranges merged
    assert len(read) > 1 and max(read) <= 2
    memory, spilled = baselines
    assert memory["count"].to_list() == [300] * 4
    assert memory["nans"][0] > 0 and memory["nulls"][0] > 0 and memory["nulls"][2] > 0
    exact = [c for c in memory.columns if c not in ("mean", "std")]
    assert spilled.select(exact).equals(memory.select(exact))
    assert spilled["mean"].to_list() == pytest.approx(memory["mean"].to_list(), nan_ok=True)
    assert spilled["std"].to_list() == pytest.approx(memory["std"].to_list(), nan_ok=True)
