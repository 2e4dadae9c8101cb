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

Memory: a table estimated larger than the memory budget allows (the materialization
rule, :func:`~featurekit.offline.batching.batch_count`) is rewritten in parts of entity
keys (:func:`~featurekit.offline.batching.key_partitions`), read one at a time with a
filter. Into buckets, each part is first spilled to local temporary files by group of
target buckets; then each group is read back, sorted, split into its buckets and streamed
into the same single commit. Every key's rows are in one part, in their stored order, so
each bucket gets exactly the rows, in the order and the one file, that a one-part rewrite
gives it. Memory holds one part, then one group (with more parts than buckets, a group is
one bucket). A ``B = 1`` table is rewritten part by part, a sorted file each; one integer
key is cut into ascending ranges, other keys by hash.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from featurekit.kernels.bucketing import bucket_ids
from featurekit.kernels.frames import in_order, sort_rows
from featurekit.offline.batching import DEFAULT_BUDGET, batch_count, frame_bytes, key_partitions
from featurekit.offline.buckets import Bucketing, check_bucket_count
from featurekit.storage import delta
from featurekit.storage.records import VersionRecord
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
    parts: int = 1

    @property
    def changed(self) -> bool:
        """Whether a new Delta version was written (False: the table was already compact)."""
        return self.delta_version_after != self.delta_version_before


def optimize(
    registry: Registry,
    view: str,
    version: int | None = None,
    *,
    buckets: int | None = None,
    memory_budget: int | None = None,
) -> OptimizeResult:
    """Compact and sort the latest Delta version of one view version's table; with
    ``buckets``, also split it into that many buckets (a power of two).

    ``memory_budget`` (bytes; default :data:`~featurekit.offline.batching.DEFAULT_BUDGET`)
    bounds memory: a bigger table is rewritten in parts (see the module docstring).
    """
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
        keys, created = list(record.keys), record.created_timestamp
        identity = [*keys, record.timestamp, *([created] if created else [])]
        scan = delta.scan_rows(uri, version=current, storage_options=options)
        parts = batch_count(frame_bytes(scan), memory_budget or DEFAULT_BUDGET)
        if parts > 1:
            where = _Table(registry, record, uri, current, files, before)
            return _in_parts(where, scan, split, parts, identity)
        rows = delta.read_rows(uri, version=current, storage_options=options)
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
            split.frames(ordered),
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


_GROUP = "__fk_group"


@dataclass(frozen=True)
class _Table:
    """The table being optimized, as the caller found it under the view's lock."""

    registry: Registry
    record: VersionRecord
    uri: str
    current: int
    files: int
    before: int


def _in_parts(
    table: _Table, scan: pl.LazyFrame, split: Bucketing, parts: int, identity: list[str]
) -> OptimizeResult:
    """:func:`optimize` of a table too big for memory: ``parts`` parts of entity keys,
    each read, sorted and bucketed on its own, streamed into one commit."""
    record, uri, current, files, before = (
        table.record,
        table.uri,
        table.current,
        table.files,
        table.before,
    )
    view, version = record.view, record.version
    options = table.registry.storage_options
    if split.buckets == before and before > 1 and files <= before:
        rows = int(scan.select(pl.len()).collect().item())
        return OptimizeResult(view, version, rows, files, files, current, current, before, before)
    # the identity columns alone are a fraction of the rows: enough to see the order
    if (
        split.buckets == before == 1
        and files <= 1
        and in_order(scan.select(identity).collect(), identity, strict=False)
    ):
        rows = int(scan.select(pl.len()).collect().item())
        return OptimizeResult(view, version, rows, files, files, current, current, before, before)
    keys, created = list(record.keys), record.created_timestamp
    filters = key_partitions(scan, keys, parts)
    counted = [0]

    def ordered(rows: pl.DataFrame) -> pl.DataFrame:
        rows = sort_rows(rows, keys, record.timestamp, created)
        counted[0] += rows.height
        return rows

    def batches() -> Iterator[pl.DataFrame]:
        if split.buckets == 1:  # one part of keys in memory at a time
            for where in filters:
                yield ordered(scan.filter(where).collect())
            return
        # each bucket must come from one batch (one sorted file per bucket, the rows a
        # one-part rewrite gives it): parts of keys are first spilled by group of buckets,
        # then each group is read back, sorted and written
        groups = min(len(filters), split.buckets)
        with tempfile.TemporaryDirectory(prefix="featurekit-optimize-") as tmp:
            for i, where in enumerate(filters):
                part = scan.filter(where).collect()
                group = bucket_ids(part, keys, split.buckets) * groups // split.buckets
                for (g,), rows in (
                    part.with_columns(group.alias(_GROUP))
                    .partition_by(_GROUP, as_dict=True, maintain_order=True)
                    .items()
                ):
                    rows.drop(_GROUP).write_parquet(Path(tmp) / f"{g:05d}-{i:05d}.parquet")
            for g in range(groups):
                spilled = sorted(Path(tmp).glob(f"{g:05d}-*.parquet"))  # in part order
                if spilled:
                    yield ordered(pl.read_parquet(spilled))

    written = delta.write_rows(
        uri,
        split.frames(batches()),
        partition_by=split.partition_by,
        metadata={
            "view": view,
            "version": str(version),
            "fingerprint": record.fingerprint,
            "run_id": uuid.uuid4().hex[:16],
            "mode": "optimize",
        },
        storage_options=options,
        predicate=None if table.registry.layout.is_local else delta.REPLACE_ALL,
    )
    return OptimizeResult(
        view,
        version,
        counted[0],
        files,
        delta.file_count(uri, written, options),
        current,
        written,
        before,
        split.buckets,
        len(filters),
    )
