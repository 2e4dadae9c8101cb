"""Bucketed view tables: the same training sets (ids, rows, hashes) for any bucket count."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import polars as pl
import pytest

import featurekit as fk
from featurekit.core.hashing import frame_hash
from featurekit.kernels.bucketing import BUCKET, bucket_ids
from featurekit.offline import engine, training
from featurekit.storage import delta
from featurekit.storage.records import VersionRecord

BASE = datetime(2026, 1, 1)
DRIVER = fk.Entity("driver", keys=["driver_id"])
RNG = np.random.default_rng(7)
N = 3000


def _minutes(values: np.ndarray) -> list[datetime]:
    return [BASE + timedelta(minutes=int(m)) for m in values]


SOURCE = pl.DataFrame(
    {
        "driver_id": RNG.integers(0, 200, N),
        "event_ts": _minutes(RNG.integers(0, 10_000, N)),
        "ingested_at": _minutes(RNG.integers(10_000, 20_000, N)),
        "value": RNG.random(N),
    }
)
LABELS = pl.DataFrame(
    {
        "driver_id": pl.Series(RNG.integers(0, 220, 1500), dtype=pl.Int32),  # aligned by the join
        "ts": _minutes(RNG.integers(0, 25_000, 1500)),
    }
)


def stats(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", "value")


def counts(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", "value")


@contextmanager
def buckets(n: int) -> Iterator[None]:
    """Full runs choose ``n`` buckets, whatever the view's size."""
    with mock.patch("featurekit.offline.buckets.choose_buckets", lambda size, dtypes: n):
        yield


def _views(path: Path) -> tuple[fk.FeatureView, fk.FeatureView]:
    src = fk.Source("trips", path, timestamp="event_ts", created_timestamp="ingested_at")
    plain = fk.feature_view(entity=DRIVER, sources=[src], ttl=timedelta(days=3))(stats)
    agg = fk.feature_view(
        entity=DRIVER,
        sources=[src],
        aggregations=[fk.Aggregation("value", "sum", "2d"), fk.Aggregation("value", "last")],
    )(counts)
    return plain, agg


def _build(root: Path, source: Path, n: int) -> fk.Store:
    plain, agg = _views(source)
    store = fk.Store(root, progress=False)
    with buckets(n), warnings.catch_warnings():
        warnings.simplefilter("ignore", fk.FeatureKitWarning)
        store.materialize(plain)
        store.materialize(agg)
    return store


FEATURES = ["stats:value", "counts:value_sum_2d", "counts:value_last_lifetime"]


def test_any_bucket_count_gives_the_same_training_set(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    results = {}
    for n in (1, 4, 16):
        store = _build(tmp_path / f"store{n}", source, n)
        assert [store.versions(v)[-1].buckets for v in ("stats", "counts")] == [n, n]
        uri = store.registry.layout.table_uri("stats", 1)
        assert delta.bucket_count(uri, 0) == n
        folders = {p.name for p in Path(uri).glob("__fk_buckets=*/__fk_bucket=*")}
        assert len(folders) == (0 if n == 1 else n)
        # the partition columns are storage, not rows
        assert store.read("stats").columns == ["driver_id", "event_ts", "ingested_at", "value"]
        for mode in ("knowledge", "event"):
            ts = store.training_set(LABELS, FEATURES, "ts", point_in_time=mode)
            again = store.training_set_by_id(ts.id)  # rebuilt bucket by bucket, hash checked
            assert again.to_polars().equals(ts.to_polars())
            results[(n, mode)] = (ts.id, ts.manifest.result_hash, ts.to_polars())
    for mode in ("knowledge", "event"):
        one = results[(1, mode)]
        assert one[2]["value"].null_count() < LABELS.height  # the join found values
        for n in (4, 16):
            got = results[(n, mode)]
            assert got[0] == one[0]  # the id does not depend on B
            assert got[1] == one[1]
            assert got[2].equals(one[2])


def _table_reads(store: fk.Store, labels: pl.DataFrame) -> tuple[fk.TrainingSet, int]:
    """A training set of ``stats:value``, and how many reads of its table it took (a
    scan of all its buckets, given bucket by bucket, is one)."""
    uri = store.registry.layout.table_uri("stats", 1)
    scans = []
    scan = delta.read_buckets

    def counted(*args: Any, **options: Any) -> Any:
        parts = scan(*args, **options)
        if parts is not None and args[0] == uri:  # None: too large, nothing read
            scans.append(args[0])
        return parts

    with (
        mock.patch.object(delta, "read_rows", wraps=delta.read_rows) as read,
        mock.patch.object(delta, "read_buckets", counted),
    ):
        ts = store.training_set(labels, ["stats:value"], "ts")
    return ts, len(scans) + sum(1 for call in read.call_args_list if call.args[0] == uri)


def test_a_table_that_fits_memory_is_read_once_and_split_by_bucket(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    pushed = pl.DataFrame(  # another file in the buckets of 3 and 150: their rows lie apart
        {
            "driver_id": [3, 150, 3],
            "event_ts": [now - timedelta(minutes=m) for m in (3, 2, 1)],
            "value": [7.0, 8.0, 9.0],
        }
    )
    later = {"driver_id": pl.Series([3, 150], dtype=pl.Int32), "ts": [now + timedelta(hours=1)] * 2}
    labels = LABELS.head(200).vstack(pl.DataFrame(later))
    # late labels: rows older than their TTL reaches are dropped after the one scan
    late = LABELS.filter(pl.col("ts") > BASE + timedelta(minutes=9_000)).head(200)
    results = {}
    for n in (1, 4):
        store = _build(tmp_path / f"store{n}", source, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fk.FeatureKitWarning)
            store.push("stats", pushed)
        # a budget the result fits but the table does not: each bucket is read on its own
        tight = fk.Store(tmp_path / f"store{n}", progress=False, memory_budget=40_000)
        for which, frame in (("all", labels), ("late", late)):
            one_scan, reads = _table_reads(store, frame)
            assert reads == 1  # the whole table: for B = 4, one scan split by bucket in memory
            per_bucket, reads = _table_reads(tight, frame)
            assert not list((tmp_path / f"store{n}").rglob("result/part-*.parquet"))  # in memory
            assert reads == n
            assert per_bucket.id == one_scan.id
            assert per_bucket.manifest.result_hash == one_scan.manifest.result_hash
            assert per_bucket.to_polars().equals(one_scan.to_polars())
            results[(n, which)] = one_scan
        assert results[(n, "all")].to_polars()["value"].to_list()[-2:] == [9.0, 8.0]  # pushed
    for which in ("all", "late"):
        assert results[(4, which)].manifest.result_hash == results[(1, which)].manifest.result_hash
        assert results[(4, which)].to_polars().equals(results[(1, which)].to_polars())
    assert results[(4, "late")].to_polars()["value"].null_count() < late.height


def test_hashes_made_while_the_join_runs_are_the_frames_hashes(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    store = _build(tmp_path / "store", source, 4)
    weights = pl.Series("weight", RNG.random(LABELS.height)).to_frame()
    plain = LABELS.hstack(weights)
    odd = plain.with_columns(  # nulls and a NaN among the label columns
        pl.when(pl.col("weight") < 0.1).then(None).otherwise(pl.col("weight")).alias("weight"),
        pl.Series("note", [float("nan")] + [1.0] * (LABELS.height - 1)),
    )
    for labels in (plain, odd):
        ts = store.training_set(labels, FEATURES, "ts")
        assert ts.manifest.labels.hash == frame_hash(labels)
        assert ts.manifest.result_hash == frame_hash(ts.to_polars(), "xxh3-128")
        assert store.training_set_by_id(ts.id).manifest.result_hash == ts.manifest.result_hash


def whole(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", "value")


def test_feature_columns_are_hashed_as_they_are_put_in_label_order(tmp_path: Path) -> None:
    """The result hash digests each bucketed view's columns while the next are ordered:
    up to the first view joined whole (B = 1), then the rest at the end; always the
    frame's own hash."""
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    store = _build(tmp_path / "store", source, 4)
    src = fk.Source("trips", source, timestamp="event_ts", created_timestamp="ingested_at")
    with buckets(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", fk.FeatureKitWarning)
        store.materialize(fk.feature_view(entity=DRIVER, sources=[src])(whole))
    orders = {
        ("stats:value", "counts:value_sum_2d"): ["value", "value_sum_2d"],
        ("stats:value", "whole:value", "counts:value_sum_2d"): ["stats__value"],
        ("whole:value", "stats:value"): [],
    }
    for features, hashed_early in orders.items():
        with mock.patch.object(training, "_feed_later", wraps=training._feed_later) as fed:
            ts = store.training_set(LABELS, list(features), "ts")
        assert [call.args[-1].name for call in fed.call_args_list] == hashed_early
        frame = ts.to_polars()
        assert frame.columns[LABELS.width :][: len(hashed_early)] == hashed_early
        assert ts.manifest.result_hash == frame_hash(frame, "xxh3-128")
        assert store.training_set_by_id(ts.id).manifest.result_hash == ts.manifest.result_hash


def _four_buckets_and_a_file_of_one(tmp_path: Path) -> tuple[fk.Store, Path, Path]:
    """A store whose view is in 4 buckets: the store, the table's folder, and a data file
    of bucket 2 (for the damage tests)."""
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    store = _build(tmp_path / "store", source, 4)
    folder = store.root / "features" / "stats" / "v1"
    return store, folder, sorted(folder.glob("__fk_buckets=4/__fk_bucket=2/*.parquet"))[0]


def test_a_damaged_file_read_beside_the_label_grouping_is_a_storage_error(
    tmp_path: Path,
) -> None:
    """The one scan of a bucketed table runs on its own thread while the labels are
    grouped by bucket; a damaged file still fails the training set with the table's and
    the file's names, as a read on the calling thread would."""
    store, folder, path = _four_buckets_and_a_file_of_one(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(fk.StorageError) as info:
        store.training_set(LABELS, ["stats:value"], "ts")
    assert str(info.value).startswith(
        f"reading Delta table {str(folder)!r} at version 0 failed: data file "
        f"{path.relative_to(folder).as_posix()!r} is {len(data) // 2} bytes, but the log "
        f"recorded {len(data)}."
    )


def test_a_bucket_given_by_the_one_scan_is_the_bucket_read_on_its_own(tmp_path: Path) -> None:
    """The one scan of a bucketed table gives each bucket as soon as all its rows are
    read: the rows (and their order) a read of that bucket alone gives, each bucket once;
    a bucket with rows in a later file comes only once that file is read."""
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    store = _build(tmp_path / "store", source, 4)
    pushed = pl.DataFrame(  # a later file with rows of driver 3's bucket only
        {"driver_id": [3, 3], "event_ts": [BASE, BASE], "value": [7.0, 8.0]}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fk.FeatureKitWarning)
        store.push("stats", pushed)
    uri = store.registry.layout.table_uri("stats", 1)
    version = delta.current_version(uri)
    assert version is not None
    columns = ["driver_id", "event_ts", "ingested_at", "value"]
    pulled: list[pl.DataFrame] = []  # the scan's batches read so far
    scan = pl.LazyFrame.collect_batches

    def counted(self: pl.LazyFrame, **options: Any) -> Iterator[pl.DataFrame]:
        for batch in scan(self, **options):
            pulled.append(batch)
            yield batch

    given = []
    with mock.patch.object(pl.LazyFrame, "collect_batches", counted):
        for bucket, rows in delta.read_buckets(uri, version=version, columns=columns):
            given.append((bucket, rows, len(pulled)))
    assert sorted(b for b, _, _ in given) == [0, 1, 2, 3]
    total = sum(batch.height for batch in pulled)
    assert sum(rows.height for _, rows, _ in given) == total
    for bucket, rows, read in given:
        alone = delta.read_rows(
            uri,
            version=version,
            columns=[*columns, BUCKET],
            where=pl.col(BUCKET) == bucket,
        ).drop(BUCKET)
        assert rows.height > 0
        assert rows.equals(alone)
        # given with the batch that completed it: not before, not after
        assert pl.concat(pulled[:read]).filter(pl.col(BUCKET) == bucket).height == rows.height
        assert bucket in pulled[read - 1].get_column(BUCKET).to_list()
    late = bucket_ids(pushed, ["driver_id"], 4)[0]
    pushed_rows = next(rows for b, rows, _ in given if b == late).filter(
        pl.col("value") >= 7.0  # the source's values are in [0, 1)
    )
    assert pushed_rows["value"].to_list() == [7.0, 8.0]


def test_a_bucket_with_more_rows_than_the_log_counts_is_a_storage_error() -> None:
    """A bucket is given once the log's count of its rows has come: rows of it coming
    after that (a log that undercounts) fail the read instead of being left out."""
    batches = [
        pl.DataFrame({"v": [1.0, 2.0], BUCKET: [3, 3]}),
        pl.DataFrame({"v": [3.0], BUCKET: [3]}),
    ]
    given = delta._bucket_batches(iter(batches), ["v"], {3: 2})
    assert next(given)[1]["v"].to_list() == [1.0, 2.0]
    with pytest.raises(fk.StorageError, match="^bucket 3 has more rows than the log counts"):
        next(given)
    whole = delta._bucket_batches(iter(batches), ["v"], {3: 3})
    assert [(b, rows["v"].to_list()) for b, rows in whole] == [(3, [1.0, 2.0, 3.0])]


def test_a_damaged_file_found_while_the_buckets_are_joined_is_a_storage_error(
    tmp_path: Path,
) -> None:
    """A bucket file of the logged size that is not parquet fails the scan while other
    buckets are being joined: the training set fails with the table's and the file's
    names, as a read on the calling thread would."""
    store, folder, path = _four_buckets_and_a_file_of_one(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-8] + b"\0" * 8)  # same size, no footer
    with pytest.raises(fk.StorageError) as info:
        store.training_set(LABELS, ["stats:value"], "ts")
    assert str(info.value).startswith(
        f"reading Delta table {str(folder)!r} at version 0 failed: data file "
        f"{path.relative_to(folder).as_posix()!r} is not valid parquet ("
    )


def test_large_buckets_are_joined_in_pieces_of_whole_entities(tmp_path: Path) -> None:
    """A bucket with many rows is cut at key values into pieces joined as tasks of their
    own; the training set is the one B = 1 gives, also where pushed rows leave a bucket
    out of key order (that bucket is then one task)."""
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    labels = LABELS.with_columns(pl.col("driver_id").cast(pl.Int64))  # the stored dtype
    pushed = pl.DataFrame(
        {
            "driver_id": [150, 3, 77],
            "event_ts": [BASE + timedelta(minutes=m) for m in (9_000, 9_001, 9_002)],
            "value": [7.0, 8.0, 9.0],
        }
    )
    stores = {n: _build(tmp_path / f"store{n}", source, n) for n in (1, 4)}
    for push in (False, True):
        if push:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", fk.FeatureKitWarning)
                for store in stores.values():
                    store.push("stats", pushed)
        for mode in ("knowledge", "event"):
            one = stores[1].training_set(labels, FEATURES, "ts", point_in_time=mode)
            tasks: list[int] = []

            def counted(*args: Any, real: Any = engine._pieces, tasks: list[int] = tasks) -> Any:
                made = list(real(*args))
                tasks.append(len(made))
                return iter(made)

            with (
                mock.patch.object(engine, "PIECE_ROWS", 40),
                mock.patch.object(engine, "_pieces", counted),
            ):
                four = stores[4].training_set(labels, FEATURES, "ts", point_in_time=mode)
            assert len(tasks) == 8  # two views of four buckets
            # the plain view's buckets come in pieces; a bucket with pushed rows in one
            assert sum(tasks) >= 8 + 4 * (3 if not push else 2)
            assert four.id == one.id
            assert four.manifest.result_hash == one.manifest.result_hash
            assert four.to_polars().equals(one.to_polars())


def test_reads_filter_on_the_label_keys_up_to_the_limit_of_distinct_keys(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    store = _build(tmp_path / "store", source, 1)
    uri = store.registry.layout.table_uri("stats", 1)
    for drivers, filtered in ((40, True), (41, False), (44, False), (70, False), (200, False)):
        labels = pl.DataFrame(
            {
                "driver_id": pl.Series(np.arange(drivers).repeat(3), dtype=pl.Int64),
                "ts": [BASE + timedelta(days=5)] * (3 * drivers),
            }
        )
        with (
            mock.patch("featurekit.offline.training.KEY_PRUNE_LIMIT", 40),
            mock.patch.object(delta, "read_rows", wraps=delta.read_rows) as read,
        ):
            store.training_set(labels, ["stats:value"], "ts")
        (where,) = [c.kwargs["where"] for c in read.call_args_list if c.args[0] == uri]
        assert ("is_in" in str(where)) is filtered, drivers


def test_incremental_runs_keep_the_buckets(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    first, late = SOURCE.head(2000), SOURCE.tail(1000)
    first.write_parquet(source)
    stores = [_build(tmp_path / "one", source, 1), _build(tmp_path / "four", source, 4)]
    SOURCE.with_columns(
        pl.when(pl.int_range(pl.len()) >= 2000)
        .then(pl.col("ingested_at") + timedelta(days=30))
        .otherwise(pl.col("ingested_at"))
    ).write_parquet(source)
    assert late.height == 1000
    plain, _ = _views(source)
    outs = []
    for store in stores:
        run = store.materialize(plain)
        assert run.mode == "incremental"
        uri = store.registry.layout.table_uri("stats", 1)
        assert run.delta_version is not None
        outs.append(
            (
                delta.bucket_count(uri, run.delta_version),
                store.training_set(LABELS, ["stats:value"], "ts"),
            )
        )
    assert [b for b, _ in outs] == [1, 4]
    assert outs[0][1].id == outs[1][1].id
    assert outs[0][1].to_polars().equals(outs[1][1].to_polars())
    assert outs[1][1].manifest.result_hash == outs[0][1].manifest.result_hash


def test_records_written_before_buckets_read_as_one_bucket(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    record = _build(tmp_path / "store", source, 1).versions("stats")[-1]
    data = record.model_dump(mode="json")
    del data["buckets"]
    assert VersionRecord.model_validate(data).buckets == 1


def test_a_bucketed_table_without_rows_takes_later_rows(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.head(5).with_columns(driver_id=pl.lit(None, dtype=pl.Int64)).write_parquet(source)
    store = _build(tmp_path / "store", source, 4)  # null keys only: no rows, no files
    SOURCE.write_parquet(source)
    plain, _ = _views(source)
    run = store.materialize(plain)
    assert run.rows_written > 0
    uri = store.registry.layout.table_uri("stats", 1)
    assert run.delta_version is not None
    assert delta.bucket_count(uri, run.delta_version) == 4
    reference = _build(tmp_path / "reference", source, 1)
    got = store.training_set(LABELS, ["stats:value"], "ts").to_polars()
    assert got.equals(reference.training_set(LABELS, ["stats:value"], "ts").to_polars())


def test_optimize_moves_a_view_to_more_buckets(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from featurekit.cli import app

    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    store = _build(tmp_path / "store", source, 1)
    before = store.training_set(LABELS, FEATURES, "ts")
    uri = store.registry.layout.table_uri("stats", 1)
    out = CliRunner().invoke(
        app, ["optimize", "--store", str(store.root), "stats", "--buckets", "8"]
    )
    assert out.exit_code == 0, out.output
    assert "1 -> 8 buckets" in out.output
    latest = delta.current_version(uri)
    assert latest == 1
    assert delta.bucket_count(uri, 0) == 1  # the pinned version keeps its layout
    assert delta.bucket_count(uri, latest) == 8
    assert (
        store.read("stats")
        .sort("driver_id", "event_ts", "ingested_at")
        .equals(delta.read_rows(uri, version=0).sort("driver_id", "event_ts", "ingested_at"))
    )
    # the set built before still rebuilds from version 0; a new one reads 8 buckets
    assert store.training_set_by_id(before.id).to_polars().equals(before.to_polars())
    after = store.training_set(LABELS, FEATURES, "ts")
    assert after.id != before.id  # it pins the new Delta version
    assert after.manifest.result_hash == before.manifest.result_hash
    assert store.optimize("stats").changed is False  # one file per bucket: compact
    bad = CliRunner().invoke(app, ["optimize", "--store", str(store.root), "--buckets", "6"])
    assert bad.exit_code != 0
    assert "buckets=6 is not a power of two between 1 and 1024" in bad.output


@fk.on_demand(inputs=["stats:value"], request={"weight": pl.Float64})
def weighted(df: pl.DataFrame) -> pl.DataFrame:
    return df.select((pl.col("value") * pl.col("weight")).alias("weighted"))


def test_a_training_set_larger_than_the_budget_is_written_as_it_is_produced(
    tmp_path: Path,
) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    labels = LABELS.with_columns(weight=pl.int_range(pl.len()).cast(pl.Float64))
    features = [*FEATURES, weighted]
    reference = _build(tmp_path / "memory", source, 1).training_set(labels, features, "ts")
    for n in (1, 4):
        root = tmp_path / f"tiny{n}"
        _build(root, source, n)
        store = fk.Store(root, progress=False, memory_budget="20KiB")
        ts = store.training_set(labels, features, "ts")
        assert (ts.id, ts.manifest.result_hash) == (reference.id, reference.manifest.result_hash)
        assert len(ts) == labels.height
        files = sorted((root / "training_sets" / ts.id / "result").glob("part-*.parquet"))
        assert len(files) > 5  # written range by range, in label order
        assert not (root / "training_sets" / "_building").exists()
        lazy = ts.scan()
        assert isinstance(lazy, pl.LazyFrame)
        assert lazy.collect().equals(reference.to_polars())
        assert ts.to_polars().equals(reference.to_polars())
        ts.write_parquet(tmp_path / f"out{n}.parquet")
        assert pl.read_parquet(tmp_path / f"out{n}.parquet").equals(reference.to_polars())
        # rebuilt under the same budget, its hash checked against the recorded one
        again = store.training_set_by_id(ts.id, on_demand=[weighted])
        assert again.to_polars().equals(reference.to_polars())
        ts.save("big")
        assert store.registry.training_set_names()["big"] == ts.id


def test_unknown_engines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(fk.DefinitionError, match=r"engine='spark' is not an engine; use 'local'"):
        fk.Store(tmp_path / "store", engine="spark")


def test_labels_without_a_bucketed_views_key_are_refused_as_before(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    store = _build(tmp_path / "store", source, 4)
    rider = fk.Entity("rider", keys=["rider_id"])
    src = fk.Source("trips2", source, timestamp="event_ts", created_timestamp="ingested_at")

    def riders(trips2: pl.LazyFrame) -> pl.LazyFrame:
        return trips2.select(
            pl.col("driver_id").alias("rider_id"), "event_ts", "ingested_at", "value"
        )

    with buckets(1):
        store.materialize(fk.feature_view(entity=rider, sources=[src])(riders))
    # stats splits into buckets; riders cannot be joined: the kernel's own message
    with pytest.raises(fk.SchemaError) as err:
        store.training_set(LABELS, ["stats:value", "riders:value"], "ts")
    assert str(err.value) == (
        "labels have no key column 'rider_id' needed by view 'riders'; "
        "label columns are ['driver_id', 'ts']."
    )


def test_explain_and_display_of_a_set_larger_than_memory_match_the_in_memory_set(
    tmp_path: Path,
) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    root = tmp_path / "store"
    memory = _build(root, source, 4).training_set(LABELS, FEATURES, "ts")
    spilled = fk.Store(root, progress=False, memory_budget=1).training_set(LABELS, FEATURES, "ts")
    assert memory.id == spilled.id
    for row in (0, 777, -1):
        assert spilled.explain(row).to_polars().equals(memory.explain(row).to_polars())
    html = spilled._repr_html_()
    assert html is not None
    created = re.compile(r"created [0-9T:-]+")  # each build has its own creation time
    assert created.sub("", html) == created.sub("", memory._repr_html_() or "")
    assert f"{LABELS.height:,} rows × 5 columns" in html
    with pytest.raises(fk.DefinitionError, match=r"row 1500 is out of range: .* has 1500 rows"):
        spilled.explain(LABELS.height)


def test_pushed_rows_land_in_their_bucket(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    pushed = pl.DataFrame(
        {
            "driver_id": [3, 150, 3],
            "event_ts": [now - timedelta(minutes=m) for m in (3, 2, 1)],
            "value": [7.0, 8.0, 9.0],
        }
    )
    results = []
    for n in (1, 4):
        store = _build(tmp_path / f"store{n}", source, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fk.FeatureKitWarning)
            store.push("stats", pushed)
        uri = store.registry.layout.table_uri("stats", 1)
        latest = delta.current_version(uri)
        assert latest is not None
        assert delta.bucket_count(uri, latest) == n
        later = pl.DataFrame({"driver_id": [3, 150], "ts": [now + timedelta(hours=1)] * 2})
        got = store.training_set(later, ["stats:value"], "ts").to_polars()
        assert got["value"].to_list() == [9.0, 8.0]  # the pushed values, found in their bucket
        rows = store.read("stats").drop("ingested_at", "__fk_pushed")  # push ids differ
        results.append(rows.sort("driver_id", "event_ts", "value"))
    assert results[0].equals(results[1])


def test_optimize_under_a_tiny_budget_rewrites_in_parts_to_the_same_table(
    tmp_path: Path,
) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    whole = _build(tmp_path / "whole", source, 1)
    parted = _build(tmp_path / "parted", source, 1)
    parted.memory_budget = 20_000  # bytes: far below the table's ~100 kB in memory
    one = whole.optimize("stats", buckets=8)
    many = parted.optimize("stats", buckets=8)
    assert one.parts == 1
    assert many.parts > 10  # one part of driver ids at a time, into one commit
    assert many.delta_version_after == one.delta_version_after == 1
    assert (many.rows, many.buckets_after) == (one.rows, one.buckets_after) == (N, 8)
    assert many.files_after == one.files_after == 8  # one sorted file per bucket
    uris = [s.registry.layout.table_uri("stats", 1) for s in (whole, parted)]
    for bucket in range(8):  # each bucket holds the same rows in the same (sorted) order
        columns = [*SOURCE.columns, "__fk_bucket"]
        where = pl.col("__fk_bucket") == bucket
        got = [delta.read_rows(u, version=1, columns=columns, where=where) for u in uris]
        assert got[0].height > 0
        assert got[1].equals(got[0])
    ts = [s.training_set(LABELS, FEATURES, "ts") for s in (whole, parted)]
    assert ts[1].manifest.result_hash == ts[0].manifest.result_hash
    assert ts[1].to_polars().equals(ts[0].to_polars())


def test_a_set_larger_than_memory_on_an_s3_root_is_written_to_the_bucket(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import StoreRoot
    from s3_emulator import storage_options

    # too small for the result (so it is written out of core), yet a few parts, not one
    # per row: each part is a request to the emulated bucket
    TIGHT = 100_000
    monkeypatch.chdir(tmp_path)  # a relative path written by mistake would land here
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    place = StoreRoot("s3", tmp_path / "tmp", storage_options(s3_endpoint), s3_endpoint)
    (tmp_path / "tmp").mkdir()
    uri = place.uri()
    plain, agg = _views(source)
    store = place.open(uri)
    with buckets(4), warnings.catch_warnings():
        warnings.simplefilter("ignore", fk.FeatureKitWarning)
        store.materialize(plain)
        store.materialize(agg)
    expected = store.training_set(LABELS, FEATURES, "ts").to_polars()
    spilled = place.open(uri, memory_budget=TIGHT).training_set(LABELS, FEATURES, "ts")
    assert spilled.scan().collect().equals(expected)
    assert not (tmp_path / "s3:").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp", "trips.parquet"]
    assert len(spilled) == LABELS.height
    keys = store.registry.objects.list(f"training_sets/{spilled.id}/result/")
    assert keys and all(k.endswith(".parquet") for k in keys)
    assert not store.registry.objects.list("training_sets/_building/")  # nothing left behind
    # another process: a fresh store on the same root rebuilds the set from the bucket
    again = place.open(uri, memory_budget=TIGHT).training_set_by_id(spilled.id)
    assert again.scan().collect().equals(expected)
    assert again.manifest.result_hash == spilled.manifest.result_hash
    spilled.write_parquet(tmp_path / "out.parquet")
    assert pl.read_parquet(tmp_path / "out.parquet").equals(expected)
