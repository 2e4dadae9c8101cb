"""Bring a view version's online snapshot up to its latest Delta commit.

Called after every materialization (also after a no-op run, so a failed or skipped online
write is repaired by simply materializing again). It runs under the view's registry lock,
so two processes materializing one view write their snapshots in commit order.

A table larger than the memory budget is read and encoded in batches of entity keys, as
materialization computes it (:mod:`featurekit.offline.batching`): each entity's snapshot depends
only on its own rows, so the batches' entries are exactly the one-batch entries. The
metadata comes from lazy aggregates, and every batch streams into the same atomic swap.

The sync runs after the offline commit, so whatever can be known to fail is checked
before it: :func:`check_syncable` runs before a materialization computes anything, and
:func:`sync_materialized` turns any later failure into an error that says what was
committed and how to resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import polars as pl

from featurekit.core.errors import FeatureKitError, SchemaError
from featurekit.core.timeutil import utcnow
from featurekit.offline.batching import DEFAULT_BUDGET, batch_count, frame_bytes, key_partitions
from featurekit.offline.materialize import MaterializeResult
from featurekit.online.aggregates import event_snapshot_entries, event_snapshot_meta
from featurekit.online.errors import OnlineStoreError
from featurekit.online.snapshot import SnapshotMeta, snapshot_entries, snapshot_meta
from featurekit.online.stores import OnlineStore
from featurekit.storage import delta
from featurekit.storage.registry import Registry, VersionRecord

__all__ = ["check_syncable", "sync_materialized", "sync_view"]

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
        meta_of, entries_of = _encoders(record)
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


def check_syncable(record: VersionRecord, schema: pl.Schema) -> None:
    """Raise :class:`SchemaError` if rows of this schema could not be written online.

    Called before a materialization computes or commits anything, so a view the online
    store cannot hold is refused while nothing has been written. ``schema`` is the view
    version's stored schema. Checks every column the snapshot encodes (keys, and features
    or, for aggregation views, their event columns), then runs the snapshot code itself on
    zero rows of that schema.
    """
    encoded = [*record.keys, *(record.event_columns if record.aggregations else record.features)]
    for column in encoded:
        why = _unencodable(schema[column])
        if why is not None:
            raise SchemaError(
                f"view {record.view!r} version {record.version}: column {column!r} has dtype "
                f"{schema[column]}, which the online store cannot hold exactly ({why}). Nothing "
                f"was written. Cast it in the view (e.g. to Float64 or String), or open the "
                "store with fk.Store(..., online=False) if this view is not served online."
            )
    rows = pl.DataFrame(schema=schema)
    meta_of, entries_of = _encoders(record)
    taken = utcnow()
    try:
        meta_of(record, rows.lazy(), delta_version=0, taken=taken)
        for _ in entries_of(record, rows, taken=taken):
            pass
    except SchemaError as err:
        raise SchemaError(
            f"{err} Nothing was written; or open the store with fk.Store(..., online=False) "
            "if this view is not served online."
        ) from err


def sync_materialized(
    registry: Registry,
    online: OnlineStore,
    result: MaterializeResult,
    *,
    memory_budget: int | None = None,
) -> SnapshotMeta | None:
    """:func:`sync_view` after the run ``result`` committed offline.

    The offline commit cannot be taken back, so a failure here raises
    :class:`~featurekit.online.errors.OnlineStoreError` saying exactly what was committed
    (view, version, Delta version, run) and how to resume; the original is ``__cause__``.
    """
    try:
        return sync_view(registry, online, result.view, result.version, memory_budget=memory_budget)
    except Exception as err:
        cause = f"{type(err).__name__}: {err}" if not isinstance(err, FeatureKitError) else err
        raise OnlineStoreError(
            f"view {result.view!r} version {result.version} is committed offline (Delta "
            f"version {result.delta_version}, run {result.run_id}, mode {result.mode!r}, "
            f"{result.rows_written} row(s) written), but the online store was not updated: "
            f"{cause} The offline data is safe and training sets already see it. Once the "
            f"cause is fixed, run store.materialize({result.view}) again: it finds nothing "
            "new offline and retries the online write."
        ) from err


def _encoders(record: VersionRecord) -> tuple[Callable[..., SnapshotMeta], _Entries]:
    if record.aggregations:
        return event_snapshot_meta, event_snapshot_entries
    return snapshot_meta, snapshot_entries


def _unencodable(dtype: pl.DataType) -> str | None:
    """Why the snapshot's JSON encoding cannot hold values of ``dtype`` exactly, or None."""
    if isinstance(dtype, pl.Decimal):
        return "decimals"
    if dtype in (pl.Binary, pl.Object):
        return "bytes" if dtype == pl.Binary else "Python objects"
    if dtype in (pl.Int128, pl.UInt128):
        return "integers wider than 64 bits"
    inner = getattr(dtype, "inner", None)
    fields = [f.dtype for f in getattr(dtype, "fields", None) or []]
    for nested in [inner, *fields] if dtype.is_nested() else []:
        if nested is None:
            continue
        if nested.is_temporal():
            return "dates and times inside lists or structs"
        why = _unencodable(nested)
        if why is not None:
            return why
    return None
