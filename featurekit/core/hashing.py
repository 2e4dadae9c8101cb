"""Stable content hashes: the same values give the same hash in any process, any year.

Frames are hashed column by column from their values (not from a file format's bytes),
so a library upgrade that changes how files are laid out cannot fake a difference.

Two digests read the same bytes: SHA-256 (the labels' hash, hence training-set ids, and
result hashes recorded before manifest format 3) and xxh3-128 (result hashes since), which
reads them at memory speed (about 30 GB/s here, SHA-256 about 2): a training set's result
hash is on the critical path of every build, and a rebuild verifies the hash its manifest
names, so both stay readable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from featurekit.core.arrowviews import unpacked_validity, value_view
from featurekit.core.errors import SchemaError


def stable_hash(value: Any, length: int = 16) -> str:
    """SHA-256 of canonical JSON (sorted keys), truncated: the same value, the same hash."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(data).hexdigest()[:length]


#: from this many rows, a column's bytes are prepared while the previous one is digested
AHEAD_ROWS = 100_000

#: the digest a frame's bytes are read by (see the module docstring)
Algorithm = Literal["sha256", "xxh3-128"]


def frame_hash(frame: pl.DataFrame, algorithm: Algorithm = "sha256") -> str:
    """A digest over column names, dtypes, row order and every value (nulls included)."""
    digest = ColumnsDigest(frame.height, frame.width, algorithm)
    digest.update(frame.get_columns(), ahead=frame.height >= AHEAD_ROWS)
    return digest.hexdigest()


def columns_hash(
    height: int, width: int, columns: Iterable[pl.Series], algorithm: Algorithm = "sha256"
) -> str:
    """:func:`frame_hash` of a frame given column by column (``width`` columns of
    ``height`` rows), so a frame larger than memory is hashed one column at a time."""
    digest = ColumnsDigest(height, width, algorithm)
    digest.update(columns)
    return digest.hexdigest()


class ColumnsDigest:
    """:func:`columns_hash` fed its columns a few at a time, in order.

    A frame's first columns can be hashed before its last ones exist (a training set's
    label columns while its features are joined); :meth:`copy` keeps that state for
    several continuations.

    Example:
        >>> digest = ColumnsDigest(frame.height, frame.width)
        >>> digest.update(frame.get_columns()[:2]); digest.update(frame.get_columns()[2:])
        >>> digest.hexdigest() == frame_hash(frame)
        True
    """

    def __init__(self, height: int, width: int, algorithm: Algorithm = "sha256") -> None:
        self.height = height
        self.width = width
        self.names: list[tuple[str, pl.DataType]] = []  # the columns fed so far
        self._digest: Any = hashlib.sha256() if algorithm == "sha256" else xxhash.xxh3_128()
        self._digest.update(f"rows={height};cols={width};".encode())

    def update(self, columns: Iterable[pl.Series], *, ahead: bool = False) -> None:
        """Feed the next columns (in the frame's order).

        ``ahead``: the next column's bytes (validity, values with nulls zeroed) are made on
        another thread while the digest reads the current one's (both release the GIL):
        for columns already in memory, since two are then held at once.
        """
        if not ahead:
            for series in columns:  # straight into the digest: no bytes held for later
                _hash_column(self._digest, series, keep=False)
                self.names.append((series.name, series.dtype))
            return
        with ThreadPoolExecutor(1, thread_name_prefix="featurekit-hash") as pool:
            pending: Future[_ColumnBytes] | None = None
            for series in columns:
                upcoming = pool.submit(_column_bytes, series)
                if pending is not None:
                    self._feed(pending.result())
                pending = upcoming
            if pending is not None:
                self._feed(pending.result())

    def _feed(self, column: _ColumnBytes) -> None:
        for data in column.data:
            self._digest.update(data)
        self.names.append((column.name, column.dtype))

    def copy(self) -> ColumnsDigest:
        """An independent digest in the same state."""
        twin = ColumnsDigest.__new__(ColumnsDigest)
        twin.height, twin.width, twin.names = self.height, self.width, list(self.names)
        twin._digest = self._digest.copy()
        return twin

    def hexdigest(self) -> str:
        """The hash of the columns fed (the frame's :func:`frame_hash` once all are)."""
        return str(self._digest.hexdigest())


@dataclass(frozen=True)
class _ColumnBytes:
    """What the digest reads for one column, in order."""

    name: str
    dtype: pl.DataType
    data: list[Any]


class _Collected(list[Any]):
    """Records what a digest would be fed (``update``), to feed it later."""

    def update(self, data: Any) -> None:
        self.append(data)


def _column_bytes(series: pl.Series) -> _ColumnBytes:
    collected = _Collected()
    _hash_column(collected, series, keep=True)
    return _ColumnBytes(series.name, series.dtype, collected)


def _hash_column(digest: Any, series: pl.Series, *, keep: bool) -> None:
    """Feed one column's header and bytes; ``keep``: the digest holds what it is given
    (the bytes are read later), so no scratch buffer is handed to it."""
    digest.update(f"{series.name}:{series.dtype};".encode())
    _hash_array(digest, _arrow(series), keep=keep)


def _arrow(series: pl.Series) -> pa.Array | pa.ChunkedArray:
    """The series as Arrow; 128-bit integers (which Arrow lacks) as their decimal text.

    Raises:
        SchemaError: a dtype with no Arrow form (``Object``), naming the column.
    """
    if series.dtype == pl.Object:  # arbitrary Python objects: no stable value to hash
        raise SchemaError(
            f"column {series.name!r} holds Python objects (dtype Object), whose values "
            "featurekit cannot hash or store. Convert it to a plain type first, e.g. "
            f"pl.col({series.name!r}).map_elements(str, return_dtype=pl.String)."
        )
    if series.dtype in (pl.Int128, pl.UInt128):
        series = series.cast(pl.String)  # the dtype, in the header, keeps them apart
    try:
        return series.to_arrow()
    except Exception as err:
        raise SchemaError(
            f"column {series.name!r} has dtype {series.dtype}, whose values featurekit cannot "
            f"hash or store ({type(err).__name__}). Convert it to a plain type first, e.g. "
            f"pl.col({series.name!r}).cast(pl.String)."
        ) from err


def _hash_array(digest: Any, array: pa.Array | pa.ChunkedArray, *, keep: bool) -> None:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    whole = array.null_count == 0  # the common case: the same bytes, without computing them
    valid = np.ones(len(array), dtype=np.bool_) if whole else _validity(array)
    digest.update(valid)
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.cast(kind.value_type)
        kind = array.type
    if pa.types.is_date32(kind):  # Arrow casts days to int32 only, not straight to int64
        array = array.cast(pa.int32())
        kind = array.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_duration(kind):
        array = array.cast(pa.int64())
        kind = array.type
    if not whole and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        values = value_view(array, np.dtype(array.type.to_pandas_dtype()))
        for block in _zeroed_blocks(values, valid):
            digest.update(block.copy() if keep else block)
        return
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = array if whole else array.fill_null(False)
        digest.update(_contiguous(values.to_numpy(zero_copy_only=False)))
        return
    if _is_binary_like(kind):
        binary = array.cast(pa.large_binary()).fill_null(b"")
        offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)
        start, stop = offsets[binary.offset], offsets[binary.offset + len(binary)]
        digest.update((offsets[binary.offset : binary.offset + len(binary) + 1] - start).tobytes())
        data = binary.buffers()[2]
        if data is not None:
            digest.update(memoryview(data)[start:stop])
        return
    # nested and other types: a canonical JSON rendering of each value
    digest.update(orjson.dumps(array.to_pylist(), default=str))


#: values per block when nulls are zeroed for the digest: the block (512 KiB at 8 bytes a
#: value) is written and read while it is in the core's cache, and reused (pyarrow's
#: ``fill_null`` copy of a whole column took 3 ms a million values, blocks 0.6 ms)
ZERO_BLOCK = 1 << 16


def _validity(array: pa.Array) -> np.ndarray:
    """One byte per value, 1 where it is valid: the bitmap unpacked (pyarrow's
    ``is_valid`` makes a bitmap first, then bytes from it, several times the cost)."""
    if array.buffers()[0] is None or pa.types.is_dictionary(array.type):
        return _contiguous(pc.is_valid(array).to_numpy(zero_copy_only=False))
    return unpacked_validity(array).view(np.bool_)


def _zeroed_blocks(values: np.ndarray, valid: np.ndarray) -> Iterator[np.ndarray]:
    """``values`` with invalid slots set to zero, block by block in one scratch buffer
    (each block is overwritten by the next: read it before asking for another)."""
    # as unsigned integers of the values' width, AND-ed with all ones (valid) or zeros:
    # a masked copy (``np.copyto(where=...)``) took 3.6 ms a million values, this 0.6
    bits = np.dtype(f"u{values.dtype.itemsize}")
    raw = values.view(bits)
    size = min(values.size, ZERO_BLOCK)
    scratch, mask = np.empty(size, dtype=bits), np.empty(size, dtype=bits)
    for start in range(0, values.size, ZERO_BLOCK):
        stop = min(start + ZERO_BLOCK, values.size)
        block, ones = scratch[: stop - start], mask[: stop - start]
        np.negative(valid[start:stop], out=ones, dtype=bits, casting="unsafe")
        np.bitwise_and(raw[start:stop], ones, out=block)
        yield block


def _contiguous(values: np.ndarray) -> np.ndarray:
    """The array's bytes in order, as a buffer the digest reads in place (no copy when the
    array already is one, as Arrow's primitive arrays are)."""
    return np.ascontiguousarray(values)


def _is_binary_like(kind: pa.DataType) -> bool:
    checks = (
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_binary,
        pa.types.is_large_binary,
        pa.types.is_string_view,
        pa.types.is_binary_view,
    )
    return any(check(kind) for check in checks)
