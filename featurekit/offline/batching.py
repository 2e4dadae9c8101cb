"""Memory budgets for materialization and online syncs: how many batches, which rows each holds.

A run whose sources are estimated to need more memory than the budget is computed in
batches. Each batch is the view's *output* filtered to a disjoint set of entity keys (a
key range for one integer key, a hash bucket otherwise), so the view function still sees
whole LazyFrames and the union of the batches is exactly the in-memory result: every row
of one entity lands in the same batch, in the same relative order, so the write-time
dedupe and the point-in-time tie-breaks are unchanged. Polars pushes the key filter down
to the source scan where that is valid, so a batch reads and holds only its share.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence

import polars as pl

from featurekit.core.definitions import Source
from featurekit.core.errors import DefinitionError, FeatureKitError, StorageError, is_rust_panic
from featurekit.storage.sources import SourceSnapshot, TimeBound, scan_source

#: Default memory budget of one materialization run (bytes).
DEFAULT_BUDGET = 8 * 1024**3

#: Peak memory of a batch relative to the rows it computes: the collected rows, their
#: sorted copy and the sort's buffers, the previous batch still held by the Delta
#: writer, and memory the allocator keeps after freeing it (measured on 50M rows with
#: budgets of 2, 4 and 8 GiB; see docs/materialization.md). Bucketed writes also split
#: each batch into its buckets: 100M rows into 16 buckets peaked at 6.6x under 8 GiB.
PEAK_FACTOR = 7

#: Memory a run needs whatever its size: the interpreter and libraries, the Delta
#: writer's file buffers (measured: about 0.5 GiB).
BASE_BYTES = 512 * 1024**2

#: Each batch scans the sources again (filtered), so their number is capped.
MAX_BATCHES = 256

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(value: str | int | None, *, what: str = "memory_budget") -> int | None:
    """Bytes from ``"8GiB"``, ``"512MB"`` or an int; None stays None (no limit set).

    Example:
        >>> parse_size("1.5GiB")
        1610612736
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise DefinitionError(f"{what} must be a size such as '8GiB' or a number of bytes.")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if found is None or found.group(2).lower() not in _UNITS:
            raise DefinitionError(
                f"{what} {value!r} is not a size; use e.g. '8GiB', '512MB' or a number of bytes."
            )
        number, unit = float(found.group(1)), found.group(2).lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise DefinitionError(f"{what} must be positive, got {value!r}.")
    return size


def estimate_bytes(
    sources: Sequence[Source | SourceSnapshot], bounds: Sequence[Sequence[TimeBound]]
) -> int:
    """Rows the run reads times their width in memory, summed over the raw sources."""
    total = 0
    for src, bound in zip(sources, bounds, strict=True):
        with source_errors(src.name):
            total += frame_bytes(scan_source(src, bounds=bound))
    return total


@contextlib.contextmanager
def source_errors(name: str) -> Iterator[None]:
    """Reading a source's files: a reader's error becomes a StorageError naming the source.

    Counting rows or reading a column's maximum reads each file's footer: a garbled one
    raises a polars error or a Rust panic (a BaseException) that names no source.
    """
    try:
        yield
    except FeatureKitError:
        raise
    except BaseException as err:
        if not (isinstance(err, Exception) or is_rust_panic(err)):
            raise
        lines = str(err).strip().splitlines()
        raise StorageError(
            f"source {name!r} cannot be read: {lines[0] if lines else type(err).__name__}. "
            "One of its files was probably damaged or changed outside featurekit: check "
            "it, or restore it from a backup."
        ) from err


def frame_bytes(lf: pl.LazyFrame) -> int:
    """Rows times their width in memory (counting rows reads file metadata, not data)."""
    return rows_bytes(lf.collect_schema(), int(lf.select(pl.len()).collect().item()))


def rows_bytes(schema: pl.Schema, rows: int) -> int:
    """``rows`` rows of ``schema`` times their width in memory (as :func:`frame_bytes`)."""
    return rows * sum(_width(dtype) for dtype in schema.dtypes())


def batch_count(estimated: int, budget: int) -> int:
    """Batches so that each one's peak (``PEAK_FACTOR`` x its rows) fits the budget, less
    :data:`BASE_BYTES` (with at least a quarter of the budget left for the batch).

    A budget of a few bytes leaves no room at all: it asks for the smallest batches
    (:data:`MAX_BATCHES`), which is how tests force the out-of-core paths.

    Raises:
        DefinitionError: the budget is zero or negative.
    """
    if budget <= 0:
        raise DefinitionError(
            f"memory budget must be positive, got {budget} bytes; pass e.g. "
            "memory_budget='8GiB', or memory_budget=None for the default."
        )
    room = max(budget - BASE_BYTES, budget // 4, 1)
    return min(MAX_BATCHES, max(1, math.ceil(estimated * PEAK_FACTOR / room)))


def key_partitions(lf: pl.LazyFrame, keys: Sequence[str], n: int) -> list[pl.Expr]:
    """``n`` filters on the output's keys that together select every row exactly once.

    One integer key: contiguous ranges, so batches written in order keep the table sorted
    by key. Otherwise: hash buckets. Rows with a null key go to the first batch (they are
    dropped there, with the usual warning).
    """
    schema = lf.collect_schema()
    if len(keys) == 1 and schema[keys[0]].is_integer():
        key = pl.col(keys[0])
        low, high = lf.select(key.min().alias("lo"), key.max().alias("hi")).collect().row(0)
        if low is None or high is None:
            return [pl.lit(True)]
        span = int(high) - int(low) + 1
        edges = [int(low) + span * i // n for i in range(n)] + [int(high) + 1]
        edges = sorted(set(edges))
        parts = [(key >= edges[i]) & (key < edges[i + 1]) for i in range(len(edges) - 1)]
        parts[0] = parts[0] | key.is_null()
        return parts
    bucket = pl.struct([pl.col(k) for k in keys]).hash(seed=0) % n
    return [bucket == i for i in range(n)]


def _width(dtype: pl.DataType) -> int:
    if dtype in (pl.String, pl.Binary) or isinstance(dtype, pl.List | pl.Struct | pl.Array):
        return 32  # offsets plus a typical short value
    if dtype in (pl.Boolean, pl.Int8, pl.UInt8):
        return 1
    if dtype in (pl.Int16, pl.UInt16):
        return 2
    if dtype in (pl.Int32, pl.UInt32, pl.Float32, pl.Date):
        return 4
    return 8
