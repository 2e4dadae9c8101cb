"""Materialization bucket by bucket (map stage, per-bucket stage, one commit), and which
views may run so: the same Delta rows, checks, statistics and training sets as one run.

The stages run here on an in-process runner (the Ray engine runs the same tasks on a
cluster: tests/integration/test_ray_engine.py); the split logic is what is tested.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from unittest import mock

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from test_buckets import DRIVER, LABELS, SOURCE, buckets

import featurekit as fk
from featurekit.core.sqlview import sql_entity_local
from featurekit.offline import distribute
from featurekit.offline.engine import LocalRunner
from featurekit.storage import delta

KEYS = ("driver_id",)


def write_source(folder: Path, parts: int = 5) -> Path:
    """SOURCE split over several parquet files (the map stage reads a few per task)."""
    folder.mkdir(parents=True)
    size = -(-SOURCE.height // parts)
    for i in range(parts):
        SOURCE.slice(i * size, size).write_parquet(folder / f"part-{i}.parquet")
    return folder


def trips(folder: Path) -> fk.Source:
    return fk.Source(
        "trips", f"{folder}/*.parquet", timestamp="event_ts", created_timestamp="ingested_at"
    )


def centred(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Per entity: each value against its driver's best, and the driver's trip count
    (entity-local; exact values, where a float sum's last bits would depend on how the
    engine chunks the rows, bucket by bucket or not)."""
    return trips.select(
        "driver_id",
        "event_ts",
        "ingested_at",
        (pl.col("value").max().over("driver_id") - pl.col("value")).alias("centred"),
        pl.len().over("driver_id").alias("trips"),
    )


def ranked(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Across entities: a rank among all drivers' values (not entity-local)."""
    return trips.select(
        "driver_id", "event_ts", "ingested_at", pl.col("value").rank().alias("rank")
    )


def against_all(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Across entities: each value against the mean of every driver (not entity-local)."""
    return trips.select(
        "driver_id",
        "event_ts",
        "ingested_at",
        (pl.col("value") - pl.col("value").mean()).alias("centred"),
    )


def events(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", "value")


SQL = (
    "SELECT driver_id, date_trunc('day', event_ts) AS event_ts, max(value) AS total, "
    "count(*) AS n FROM trips GROUP BY driver_id, date_trunc('day', event_ts)"
)


def views(source: fk.Source) -> list[fk.FeatureView]:
    return [
        fk.feature_view(entity=DRIVER, sources=[source], entity_local=True)(centred),
        fk.feature_view(
            entity=DRIVER,
            sources=[source],
            aggregations=[fk.Aggregation("value", "sum", "2d"), fk.Aggregation("value", "last")],
            checks=[fk.Check.not_null("value")],
        )(events),
        fk.feature_view(
            name="daily", entity=DRIVER, sources=[source], sql=SQL, ttl=timedelta(days=2)
        ),
    ]


FEATURES = ["centred:centred", "centred:trips", "events:value_sum_2d", "daily:total"]


@pytest.fixture
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fk.FeatureKitWarning)
        yield


def split_store(root: Path, monkeypatch: pytest.MonkeyPatch) -> fk.Store:
    """A store whose engine runs tasks in process, through the distributed stages."""
    store = fk.Store(root, progress=False)
    monkeypatch.setattr(store, "_runner", LocalRunner())  # not the local engine's runner
    return store


def table(store: fk.Store, view: str) -> pl.DataFrame:
    rows = store.read(view)
    return rows.sort(rows.columns)


@pytest.mark.usefixtures("quiet")
def test_bucket_by_bucket_writes_the_rows_one_run_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = trips(write_source(tmp_path / "trips"))
    local = fk.Store(tmp_path / "local", progress=False)
    split = split_store(tmp_path / "split", monkeypatch)
    calls: list[int] = []
    real = distribute.bucket_parts

    def counted(*args: object, **kwargs: object) -> list[str]:
        parts = real(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(len(parts))
        return parts

    monkeypatch.setattr(distribute, "bucket_parts", counted)
    with buckets(4):
        for i, view in enumerate(views(source)):
            a = local.materialize(view)
            assert len(calls) == i  # the local engine never splits a run
            b = split.materialize(view)
            assert (b.rows_written, b.mode, b.checks) == (a.rows_written, a.mode, a.checks)
            assert table(split, view.name).equals(table(local, view.name))
            uri = split.registry.layout.table_uri(view.name, b.version)
            assert delta.current_version(uri) == 0  # one commit
            ran, was = split.runs(view.name)[-1], local.runs(view.name)[-1]
            assert (ran.rows_written, ran.checks) == (was.rows_written, was.checks)
    assert calls == [4, 4, 4]  # every view ran bucket by bucket
    assert not (tmp_path / "split" / "staging").exists() or not any(
        (tmp_path / "split" / "staging").rglob("*.parquet")
    )
    expected = local.training_set(LABELS, FEATURES, "ts")
    got = split.training_set(LABELS, FEATURES, "ts")
    assert (got.id, got.manifest.result_hash) == (expected.id, expected.manifest.result_hash)
    # statistics merged bucket by bucket: the same, up to a float mean's last bit
    moment = ["run_id", "computed_at"]
    assert_frame_equal(split.stats("events").drop(moment), local.stats("events").drop(moment))


@pytest.mark.usefixtures("quiet")
def test_an_incremental_run_bucket_by_bucket_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_source(tmp_path / "trips")
    source = trips(folder)
    view = views(source)[0]
    local = fk.Store(tmp_path / "local", progress=False)
    split = split_store(tmp_path / "split", monkeypatch)
    with buckets(4):
        local.materialize(view)
        split.materialize(view)
        late = SOURCE.head(300).with_columns(
            pl.col("ingested_at") + timedelta(days=30), pl.col("value") * 3
        )
        late.write_parquet(folder / "part-late.parquet")
        a, b = local.materialize(view), split.materialize(view)
    assert (b.mode, b.rows_written) == (a.mode, a.rows_written) == ("incremental", a.rows_written)
    assert table(split, view.name).equals(table(local, view.name))


def test_a_false_entity_local_declaration_is_refused(tmp_path: Path) -> None:
    source = trips(write_source(tmp_path / "trips"))
    store = fk.Store(tmp_path / "store", progress=False)
    for fn, column in ((ranked, "rank"), (against_all, "centred")):
        view = fk.feature_view(entity=DRIVER, sources=[source], entity_local=True)(fn)
        with pytest.raises(fk.DefinitionError) as err, warnings.catch_warnings():
            warnings.simplefilter("ignore", fk.FeatureKitWarning)
            store.materialize(view)
        assert str(err.value) == (
            f"view {fn.__name__!r} is declared entity_local=True, but on a sample of 64 "
            "entities, run bucket by bucket (split by a hash of ['driver_id']) it gives other "
            f"values of {column!r} than run on the whole sample: its rows depend on other "
            "entities' rows (a rank, a mean or a filter across entities). Remove "
            "entity_local=True (the view then runs as one task), or compute per entity "
            "(group_by or .over(['driver_id']))."
        )
        assert store.views() == []  # nothing was written or recorded


def test_a_true_declaration_passes_and_is_not_in_the_version(tmp_path: Path) -> None:
    source = trips(write_source(tmp_path / "trips"))
    declared = fk.feature_view(entity=DRIVER, sources=[source], entity_local=True)(centred)
    plain = fk.feature_view(entity=DRIVER, sources=[source])(centred)
    store = fk.Store(tmp_path / "store", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fk.FeatureKitWarning)
        first = store.materialize(declared)
        again = store.materialize(plain)
    assert first.rows_written == SOURCE.height
    assert (again.version, again.mode) == (first.version, "noop")  # the same version


def test_an_aggregation_view_looking_across_entities_runs_as_one_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = trips(write_source(tmp_path / "trips"))
    agg = [fk.Aggregation("centred", "sum", "2d")]
    view = fk.feature_view(entity=DRIVER, sources=[source], aggregations=agg)(against_all)
    local = fk.Store(tmp_path / "local", progress=False)
    split = split_store(tmp_path / "split", monkeypatch)
    spy = mock.Mock(wraps=distribute.bucket_parts)
    monkeypatch.setattr(distribute, "bucket_parts", spy)
    with buckets(4), warnings.catch_warnings():
        warnings.simplefilter("ignore", fk.FeatureKitWarning)
        local.materialize(view)
        split.materialize(view)
    assert spy.call_count == 0
    assert table(split, view.name).equals(table(local, view.name))


@pytest.mark.parametrize(
    ("sql", "local"),
    [
        ("SELECT driver_id, ts, sum(fare) AS s FROM trips GROUP BY driver_id, ts", True),
        ("SELECT city AS driver_id, max(ts) AS ts, sum(fare) AS s FROM trips GROUP BY city", False),
        ("SELECT driver_id, ts, avg(fare) OVER (PARTITION BY driver_id) AS s FROM trips", True),
        ("SELECT driver_id, ts, rank() OVER (ORDER BY fare) AS r FROM trips", False),
        ("SELECT driver_id, ts, avg(fare) OVER (PARTITION BY city) AS s FROM trips", False),
        ("SELECT driver_id, ts, fare * 2 AS f FROM trips WHERE fare > 0", True),
        ("SELECT max(driver_id) AS driver_id, max(ts) AS ts, count(*) AS n FROM trips", False),
        ("SELECT driver_id, ts, fare - (SELECT avg(fare) FROM trips) AS f FROM trips", False),
        ("SELECT driver_id, ts, fare FROM trips ORDER BY fare LIMIT 10", False),
        ("SELECT t.driver_id, t.ts, c.x FROM trips t JOIN cities c ON t.city = c.city", False),
    ],
)
def test_sql_entity_local_detection(sql: str, local: bool) -> None:
    assert sql_entity_local(sql, KEYS) is local


#: a driver outside the sample the declaration is checked on (the first 64 drivers seen)
UNSAMPLED = SOURCE["driver_id"].unique(maintain_order=True)[100]


def fails_on_one_driver(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Entity-local, but raises on one driver's rows (seen only bucket by bucket)."""
    if trips.filter(pl.col("driver_id") == UNSAMPLED).select(pl.len()).collect().item():
        raise ValueError(f"driver {UNSAMPLED} is bad")
    return events(trips)


@pytest.mark.usefixtures("quiet")
def test_a_failing_bucket_commits_nothing_and_leaves_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = trips(write_source(tmp_path / "trips"))
    view = fk.feature_view(entity=DRIVER, sources=[source], entity_local=True)(fails_on_one_driver)
    split = split_store(tmp_path / "split", monkeypatch)
    with buckets(4), pytest.raises(fk.UserCodeError) as err:
        split.materialize(view)
    assert str(err.value) == (
        f"view 'fails_on_one_driver' (version 1) raised ValueError: driver {UNSAMPLED} is bad"
    )
    assert split.views() == []  # nothing committed, nothing recorded
    assert [
        p for p in (tmp_path / "split").rglob("*") if "staging" in p.parts and p.is_file()
    ] == []


def test_entity_local_must_be_true_or_false(tmp_path: Path) -> None:
    with pytest.raises(fk.DefinitionError) as err:
        fk.feature_view(entity=DRIVER, sources=[trips(tmp_path)], entity_local="yes")(centred)  # type: ignore[call-overload]
    assert str(err.value) == "view 'centred': entity_local must be True or False, got 'yes'."
