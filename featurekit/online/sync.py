"""Bring a view version's online snapshot up to its latest Delta commit.

Called after every materialization (also after a no-op run, so a failed or skipped online
write is repaired by simply materializing again). It runs under the view's registry lock,
so two processes materializing one view write their snapshots in commit order.
"""

from __future__ import annotations

from featurekit.materialize import table_uri
from featurekit.online.aggregates import build_event_snapshot
from featurekit.online.snapshot import SnapshotMeta, build_snapshot
from featurekit.online.stores import OnlineStore
from featurekit.storage import delta
from featurekit.storage.registry import Registry
from featurekit.timeutil import utcnow

__all__ = ["sync_view"]


def sync_view(
    registry: Registry, online: OnlineStore, view: str, version: int, *, force: bool = False
) -> SnapshotMeta | None:
    """Write the snapshot of ``view`` version ``version`` if the online store lags its table.

    Returns the current snapshot's metadata, or None when the table has no data yet.
    """
    record = registry.version(view, version)
    uri = table_uri(registry.root, view, version)
    with registry.lock(view):
        current = delta.current_version(uri)
        if current is None:
            return None
        raw = online.meta(view, version)
        if raw is not None and not force:
            existing = SnapshotMeta.from_bytes(raw)
            if existing.delta_version == current and existing.fingerprint == record.fingerprint:
                return existing
        rows = delta.read_rows(uri, version=current)
        build = build_event_snapshot if record.aggregations else build_snapshot
        meta, entries = build(record, rows, delta_version=current, taken=utcnow())
        online.write_snapshot(view, version, meta.to_bytes(), entries)
        return meta
