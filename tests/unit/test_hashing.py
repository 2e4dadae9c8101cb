"""Content hashes: new dtypes hash, and the hashes of the dtypes that hashed before stay put.

Training-set ids and result hashes are built from these: a changed hash for data that
already hashed would make every stored training set fail its rebuild.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib

import hypothesis.strategies as st
import numpy as np
import polars as pl
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings

import featurekit as fk
from featurekit.core.hashing import (
    AHEAD_ROWS,
    ZERO_BLOCK,
    ColumnsDigest,
    columns_hash,
    frame_hash,
)


def test_hashes_of_dtypes_that_always_hashed_are_unchanged() -> None:
    frame = pl.DataFrame(
        {
            "i": [1, None],
            "u": pl.Series([3, 4], dtype=pl.UInt32),
            "f": [1.5, None],
            "s": ["a", None],
            "b": [True, None],
            "t": [dt.datetime(2026, 1, 1), None],
            "tz": pl.Series([dt.datetime(2026, 1, 1), None]).dt.replace_time_zone("UTC"),
            "d": pl.Series([decimal.Decimal("1.5"), None]),
            "tm": [dt.time(1, 2), None],
            "c": pl.Series(["x", None], dtype=pl.Categorical),
            "l": [[1], None],
            "st": [{"a": 1}, None],
            "du": [dt.timedelta(1), None],
            "n": [None, None],
        }
    )
    assert frame_hash(frame) == "4f09214cd3871c2ceddd115eacaf67c6312b2218fb3a4f9db6433a7c49b49ab0"


def test_hashes_of_frames_without_nulls_are_unchanged() -> None:
    frame = pl.DataFrame(
        {
            "i": [1, -2, 3],
            "u": pl.Series([3, 4, 5], dtype=pl.UInt32),
            "f": [1.5, 2.5, -0.0],
            "s": ["a", "", "ccc"],
            "b": [True, False, True],
            "t": [dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2), dt.datetime(1970, 1, 1)],
            "d": [dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(1969, 12, 31)],
            "c": pl.Series(["x", "y", "x"], dtype=pl.Categorical),
            "du": [dt.timedelta(1), dt.timedelta(0), dt.timedelta(seconds=-1)],
        }
    )
    assert frame_hash(frame) == "1e0e2693ba4de48e8eac7be63768b8166ddfe8f5fa517a6cbed60f7e6f1e7237"
    # slices and chunked frames hash by their values too
    assert frame_hash(frame.slice(1, 2)) == (
        "2f8e453bbf0276d9ee8cdb324856713d8fea1259d73eb55fa5959b9a5a4e57ae"
    )
    chunked = pl.concat([frame.head(1), frame.tail(2)], rechunk=False)
    assert frame_hash(chunked) == frame_hash(frame)


@pytest.mark.parametrize(
    "values",
    [
        pl.Series([dt.date(2026, 1, 1), None]),
        pl.Series([{"a": dt.date(2026, 1, 1)}, None]),
        pl.Series([2**100, None], dtype=pl.Int128),
        pl.Series([2**64 - 1, None], dtype=pl.UInt64),
    ],
)
def test_dates_and_wide_integers_hash_by_value(values: pl.Series) -> None:
    frame = values.to_frame("c")
    assert frame_hash(frame) == frame_hash(frame.clone())
    changed = frame.with_columns(pl.col("c").shift(1))
    assert frame_hash(changed) != frame_hash(frame)


def test_a_date_and_its_day_number_hash_apart() -> None:
    day = pl.DataFrame({"c": [dt.date(1970, 1, 2)]})
    number = pl.DataFrame({"c": pl.Series([1], dtype=pl.Int32)})
    assert frame_hash(day) != frame_hash(number)


def test_python_objects_are_refused_by_name() -> None:
    frame = pl.DataFrame({"c": pl.Series([object()], dtype=pl.Object)})
    with pytest.raises(fk.SchemaError) as info:
        frame_hash(frame)
    assert str(info.value) == (
        "column 'c' holds Python objects (dtype Object), whose values featurekit cannot hash "
        "or store. Convert it to a plain type first, e.g. "
        "pl.col('c').map_elements(str, return_dtype=pl.String)."
    )


def test_a_frame_hashed_in_parts_hashes_as_a_whole() -> None:
    frame = pl.DataFrame(
        {"k": [1, 2, None], "t": [dt.datetime(2026, 1, 1)] * 3, "f": [0.5, None, float("nan")]}
    )
    digest = ColumnsDigest(frame.height, frame.width)
    digest.update(frame.get_columns()[:1])
    assert digest.names == [("k", pl.Int64)]
    twin = digest.copy()
    twin.update(frame.get_columns()[1:])
    assert twin.hexdigest() == frame_hash(frame)
    digest.update([frame.get_column("t")])  # the copy's continuation left it where it was
    digest.update([frame.get_column("f")])
    assert digest.hexdigest() == frame_hash(frame)


def test_large_frames_hash_as_before_while_columns_are_prepared_ahead() -> None:
    n = 200_000  # above AHEAD_ROWS: the next column's bytes are made on another thread
    frame = pl.DataFrame(
        {"i": pl.int_range(0, n, eager=True), "s": pl.int_range(0, n, eager=True).cast(pl.String)}
    ).with_columns(
        pl.when(pl.col("i") % 7 == 0).then(None).otherwise(pl.col("i") * 0.5).alias("f"),
        pl.col("i").cast(pl.Datetime("us")).alias("t"),
    )
    assert n >= AHEAD_ROWS
    assert frame_hash(frame) == "cf06e0472ded591693c2cafe22bf85970bde13739c3dfa973a776feaf0924fd5"
    assert columns_hash(n, frame.width, iter(frame.get_columns())) == frame_hash(frame)


def test_the_fast_digest_reads_the_same_bytes_and_its_hashes_stay_put() -> None:
    """Result hashes since manifest format 3 are xxh3-128 over the bytes SHA-256 reads:
    pinned here like the SHA-256 ones, and fed in parts or at once alike."""
    frame = pl.DataFrame(
        {
            "i": [1, None, 3],
            "f": [1.5, None, float("nan")],
            "s": ["a", None, ""],
            "t": [dt.datetime(2026, 1, 1), None, dt.datetime(1970, 1, 1)],
        }
    )
    fast = frame_hash(frame, "xxh3-128")
    assert fast == "b24238696e29eb44680dcacc8fb7d7f0"
    assert len(fast) == 32 and fast != frame_hash(frame)[:32]
    assert columns_hash(3, 4, frame.get_columns(), "xxh3-128") == fast
    digest = ColumnsDigest(3, 4, "xxh3-128")
    digest.update(frame.get_columns()[:1])
    twin = digest.copy()
    twin.update(frame.get_columns()[1:], ahead=True)
    assert twin.hexdigest() == fast
    assert frame_hash(frame.with_columns(pl.col("i").fill_null(0)), "xxh3-128") != fast


INTEGERS = [getattr(pl, f"{sign}Int{bits}") for sign in ("", "U") for bits in (8, 16, 32, 64)]
NUMERIC = [
    *INTEGERS,
    *(pl.Float32, pl.Float64, pl.Datetime("us"), pl.Datetime("ns", "UTC"), pl.Duration("ms")),
    pl.Date,
]


def _reference_hash(series: pl.Series) -> str:
    """The bytes the digest reads, as pyarrow makes them: each value's validity as a byte,
    then the values (as their integers, for temporal dtypes) with nulls filled by zero."""
    array = series.to_arrow()
    if hasattr(array, "combine_chunks"):
        array = array.combine_chunks()
    digest = hashlib.sha256(f"rows={series.len()};cols=1;{series.name}:{series.dtype};".encode())
    digest.update(pc.is_valid(array).to_numpy(zero_copy_only=False).tobytes())
    physical = series.to_physical().to_arrow()
    if hasattr(physical, "combine_chunks"):
        physical = physical.combine_chunks()
    if series.dtype != pl.Date:
        physical = physical.cast(physical.type if series.dtype.is_numeric() else "int64")
    digest.update(physical.fill_null(0).to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(NUMERIC),
    rows=st.sampled_from([1, 2, 63, 64, 65, ZERO_BLOCK - 1, ZERO_BLOCK, 2 * ZERO_BLOCK + 7]),
    null_share=st.sampled_from([0.0, 0.01, 0.5, 1.0]),
    offset=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_numbers_with_nulls_hash_the_bytes_pyarrow_would_make(
    dtype: pl.DataType, rows: int, null_share: float, offset: int, seed: int
) -> None:
    """Nulls are zeroed block by block in a scratch buffer: the bytes read are those of
    pyarrow's validity and ``fill_null(0)``, for any width, block boundary, slice offset
    (a bitmap that starts mid-byte) and chunking, and whatever the null slots held."""
    rng = np.random.default_rng(seed)
    size = rows + offset
    if dtype.is_float():
        values = pl.Series("c", rng.standard_normal(size)).cast(dtype)
    elif dtype.is_integer() and dtype not in (pl.Int64, pl.UInt64):
        values = pl.Series("c", rng.integers(0, 100, size)).cast(dtype)
    elif dtype == pl.Date:
        values = pl.Series("c", rng.integers(-(2**31), 2**31, size)).cast(pl.Int32).cast(dtype)
    else:  # 64 bits wide: every bit of the word in play
        values = pl.Series("c", rng.integers(-(2**63), 2**63, size, dtype=np.int64))
        values = values.reinterpret(signed=False) if dtype == pl.UInt64 else values.cast(dtype)
    nulls = pl.Series(rng.random(rows + offset) < null_share)
    values = values.set(nulls, None) if null_share else values
    column = values.slice(offset, rows)
    chunked = pl.concat([column.head(rows // 3), column.tail(rows - rows // 3)], rechunk=False)
    want = _reference_hash(column)
    assert frame_hash(column.to_frame()) == want
    assert frame_hash(chunked.to_frame()) == want
    digest = ColumnsDigest(rows, 1)
    digest.update([column], ahead=True)  # bytes kept for later: each block its own copy
    assert digest.hexdigest() == want
