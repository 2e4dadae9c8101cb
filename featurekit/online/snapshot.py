"""What a materialization writes online, computed by the training sets' point-in-time kernel.

One code path defines the value: a snapshot is :func:`featurekit.kernels.pit.pit_join` run on the
view version's stored rows with one label per entity at the snapshot instant ``T``
(knowledge mode, no TTL). The chosen row's event and created times are stored with its
values, so the TTL is applied at lookup time against the lookup instant, exactly as a
training set applies it against the label's time.

Rows that only become candidates after ``T`` (event or created time in the future) are
not dropped: every entity also gets a label at each such instant, and the kernel's answer
at each one is kept where it changes. A lookup at ``t >= T`` takes the last entry valid
at ``t``, which is what ``training_set`` returns for a label at ``t``.

Each entity is stored as one small orjson value::

    [[valid_from_us | null, event_us | null, created_us | null, [values...], fix | null], ...]

(``valid_from`` null: valid from ``T``; temporal values as integers in their unit;
non-finite floats, which JSON cannot hold, listed in ``fix`` as ``[index, "nan"]``.)
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import orjson
import polars as pl
import pyarrow as pa

from featurekit.core.errors import SchemaError
from featurekit.kernels.pit import ViewFrame, pit_join
from featurekit.storage.registry import VersionRecord

__all__ = [
    "SnapshotMeta",
    "encode_key",
    "pick_entry",
    "snapshot_entries",
    "snapshot_meta",
]

FORMAT = 1
_AT = "__fk_online_at"
_UTC_US = pl.Datetime("us", "UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_key(values: tuple[Any, ...] | list[Any]) -> bytes:
    """The stored form of one entity's key values (the same bytes in every online store)."""
    return orjson.dumps(values)


@dataclass(frozen=True)
class SnapshotMeta:
    """Describes one snapshot of one view version in the online store."""

    view: str
    version: int
    fingerprint: str
    delta_version: int
    taken_us: int
    keys: tuple[str, ...]
    features: tuple[str, ...]
    schema_b64: str
    ttl_us: int | None
    entities: int
    max_event_us: int | None

    def to_bytes(self) -> bytes:
        """JSON form kept next to the snapshot's rows."""
        return orjson.dumps({"format": FORMAT, **self.__dict__})

    @classmethod
    def from_bytes(cls, data: bytes) -> SnapshotMeta:
        """Parse the JSON form (unknown future keys are ignored)."""
        raw = orjson.loads(data)
        names = cls.__dataclass_fields__
        raw["keys"] = tuple(raw["keys"])
        raw["features"] = tuple(raw["features"])
        return cls(**{k: v for k, v in raw.items() if k in names})

    @cached_property
    def schema(self) -> pl.Schema:
        """Exact dtypes of the key and feature columns, as stored in Delta."""
        arrow = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.schema_b64)))
        frame = pl.from_arrow(arrow.empty_table())
        assert isinstance(frame, pl.DataFrame)
        return frame.schema

    @cached_property
    def feature_index(self) -> dict[str, int]:
        """Position of each feature in a stored entry's value list."""
        return {f: i for i, f in enumerate(self.features)}

    @property
    def taken(self) -> datetime:
        """When the snapshot was taken (UTC)."""
        return datetime.fromtimestamp(self.taken_us / 1e6, UTC)


def snapshot_meta(
    record: VersionRecord, rows: pl.LazyFrame, *, delta_version: int, taken: datetime
) -> SnapshotMeta:
    """The metadata of the snapshot of ``rows`` at ``taken``, from aggregates only.

    Lazy, so a large table's metadata is computed without holding it (batched syncs).
    Raises :class:`SchemaError` for feature dtypes the online store cannot hold.
    """
    keys = list(record.keys)
    schema = rows.collect_schema()
    _check_dtypes(record, schema)
    empty = pl.DataFrame(schema={c: schema[c] for c in [*keys, *record.features]})
    return meta_of(record, rows, delta_version, taken, empty, record.ttl_us)


def meta_of(
    record: VersionRecord,
    rows: pl.LazyFrame,
    delta_version: int,
    taken: datetime,
    empty: pl.DataFrame,
    ttl_us: int | None,
) -> SnapshotMeta:
    """A snapshot's metadata: entity count and latest event of ``rows`` (lazily, so a big
    table is not held), ``empty`` giving the schema lookups decode with."""
    keys = list(record.keys)
    if len(keys) == 1:  # a plain column counts ten times faster than a struct
        distinct = pl.col(keys[0]).drop_nulls().n_unique()
    else:
        distinct = pl.struct(keys).filter(pl.all_horizontal(pl.col(keys).is_not_null())).n_unique()
    entities, max_event = (
        rows.select(
            distinct.alias("entities"),
            pl.col(record.timestamp).cast(_UTC_US).dt.epoch("us").max().alias("max_event"),
        )
        .collect(engine="streaming")
        .row(0)
    )
    return SnapshotMeta(
        view=record.view,
        version=record.version,
        fingerprint=record.fingerprint,
        delta_version=delta_version,
        taken_us=to_us(taken),
        keys=tuple(keys),
        features=tuple(record.features),
        schema_b64=_schema_b64(empty),
        ttl_us=ttl_us,
        entities=int(entities),
        max_event_us=max_event,
    )


def snapshot_entries(
    record: VersionRecord, rows: pl.DataFrame, *, taken: datetime
) -> Iterator[tuple[bytes, bytes]]:
    """The encoded entries of every entity in ``rows`` (whole entities) at ``taken``."""
    keys = list(record.keys)
    ts, created = record.timestamp, record.created_timestamp
    features = list(record.features)
    now = pl.lit(taken).cast(_UTC_US)
    parts = [rows.select(keys).drop_nulls().unique().with_columns(now.alias(_AT))]
    for column in (ts, created):
        if column is not None:
            at = pl.col(column).cast(_UTC_US)
            parts.append(rows.filter(at > now).select(*keys, at.alias(_AT)))
    labels = pl.concat(parts).drop_nulls().unique().sort([*keys, _AT])
    carried = [ts, *([created] if created else []), *features]
    view = ViewFrame(
        name=record.view,
        frame=rows,
        keys=tuple(keys),
        timestamp=ts,
        created_timestamp=created,
        features=tuple(carried),
        ttl=None,
    )
    joined = pit_join(labels, timestamp=_AT, views=[view], point_in_time="knowledge")
    names = joined.columns[len(labels.columns) :]
    joined = joined.rename(dict(zip(names, carried, strict=True)))
    first = pl.int_range(pl.len()).over(keys) == 0
    changed = pl.any_horizontal(
        [pl.col(c).ne_missing(pl.col(c).shift(1).over(keys)) for c in carried]
    )
    steps = joined.filter(first | changed)
    # `first` is evaluated again on `steps`, where each entity's first row is still first
    physical = steps.select(
        *keys,
        pl.when(first).then(None).otherwise(pl.col(_AT).dt.epoch("us")).alias(_AT),
        pl.col(ts).cast(_UTC_US).dt.epoch("us").alias("__fk_e"),
        (pl.col(created).cast(_UTC_US).dt.epoch("us") if created else pl.lit(None)).alias("__fk_c"),
        *[storable_expr(f, rows.schema[f]) for f in features],
    )
    floats = [i for i, f in enumerate(features) if rows.schema[f].is_float()]
    return encode_entries(physical, len(keys), 3, floats)


def encode_entries(
    frame: pl.DataFrame, nkeys: int, times: int, floats: list[int]
) -> Iterator[tuple[bytes, bytes]]:
    """One orjson value per entity: ``[[*time columns, [values...], fix | null], ...]``.

    ``frame`` is sorted by its first ``nkeys`` (key) columns; ``times`` integer columns
    follow, then the values. Non-finite floats, which JSON cannot hold, go in ``fix``.
    """
    current: tuple[Any, ...] | None = None
    entries: list[list[Any]] = []
    for row in frame.iter_rows():
        key = row[:nkeys]
        if key != current:
            if current is not None:
                yield encode_key(current), orjson.dumps(entries)
            current, entries = key, []
        values = list(row[nkeys + times :])
        fix = None
        for i in floats:
            v = values[i]
            if v is not None and not math.isfinite(v):
                fix = fix or []
                fix.append([i, "nan" if v != v else ("inf" if v > 0 else "-inf")])
                values[i] = None
        entries.append([*row[nkeys : nkeys + times], values, fix])
    if current is not None:
        yield encode_key(current), orjson.dumps(entries)


def to_us(when: datetime) -> int:
    """Microseconds since the epoch of an aware instant (exact, no float rounding)."""
    return (when - _EPOCH) // timedelta(microseconds=1)


def pick_entry(entries: list[list[Any]], t_us: int) -> list[Any]:
    """The entry valid at ``t_us`` (entries are in time order; the first is valid from T)."""
    chosen: list[Any] = entries[0]
    for entry in reversed(entries):
        if entry[0] is None or entry[0] <= t_us:
            chosen = entry
            break
    return chosen


def restore_values(entry: list[Any]) -> list[Any]:
    """An entry's values with non-finite floats put back."""
    values: list[Any] = entry[3]
    if entry[4]:
        values = list(values)
        for i, code in entry[4]:
            values[i] = _NON_FINITE[code]
    return values


def storable_expr(column: str, dtype: pl.DataType) -> pl.Expr:
    """Values as JSON can hold them; :func:`construct_dtype` says how to read them back."""
    if dtype.is_temporal():
        return pl.col(column).to_physical()
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return pl.col(column).cast(pl.String)
    return pl.col(column)


def construct_dtype(dtype: pl.DataType) -> pl.DataType:
    """Dtype to build a column from stored values before casting to ``dtype``."""
    if dtype.is_temporal():
        return pl.Int32() if isinstance(dtype, pl.Date) else pl.Int64()
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return pl.String()
    return dtype


def _check_dtypes(record: VersionRecord, schema: pl.Schema) -> None:
    for feature in record.features:
        dtype = schema[feature]
        if isinstance(dtype, pl.Decimal | pl.Binary | pl.Object | pl.Int128 | pl.UInt128) or (
            dtype.is_nested() and _has_temporal(dtype)
        ):
            raise SchemaError(
                f"view {record.view!r} version {record.version}: feature {feature!r} has dtype "
                f"{dtype}, which the online store cannot hold exactly. Cast it in the view "
                "(e.g. to Float64 or String)."
            )


def _has_temporal(dtype: pl.DataType) -> bool:
    inner = getattr(dtype, "inner", None)
    if inner is not None:
        return bool(inner.is_temporal() or (inner.is_nested() and _has_temporal(inner)))
    fields = getattr(dtype, "fields", None) or []
    return any(f.dtype.is_temporal() or _has_temporal(f.dtype) for f in fields)


def _schema_b64(empty: pl.DataFrame) -> str:
    return base64.b64encode(empty.to_arrow().schema.serialize().to_pybytes()).decode()
