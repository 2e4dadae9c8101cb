"""Stable content hashes: the same values give the same hash in any process, any year.

Frames are hashed column by column from their values (not from a file format's bytes),
so a library upgrade that changes how files are laid out cannot fake a difference.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc


def stable_hash(value: Any, length: int = 16) -> str:
    """SHA-256 of canonical JSON (sorted keys), truncated: the same value, the same hash."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(data).hexdigest()[:length]


def frame_hash(frame: pl.DataFrame) -> str:
    """SHA-256 over column names, dtypes, row order and every value (nulls included)."""
    digest = hashlib.sha256()
    digest.update(f"rows={frame.height};cols={frame.width};".encode())
    for series in frame.get_columns():
        digest.update(f"{series.name}:{series.dtype};".encode())
        _hash_array(digest, series.to_arrow())
    return digest.hexdigest()


def _hash_array(digest: Any, array: pa.Array | pa.ChunkedArray) -> None:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    validity = pc.is_valid(array).to_numpy(zero_copy_only=False)
    digest.update(validity.tobytes())
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.cast(kind.value_type)
        kind = array.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_duration(kind):
        array = array.cast(pa.int64())
        kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = array.fill_null(False if pa.types.is_boolean(kind) else 0)
        digest.update(values.to_numpy(zero_copy_only=False).tobytes())
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
