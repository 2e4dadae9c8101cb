"""The bucketing hash is a storage format: pinned to literal values and to an independent
pure-Python rendering of its definition, for every key dtype that can be bucketed."""

from __future__ import annotations

import polars as pl
import pytest
import xxhash

from featurekit.core.errors import DefinitionError
from featurekit.kernels import bucketing
from featurekit.kernels.bucketing import bucket_ids, choose_buckets, hashable, key_hash
from featurekit.offline.buckets import check_bucket_count

M = 2**64 - 1


def _mix(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def _value(v: object) -> int:
    if v is None:
        return 0x6A09E667F3BCC908
    if isinstance(v, str):
        return xxhash.xxh64_intdigest(v.encode("utf-8"), seed=0)
    assert isinstance(v, int)
    return v & M  # two's complement


def _reference(*values: object) -> int:
    h = 0x243F6A8885A308D3
    for v in values:
        h = _mix(h ^ _mix(_value(v)))
    return h


INTS = [0, 1, -1, 2**40, None]
TEXTS = ["a", "driver_7", "", None, "é"]
FRAME = pl.DataFrame({"i": pl.Series(INTS, dtype=pl.Int64), "s": TEXTS})


def test_hash_is_pinned_to_literal_values() -> None:
    # changing these moves stored rows to other buckets: a new storage format, never an edit
    assert key_hash(FRAME, ["i"]).to_list() == [
        233067058864325002,
        17525493022739835425,
        12592785425429990383,
        16535552884446065384,
        16043105730782109098,
    ]
    assert key_hash(FRAME, ["i", "s"]).to_list() == [
        602420652753340434,
        10860425562342729609,
        15243403732094417250,
        1339096593279668065,
        2609326633607557304,
    ]


def test_hash_matches_its_written_definition() -> None:
    assert key_hash(FRAME, ["i"]).to_list() == [_reference(v) for v in INTS]
    assert key_hash(FRAME, ["s"]).to_list() == [_reference(v) for v in TEXTS]
    assert key_hash(FRAME, ["i", "s"]).to_list() == [
        _reference(i, s) for i, s in zip(INTS, TEXTS, strict=True)
    ]
    big = pl.DataFrame({"u": pl.Series([2**64 - 1, 3], dtype=pl.UInt64)})
    assert key_hash(big, ["u"]).to_list() == [_reference(2**64 - 1), _reference(3)]


@pytest.mark.parametrize("dtype", [pl.Int8, pl.Int16, pl.Int32, pl.UInt8, pl.UInt32, pl.UInt64])
def test_every_integer_width_hashes_like_int64(dtype: type[pl.DataType]) -> None:
    # the join matches Int32 labels to Int64 rows, so both must land in the same bucket
    values = pl.DataFrame({"k": pl.Series([0, 1, 7, 100, None], dtype=dtype)})
    wide = values.with_columns(pl.col("k").cast(pl.Int64))
    assert key_hash(values, ["k"]).to_list() == key_hash(wide, ["k"]).to_list()


def test_categorical_and_enum_hash_like_strings() -> None:
    text = pl.DataFrame({"k": ["x", "y", None, "x"]})
    for dtype in (pl.Categorical(), pl.Enum(["x", "y"])):
        cast = text.with_columns(pl.col("k").cast(dtype))
        assert key_hash(cast, ["k"]).to_list() == key_hash(text, ["k"]).to_list()


def test_bucket_ids_are_the_low_bits() -> None:
    ids = bucket_ids(FRAME, ["i", "s"], 8)
    assert ids.dtype == pl.Int32
    assert ids.to_list() == [h & 7 for h in key_hash(FRAME, ["i", "s"]).to_list()]
    assert bucket_ids(FRAME, ["i"], 1).to_list() == [0] * 5


def test_bucket_counts_are_powers_of_two() -> None:
    with pytest.raises(ValueError, match="power of two, got 6"):
        bucket_ids(FRAME, ["i"], 6)
    with pytest.raises(DefinitionError, match=r"view 'v': buckets=3 is not a power of two"):
        check_bucket_count(3, "view 'v'")
    assert check_bucket_count(16, "view 'v'") == 16


def test_small_views_and_unhashable_keys_keep_one_bucket() -> None:
    small, target = bucketing.SMALL_BUCKET_BYTES, bucketing.TARGET_BUCKET_BYTES
    assert choose_buckets(small, [pl.Int64()]) == 1
    assert choose_buckets(small + 1, [pl.Int64()]) == 2
    # small buckets, up to 16 of them: 10M rows of 64 bytes (640 MB) get 16
    assert choose_buckets(10_000_000 * 64, [pl.Int64()]) == 16
    assert choose_buckets(5 * small, [pl.String()]) == 8
    # then buckets grow: 16 of at most the target size, then one per target size
    assert choose_buckets(16 * target, [pl.Int64()]) == 16
    assert choose_buckets(16 * target + 1, [pl.Int64()]) == 32
    assert choose_buckets(100 * target, [pl.Int64()]) == 128
    assert choose_buckets(10**18, [pl.Int64()]) == bucketing.MAX_BUCKETS
    assert choose_buckets(10 * target, [pl.Float64()]) == 1
    sizes = [small * k // 3 for k in range(1, 3000, 7)]
    counts = [choose_buckets(size, [pl.Int64()]) for size in sizes]
    assert counts == sorted(counts)  # a view that grows never asks for fewer buckets
    assert not hashable([pl.Date()])


def test_rows_split_by_bucket_keep_their_order() -> None:
    # each bucket one run (one file per bucket): slices, in the rows' order
    runs = pl.DataFrame({"v": [1, 2, 3, 4, 5]})
    parts = bucketing.by_bucket(runs, pl.Series([2, 2, 0, 0, 0], dtype=pl.Int32))
    assert sorted(parts) == [0, 2]
    assert parts[2].to_dict(as_series=False) == {"v": [1, 2]}
    assert parts[0].to_dict(as_series=False) == {"v": [3, 4, 5]}
    # a bucket's rows apart (a later file appended to it): gathered, still in order
    apart = pl.DataFrame({"v": [1, 2, 3, 4, 5, 6]})
    parts = bucketing.by_bucket(apart, pl.Series([1, 0, 0, 1, 1, 0], dtype=pl.Int32))
    assert parts[1].to_dict(as_series=False) == {"v": [1, 4, 5]}
    assert parts[0].to_dict(as_series=False) == {"v": [2, 3, 6]}
    assert bucketing.by_bucket(apart.clear(), pl.Series([], dtype=pl.Int32)) == {}


def test_rows_split_by_a_bucket_column_in_chunks_of_one_value_each() -> None:
    # as a partition column comes: one chunk per file, each of one bucket
    files = [[3, 3], [3], [1, 1], [0]]
    ids = pl.concat([pl.Series(f, dtype=pl.Int32) for f in files], rechunk=False)
    assert ids.n_chunks() == 4
    rows = pl.DataFrame({"v": [1, 2, 3, 4, 5, 6]})
    parts = bucketing.by_bucket(rows, ids)
    assert {b: p["v"].to_list() for b, p in parts.items()} == {3: [1, 2, 3], 1: [4, 5], 0: [6]}
    back = pl.concat([ids, pl.Series([3], dtype=pl.Int32)], rechunk=False)  # 3 again, apart
    parts = bucketing.by_bucket(rows.vstack(pl.DataFrame({"v": [7]})), back)
    assert {b: p["v"].to_list() for b, p in parts.items()} == {3: [1, 2, 3, 7], 1: [4, 5], 0: [6]}


def test_hashes_of_many_rows_are_those_of_each_row_alone() -> None:
    # the hash runs block by block: rows on either side of a block's edge, with two keys,
    # hash as they do in a frame of their own
    n = 3 * bucketing.HASH_BLOCK + 5
    frame = pl.DataFrame(
        {"i": pl.int_range(0, n, eager=True) * 7919, "s": [f"k{j % 97}" for j in range(n)]}
    ).with_columns(pl.when(pl.col("i") % 11 == 0).then(None).otherwise(pl.col("i")).alias("i"))
    whole = key_hash(frame, ["i", "s"])
    step = 1000
    parts = [key_hash(frame.slice(j, step), ["i", "s"]) for j in range(0, n, step)]
    assert whole.equals(pl.concat(parts))
    assert key_hash(frame.slice(5, 1), ["i", "s"]).item() == whole[5]
