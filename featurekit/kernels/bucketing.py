"""Buckets of entity keys: a stable hash of a row's keys, and the bucket it falls in.

A view version's table may be split into ``B`` buckets (``B`` a power of two): a row lives
in bucket ``key_hash(keys) & (B - 1)``. A training set hashes its labels' keys the same
way, so every bucket is an independent point-in-time join: the labels of bucket ``b`` can
only ever match stored rows of bucket ``b``.

The hash is part of the storage format: rows written by one process, platform or library
version must land in the bucket another computes for the same keys. So it is defined
here, explicitly, and pinned by golden values in ``tests/unit/test_bucketing.py``; it never
uses polars' ``hash`` (whose values change between polars versions).

Definition (64-bit unsigned arithmetic, wrapping):

- each key value becomes a ``u64``: integers (any width, signed or not) their value in
  two's complement (so ``Int32`` 7 and ``Int64`` 7 agree, as the join's keys do); booleans
  0/1; strings (and categoricals) ``xxh64`` of their UTF-8 bytes with seed 0; a null
  :data:`NULL_VALUE`;
- ``h = SEED``; for each key in order, ``h = mix(h ^ mix(value))``, where ``mix`` is the
  splitmix64 finalizer applied to ``x + GOLDEN``;
- the bucket is ``h & (B - 1)``.

Key dtypes outside this list (floats, dates, times, nested) are not bucketed: such views
keep ``B = 1`` (:func:`hashable`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import polars as pl

from featurekit.kernels.frames import group_order

__all__ = [
    "BUCKET",
    "BUCKETS",
    "MAX_BUCKETS",
    "SMALL_BUCKETS",
    "SMALL_BUCKET_BYTES",
    "TARGET_BUCKET_BYTES",
    "bucket_ids",
    "bucket_parts",
    "by_bucket",
    "choose_buckets",
    "hash_class",
    "hashable",
    "key_hash",
]

#: the partition column holding a row's bucket (``Int32``)
BUCKET = "__fk_bucket"
#: the partition column holding the table's bucket count ``B`` (``Int32``, one value per
#: table version), so a pinned Delta version says by itself how it was bucketed
BUCKETS = "__fk_buckets"
#: buckets of about this many in-memory bytes are what training sets join fastest (a
#: 10M-row view, 640 MB: 0.24-0.33x polars at B = 16, 0.39-0.43x at B = 2; docs/scale.md),
#: up to :data:`SMALL_BUCKETS` of them
SMALL_BUCKET_BYTES = 64 * 1024**2
#: the most buckets a view's size asks for at :data:`SMALL_BUCKET_BYTES` each: one write
#: holds a Delta writer per bucket it writes, and 128 of them took a 100M-row full run to
#: 10.2 GiB against 7.1 at 16 (docs/scale.md). Past 16 x 64 MiB, buckets grow instead.
SMALL_BUCKETS = 16
#: the largest buckets a view's size asks for (what one task holds in memory)
TARGET_BUCKET_BYTES = 512 * 1024**2
#: never more buckets than this (a file per bucket and run: more would mean tiny files)
MAX_BUCKETS = 1024

SEED = 0x243F6A8885A308D3
GOLDEN = 0x9E3779B97F4A7C15
NULL_VALUE = 0x6A09E667F3BCC908
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_INTEGERS = (
    pl.Int8,
    pl.Int16,
    pl.Int32,
    pl.Int64,
    pl.UInt8,
    pl.UInt16,
    pl.UInt32,
    pl.UInt64,
)


def hash_class(dtype: pl.DataType) -> str | None:
    """Which value encoding a key dtype hashes with (``"int"``, ``"str"``), or None.

    Label and stored keys hash alike exactly when their classes are equal.
    """
    if dtype in _INTEGERS or dtype == pl.Boolean:
        return "int"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum | pl.Categorical):
        return "str"
    return None


def hashable(dtypes: Sequence[pl.DataType]) -> bool:
    """Whether keys of these dtypes can be bucketed."""
    return bool(dtypes) and all(hash_class(d) is not None for d in dtypes)


def _mix(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """splitmix64's finalizer of ``x + GOLDEN`` (numpy ``uint64`` arithmetic wraps), into
    ``out`` (which may be ``x``) or a new array.

    In place after the first step: at a million keys every fresh temporary costs more
    (its memory is new to the process) than the arithmetic done in it.
    """
    with np.errstate(over="ignore"):
        z: np.ndarray = np.add(x, np.uint64(GOLDEN), out=out)
        shifted = np.right_shift(z, np.uint64(30))
        z ^= shifted
        z *= _C1
        np.right_shift(z, np.uint64(27), out=shifted)
        z ^= shifted
        z *= _C2
        np.right_shift(z, np.uint64(31), out=shifted)
        z ^= shifted
        return z


def _values(series: pl.Series) -> np.ndarray:
    """Each key value as a ``u64`` (see the module docstring)."""
    kind = hash_class(series.dtype)
    if kind == "int":
        if series.dtype == pl.UInt64:
            ints = series
        else:  # every other integer fits Int64; its bits, read unsigned
            ints = series.cast(pl.Int64).reinterpret(signed=False)
        out = ints.fill_null(NULL_VALUE).cast(pl.UInt64).to_numpy()
        return np.asarray(out, dtype=np.uint64)
    if kind == "str":
        import xxhash

        text = series.cast(pl.String)
        unique = text.drop_nulls().unique()
        digests = pl.Series(
            [xxhash.xxh64_intdigest(v.encode("utf-8"), seed=0) for v in unique.to_list()],
            dtype=pl.UInt64,
        )
        mapped = text.replace_strict(unique, digests, default=NULL_VALUE, return_dtype=pl.UInt64)
        return np.asarray(mapped.to_numpy(), dtype=np.uint64)
    raise TypeError(f"key column {series.name!r} of dtype {series.dtype} cannot be bucketed")


#: rows hashed at a time by :func:`key_hash`: each block's eight passes of arithmetic run
#: in the core's cache (10M keys: 90 ms in one block, about 40 in blocks)
HASH_BLOCK = 1 << 15


def key_hash(frame: pl.DataFrame, keys: Sequence[str]) -> pl.Series:
    """The 64-bit bucketing hash of each row's ``keys`` (see the module docstring)."""
    values = [_values(frame.get_column(key)) for key in keys]
    h = np.full(frame.height, SEED, dtype=np.uint64)
    scratch = np.empty(min(frame.height, HASH_BLOCK), dtype=np.uint64)
    for start in range(0, frame.height, HASH_BLOCK):
        block = h[start : start + HASH_BLOCK]
        mixed = scratch[: block.size]
        for value in values:
            np.copyto(mixed, value[start : start + HASH_BLOCK])
            block ^= _mix(mixed, out=mixed)
            _mix(block, out=block)
    return pl.Series("__fk_key_hash", h, dtype=pl.UInt64)


def bucket_ids(frame: pl.DataFrame, keys: Sequence[str], buckets: int) -> pl.Series:
    """Each row's bucket among ``buckets`` (a power of two), as ``Int32``."""
    if buckets < 1 or buckets & (buckets - 1):
        raise ValueError(f"bucket count must be a power of two, got {buckets}")
    if buckets == 1:
        return pl.Series(BUCKET, np.zeros(frame.height, dtype=np.int32), dtype=pl.Int32)
    ids = key_hash(frame, keys).to_numpy() & np.uint64(buckets - 1)
    return pl.Series(BUCKET, ids.astype(np.int32), dtype=pl.Int32)


def choose_buckets(estimated_bytes: int, key_dtypes: Sequence[pl.DataType]) -> int:
    """``B`` for a view whose rows take about ``estimated_bytes`` in memory.

    One bucket per :data:`SMALL_BUCKET_BYTES` up to :data:`SMALL_BUCKETS` buckets, and at
    least one per :data:`TARGET_BUCKET_BYTES`, rounded up to a power of two and capped at
    :data:`MAX_BUCKETS`; small views (up to one small bucket), and views whose keys cannot
    be hashed, keep ``B = 1``.
    """
    if not hashable(key_dtypes) or estimated_bytes <= SMALL_BUCKET_BYTES:
        return 1
    small = min(SMALL_BUCKETS, _power_of_two(-(-estimated_bytes // SMALL_BUCKET_BYTES)))
    large = _power_of_two(-(-estimated_bytes // TARGET_BUCKET_BYTES))
    return min(MAX_BUCKETS, max(small, large))


def _power_of_two(count: int) -> int:
    """The smallest power of two at least ``count``."""
    return 1 << (count - 1).bit_length()


def by_bucket(rows: pl.DataFrame, ids: pl.Series) -> dict[int, pl.DataFrame]:
    """``rows`` split into each bucket's rows, in order; ``ids`` is each row's bucket.

    The rows of one bucket keep their relative order (the point-in-time tie-break reads
    it), so each part holds exactly what reading that bucket alone would give
    (:func:`bucket_parts`, all at once).
    """
    return dict(bucket_parts(rows, ids))


def bucket_parts(rows: pl.DataFrame, ids: pl.Series) -> Iterator[tuple[int, pl.DataFrame]]:
    """Each bucket of ``rows`` with its rows in order, one at a time, in bucket order
    where the buckets are apart.

    A table read whole lists each file's rows together, and usually has one file per
    bucket: every bucket is then one run of rows, and its part a zero-copy slice.
    Otherwise (rows sorted by key, buckets interleaved) each part is gathered when it is
    asked for, so at most one bucket's copy is held besides ``rows``: a writer fed bucket
    by bucket needs no second copy of a whole batch.
    """
    if rows.height == 0:
        return
    starts, runs = _runs(ids)
    if len(set(runs)) == len(runs):
        bounds = [*starts.tolist(), rows.height]
        for b, first, end in zip(runs, bounds[:-1], bounds[1:], strict=True):
            yield int(b), rows.slice(first, end - first)
        return
    values = ids.to_numpy()
    order = group_order(values)
    ranked = values[order]
    cuts = np.flatnonzero(ranked[1:] != ranked[:-1]) + 1
    for first, end in zip([0, *cuts.tolist()], [*cuts.tolist(), rows.height], strict=True):
        yield int(ranked[first]), rows[order[first:end]]


def _runs(ids: pl.Series) -> tuple[np.ndarray, list[int]]:
    """Where each run of equal ``ids`` starts, and its value.

    A partition column comes in one chunk per file, each holding one value: then the
    chunks' bounds give the runs without reading every row (a tenth of the cost).
    """
    first = 0
    starts: list[int] = []
    runs: list[int] = []
    for length in ids.chunk_lengths():
        chunk = ids.slice(first, length)
        low, high = chunk.min(), chunk.max()
        if low != high:  # not one value per chunk: compare every row
            values = ids.to_numpy()
            where = np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1])
            return where, values[where].tolist()
        if length and (not runs or runs[-1] != low):
            starts.append(first)
            runs.append(int(low))  # type: ignore[arg-type]
        first += length
    return np.asarray(starts, dtype=np.int64), runs
