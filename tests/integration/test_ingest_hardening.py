"""Materialization loses no rows and never fails silently after it has committed.

Rows landing while a run is in progress, rows tied with the watermark, views that drop
their knowledge time, and features the online store cannot hold: each is checked on real
Delta tables and real source files, the concurrent case with a real writer process.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import warnings
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

import featurekit as fk
from featurekit.core.errors import FeatureKitWarning
from featurekit.online.errors import OnlineStoreError
from featurekit.storage.registry import Registry
from featurekit.storage.sources import scan_source, snapshot

ENTITY = fk.Entity("driver", keys=["driver_id"])
BASE = datetime(2026, 3, 1)


def rows(ids: range, *, event: datetime, created: datetime | date) -> pl.DataFrame:
    """Rows with unique ids; each row's event time is ``event`` plus its id in seconds."""
    return pl.DataFrame(
        {
            "driver_id": [i % 3 for i in ids],
            "event_ts": [event + timedelta(seconds=i) for i in ids],
            "ingested_at": [created] * len(ids),
            "row_id": list(ids),
        }
    )


def late_rows() -> pl.DataFrame:
    """Rows 20-24, created after every other row: four late ones (event times before the
    second run's window) and one on time (inside it)."""
    created = BASE + timedelta(hours=3)
    late = rows(range(20, 24), event=BASE, created=created)
    return pl.concat([late, rows(range(24, 25), event=BASE + timedelta(hours=2), created=created)])


def passthrough(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", "row_id")


def stored_ids(store: fk.Store, view: str) -> list[int]:
    return sorted(store.read(view)["row_id"].to_list())


# ---- rows that land while a run is in progress -----------------------------------------


def test_a_file_landing_mid_run_is_read_by_the_next_run(tmp_path: Path) -> None:
    """A late file (old event times) written after the run planned its window is not lost.

    The view function itself writes the file, at the moment a run builds its plan: after
    the run has found its new rows and before it records its watermark.
    """
    folder = tmp_path / "src"
    folder.mkdir()
    src = fk.Source(
        "trips", str(folder / "*.parquet"), timestamp="event_ts", created_timestamp="ingested_at"
    )
    armed = tmp_path / "armed"  # a file, not a variable: the view's fingerprint must not change

    def landing(trips: pl.LazyFrame) -> pl.LazyFrame:
        if armed.exists() and "SCAN" in trips.explain():  # once, when a run reads files
            armed.unlink()
            late_rows().write_parquet(folder / "c.parquet")
        return trips.select("driver_id", "event_ts", "ingested_at", "row_id")

    view = fk.feature_view(name="landing", entity=ENTITY, sources=[src])(landing)
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    rows(range(10), event=BASE, created=BASE + timedelta(hours=1)).write_parquet(
        folder / "a.parquet"
    )
    store.materialize(view)
    new = rows(range(10, 20), event=BASE + timedelta(hours=1), created=BASE + timedelta(hours=2))
    new.write_parquet(folder / "b.parquet")
    armed.touch()
    second = store.materialize(view)
    assert second.mode == "incremental"
    assert stored_ids(store, "landing") == list(range(20))  # c.parquet is not in its snapshot
    third = store.materialize(view)
    assert third.mode == "incremental"
    assert stored_ids(store, "landing") == list(range(25))
    assert store.materialize(view).mode == "noop"


WRITER = """
import os, random, sys, time
from datetime import UTC, datetime, timedelta
import polars as pl

folder, files, per_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
for f in range(files):
    now = datetime.now(UTC).replace(tzinfo=None)
    ids = range(f * per_file, (f + 1) * per_file)
    frame = pl.DataFrame({
        "driver_id": [i % 5 for i in ids],
        # late data: events up to ten minutes old, so a new file often holds events
        # older than the ones a run in progress planned its window from
        "event_ts": [now - timedelta(milliseconds=rng.randrange(600_000), microseconds=i % 997)
                     for i in ids],
        "ingested_at": [now] * per_file,
        "row_id": list(ids),
    })
    tmp = os.path.join(folder, f".part-{f}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, os.path.join(folder, f"part-{f:05d}.parquet"))  # visible whole, at once
    time.sleep(0.004)
print("DONE", flush=True)
"""


def test_incremental_runs_racing_a_writer_process_lose_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    files, per_file = 300, 4
    rows(range(1_000_000, 1_000_004), event=BASE, created=BASE).write_parquet(
        folder / "seed.parquet"
    )
    src = fk.Source(
        "trips", str(folder / "*.parquet"), timestamp="event_ts", created_timestamp="ingested_at"
    )
    view = fk.feature_view(name="raced", entity=ENTITY, sources=[src])(passthrough)
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    store.materialize(view)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen(
        [sys.executable, str(script), str(folder), str(files), str(per_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    runs = 0
    try:
        while writer.poll() is None:
            store.materialize(view)
            runs += 1
    finally:
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0 and "DONE" in out
    assert runs >= 5  # the runs really overlapped the writer
    store.materialize(view)
    expected = sorted([*range(files * per_file), *range(1_000_000, 1_000_004)])
    assert stored_ids(store, "raced") == expected  # every row, exactly once
    assert store.materialize(view).mode == "noop"


def test_a_snapshot_reads_the_same_files_and_delta_version(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    rows(range(3), event=BASE, created=BASE).write_parquet(folder / "a.parquet")
    files = fk.Source("f", str(folder / "*.parquet"), timestamp="event_ts")
    pinned = snapshot(files)
    rows(range(3, 5), event=BASE, created=BASE).write_parquet(folder / "b.parquet")
    assert scan_source(pinned).collect()["row_id"].to_list() == [0, 1, 2]
    assert scan_source(files).collect().height == 5
    assert scan_source(snapshot(files)).collect().height == 5

    table = str(tmp_path / "table")
    rows(range(3), event=BASE, created=BASE).write_delta(table)
    lake = fk.Source("d", table, timestamp="event_ts")
    pinned_lake = snapshot(lake)
    rows(range(3, 5), event=BASE, created=BASE).write_delta(table, mode="append")
    assert sorted(scan_source(pinned_lake).collect()["row_id"].to_list()) == [0, 1, 2]
    assert scan_source(snapshot(lake)).collect().height == 5


@pytest.mark.parametrize(
    "pattern", ["*.parquet", "", "/", "**/*.parquet", "[ab].parquet", "day=*/*"]
)
def test_a_snapshot_lists_the_files_a_scan_reads(
    tmp_path: Path, pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the file list comes from polars' glob expansion without opening a file; it must be
    # what listing each row's file through a scan gives (the way it is taken otherwise)
    from featurekit.storage import sources

    folder = tmp_path / "src"
    (folder / "day=1").mkdir(parents=True)
    for i, name in enumerate(["a.parquet", "b.parquet", "day=1/c.parquet", ".hidden.parquet"]):
        rows(range(i, i + 1), event=BASE, created=BASE).write_parquet(folder / name)
    location = str(folder) + (f"/{pattern}" if pattern.strip("/") else pattern)
    source = fk.Source("s", location, timestamp="event_ts", kind="parquet")
    # the oracle: the files a plain polars scan of the location takes its rows from
    read = pl.scan_parquet(location, include_file_paths="f").select(pl.col("f").unique())
    expected = tuple(sorted(read.collect()["f"].to_list()))
    assert sources._local_files(location)  # the quick listing answered
    assert snapshot(source).files == expected
    monkeypatch.setattr(sources, "_local_files", lambda location: [])  # the scan's listing
    assert snapshot(source).files == expected


def test_a_delta_source_appended_mid_run_is_read_by_the_next_run(tmp_path: Path) -> None:
    table = str(tmp_path / "table")
    src = fk.Source("trips", table, timestamp="event_ts", created_timestamp="ingested_at")
    armed = tmp_path / "armed"

    def landing(trips: pl.LazyFrame) -> pl.LazyFrame:
        if armed.exists() and "SCAN" in trips.explain():  # a run reading the table
            armed.unlink()
            late_rows().write_delta(table, mode="append")
        return trips.select("driver_id", "event_ts", "ingested_at", "row_id")

    view = fk.feature_view(name="lake", entity=ENTITY, sources=[src])(landing)
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    rows(range(10), event=BASE, created=BASE + timedelta(hours=1)).write_delta(table)
    store.materialize(view)
    new = rows(range(10, 20), event=BASE + timedelta(hours=1), created=BASE + timedelta(hours=2))
    new.write_delta(table, mode="append")
    armed.touch()
    store.materialize(view)
    store.materialize(view)
    assert stored_ids(store, "lake") == list(range(25))
    read = [r.watermarks["trips"]["delta_version"] for r in store.runs("lake")]
    assert read == [0, 1, 2]  # each run read the version it pinned, not the appended one


# ---- rows tied with the watermark ------------------------------------------------------


@pytest.mark.parametrize(
    "created",
    [date(2026, 3, 2), datetime(2026, 3, 2, 9, 30, 15)],
    ids=["date", "whole-second"],
)
def test_rows_created_at_the_watermark_are_not_skipped(
    tmp_path: Path, created: date | datetime
) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    src = fk.Source(
        "trips", str(folder / "*.parquet"), timestamp="event_ts", created_timestamp="ingested_at"
    )
    view = fk.feature_view(name="ties", entity=ENTITY, sources=[src])(passthrough)
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    rows(range(5), event=BASE, created=created).write_parquet(folder / "a.parquet")
    store.materialize(view)
    # same created value as the watermark (same day, same second), later in the day's batch
    rows(range(5, 8), event=BASE - timedelta(days=1), created=created).write_parquet(
        folder / "b.parquet"
    )
    second = store.materialize(view)
    assert second.mode == "incremental"
    assert stored_ids(store, "ties") == list(range(8))
    assert store.materialize(view).mode == "noop"  # the ties are counted, not re-read forever
    rows(range(8, 9), event=BASE, created=created).write_parquet(folder / "c.parquet")
    assert store.materialize(view).mode == "incremental"
    assert stored_ids(store, "ties") == list(range(9))


def test_event_time_ties_are_not_skipped_without_a_created_column(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    src = fk.Source("trips", str(folder / "*.parquet"), timestamp="event_ts")
    view = fk.feature_view(name="evties", entity=ENTITY, sources=[src])(
        lambda trips: trips.select("driver_id", "event_ts", "row_id")
    )
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    day = pl.col("event_ts").dt.truncate("1d")
    rows(range(3), event=BASE, created=BASE).with_columns(day).write_parquet(folder / "a.parquet")
    store.materialize(view)
    # another driver's row on the watermark day: same event time as the newest rows read
    extra = rows(range(3, 4), event=BASE, created=BASE).with_columns(
        day, driver_id=pl.lit(9, pl.Int64)
    )
    extra.write_parquet(folder / "b.parquet")
    assert store.materialize(view).mode == "incremental"
    assert stored_ids(store, "evties") == [0, 1, 2, 3]
    assert store.materialize(view).mode == "noop"


def test_a_watermark_without_tie_counts_rereads_its_ties(tmp_path: Path) -> None:
    """Stores written before ties were counted: the rows at the mark are read once more."""
    folder = tmp_path / "src"
    folder.mkdir()
    src = fk.Source(
        "trips", str(folder / "*.parquet"), timestamp="event_ts", created_timestamp="ingested_at"
    )
    view = fk.feature_view(name="old", entity=ENTITY, sources=[src])(passthrough)
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    rows(range(3), event=BASE, created=BASE).write_parquet(folder / "a.parquet")
    mark = BASE.replace(tzinfo=UTC).isoformat()
    store.materialize(view, start=BASE - timedelta(days=1), end=BASE + timedelta(days=1))
    from featurekit.offline.materialize import table_uri
    from featurekit.storage import delta

    uri = table_uri(store.root, "old", 1)
    delta.write_rows(
        uri,
        store.read("old"),
        metadata={"watermarks": {"trips": {"max_event": mark, "max_created": mark}}},
    )
    rows(range(3, 5), event=BASE, created=BASE).write_parquet(folder / "b.parquet")
    assert store.materialize(view).mode == "incremental"
    assert stored_ids(store, "old") == list(range(5))
    assert store.materialize(view).mode == "noop"


# ---- nothing fails silently after the commit -------------------------------------------


def frame_source(column: pl.Series) -> fk.Source:
    frame = pl.DataFrame(
        {"driver_id": [1, 2], "event_ts": [datetime.now(UTC) - timedelta(hours=1)] * 2}
    )
    return fk.Source("trips", frame.with_columns(column), timestamp="event_ts")


@pytest.mark.parametrize(
    ("column", "aggregate", "why"),
    [
        (pl.Series("fare", [Decimal("1.50"), Decimal("2.25")]), None, "decimals"),
        (pl.Series("fare", [b"a", b"b"]), None, "bytes"),
        (pl.Series("fare", [[date(2026, 1, 1)], []]), None, "dates and times inside lists"),
        (pl.Series("fare", [Decimal("1.50"), Decimal("2.25")]), "max", "decimals"),
        (pl.Series("fare", [b"a", b"b"]), "count", "bytes"),
    ],
    ids=["decimal", "binary", "list-of-dates", "decimal-events", "binary-events"],
)
def test_a_feature_the_online_store_cannot_hold_is_refused_before_the_commit(
    tmp_path: Path, column: pl.Series, aggregate: str | None, why: str
) -> None:
    aggregations = [fk.Aggregation("fare", aggregate, window="7d")] if aggregate else []
    view = fk.feature_view(
        name="odd", entity=ENTITY, sources=[frame_source(column)], aggregations=aggregations
    )(lambda trips: trips)
    store = fk.Store(tmp_path / "store", progress=False)
    with pytest.raises(fk.SchemaError) as caught:
        store.materialize(view)
    assert store.views() == []
    assert not (store.root / "features" / "odd").exists()  # no offline commit either
    assert str(caught.value).startswith(
        f"view 'odd' version 1: column 'fare' has dtype {column.dtype}, which the online "
        f"store cannot hold exactly ({why}"
    )
    assert "Nothing was written. Cast it in the view" in str(caught.value)
    assert "fk.Store(..., online=False)" in str(caught.value)
    offline = fk.Store(tmp_path / "offline", progress=False, online=False)
    assert offline.materialize(view).rows_written == 2  # an offline-only store takes it


def test_an_online_failure_after_the_commit_says_what_was_committed_and_how_to_resume(
    tmp_path: Path,
) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    view = fk.feature_view(
        name="fares", entity=ENTITY, sources=[frame_source(pl.Series("fare", [1.5, 2.5]))]
    )(lambda trips: trips)
    store = fk.Store(tmp_path / "store", progress=False, online=f"redis://127.0.0.1:{port}/0")
    with pytest.raises(OnlineStoreError) as caught:  # nothing listens on the port yet
        store.materialize(view)
    run = store.runs("fares")[-1]
    assert str(caught.value).startswith(
        f"view 'fares' version 1 is committed offline (Delta version 0, run "
        f"{run.run_id}, mode 'full', 2 row(s) written), but the online "
        "store was not updated: "
    )
    assert str(caught.value).endswith(
        "The offline data is safe and training sets already see it. Once the cause is fixed, "
        "run store.materialize(fares) again: it finds nothing new offline and retries the "
        "online write."
    )
    assert store.read("fares")["fare"].to_list() == [1.5, 2.5]
    graph = store.lineage("view:fares")
    assert [n.kind for n in graph.nodes.values()].count("source") == 1  # the run is recorded
    proc = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline and proc.poll() is None, "redis did not start"
            time.sleep(0.05)
        assert store.materialize(view).mode == "noop"  # the resume the message describes
        online = store.get_online_features(["fares:fare"], {"driver_id": [1, 2]})
        assert online["fare"].to_list() == [1.5, 2.5]
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_registry_failure_after_the_commit_says_what_was_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = fk.feature_view(
        name="fares", entity=ENTITY, sources=[frame_source(pl.Series("fare", [1.5, 2.5]))]
    )(lambda trips: trips)
    store = fk.Store(tmp_path / "store", progress=False, online=False)

    def full_disk(self: Registry, kind: str, name: str, build: object, **_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Registry, "append_version", full_disk)
    with pytest.raises(fk.StorageError) as caught:
        store.materialize(view)
    uri = store.root / "features" / "fares" / "v1"
    assert str(caught.value) == (
        f"view 'fares' version 1: its rows are committed (Delta version 0 of {uri}), but "
        "recording the version in the registry failed: OSError: [Errno 28] No space left on "
        "device Until it is recorded, training sets and store.versions() do not see it. Fix "
        "the cause, then run store.materialize(fares) again: it finds the committed rows and "
        "records them."
    )
    monkeypatch.undo()
    # the table's first commit carries this definition's fingerprint: adopted, not rewritten
    again = store.materialize(view)
    assert (again.version, again.mode, again.delta_version) == (1, "noop", 0)
    assert [r.version for r in store.versions("fares")] == [1]
    assert store.read("fares").height == 2


# ---- the knowledge-time guard never switches off silently ------------------------------


def knowledge_sources() -> tuple[fk.Source, fk.Source]:
    """Trips (one value known only 10 hours after its event) and ratings, each with a
    created-time column."""
    trips = pl.DataFrame(
        {
            "driver_id": [1, 1],
            "event_ts": [BASE, BASE + timedelta(hours=1)],
            "ingested_at": [BASE, BASE + timedelta(hours=11)],  # the second row arrived late
            "fare": [10.0, 99.0],
        }
    )
    ratings = pl.DataFrame(
        {
            "driver_id": [1],
            "event_ts": [BASE],
            "rated_at": [BASE + timedelta(hours=20)],
            "rating": [4.5],
        }
    )
    return (
        fk.Source("trips", trips, timestamp="event_ts", created_timestamp="ingested_at"),
        fk.Source("ratings", ratings, timestamp="event_ts", created_timestamp="rated_at"),
    )


def label_at(hours: float) -> pl.DataFrame:
    return pl.DataFrame({"driver_id": [1], "label_ts": [BASE + timedelta(hours=hours)]})


def test_a_view_without_knowledge_time_says_so_at_register_and_materialize(
    tmp_path: Path,
) -> None:
    trips, _ = knowledge_sources()
    view = fk.feature_view(name="fares", entity=ENTITY, sources=[trips])(
        lambda trips: trips.select("driver_id", "event_ts", "fare")
    )
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    expected = (
        "view 'fares' version 1 has no knowledge time: its output drops the created-time "
        "column(s) 'ingested_at' of its inputs. Training sets cannot tell when its values "
        "became known, so a value that arrived after a label's time can leak into that label, "
        "even with point_in_time='knowledge'. Keep 'ingested_at' in the output (in a "
        "group_by, aggregate it as pl.col('ingested_at').max()) to have the guard."
    )
    with pytest.warns(FeatureKitWarning) as registered:
        store.register(view)
    assert [str(w.message) for w in registered] == [expected]
    with pytest.warns(FeatureKitWarning) as materialized:
        store.materialize(view)
    assert [str(w.message) for w in materialized] == [expected]
    record = store.versions("fares")[0]
    assert (record.created_timestamp, record.knowledge_time_dropped) == (None, ["ingested_at"])
    # what the warning says is true: the late value leaks into a label before it was known
    ts = store.training_set(label_at(2), features=["fares:fare"], timestamp="label_ts")
    assert ts.to_polars()["fare"].to_list() == [99.0]


def test_a_view_keeping_its_knowledge_time_is_guarded_and_quiet(tmp_path: Path) -> None:
    trips, _ = knowledge_sources()
    view = fk.feature_view(name="fares", entity=ENTITY, sources=[trips])(
        lambda trips: trips.group_by("driver_id", "event_ts").agg(
            pl.col("fare").sum(), pl.col("ingested_at").max()
        )
    )
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureKitWarning)
        store.materialize(view)
    assert store.versions("fares")[0].knowledge_time_dropped == []
    ts = store.training_set(label_at(2), features=["fares:fare"], timestamp="label_ts")
    assert ts.to_polars()["fare"].to_list() == [10.0]  # the late 99.0 was not known at 2h


def test_a_view_keeping_one_of_two_knowledge_times_says_which_is_lost(tmp_path: Path) -> None:
    trips, ratings = knowledge_sources()

    def joined(trips: pl.LazyFrame, ratings: pl.LazyFrame) -> pl.LazyFrame:
        rated = ratings.select("driver_id", "event_ts", "rating")
        return trips.join(rated, on=["driver_id", "event_ts"], how="left").select(
            "driver_id", "event_ts", "ingested_at", "fare", "rating"
        )

    view = fk.feature_view(name="joined", entity=ENTITY, sources=[trips, ratings])(joined)
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    with pytest.warns(FeatureKitWarning) as caught:
        store.materialize(view)
    assert [str(w.message) for w in caught] == [
        "view 'joined' version 1 uses only 'ingested_at' as its knowledge time, not the "
        "created-time column(s) 'rated_at' of its other inputs, so late values from those "
        "inputs are not guarded against in training sets. Output one created-time column "
        "that is the latest of them, e.g. pl.max_horizontal('ingested_at', "
        "'rated_at').alias('ingested_at')."
    ]
    record = store.versions("joined")[0]
    assert (record.created_timestamp, record.knowledge_time_dropped) == (
        "ingested_at",
        ["rated_at"],
    )
