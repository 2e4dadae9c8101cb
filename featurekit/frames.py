"""Small frame helpers shared by the kernel and materialization (pure, polars only)."""

from __future__ import annotations

from typing import Literal, overload

import polars as pl

_POSITION = "__fk_position"


def in_order(frame: pl.DataFrame, columns: list[str], *, strict: bool) -> bool:
    """Whether rows are already sorted by ``columns`` (ascending, lexicographic).

    One vectorized pass, much cheaper than a multi-column sort of sorted data. Columns
    with nulls answer False (the caller sorts, with nulls first).
    """
    if frame.height < 2:
        return True
    if frame.height > 100_000 and not in_order(frame.head(1_000), columns, strict=strict):
        return False  # unsorted data usually shows it at once: skip the full pass
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


def sort_rows(
    frame: pl.DataFrame, keys: list[str], event: str, created: str | None
) -> pl.DataFrame:
    """Rows stably sorted by (keys, event, created): ties keep their order (nulls first).

    Same result as ``frame.with_row_index().sort([*keys, event, created, index])``, but
    much cheaper when :func:`packed_order` applies.
    """
    ties = [(created, False)] if created else []
    order = packed_order(frame, keys, event, ties)
    if order is None:
        identity = [*keys, event, *([created] if created else [])]
        return frame.with_row_index(_POSITION).sort([*identity, _POSITION]).drop(_POSITION)
    return gather_rows(frame, order)


def gather_rows(frame: pl.DataFrame, order: pl.Series) -> pl.DataFrame:
    """``frame.gather(order)``, from one chunk: random gathers across chunks are much slower."""
    if frame.n_chunks() > 1:
        frame = frame.rechunk()
    return frame.gather(order)


def packed_order(
    frame: pl.DataFrame, keys: list[str], time: str, ties: list[tuple[str, bool]]
) -> pl.Series | None:
    """Row indices that sort by (keys, time, *ties, position), or None when it cannot pack.

    One integer key and a datetime ``time`` with a bounded span are packed into one
    ``UInt64`` (key offset in the high bits, time offset in the low ones) and sorted
    unstably: a fraction of a multi-column sort's cost on large frames. The few rows tied
    on it are then ordered by (``ties``, position) on their own; each tie column is
    ``(name, descending)``, nulls first. Keys and time must hold no nulls.
    """
    packed = _packed_key(frame, keys, time)
    if packed is None:
        return None
    order = packed.arg_sort()
    ordered = packed.gather(order)
    tied = (ordered == ordered.shift(1)).fill_null(False) | (
        ordered == ordered.shift(-1)
    ).fill_null(False)
    if tied.any():
        where = tied.arg_true()
        origin = order.gather(where)
        columns = {"__k": ordered.gather(where)}
        columns |= {f"__t{i}": frame.get_column(c).gather(origin) for i, (c, _) in enumerate(ties)}
        columns["__i"] = origin
        fixed = (
            pl.DataFrame(columns)
            .sort(
                list(columns),
                descending=[False, *(d for _, d in ties), False],
                nulls_last=False,
            )
            .get_column("__i")
        )
        order = order.scatter(where, fixed)
    return order


def known_from(frame: pl.DataFrame, keys: list[str], time: str) -> pl.Series | None:
    """Per row, the least ``time`` of this row and every later row of its key, or None.

    ``frame`` must be grouped by ``keys`` in ascending key order (e.g. sorted by them) with
    no nulls there or in ``time``. Used by the point-in-time kernel: in rank order, a row
    is "beaten by a known row" from this instant on. None when the key cannot be packed.
    """
    packed = _packed_key(frame, keys, time, with_bounds=True)
    if packed is None:
        return None
    series, low_time, bits = packed
    # the key sits in the high bits, so a later key never lowers an earlier key's minimum
    suffix = series.cum_min(reverse=True)
    offsets = (suffix % (1 << bits)).cast(pl.Int64) + low_time
    return offsets.cast(frame.schema[time]).alias(time)


@overload
def _packed_key(
    frame: pl.DataFrame, keys: list[str], event: str, *, with_bounds: Literal[True]
) -> tuple[pl.Series, int, int] | None: ...


@overload
def _packed_key(
    frame: pl.DataFrame, keys: list[str], event: str, *, with_bounds: Literal[False] = False
) -> pl.Series | None: ...


def _packed_key(
    frame: pl.DataFrame, keys: list[str], event: str, *, with_bounds: bool = False
) -> pl.Series | tuple[pl.Series, int, int] | None:
    """``(key - min) << bits(event span) | (event - min)`` as UInt64, when it fits; else None.

    With ``with_bounds``: also the least event (physical) and the number of event bits.
    """
    if len(keys) != 1 or frame.height < 2:
        return None
    key_dtype, event_dtype = frame.schema[keys[0]], frame.schema[event]
    if not key_dtype.is_integer() or not isinstance(event_dtype, pl.Datetime):
        return None
    key, e = pl.col(keys[0]), pl.col(event).to_physical()
    bounds = frame.select(
        key.min().alias("kmin"),
        key.max().alias("kmax"),
        e.min().alias("emin"),
        e.max().alias("emax"),
    ).row(0)
    kmin, kmax, emin, emax = (int(v) for v in bounds)
    key_bits, event_bits = (kmax - kmin).bit_length(), (emax - emin).bit_length()
    if key_bits > 62 or event_bits > 62 or key_bits + event_bits > 64:
        return None
    high = (key - pl.lit(kmin)).cast(pl.UInt64) * pl.lit(1 << event_bits, dtype=pl.UInt64)
    low = (e - pl.lit(emin)).cast(pl.UInt64)
    packed = frame.select((high + low).alias("k")).to_series()
    return (packed, emin, event_bits) if with_bounds else packed
