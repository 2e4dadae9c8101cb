"""Writing bucketed view tables: how many buckets a write uses, and its partition columns.

A view version's table is split into ``B`` buckets of entity keys (see
:mod:`featurekit.kernels.bucketing`), stored as two Delta partition columns: ``__fk_buckets``
(``B``, the same in every file of a table version) and ``__fk_bucket`` (the row's bucket).
``B = 1`` tables are written exactly as before bucketing existed (no partition columns),
so small views, and every table written earlier, are unchanged.

Which ``B`` a write uses:

- a full run: the larger of the table's current ``B`` and the one its size asks for
  (:func:`~featurekit.kernels.bucketing.choose_buckets` on the run's estimated input
  bytes), so a view that grew is re-bucketed at its next full run and never shrinks;
- an incremental or ranged run: the table's current ``B`` (it replaces rows in place);
- ``optimize(buckets=N)``: ``N`` (a power of two, at least the current ``B``).

Within a bucket, rows keep the order they were computed in (sorted by keys, event time,
created time), because the Delta writer splits them into partitions in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from featurekit.core.errors import DefinitionError
from featurekit.kernels.bucketing import (
    BUCKET,
    BUCKETS,
    MAX_BUCKETS,
    bucket_ids,
    bucket_parts,
    choose_buckets,
)
from featurekit.offline.batching import estimate_bytes
from featurekit.offline.compute import Window
from featurekit.storage import delta
from featurekit.storage.sources import SourceSnapshot

__all__ = ["Bucketing", "check_bucket_count", "for_run", "for_write"]


@dataclass(frozen=True)
class Bucketing:
    """How one write splits its rows: ``buckets`` of the rows' ``keys``."""

    keys: tuple[str, ...]
    buckets: int = 1

    @property
    def partition_by(self) -> list[str] | None:
        """The Delta partition columns (None: an unpartitioned ``B = 1`` table)."""
        return [BUCKETS, BUCKET] if self.buckets > 1 else None

    @property
    def lead(self) -> str | None:
        """The column a write's rows are sorted by first (their bucket), None when ``B = 1``."""
        return BUCKET if self.buckets > 1 else None

    def frame(self, rows: pl.DataFrame) -> pl.DataFrame:
        """``rows`` with their partition columns added (unchanged when ``B = 1`` or when
        they are there already)."""
        if self.buckets == 1 or BUCKET in rows.columns:
            return rows
        return rows.with_columns(
            pl.lit(self.buckets, dtype=pl.Int32).alias(BUCKETS),
            bucket_ids(rows, self.keys, self.buckets),
        )

    def frames(
        self, rows: pl.DataFrame | Iterable[pl.DataFrame]
    ) -> pl.DataFrame | Iterator[pl.DataFrame]:
        """What the Delta writer is handed: ``rows`` as they are when ``B = 1``; else each
        frame (or batch) split into its buckets' rows, one frame per bucket, in order.

        The writer keeps one record batch per frame; a batch that holds one bucket goes to
        one partition writer as it is, where a batch of every bucket is split by the
        writer on one core first (10M rows at B = 16: 0.7 s to write bucket by bucket,
        1.6-2.7 s as one batch; docs/scale.md). Rows sorted with :attr:`lead` first hand
        each bucket over as a slice, without a copy.
        """
        if self.buckets == 1:
            return rows if isinstance(rows, pl.DataFrame) else iter(rows)
        batches = [rows] if isinstance(rows, pl.DataFrame) else rows
        return (part for batch in batches for part in self._parts(self.frame(batch)))

    def _parts(self, rows: pl.DataFrame) -> Iterator[pl.DataFrame]:
        # the partition columns last, where the first write put them (columns added since,
        # such as the pushed rows' marker, come before them)
        rows = rows.select(pl.exclude(BUCKETS, BUCKET), BUCKETS, BUCKET)
        if rows.height == 0:  # the writer still needs the schema
            yield rows
            return
        for _, part in bucket_parts(rows, rows.get_column(BUCKET)):
            yield part


def check_bucket_count(buckets: int, what: str) -> int:
    """``buckets`` if it is a power of two within :data:`MAX_BUCKETS`, else a clear error."""
    if buckets < 1 or buckets & (buckets - 1) or buckets > MAX_BUCKETS:
        raise DefinitionError(
            f"{what}: buckets={buckets} is not a power of two between 1 and {MAX_BUCKETS}; "
            "pass one of 1, 2, 4, 8, ..."
        )
    return buckets


def for_write(
    uri: str,
    keys: Sequence[str],
    schema: Mapping[str, pl.DataType],
    *,
    full: bool,
    estimated_bytes: int | None,
    first: int = 1,
) -> Bucketing:
    """The bucketing of one write to ``uri`` (see the module docstring).

    ``first`` is the count a new table starts from (its version record's ``buckets``).
    """
    version = delta.current_version(uri)
    current = first if version is None else delta.bucket_count(uri, version, empty=max(first, 2))
    if not full or estimated_bytes is None:
        return Bucketing(tuple(keys), current)
    wanted = choose_buckets(estimated_bytes, [schema[k] for k in keys])
    return Bucketing(tuple(keys), max(current, wanted))


def for_run(
    uri: str,
    keys: Sequence[str],
    schema: Mapping[str, pl.DataType],
    snaps: Mapping[str, SourceSnapshot],
    window: Window,
    *,
    full: bool,
    first: int = 1,
) -> Bucketing:
    """:func:`for_write` for a materialization run, sized from its sources' estimated bytes."""
    estimated = None
    if full:
        sources = list(snaps.values())
        estimated = estimate_bytes(sources, [window.bounds(s.source.timestamp) for s in sources])
    return for_write(uri, keys, schema, full=full, estimated_bytes=estimated, first=first)
