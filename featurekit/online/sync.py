"""Bring a view version's online snapshot up to its latest Delta commit.

Called after every materialization (also after a no-op run, so a failed or skipped online
write is repaired by simply materializing again). It runs under the view's registry lock,
so two processes materializing one view write their snapshots in commit order.

A table larger than the memory budget is read and encoded in batches of entity keys, as
materialization computes it (:mod:`featurekit.offline.batching`): each entity's snapshot depends
only on its own rows, so the batches' entries are exactly the one-batch entries. The
metadata comes from lazy aggregates, and every batch streams into the same atomic swap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import polars as pl

from featurekit.core.timeutil import utcnow
from featurekit.offline.batching import DEFAULT_BUDGET, batch_count, frame_bytes, key_partitions
from featurekit.online.aggregates import event_snapshot_entries, event_snapshot_meta
from featurekit.online.snapshot import SnapshotMeta, snapshot_entries, snapshot_meta
from featurekit.online.stores import OnlineStore
from featurekit.storage import delta
from featurekit.storage.registry import Registry, VersionRecord

__all__ = ["sync_view"]

_Entries = Callable[..., Iterator[tuple[bytes, bytes]]]


def sync_view(
    registry: Registry,
    online: OnlineStore,
    view: str,
    version: int,
    *,
    force: bool = False,
    memory_budget: int | None = None,
) -> SnapshotMeta | None:
    """Write the snapshot of ``view`` version ``version`` if the online store lags its table.

    Returns the current snapshot's metadata, or None when the table has no data yet.
    ``memory_budget`` (bytes; default :data:`~featurekit.offline.batching.DEFAULT_BUDGET`) bounds
    the rows held at once.
    """
    record = registry.version(view, version)
    uri = registry.layout.table_uri(view, version)
    with registry.lock(view):
        current = delta.current_version(uri, registry.storage_options)
        if current is None:
            return None
        raw = online.meta(view, version)
        if raw is not None and not force:
            existing = SnapshotMeta.from_bytes(raw)
            if existing.delta_version == current and existing.fingerprint == record.fingerprint:
                return existing
        rows = delta.scan_rows(uri, version=current, storage_options=registry.storage_options)
        taken = utcnow()
        meta_of, entries_of = (
            (event_snapshot_meta, event_snapshot_entries)
            if record.aggregations
            else (snapshot_meta, snapshot_entries)
        )
        meta = meta_of(record, rows, delta_version=current, taken=taken)
        batches = _batches(rows, record, memory_budget or DEFAULT_BUDGET)
        online.write_snapshot(
            view, version, meta.to_bytes(), _entries(record, batches, entries_of, taken)
        )
        return meta


def _batches(rows: pl.LazyFrame, record: VersionRecord, budget: int) -> list[pl.LazyFrame]:
    """The table as one lazy frame, or as disjoint key batches when it exceeds the budget."""
    n = batch_count(frame_bytes(rows), budget)
    if n == 1:
        return [rows]
    return [rows.filter(part) for part in key_partitions(rows, record.keys, n)]


def _entries(
    record: VersionRecord, batches: list[pl.LazyFrame], entries_of: _Entries, taken: datetime
) -> Iterator[tuple[bytes, bytes]]:
    """Each batch collected only when the store asks for its entries."""
    for batch in batches:
        yield from entries_of(record, batch.collect(), taken=taken)
