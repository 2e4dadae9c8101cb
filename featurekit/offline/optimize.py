"""Compaction: rewrite a view version's table as few files, globally sorted by (keys, time).

Incremental runs and backfills each add their own sorted files, so after many of them a
table is a patchwork that training sets must re-sort when they read it. ``optimize``
rewrites the latest version's rows, stably sorted by (keys, event time, created time), in
one Delta commit. The rows and their tie order are exactly those a training set reads
(the point-in-time kernel sorts the same way), so no training set result changes; older
table versions stay readable (nothing is vacuumed), so training sets pinned to them still
rebuild bit for bit. The commit carries no watermarks: incremental runs keep planning
from the last materialization's.

``buckets=N`` also re-buckets the table (docs/scale.md): the same rows, split into ``N``
buckets of entity keys, each sorted; later incremental runs keep ``N``. A bucketed table
is compact when it has at most one file per bucket.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from featurekit.kernels.frames import in_order, sort_rows
from featurekit.offline.buckets import Bucketing, check_bucket_count
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
    buckets_before: int = 1
    buckets_after: int = 1

    @property
    def changed(self) -> bool:
        """Whether a new Delta version was written (False: the table was already compact)."""
        return self.delta_version_after != self.delta_version_before


def optimize(
    registry: Registry, view: str, version: int | None = None, *, buckets: int | None = None
) -> OptimizeResult:
    """Compact and sort the latest Delta version of one view version's table; with
    ``buckets``, also split it into that many buckets (a power of two)."""
    from featurekit.core.errors import NotFoundError

    record = registry.version(view, version)
    if buckets is not None:
        check_bucket_count(buckets, f"optimize view {view!r}")
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
        before = delta.bucket_count(uri, current, options)
        split = Bucketing(tuple(record.keys), before if buckets is None else buckets)
        rows = delta.read_rows(uri, version=current, storage_options=options)
        keys, created = list(record.keys), record.created_timestamp
        identity = [*keys, record.timestamp, *([created] if created else [])]
        unchanged = OptimizeResult(
            view, record.version, rows.height, files, files, current, current, before, before
        )
        if split.buckets == before and before > 1 and files <= before:
            return unchanged
        if split.buckets == before == 1 and files <= 1 and in_order(rows, identity, strict=False):
            return unchanged
        ordered = sort_rows(rows, keys, record.timestamp, created)
        written = delta.write_rows(
            uri,
            split.frame(ordered),
            partition_by=split.partition_by,
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
            before,
            split.buckets,
        )
