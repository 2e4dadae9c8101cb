"""The point-in-time join kernel: polars in, polars out, no I/O.

For each label row (keys k, time t) and each view, pick the row r with r.keys == k,
r.event_ts <= t, inside the TTL, and (knowledge mode, when rows carry a created time)
r.created_ts <= t, whose (event_ts, created_ts, position) is greatest. See docs/pit.md.

How: rows are ranked once by (keys, event_ts, created_ts, position). A row becomes a
candidate at ``avail = max(event_ts, created_ts)``; a running maximum of the rank in
``avail`` order per entity gives, at every instant, the best candidate known so far. One
backward as-of join on ``avail`` then finds each label's best candidate, and the TTL is
checked on that row's event time (if the best candidate is too old, every other one is
older still). Cost: two sorts of the view rows and one of the labels, linear otherwise.

Fast paths (same answers; tests/integration/test_perf_kernel.py compares them): stored
rows are usually already in rank order, so their sort is skipped; with one integer key,
the ``avail``-order re-sort is replaced by a suffix minimum of ``avail`` in rank order
(see ``_join_one``), and sorts by (key, time) use one packed ``UInt64`` key. With one
integer key of up to 64 bits, that match, the TTL check and the gather run in numpy on
flat arrays (``_packed_join``), in place where they can: at a bucket's size (hundreds of
thousands of rows) polars' frames between steps and fresh memory for each cost more than
the arithmetic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

import numpy as np
import polars as pl

from featurekit.core.definitions import Aggregation
from featurekit.core.errors import DefinitionError, SchemaError
from featurekit.core.timeutil import to_utc_expr
from featurekit.kernels.aggregate import aggregate
from featurekit.kernels.frames import Packing, gather_rows, in_order, last_of_runs, packed_order

PointInTime = Literal["knowledge", "event"]
TimeUnit = Literal["us", "ns"]

_IDX = "__fk_label_idx"
_T = "__fk_t"
_E = "__fk_e"
_C = "__fk_c"
_AVAIL = "__fk_avail"
_RANK = "__fk_rank"
_BEST = "__fk_best"
_PACKED = "__fk_packed"
_PACKED_R = "__fk_packed_right"


@dataclass(frozen=True)
class ViewFrame:
    """One view's rows, as the kernel needs them.

    Attributes:
        name: view name, used for clash-safe output names (``view__feature``).
        frame: the view's rows in output order (later rows win exact ties), or a function
            that loads them: the kernel then loads one view at a time and lets it go
            before the next, so several big views never sit in memory together.
        keys: entity key columns, named the same in the labels.
        timestamp: event-time column.
        created_timestamp: knowledge-time column, or None.
        features: feature columns to attach, in output order.
        ttl: maximum age of a value at the label's time (inclusive), or None.
        aggregations: for aggregation views, the windowed aggregates to compute (their
            names are the ``features``); the rows are then events, not values.
    """

    name: str
    frame: pl.DataFrame | Callable[[], pl.DataFrame]
    keys: tuple[str, ...]
    timestamp: str
    created_timestamp: str | None
    features: tuple[str, ...]
    ttl: timedelta | None
    aggregations: tuple[Aggregation, ...] = ()

    def loaded(self) -> LoadedView:
        """This view with its rows in memory."""
        frame = self.frame if isinstance(self.frame, pl.DataFrame) else self.frame()
        return replace(self, frame=frame)  # type: ignore[return-value]


class LoadedView(ViewFrame):
    """A :class:`ViewFrame` whose rows are in memory (for type checkers only)."""

    frame: pl.DataFrame


def output_names(label_columns: Sequence[str], views: Sequence[ViewFrame]) -> list[str]:
    """Output column name per requested feature: ``feature``, or ``view__feature`` on a clash."""
    counts = Counter(f for v in views for f in v.features)
    taken = set(label_columns)
    return [
        f"{v.name}__{f}" if counts[f] > 1 or f in taken else f for v in views for f in v.features
    ]


def pit_join(
    labels: pl.DataFrame,
    *,
    timestamp: str,
    views: Sequence[ViewFrame],
    point_in_time: PointInTime = "knowledge",
) -> pl.DataFrame:
    """Attach each view's point-in-time-correct feature values to ``labels``.

    Labels come back with the same rows in the same order, plus one column per feature.

    Example:
        >>> out = pit_join(labels, timestamp="label_ts", views=[ViewFrame(...)])
    """
    if timestamp not in labels.columns:
        raise SchemaError(
            f"label timestamp column {timestamp!r} is not in the labels; "
            f"columns are {labels.columns}."
        )
    if point_in_time not in ("knowledge", "event"):
        raise DefinitionError(
            f"point_in_time must be 'knowledge' or 'event', got {point_in_time!r}."
        )
    to_utc_expr(timestamp, labels.schema[timestamp], what="label timestamp")  # checks dtype
    names = output_names(labels.columns, views)
    columns: list[pl.Series] = []
    sorted_labels: dict[tuple[object, ...], pl.DataFrame] = {}  # views sharing keys share a sort
    for lazy_view in views:
        values, where = _view_columns(labels, timestamp, lazy_view, point_in_time, sorted_labels)
        if where is not None:
            values = _in_label_order(values, where, labels.height)
        columns.extend(values.get_columns())
    renamed = [s.alias(n) for s, n in zip(columns, names, strict=True)]
    return labels.hstack(renamed)


def pit_join_unordered(
    labels: pl.DataFrame,
    *,
    timestamp: str,
    view: ViewFrame,
    point_in_time: PointInTime = "knowledge",
) -> tuple[pl.DataFrame, pl.Series | None]:
    """One view's feature columns for ``labels``, in the order the join produced them.

    Row ``i`` of the values belongs to label ``positions[i]`` (``positions`` is None when
    the rows are already in label order). The values are exactly :func:`pit_join`'s, only
    not yet put back in label order: a caller that joins labels in parts (buckets) and
    reorders them anyway puts each row in place once instead of twice. Every label has
    exactly one row (labels without a key or time get nulls, as in :func:`pit_join`).
    """
    if timestamp not in labels.columns:
        return pit_join(labels, timestamp=timestamp, views=[view]), None  # refuses, named
    if point_in_time not in ("knowledge", "event"):
        raise DefinitionError(
            f"point_in_time must be 'knowledge' or 'event', got {point_in_time!r}."
        )
    to_utc_expr(timestamp, labels.schema[timestamp], what="label timestamp")  # checks dtype
    names = output_names(labels.columns, [view])
    values, where = _view_columns(labels, timestamp, view, point_in_time, {})
    values.columns = names[-values.width :] if values.width else []
    if where is None or where.len() == labels.height:
        return values, where
    # labels without a key or time match nothing: their (null) rows go last
    seen = pl.repeat(False, labels.height, eager=True).scatter(where, True)
    missing = (~seen).arg_true().cast(where.dtype)
    nulls = pl.DataFrame(
        [
            pl.repeat(None, missing.len(), dtype=d, eager=True).alias(n)
            for n, d in values.schema.items()
        ]
    )
    return pl.concat([values, nulls]), pl.concat([where, missing])


def _view_columns(
    labels: pl.DataFrame,
    timestamp: str,
    lazy_view: ViewFrame,
    point_in_time: PointInTime,
    sorted_labels: dict[tuple[object, ...], pl.DataFrame],
) -> tuple[pl.DataFrame, pl.Series | None]:
    """One view's values and the label each row belongs to (None: in label order)."""
    view = lazy_view.loaded()  # released when the next view is loaded
    unit = _time_unit(labels.schema[timestamp], view)
    label_keys, row_keys = _aligned_keys(labels, view)
    rows = None
    if not view.aggregations:
        knowledge = point_in_time == "knowledge" and view.created_timestamp is not None
        rows = _ordered_rows(view, row_keys, knowledge, unit)
        packed = _packed_join(labels, timestamp, label_keys, rows, view, knowledge, unit)
        if packed is not None:
            return packed
    cache_key = (tuple(str(k) for k in label_keys), unit)
    if cache_key not in sorted_labels:
        t_expr = to_utc_expr(
            timestamp, labels.schema[timestamp], what="label timestamp", time_unit=unit
        )
        base = (
            labels.select([*label_keys, t_expr.alias(_T)])
            .with_row_index(_IDX)
            .drop_nulls([*view.keys, _T])
        )
        order = packed_order(base, list(view.keys), _T, [])
        sorted_labels[cache_key] = (
            gather_rows(base, order) if order is not None else base.sort([*view.keys, _T])
        )
    left = sorted_labels[cache_key]
    if rows is None:
        return _aggregate_one(left, labels.height, view, row_keys, point_in_time, unit), None
    return _join_one(left, view, rows, point_in_time, unit)


def _time_unit(label_dtype: pl.DataType, view: LoadedView) -> TimeUnit:
    """Compare in nanoseconds when any side has them, so no instant is rounded away."""
    columns = [view.timestamp, view.created_timestamp]
    dtypes = [label_dtype] + [view.frame.schema.get(c) for c in columns if c]
    nano = any(isinstance(d, pl.Datetime) and d.time_unit == "ns" for d in dtypes)
    return "ns" if nano else "us"


def _join_one(
    left: pl.DataFrame,
    view: LoadedView,
    ordered: pl.DataFrame,
    point_in_time: PointInTime,
    unit: TimeUnit,
) -> tuple[pl.DataFrame, pl.Series]:
    """Feature values of one view for the labels in ``left``'s order, and each row's label.

    ``left`` holds the labels' keys, UTC time and row index, sorted by (keys, time);
    ``ordered`` the view's rows from :func:`_ordered_rows`.
    ``chosen`` follows that order, so it mostly ascends: gathering in that order reads the
    (multi-file, chunked) rows nearly sequentially; only the small result is then permuted
    into label order (:func:`_in_label_order`). Gathering in label order instead jumps
    across chunks at random, about 3x slower.
    """
    keys = list(view.keys)
    knowledge = point_in_time == "knowledge" and view.created_timestamp is not None
    rows = _ranked(ordered, knowledge)
    packing = Packing.of(rows, keys, _AVAIL)
    if packing is not None:
        matched = _packed_match(left, rows, keys[0], packing, ordered=not knowledge)
    else:
        matched = _general_match(left, rows, keys, knowledge)
    chosen = matched[_BEST]
    if view.ttl is not None:
        expired = _older_than(matched[_T], rows[_E].gather(chosen), view.ttl, unit)
        chosen = pl.select(pl.when(expired).then(None).otherwise(chosen)).to_series()
    values = rows.select(view.features).gather(chosen.cast(pl.get_index_type()))
    return values, matched[_IDX]


#: integer key dtypes the numpy path reads as 64-bit integers (wider ones take polars')
INTEGER_KEYS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


def _packed_join(
    labels: pl.DataFrame,
    timestamp: str,
    label_keys: list[pl.Expr],
    rows: pl.DataFrame,
    view: LoadedView,
    knowledge: bool,
    unit: TimeUnit,
) -> tuple[pl.DataFrame, pl.Series] | None:
    """:func:`_join_one`'s answer for one integer key, in numpy; None when it does not apply.

    The same steps as :func:`_packed_match` and the TTL check, on the ``rows`` of
    :func:`_ordered_rows` (whose position is the rank): each row's "known from" instant
    packed with its key (a suffix minimum of ``avail`` in rank order), one binary search
    per label for the greatest rank known by its time, a match in another entity
    discarded, then the TTL. The labels are sorted here too, by their packed value (so
    the searches and the gather walk the rows in order), in any order among equal ones:
    they get the same answer, each with its own label position. At a bucket's size
    polars' per-call overhead and the frames it builds between steps cost more than
    these few passes over flat arrays.
    """
    keys = list(view.keys)
    if len(keys) != 1 or rows.height < 2 or rows.schema[keys[0]] not in INTEGER_KEYS:
        return None
    t_expr = to_utc_expr(
        timestamp, labels.schema[timestamp], what="label timestamp", time_unit=unit
    )
    base = labels.select(label_keys[0], t_expr.alias(_T))
    if base.schema[keys[0]] != rows.schema[keys[0]]:
        return None
    present = None
    if base.get_column(keys[0]).null_count() or base.get_column(_T).null_count():
        base = base.with_row_index(_IDX).drop_nulls([keys[0], _T])  # those match nothing
        present = base.get_column(_IDX).to_numpy()
    wide = np.uint64 if rows.schema[keys[0]].is_unsigned_integer() else np.int64
    key = rows.get_column(keys[0]).to_numpy().astype(wide, copy=False)
    event = _instants(rows.get_column(_E))
    # in place where it can be: every pass over a bucket's rows costs memory bandwidth
    avail = np.maximum(event, _instants(rows.get_column(_C))) if knowledge else event
    # rows are in (key, event) order: the key's bounds are its ends
    key_min, key_max = key[0], key[-1]
    time_min, time_max = int(avail.min()), int(avail.max())
    key_bits, bits = int(key_max - key_min).bit_length(), (time_max - time_min).bit_length()
    if key_bits > 62 or bits > 62 or key_bits + bits > 64:
        return None
    shift = np.uint64(bits)
    known = np.subtract(key, key_min).view(np.uint64)
    np.left_shift(known, shift, out=known)
    offset = np.subtract(avail, time_min, out=avail if avail is not event else None)
    np.bitwise_or(known, offset.view(np.uint64), out=known)
    del offset, avail
    if knowledge:  # event order sorts avail = event already: the minimum would be an identity
        _suffix_min(known)
    label_key = base.get_column(keys[0]).to_numpy().astype(wide, copy=False)
    t = _instants(base.get_column(_T))
    # unreachable labels (unknown keys, earlier than every row) wrap around here; they
    # are discarded below. Later than every row, a label's time is clipped: it sees all.
    label_offset = (label_key - key_min).view(np.uint64)
    packed = (label_offset << shift) | (np.minimum(t, time_max) - time_min).view(np.uint64)
    order = np.argsort(packed)
    packed, label_key, label_offset, t = (
        packed[order],
        label_key[order],
        label_offset[order],
        t[order],
    )
    reachable = (label_key >= key_min) & (label_key <= key_max) & (t >= time_min)
    position = np.searchsorted(known, packed, side="right") - 1
    before = position < 0  # earlier than anything is known for the first entity
    position[before] = 0
    chosen = reachable & ~before & ((known[position] >> shift) == label_offset)
    if view.ttl is not None:
        chosen &= ~_expired(t, event[position], view.ttl, unit)
    where = order if present is None else present[order]
    values = _gathered(rows, view.features, position, chosen)
    return values, pl.Series(where, dtype=pl.get_index_type())


def _gathered(
    rows: pl.DataFrame, features: Sequence[str], position: np.ndarray, chosen: np.ndarray
) -> pl.DataFrame:
    """``rows[position]`` of each feature, null where not ``chosen``; ``position`` ascends.

    Column by column with an index without nulls, then masked: a frame's gather by an
    index with nulls costs several times as much at a bucket's size.
    """
    columns = [_gather_ascending(rows.get_column(f), position) for f in features]
    if chosen.all():
        return pl.DataFrame(columns)
    keep = pl.Series(chosen)
    return pl.DataFrame(columns).select(pl.when(keep).then(pl.all()))


def _gather_ascending(column: pl.Series, position: np.ndarray) -> pl.Series:
    """``column[position]`` for ascending positions, chunk by chunk.

    A column in several chunks (a bucket of several files) would have each position's
    chunk looked up; the ascending positions of one chunk are one run, gathered from
    that chunk alone.
    """
    index = pl.get_index_type()
    if column.n_chunks() == 1:
        return column.gather(pl.Series(position, dtype=index))
    bounds = np.cumsum([0, *column.chunk_lengths()])
    cuts = [0, *np.searchsorted(position, bounds[1:-1]).tolist(), position.size]
    pieces = [
        chunk.gather(pl.Series(position[a:b] - first, dtype=index))
        for chunk, a, b, first in zip(
            column.get_chunks(), cuts[:-1], cuts[1:], bounds[:-1].tolist(), strict=True
        )
    ]
    return pl.concat(pieces, rechunk=True)


def _instants(series: pl.Series) -> np.ndarray:
    """A datetime column's physical values (no nulls) as int64."""
    return series.to_physical().to_numpy().astype(np.int64, copy=False)


def _suffix_min(values: np.ndarray) -> None:
    """Each value's minimum with every later one, in place (``values`` mostly ascend).

    A value above its successor takes the successor's value, pass after pass: on mostly
    ascending data a few passes settle it (each writes only the descents), where a
    reversed running minimum walks every value one at a time; long chains finish with it.
    """
    for _ in range(4):
        down = np.flatnonzero(values[:-1] > values[1:])
        if not down.size:
            return
        values[down] = values[down + 1]
    np.minimum.accumulate(values[::-1], out=values[::-1])


def _expired(t: np.ndarray, event: np.ndarray, ttl: timedelta, unit: TimeUnit) -> np.ndarray:
    """``t - event > ttl`` for rows known by ``t`` (so ``event <= t``).

    The age is taken as unsigned 64-bit: it is never negative, and below 2**64 for any two
    64-bit instants, where a signed difference could wrap (a row clamped to 1677 at a
    label in 2026, in nanoseconds; see :func:`_older_than`).
    """
    per_us = 1000 if unit == "ns" else 1
    limit = int(ttl / timedelta(microseconds=1)) * per_us
    if limit < 0:
        return np.ones(t.shape, dtype=np.bool_)
    if limit >= 1 << 64:
        return np.zeros(t.shape, dtype=np.bool_)
    age = t.view(np.uint64) - event.view(np.uint64)
    return age > np.uint64(limit)


def _older_than(t: pl.Series, event: pl.Series, ttl: timedelta, unit: TimeUnit) -> pl.Series:
    """``t - event > ttl``, computed in 128 bits.

    Nanosecond instants span 584 years, so the age of a row clamped to 1677 at a label in
    2026 does not fit a 64-bit nanosecond duration: it would wrap around, negative, and
    look fresh.
    """
    per_us = 1000 if unit == "ns" else 1
    limit = int(ttl / timedelta(microseconds=1)) * per_us
    age = t.to_physical().cast(pl.Int128) - event.to_physical().cast(pl.Int128)
    return age.to_frame("age").select(pl.col("age") > pl.lit(limit, pl.Int128)).to_series()


def _in_label_order(values: pl.DataFrame, label_index: pl.Series, height: int) -> pl.DataFrame:
    """Row ``i`` of ``values`` moved to row ``label_index[i]``; labels absent get nulls."""
    index = pl.get_index_type()
    position = pl.repeat(None, height, dtype=index, eager=True).scatter(
        label_index, pl.int_range(0, label_index.len(), dtype=index, eager=True)
    )
    return values.gather(position)


def _packed_match(
    left: pl.DataFrame, rows: pl.DataFrame, key: str, packing: Packing, *, ordered: bool = False
) -> pl.DataFrame:
    """Each label's best known row (``_BEST``) for one integer key: no re-sort, no hashing.

    In rank order, "known from" (the least ``avail`` of a row and every better row of its
    entity) never decreases, and the best row known at t is the greatest rank whose
    "known from" is <= t: any better row would itself be known by t. Packed with the key,
    those instants form one sorted ``UInt64`` column; one as-of search on it (no ``by``)
    answers every label, and a match that lands in another entity is discarded.

    ``ordered``: ``avail`` is the event time (event mode, or no created time), which rank
    order already sorts within each entity; "known from" is then ``avail`` itself, and
    the running minimum (an identity on a sorted column) is skipped.
    """
    known = packing.expr(key, _AVAIL)
    if not ordered:
        known = known.cum_min(reverse=True)
    right = rows.select(known.alias(_PACKED_R), pl.col(_RANK).alias(_BEST)).filter(
        last_of_runs([_PACKED_R])  # the best row of each run of equal instants
    )
    t = pl.col(_T).to_physical()
    # labels of unknown entities, or earlier than anything is known, match nothing; later
    # than everything is known, they see every row: clip them onto the packing's range
    reachable = pl.col(key).is_between(packing.key_min, packing.key_max) & (t >= packing.time_min)
    probe = left.filter(reachable).with_columns(_packed_label(packing, key).alias(_PACKED))
    matched = probe.join_asof(
        right,
        left_on=_PACKED,
        right_on=_PACKED_R,
        strategy="backward",
        check_sortedness=False,  # labels sorted by (key, time), rows by (key, known from)
    )
    same = packing.key_of(pl.col(_PACKED)) == packing.key_of(pl.col(_PACKED_R))
    return matched.select(_IDX, _T, pl.when(same).then(pl.col(_BEST)).alias(_BEST))


def _packed_label(packing: Packing, key: str) -> pl.Expr:
    """A label's (key, time) packed like the rows' instants, its time clipped to their range."""
    return packing.expr(key, pl.col(_T).to_physical().clip(upper_bound=packing.time_max))


def _general_match(
    left: pl.DataFrame, rows: pl.DataFrame, keys: list[str], knowledge: bool
) -> pl.DataFrame:
    """Each label's best known row (``_BEST``), any keys."""
    # General path: running best rank in (keys, avail) order. Ranks grow with the keys, so a
    # plain cum_max never carries a value across entities. Within equal avail, ranks go
    # descending: every row of a tie then holds the tie's best, whichever one the as-of
    # join lands on.
    candidates = rows.select([*keys, _AVAIL, _RANK])
    # in event mode (or when nothing is known after it happened) avail order is rank order,
    # and only exact ties need the re-sort; otherwise a known-late row makes it likely
    maybe_in_order = not knowledge or not rows.select((pl.col(_C) > pl.col(_E)).any()).item()
    if maybe_in_order and in_order(candidates, [*keys, _AVAIL], strict=True):
        candidates = candidates.select([*keys, _AVAIL, pl.col(_RANK).alias(_BEST)])
    else:
        candidates = candidates.sort(
            [*keys, _AVAIL, _RANK], descending=[False] * (len(keys) + 1) + [True]
        )
        candidates = candidates.with_columns(pl.col(_RANK).cum_max().alias(_BEST)).select(
            [*keys, _AVAIL, _BEST]
        )
    return left.join_asof(
        candidates,
        left_on=_T,
        right_on=_AVAIL,
        by=keys,
        strategy="backward",
        check_sortedness=False,  # sorted by (keys, time): sorted within every entity
    )


def _aggregate_one(
    left: pl.DataFrame,
    height: int,
    view: LoadedView,
    row_keys: list[pl.Expr],
    point_in_time: PointInTime,
    unit: TimeUnit,
) -> pl.DataFrame:
    """Windowed aggregates of one aggregation view, aligned to the labels."""
    keys = list(view.keys)
    knowledge = point_in_time == "knowledge" and view.created_timestamp is not None
    columns = sorted({s.column for s in view.aggregations})
    for col in (*keys, view.timestamp, *columns):
        if col not in view.frame.columns:
            raise SchemaError(
                f"view {view.name!r} has no column {col!r}; its columns are {view.frame.columns}."
            )
    events = _event_times(view, row_keys, unit, [pl.col(c) for c in columns if c not in keys])
    events = events.drop_nulls([*keys, _E])
    if knowledge:
        events = events.drop_nulls([_C])
    return aggregate(
        left, height, events, keys=keys, specs=view.aggregations, knowledge=knowledge, unit=unit
    )


def _event_times(
    view: LoadedView, row_keys: list[pl.Expr], unit: TimeUnit, extra: list[pl.Expr]
) -> pl.DataFrame:
    """Keys, UTC event time ``__fk_e`` (and created time ``__fk_c``), then ``extra``."""
    frame = view.frame
    e = to_utc_expr(
        view.timestamp,
        frame.schema[view.timestamp],
        what=f"view {view.name!r} timestamp",
        time_unit=unit,
    )
    selected = [*row_keys, e.alias(_E)]
    if view.created_timestamp is not None:
        c = to_utc_expr(
            view.created_timestamp,
            frame.schema[view.created_timestamp],
            what=f"view {view.name!r} created timestamp",
            time_unit=unit,
        )
        selected.append(c.alias(_C))
    return frame.select([*selected, *extra])


def _ordered_rows(
    view: LoadedView, row_keys: list[pl.Expr], knowledge: bool, unit: TimeUnit
) -> pl.DataFrame:
    """View rows in (keys, event, created, position) order: keys, ``__fk_e`` (and
    ``__fk_c``), then the features; rows without a key or time (or, ``knowledge``, a
    created time) dropped."""
    frame = view.frame
    keys = list(view.keys)
    for col in (*keys, view.timestamp, *view.features):
        if col not in frame.columns:
            raise SchemaError(
                f"view {view.name!r} has no column {col!r}; its columns are {frame.columns}."
            )
    order = [*keys, _E, *([_C] if view.created_timestamp is not None else [])]
    features = [pl.col(f) for f in view.features if f not in keys]
    rows = _event_times(view, row_keys, unit, features)
    required = [*keys, _E, *([_C] if knowledge else [])]
    if any(rows.get_column(c).null_count() for c in required):
        rows = rows.drop_nulls(required)  # only then: it copies every column
    if not in_order(rows, order, strict=False):  # stored tables usually are: skip the sort
        rows = rows.sort(order, maintain_order=True, nulls_last=False)
    return rows


def _ranked(rows: pl.DataFrame, knowledge: bool) -> pl.DataFrame:
    """:func:`_ordered_rows`' rows with their rank (position) and ``avail``."""
    avail = pl.max_horizontal(_E, _C) if knowledge else pl.col(_E)
    return rows.with_row_index(_RANK).with_columns(avail.alias(_AVAIL))


def _aligned_keys(labels: pl.DataFrame, view: LoadedView) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """Key expressions for labels and view rows, cast to one common dtype per key."""
    label_exprs: list[pl.Expr] = []
    row_exprs: list[pl.Expr] = []
    for key in view.keys:
        if key not in labels.columns:
            raise SchemaError(
                f"labels have no key column {key!r} needed by view {view.name!r}; "
                f"label columns are {labels.columns}."
            )
        if key not in view.frame.columns:
            raise SchemaError(f"view {view.name!r} has no key column {key!r}.")
        common = _common_key_dtype(key, labels.schema[key], view.frame.schema[key], view.name)
        label_exprs.append(pl.col(key).cast(common))
        row_exprs.append(pl.col(key).cast(common))
    return label_exprs, row_exprs


def _common_integer(left: pl.DataType, right: pl.DataType) -> pl.DataType:
    """An integer dtype holding every value of both: UInt64 beside a signed key is Int128
    (a negative label key next to keys above 2**63 must neither fail nor wrap)."""
    both = (left, right)
    if pl.UInt128 in both:
        return pl.UInt128() if all(d.is_unsigned_integer() for d in both) else pl.Int128()
    if pl.Int128 in both:
        return pl.Int128()
    if pl.UInt64 in both:
        return pl.UInt64() if all(d.is_unsigned_integer() for d in both) else pl.Int128()
    return pl.Int64()


def _common_key_dtype(key: str, left: pl.DataType, right: pl.DataType, view: str) -> pl.DataType:
    if left == right and not isinstance(left, pl.Categorical | pl.Enum):
        return left
    if left.is_integer() and right.is_integer():
        return _common_integer(left, right)
    stringy = (pl.String, pl.Categorical, pl.Enum)
    if isinstance(left, stringy) and isinstance(right, stringy):
        return pl.String()
    if left == pl.Null:
        return right
    raise SchemaError(
        f"key column {key!r} is {left} in the labels but {right} in view {view!r}; "
        f"cast the labels' column, e.g. pl.col({key!r}).cast(pl.{right})."
    )
