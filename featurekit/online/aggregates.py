"""Windowed aggregates online: the events are kept, the kernel runs at the lookup instant.

An aggregate moves with the clock even when no event arrives, so no value can be
precomputed. Instead a snapshot keeps, per entity, the events that a lookup at any
``t >= T`` could still count: those with ``event_ts > T - widest window`` (all of them when
a lifetime aggregate exists). A lookup decodes the requested entities' events and runs
:func:`featurekit.kernels.pit.pit_join`, the training sets' own kernel, with one label per
requested row at ``t``: online and offline cannot disagree.

Each entity is stored as one orjson value: ``[[event_us, created_us | null, [values...],
fix | null], ...]`` with values in the view's event columns order (encoded as in
:mod:`featurekit.online.snapshot`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
import polars as pl

from featurekit.kernels.aggregate import result_dtype
from featurekit.kernels.pit import ViewFrame, pit_join
from featurekit.offline.training import aggregation_specs
from featurekit.online.snapshot import (
    SnapshotMeta,
    construct_dtype,
    encode_entries,
    meta_of,
    restore_values,
    storable_expr,
)
from featurekit.storage.registry import VersionRecord

__all__ = [
    "decode_aggregates",
    "event_snapshot_entries",
    "event_snapshot_meta",
]

_UTC_US = pl.Datetime("us", "UTC")
_E, _C, _T = "__fk_online_e", "__fk_online_c", "__fk_online_t"


def retention(record: VersionRecord) -> timedelta | None:
    """How far back events can still count for a lookup after the snapshot (None: all)."""
    windows = [a.window for a in record.aggregations]
    return None if any(w is None for w in windows) else max(w for w in windows if w is not None)


def _retained(record: VersionRecord, rows: pl.LazyFrame, taken: datetime) -> pl.LazyFrame:
    """The rows a lookup at ``t >= taken`` may still count (keys and event time known)."""
    keep = retention(record)
    ts = record.timestamp
    if keep is not None:
        rows = rows.filter(pl.col(ts).cast(_UTC_US) > pl.lit(taken - keep).cast(_UTC_US))
    return rows.drop_nulls([*record.keys, ts])


def event_snapshot_meta(
    record: VersionRecord, rows: pl.LazyFrame, *, delta_version: int, taken: datetime
) -> SnapshotMeta:
    """The metadata of the event snapshot of ``rows`` at ``taken``, from aggregates only."""
    keys, columns = list(record.keys), list(record.event_columns)
    schema = rows.collect_schema()
    result_types = {a.name: result_dtype(a.function, schema[a.column]) for a in record.aggregations}
    empty = pl.DataFrame(
        schema={
            **{k: schema[k] for k in keys},
            **result_types,
            **{f"__fk_event__{c}": schema[c] for c in columns},
        }
    )
    return meta_of(record, _retained(record, rows, taken), delta_version, taken, empty, None)


def event_snapshot_entries(
    record: VersionRecord, rows: pl.DataFrame, *, taken: datetime
) -> Iterator[tuple[bytes, bytes]]:
    """The encoded retained events of every entity in ``rows`` (whole entities)."""
    keys, columns = list(record.keys), list(record.event_columns)
    ts, created = record.timestamp, record.created_timestamp
    physical = (
        _retained(record, rows.lazy(), taken)
        .select(
            *keys,
            pl.col(ts).cast(_UTC_US).dt.epoch("us").alias(_E),
            (pl.col(created).cast(_UTC_US).dt.epoch("us") if created else pl.lit(None)).alias(_C),
            *[storable_expr(c, rows.schema[c]) for c in columns],
        )
        .collect()
    )
    physical = physical.with_row_index("__fk_pos").sort([*keys, _E, _C, "__fk_pos"])
    physical = physical.drop("__fk_pos")
    floats = [i for i, c in enumerate(columns) if rows.schema[c].is_float()]
    return encode_entries(physical, len(keys), 2, floats)


def decode_aggregates(
    record: VersionRecord,
    features: Sequence[str],
    meta: SnapshotMeta,
    key_values: Sequence[Sequence[Any]],
    rows: list[int],
    values: list[bytes | None],
    t_us: int,
) -> tuple[dict[str, list[Any]], list[str]]:
    """Aggregates at ``t_us`` for each requested row, and each row's status.

    ``key_values[i]`` are the key values of distinct entity ``i``; ``rows[r]`` says which
    entity request row ``r`` asks for (-1: a null or invalid key); ``values[i]`` is the
    entity's stored events (None: unknown entity).
    """
    keys = list(meta.keys)
    schema = meta.schema
    columns = list(record.event_columns)
    data: dict[str, list[Any]] = {name: [] for name in [*keys, _E, _C, *columns]}
    lists = list(data.values())
    for entity, raw in zip(key_values, values, strict=True):
        if raw is None:
            continue
        for event_us, created_us, stored, fix in orjson.loads(raw):
            row = [*entity, event_us, created_us, *restore_values([None, None, None, stored, fix])]
            for target, value in zip(lists, row, strict=True):
                target.append(value)
    dtypes = {
        **{k: schema[k] for k in keys},
        **{c: schema[f"__fk_event__{c}"] for c in columns},
    }
    frame = pl.DataFrame(
        {
            **{k: pl.Series(k, data[k], dtype=construct_dtype(dtypes[k])) for k in keys},
            _E: pl.Series(_E, data[_E], dtype=pl.Int64),
            _C: pl.Series(_C, data[_C], dtype=pl.Int64),
            **{c: pl.Series(c, data[c], dtype=construct_dtype(dtypes[c])) for c in columns},
        }
    ).with_columns(
        *(pl.col(k).cast(dtypes[k]) for k in keys),
        *(pl.col(c).cast(dtypes[c]) for c in columns),
        pl.from_epoch(_E, "us").dt.replace_time_zone("UTC").alias(_E),
        pl.from_epoch(_C, "us").dt.replace_time_zone("UTC").alias(_C),
    )
    requested = [list(key_values[r]) if r >= 0 else [None] * len(keys) for r in rows]
    labels = pl.DataFrame(
        {
            **{
                k: pl.Series(k, [row[i] for row in requested], dtype=construct_dtype(dtypes[k]))
                for i, k in enumerate(keys)
            },
            _T: pl.Series(_T, [t_us] * len(rows), dtype=pl.Int64),
        }
    ).with_columns(
        *(pl.col(k).cast(dtypes[k]) for k in keys),
        pl.from_epoch(_T, "us").dt.replace_time_zone("UTC").alias(_T),
    )
    specs = aggregation_specs(record, features)
    view = ViewFrame(
        name=record.view,
        frame=frame,
        keys=tuple(keys),
        timestamp=_E,
        created_timestamp=_C if record.created_timestamp else None,
        features=tuple(s.name for s in specs),
        ttl=None,
        aggregations=specs,
    )
    joined = pit_join(labels, timestamp=_T, views=[view], point_in_time="knowledge")
    width = len(labels.columns)
    out = {
        s.name: joined.get_column(joined.columns[width + i]).to_list() for i, s in enumerate(specs)
    }
    statuses = ["present" if r >= 0 and values[r] is not None else "not_found" for r in rows]
    return out, statuses
