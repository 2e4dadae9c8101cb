"""Small frame helpers shared by the kernel and materialization (pure, polars only)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

_POSITION = "__fk_position"
_PACKED = "__fk_packed"


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
    return _rows_in_order(frame, columns, strict=strict)


def _rows_in_order(frame: pl.DataFrame, columns: list[str], *, strict: bool) -> bool:
    """Each row compared with the one before it: out of order when, all earlier columns
    equal, a column goes down (or, ``strict``, the whole row repeats).

    One fused pass that only looks for a step back: about half the cost of packing the
    first two columns and testing that for sortedness, which this replaced.
    """
    back = pl.lit(False)
    equal = pl.lit(True)
    for i, col in enumerate(columns):
        current, previous = pl.col(col), pl.col(col).shift(1)
        last = i == len(columns) - 1
        back = back | (equal & ((current <= previous) if strict and last else current < previous))
        if not last:
            equal = equal & (current == previous)
    return not frame.select(back.slice(1).any()).item()


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
    frame: pl.DataFrame,
    keys: list[str],
    event: str,
    created: str | None,
    *,
    unique: bool = False,
    lead: str | None = None,
) -> pl.DataFrame:
    """Rows stably sorted by (keys, event, created): ties keep their order (nulls first).

    Same result as ``frame.with_row_index().sort([*keys, event, created, index])``, but
    much cheaper when a :class:`Packing` applies: one stable sort on a packed ``UInt64``
    (polars' streaming engine moves whole rows while sorting, cheaper than an arg-sort
    followed by a random gather of every column), then the few rows tied on it are put in
    ``created`` order on their own. ``unique=True`` also keeps only the last row of each
    run of equal (keys, event, created), as ``filter(last_of_runs(...))`` would; the
    packed path finds those runs among the tied rows, without another pass.

    ``lead`` names a column of small non-negative integers that is a function of the keys
    (a row's bucket): it then leads the order, (lead, keys, event, created), so each of
    its values is one run of rows. Packed into the high bits when they are free (no extra
    cost), else the rows are grouped by it after the sort.
    """
    identity = [*keys, event, *([created] if created else [])]
    packing = Packing.of(frame, keys, event)
    if packing is None:
        order = [*([lead] if lead else []), *identity, _POSITION]
        ordered = frame.with_row_index(_POSITION).sort(order).drop(_POSITION)
        return ordered.filter(last_of_runs(identity)) if unique else ordered
    packed_expr = packing.expr(keys[0], event)
    width = (packing.key_max - packing.key_min).bit_length() + packing.bits
    leading = False
    if lead is not None:
        top = int(frame.get_column(lead).max() or 0)  # type: ignore[arg-type]
        leading = width + top.bit_length() <= 64
        if leading and top:  # (all zero: nothing to add, and 1 << 64 has no UInt64)
            high = pl.col(lead).cast(pl.UInt64) * pl.lit(1 << width, pl.UInt64)
            packed_expr = packed_expr + high
    ordered = (
        frame.lazy()
        .with_columns(packed_expr.alias(_PACKED))
        .sort(_PACKED, maintain_order=True)
        .collect(engine="streaming")
    )
    packed = ordered.get_column(_PACKED)
    columns = ordered.drop(_PACKED).get_columns()
    del ordered  # the columns are now the only owners: scatter can write in place
    position = None if created is None else frame.columns.index(created)
    repeated = _order_ties(columns, packed, position)
    out = pl.DataFrame(columns)
    if unique and repeated is not None and repeated.len():
        keep = pl.repeat(True, out.height, eager=True).scatter(repeated, False)
        out = out.filter(keep)
    if lead is not None and not leading:
        out = grouped_by(out, lead)
    return out


def grouped_by(frame: pl.DataFrame, lead: str) -> pl.DataFrame:
    """``frame``'s rows stably grouped by the small non-negative integers in ``lead``."""
    return frame[group_order(frame.get_column(lead).to_numpy())]


def group_order(values: np.ndarray) -> np.ndarray:
    """The stable order that groups small non-negative integers (bucket ids) by value."""
    if values.size and values.max() < 1 << 15:
        values = values.astype(np.int16)  # numpy sorts 16-bit values by radix: linear time
    return np.argsort(values, kind="stable")


def _order_ties(
    columns: list[pl.Series], packed: pl.Series, created: int | None
) -> pl.Series | None:
    """Reorder rows tied on ``packed`` by (created, position), nulls first, in place.

    Ties are rare (same key and event time), so only they are gathered, sorted and
    scattered back; every other row stays where the stable sort put it. A column nobody
    else holds is written in place (polars copies shared ones, which is slower, not wrong).
    Returns the rows (in the new order) followed by an equal row (same packed value and
    created time): the ones a dedupe that keeps the last of each run drops. None: no ties.
    """
    tied = (packed == packed.shift(1)).fill_null(False) | (packed == packed.shift(-1)).fill_null(
        False
    )
    if not tied.any():
        return None
    where = tied.arg_true()
    ties = {"__k": packed.gather(where)}
    if created is not None:
        ties["__c"] = columns[created].gather(where)
        fixed = (
            pl.DataFrame({**ties, "__i": where})
            .sort(["__k", "__c", "__i"], nulls_last=False)
            .get_column("__i")
        )
        moved = fixed != where  # ties that arrived in created order stay where they are
        if moved.any():
            _scatter_all(columns, where.filter(moved), fixed.filter(moved))
            ties["__c"] = columns[created].gather(where)
    # ``where`` lists each run of tied rows whole and in order, so within it a row and the
    # next are neighbours in the frame whenever they belong to the same run
    last = pl.DataFrame(ties).select(last_of_runs(list(ties))).to_series()
    return where.filter(~last)


#: rows from which :func:`_scatter_all` writes its columns on two threads
_THREADED_SCATTER = 1 << 20


def _scatter_all(columns: list[pl.Series], where: pl.Series, source: pl.Series) -> None:
    """``column[where] = column[source]`` for every column, in place where polars can.

    A column polars cannot write in place (the streaming sort's output shares its
    buffers) is copied whole: mostly page faults on new memory, so on a large frame the
    columns are written from two threads (10M rows, ten columns: 0.1 s against 0.3).
    """

    def scatter(column: pl.Series) -> None:
        column.scatter(where, column.gather(source))

    if not columns or columns[0].len() < _THREADED_SCATTER:
        for column in columns:
            scatter(column)
        return
    with ThreadPoolExecutor(2, thread_name_prefix="featurekit-scatter") as pool:
        list(pool.map(scatter, columns))


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
    # numpy's unstable sort of a UInt64 column is several times cheaper than polars' and
    # single-threaded (buckets already run one per core); the ties it leaves in any order
    # are put in their one order below, so the result is the same
    order = pl.Series(np.argsort(packed.to_numpy()), dtype=pl.get_index_type())
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


@dataclass(frozen=True)
class Packing:
    """One ``UInt64`` per (integer key, datetime): key offset high, time offset low.

    Ordering packed values orders by (key, time); a later key's values all exceed an
    earlier key's, so running minima and as-of searches never cross entities unseen.
    """

    key_min: int
    key_max: int
    time_min: int  # physical (integer) datetime value
    time_max: int
    bits: int  # bits of the time offset

    @staticmethod
    def of(frame: pl.DataFrame, keys: list[str], time: str) -> Packing | None:
        """The packing of ``frame``'s values, or None (several keys, non-integer key, too wide)."""
        if len(keys) != 1 or frame.height < 2:
            return None
        key_dtype, time_dtype = frame.schema[keys[0]], frame.schema[time]
        if not key_dtype.is_integer() or not isinstance(time_dtype, pl.Datetime):
            return None
        key, t = pl.col(keys[0]), pl.col(time).to_physical()
        bounds = frame.select(
            key.min().alias("kmin"),
            key.max().alias("kmax"),
            t.min().alias("lo"),
            t.max().alias("hi"),
        )
        kmin, kmax, tmin, tmax = (int(v) for v in bounds.row(0))
        key_bits, bits = (kmax - kmin).bit_length(), (tmax - tmin).bit_length()
        if key_bits > 62 or bits > 62 or key_bits + bits > 64:
            return None
        return Packing(kmin, kmax, tmin, tmax, bits)

    def expr(self, key: str, time: str | pl.Expr) -> pl.Expr:
        """The packed value of ``key`` and ``time`` (a column, or an expression giving the
        physical time); both must lie inside the packing's bounds."""
        wide = pl.UInt64 if self.key_min >= 0 else pl.Int64  # no overflow in narrow ints
        offset = (pl.col(key).cast(wide) - self.key_min).cast(pl.UInt64)
        t = pl.col(time).to_physical() if isinstance(time, str) else time
        return offset * pl.lit(1 << self.bits, pl.UInt64) + (t - self.time_min).cast(pl.UInt64)

    def key_of(self, packed: pl.Expr) -> pl.Expr:
        """The key offset of packed values (equal offsets: equal keys)."""
        return packed // (1 << self.bits)


def _packed_key(frame: pl.DataFrame, keys: list[str], event: str) -> pl.Series | None:
    """Packed (key, event) values of ``frame`` (see :class:`Packing`), or None."""
    packing = Packing.of(frame, keys, event)
    if packing is None:
        return None
    return frame.select(packing.expr(keys[0], event)).to_series()
