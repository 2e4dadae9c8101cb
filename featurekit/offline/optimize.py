"""Compaction: rewrite a view version's table as few files, globally sorted by (keys, time).

Incremental runs and backfills each add their own sorted files, so after many of them a
table is a patchwork that training sets must re-sort when they read it. ``optimize``
rewrites the latest version's rows, stably sorted by (keys, event time, created time), in
one Delta commit. The rows and their tie order are exactly those a training set reads
(the point-in-time kernel sorts the same way), so no training set result changes; older
table versions stay readable (nothing is vacuumed), so training sets pinned to them still
rebuild bit for bit. The commit carries no watermarks: incremental runs keep planning
from the last materialization's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from featurekit.kernels.frames import in_order, sort_rows
from featurekit.storage import delta
from featurekit.storage.registry import Registry


@dataclass(frozen=True)
class OptimizeResult:
    """What one ``optimize`` did: the Delta versions and file counts before and after."""

    view: str
    version: int
    rows: int
    files_before: int
    files_after: int
    delta_version_before: int
    delta_version_after: int

    @property
    def changed(self) -> bool:
        """Whether a new Delta version was written (False: the table was already compact)."""
        return self.delta_version_after != self.delta_version_before


def optimize(registry: Registry, view: str, version: int | None = None) -> OptimizeResult:
    """Compact and globally sort the latest Delta version of one view version's table."""
    from featurekit.core.errors import NotFoundError

    record = registry.version(view, version)
    uri = registry.layout.table_uri(view, record.version)
    options = registry.storage_options
    with registry.lock(view):
        current = delta.current_version(uri, options)
        if current is None:
            raise NotFoundError(
                f"view {view!r} version {record.version} has no data yet; run "
                f"store.materialize({view}) first."
            )
        files = delta.file_count(uri, current, options)
        rows = delta.read_rows(uri, version=current, storage_options=options)
        keys, created = list(record.keys), record.created_timestamp
        identity = [*keys, record.timestamp, *([created] if created else [])]
        if files <= 1 and in_order(rows, identity, strict=False):
            return OptimizeResult(view, record.version, rows.height, files, files, current, current)
        ordered = sort_rows(rows, keys, record.timestamp, created)
        written = delta.write_rows(
            uri,
            ordered,
            metadata={
                "view": view,
                "version": str(record.version),
                "fingerprint": record.fingerprint,
                "run_id": uuid.uuid4().hex[:16],
                "mode": "optimize",
            },
            storage_options=options,
            # no lock on object storage: notice a materialization committing meanwhile
            predicate=None if registry.layout.is_local else delta.REPLACE_ALL,
        )
        return OptimizeResult(
            view,
            record.version,
            ordered.height,
            files,
            delta.file_count(uri, written, options),
            current,
            written,
        )
