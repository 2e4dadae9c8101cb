"""Online syncs over the memory budget run in key batches and write exactly the same snapshot.

A snapshot entry depends only on its entity's rows, so a sync that reads and encodes the
table a key range (or hash bucket) at a time must store the same entries and metadata as
one that holds the whole table: checked on a one-key view, a two-key view with a string
key (hash buckets), and an aggregation view (retained events).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from test_online_support import now_floor, views, write_data

import featurekit as fk
from featurekit.online import sync
from featurekit.online.snapshot import SnapshotMeta, encode_key
from featurekit.online.stores import MemoryOnlineStore
from featurekit.storage import delta

RIDER = fk.Entity("rider", keys=["rider_id"])
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ride_stats(rides: pl.LazyFrame) -> pl.LazyFrame:
    """The ride events as they are."""
    return rides


def ride_view(folder: Path) -> fk.FeatureView:
    now = now_floor()
    n = 600
    pl.DataFrame(
        {
            "rider_id": [i % 40 for i in range(n)],
            "event_ts": [now - timedelta(hours=(i * 7) % 300) for i in range(n)],
            "fare": [float(i % 17) for i in range(n)],
        }
    ).write_parquet(folder / "rides.parquet")
    source = fk.Source("rides", folder / "rides.parquet", timestamp="event_ts")
    return fk.feature_view(
        entity=RIDER,
        sources=[source],
        aggregations=[
            fk.Aggregation("fare", "sum", window="2d"),
            fk.Aggregation("fare", "max", window="7d"),
        ],
    )(ride_stats)


def snapshot(
    store: fk.Store, name: str, budget: int | None
) -> tuple[dict[str, object], list[bytes | None]]:
    """Metadata (without the instant) and every entity's entry, synced with ``budget``."""
    online = MemoryOnlineStore()
    meta = sync.sync_view(store.registry, online, name, 1, memory_budget=budget)
    assert meta is not None
    record = store.registry.version(name, 1)
    keys = store.read(name).select(record.keys).unique().sort(record.keys).rows()
    ((_, raw_meta, entries),) = online.read([(name, 1, [encode_key(k) for k in keys])])
    assert raw_meta is not None
    stored = SnapshotMeta.from_bytes(raw_meta).__dict__ | {"taken_us": None}
    return stored, entries


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> fk.Store:
    folder = tmp_path_factory.mktemp("batched_sync")
    write_data(folder, now_floor())
    store = fk.Store(folder / "store", progress=False, online=False)
    for view in (*views(folder), ride_view(folder)):
        store.materialize(view)
    return store


@pytest.mark.parametrize("name", ["driver_stats", "zone_stats", "ride_stats"])
def test_batched_sync_writes_the_one_batch_snapshot(store: fk.Store, name: str) -> None:
    record = store.registry.version(name, 1)
    uri = str(store.root / "features" / name / "v1")
    rows = delta.scan_rows(uri, version=0)
    budget = 600  # bytes: a handful of rows per batch
    assert len(sync._batches(rows, record, budget)) > 3
    assert len(sync._batches(rows, record, 8 * 1024**3)) == 1
    one_meta, one = snapshot(store, name, None)
    many_meta, many = snapshot(store, name, budget)
    assert all(entry is not None for entry in one)
    assert many == one
    assert many_meta == one_meta


def test_store_passes_its_budget_to_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_data(tmp_path, now_floor())
    seen: list[int | None] = []
    real = sync._batches

    def spy(rows: pl.LazyFrame, record: object, budget: int) -> list[pl.LazyFrame]:
        seen.append(budget)
        return real(rows, record, budget)  # type: ignore[arg-type]

    monkeypatch.setattr(sync, "_batches", spy)
    store = fk.Store(tmp_path / "store", progress=False, online="memory", memory_budget="1MiB")
    store.materialize(views(tmp_path)[0])
    store.materialize(views(tmp_path)[1], memory_budget=4096)
    assert seen == [1024**2, 4096]


@pytest.mark.parametrize("name", ["driver_stats", "zone_stats", "ride_stats"])
def test_snapshot_metadata_counts_the_table(store: fk.Store, name: str) -> None:
    """Entity count and latest event, against the stored rows read back independently."""
    record = store.registry.version(name, 1)
    meta = sync.sync_view(store.registry, MemoryOnlineStore(), name, 1, memory_budget=600)
    assert meta is not None
    rows = store.read(name).with_columns(pl.col(record.timestamp).dt.replace_time_zone("UTC"))
    if record.aggregations:  # only the events a later lookup can still count are kept
        oldest = meta.taken - timedelta(days=7)
        rows = rows.filter(pl.col(record.timestamp) > oldest)
    keys = {tuple(r) for r in rows.select(record.keys).rows() if None not in r}
    assert meta.entities == len(keys) > 0
    latest = rows[record.timestamp].max()
    assert isinstance(latest, datetime)
    assert meta.max_event_us == (latest - EPOCH) // timedelta(microseconds=1)
