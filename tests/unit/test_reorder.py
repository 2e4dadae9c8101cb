"""Reorder gathers columns exactly as polars' gather does: values, nulls and dtype, for
every dtype (its own path for fixed-width ones, polars' for the rest)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

import hypothesis.strategies as st
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings

from featurekit.kernels.reorder import Reorder

BASE = datetime(2026, 1, 1, tzinfo=UTC)

#: (dtype, a value for row i): every kind of column a training set's features can have
KINDS: dict[str, tuple[pl.DataType, Callable[[int], object]]] = {
    "float64": (pl.Float64(), lambda i: i / 3),
    "float32": (pl.Float32(), lambda i: i / 4),
    "int64": (pl.Int64(), lambda i: i * 7 - 50),
    "int8": (pl.Int8(), lambda i: i % 100 - 50),
    "uint16": (pl.UInt16(), lambda i: i),
    "datetime_utc": (pl.Datetime("us", "UTC"), lambda i: BASE + timedelta(seconds=i)),
    "datetime_ns": (pl.Datetime("ns"), lambda i: datetime(2026, 1, 1) + timedelta(microseconds=i)),
    "date": (pl.Date(), lambda i: date(2026, 1, 1) + timedelta(days=i)),
    "duration": (pl.Duration("ms"), lambda i: timedelta(milliseconds=i)),
    "time": (pl.Time(), lambda i: time(i % 24, i % 60)),
    "string": (pl.String(), lambda i: f"s{i}"),
    "boolean": (pl.Boolean(), lambda i: i % 3 == 0),
    "list": (pl.List(pl.Int64()), lambda i: [i, i + 1]),
    "int128": (pl.Int128(), lambda i: i * 2**70),
    "decimal": (pl.Decimal(10, 2), lambda i: i / 4),
    "categorical": (pl.Categorical(), lambda i: f"c{i % 3}"),
}


def _column(name: str, kind: str, n: int, nulls: set[int]) -> pl.Series:
    dtype, value = KINDS[kind]
    return pl.Series(
        name,
        [None if i in nulls else value(i) for i in range(n)],
        dtype=dtype,
    )


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_reordered_columns_are_polars_gathers(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 60), label="rows")
    index = data.draw(st.lists(st.integers(0, n - 1), min_size=0, max_size=80), label="index")
    kinds = data.draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=4))
    shared = data.draw(st.sets(st.integers(0, n - 1)), label="shared nulls")
    positions = pl.Series(index, dtype=pl.get_index_type())
    reorder = Reorder(positions)
    for k, kind in enumerate(kinds):
        # the columns of one view usually share their nulls; some have their own
        own = data.draw(st.booleans(), label=f"own nulls {k}")
        nulls = data.draw(st.sets(st.integers(0, n - 1))) if own else shared
        column = _column(f"c{k}", kind, n, nulls)
        if data.draw(st.booleans(), label=f"sliced {k}"):  # an offset into its buffers
            start = data.draw(st.integers(0, n - 1))
            column = column.slice(start)
            positions = pl.Series([i for i in index if i < column.len()], dtype=pl.get_index_type())
            reorder = Reorder(positions)
        want = column.gather(positions)
        got = reorder.column(column)
        assert got.dtype == want.dtype
        assert got.name == want.name
        assert got.to_list() == want.to_list()


def test_a_shared_validity_is_gathered_once_and_a_different_one_again() -> None:
    index = pl.Series(np.random.default_rng(1).permutation(1000), dtype=pl.get_index_type())
    reorder = Reorder(index)
    first = _column("a", "float64", 1000, set(range(0, 1000, 3)))
    same = _column("b", "int64", 1000, set(range(0, 1000, 3)))
    other = _column("c", "float64", 1000, set(range(1, 1000, 5)))
    for column in (first, same, other, first):
        assert reorder.column(column).to_list() == column.gather(index).to_list()


@pytest.mark.parametrize("kind", ["float64", "string"])
def test_an_empty_index_or_column_gives_an_empty_column(kind: str) -> None:
    empty = Reorder(pl.Series([], dtype=pl.get_index_type()))
    got = empty.column(_column("a", kind, 5, {1}))
    assert got.len() == 0 and got.dtype == KINDS[kind][0]
    nothing = _column("a", kind, 0, set())
    assert Reorder(pl.Series([], dtype=pl.get_index_type())).column(nothing).len() == 0
