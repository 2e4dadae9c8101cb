"""Small frame helpers shared by the kernel and materialization (pure, polars only)."""

from __future__ import annotations

import polars as pl


def in_order(frame: pl.DataFrame, columns: list[str], *, strict: bool) -> bool:
    """Whether rows are already sorted by ``columns`` (ascending, lexicographic).

    One vectorized pass, much cheaper than a multi-column sort of sorted data. Columns
    with nulls answer False (the caller sorts, with nulls first).
    """
    if frame.height < 2:
        return True
    if frame.select(pl.any_horizontal(pl.col(columns).is_null().any())).item():
        return False
    ahead = pl.lit(False)
    equal = pl.lit(True)
    for col in columns:
        current, previous = pl.col(col), pl.col(col).shift(1)
        ahead = ahead | (equal & (current > previous))
        equal = equal & (current == previous)
    fine = ahead if strict else ahead | equal
    return bool(frame.select(fine.slice(1).all()).item())


def last_of_runs(columns: list[str]) -> pl.Expr:
    """True on the last row of each run of rows equal on ``columns`` (nulls equal nulls).

    On rows sorted by ``columns``, filtering by it keeps one row per distinct value: the
    last one, which is what the point-in-time tie-break would pick.
    """
    same_as_next = pl.lit(True)
    for col in columns:
        same_as_next = same_as_next & pl.col(col).eq_missing(pl.col(col).shift(-1))
    return ~same_as_next
