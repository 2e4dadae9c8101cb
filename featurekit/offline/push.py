"""Pushed rows in the offline store: how they are shaped, appended and kept.

``store.push`` writes rows straight into a view version's Delta table, next to the rows
materialization computed from the sources. How the two coexist in one table:

- A pushed row is in the view's output shape (keys, event time, features; for
  aggregation views the raw events the aggregates read). Its created time is set here to
  the ingestion instant (UTC, this machine's clock), which is why a view must carry a
  created-time column to accept pushes: a training set sees the row only for labels at or
  after that instant, never before, exactly as for a late-arriving source row.
- It also carries :data:`PUSH_COLUMN` (the push's id; null in every row a materialization
  writes). The column is added to the table's schema by the first push, as a nullable
  column that training sets, snapshots and statistics never read.
- Materialization replaces rows by event-time window (incremental runs, backfills) or
  all of them (full refresh). It replaces only rows whose :data:`PUSH_COLUMN` is null
  (:func:`keep_pushed`), so a later run neither drops a pushed row nor writes it again:
  pushed rows are not in the sources, and no run derives them.
- The consequence to know: an event pushed *and* later landed in a source is stored
  twice (once pushed, once derived). For plain views the two rows tie on event time and
  the later created time wins, usually with the same values; for aggregation views both
  events are counted. Push an event, or land it in a source, not both.

Pushes are appended in Delta commits with ``mode: "push"`` in their metadata. One commit
holds one push, or several concurrent pushes to the same version committed together
(group commit, see :mod:`featurekit.online.push`); either way all of a push's rows are in
one commit or in none, whatever their number.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from featurekit.core.errors import DefinitionError, SchemaError
from featurekit.core.names import shown
from featurekit.core.timeutil import to_utc_datetime
from featurekit.storage import delta
from featurekit.storage.records import VersionRecord

__all__ = ["PUSH_COLUMN", "append_pushed", "keep_pushed", "push_columns", "pushed_frame"]

#: Column marking pushed rows in a feature table (the push's id; null in derived rows).
PUSH_COLUMN = "__fk_pushed"


def push_columns(record: VersionRecord) -> list[str]:
    """The columns a pushed row gives: keys, event time, features (or raw event columns)."""
    values = record.event_columns if record.aggregations else list(record.features)
    return list(dict.fromkeys([*record.keys, record.timestamp, *values]))


def pushed_frame(
    record: VersionRecord,
    schema: Mapping[str, pl.DataType],
    rows: Any,
    *,
    now: datetime,
) -> pl.DataFrame:
    """``rows`` as stored rows of ``record``'s table, created at ``now``.

    ``rows`` is a polars DataFrame, a list of row mappings or a mapping of column ->
    values. Timestamps may be datetimes or ISO 8601 strings (naive means UTC).

    Raises:
        DefinitionError: the view has no created-time column, so a pushed row could not
            be kept out of training labels before its ingestion.
        SchemaError: a column is missing, unknown or of the wrong type, or a key or the
            event time is null; the message names it.
    """
    created = record.created_timestamp
    if created is None:
        raise DefinitionError(
            f"view {record.view!r} version {record.version} has no created-time column, so "
            "training sets could not tell when a pushed row became known and it would leak "
            "into labels before it was pushed. Keep the source's created_timestamp column in "
            "the view's output (e.g. select 'ingested_at'), then push to the new version."
        )
    wanted = push_columns(record)
    data = _columns(record, rows) or {c: [] for c in wanted}  # no rows: nothing to push
    missing = [c for c in wanted if c not in data]
    if missing:
        raise SchemaError(
            f"pushed rows for view {record.view!r} lack column(s) {missing}; each row needs "
            f"{wanted}."
        )
    if created in data:
        raise SchemaError(
            f"pushed rows for view {record.view!r} set {created!r}, the created time; "
            "featurekit sets it to the ingestion time. Leave the column out."
        )
    extra = [c for c in data if c not in wanted]
    if extra:
        raise SchemaError(
            f"pushed rows for view {record.view!r} have unknown column(s) "
            f"{[shown(c, 60) for c in extra[:10]]}; a row holds exactly {wanted}."
        )
    n = len(next(iter(data.values()))) if data else 0
    columns = [_column(record, c, data[c], schema[c]) for c in wanted]
    stamp = pl.Series(created, [now.astimezone(UTC)] * n, dtype=pl.Datetime("us", "UTC"))
    if not isinstance(schema[created], pl.Datetime):
        raise DefinitionError(
            f"view {record.view!r} stores its created time {created!r} as {schema[created]}, "
            "which cannot hold an ingestion instant; cast it to a datetime in the view to "
            "push to it."
        )
    columns.append(_fit_instants(stamp, schema[created]))
    frame = pl.DataFrame(columns)
    for column in [*record.keys, record.timestamp]:
        nulls = frame.get_column(column).null_count()
        if nulls:
            raise SchemaError(
                f"pushed rows for view {record.view!r}: {nulls} row(s) have a null "
                f"{column!r}; keys and the event time must be set in every row."
            )
    order = [c for c in schema if c in frame.columns]
    return frame.select(order)


def append_pushed(
    uri: str, pushes: Sequence[tuple[str, pl.DataFrame]], *, record: VersionRecord
) -> int:
    """Append the rows of one or more pushes to the version's table in one commit.

    ``pushes`` are ``(push id, rows)`` in ingestion order; each row is marked with its own
    push's id, and the rows keep this order in the table, so at an exact tie (same key,
    event and created time) the later push wins, as it does online. Returns the new Delta
    version: all rows of every push are in it, or none (the commit failed).
    """
    marked = pl.concat(
        [frame.with_columns(pl.lit(pid, pl.String).alias(PUSH_COLUMN)) for pid, frame in pushes],
        how="vertical",
        rechunk=False,
    )
    first = pushes[0][0]
    return delta.append_rows(
        uri,
        marked,
        bucket_keys=record.keys,  # a bucketed table's rows carry their bucket
        metadata={
            "view": record.view,
            "version": str(record.version),
            "fingerprint": record.fingerprint,
            # one push: its id; a group commit: the first push's (each row keeps its own)
            "run_id": first,
            "mode": "push",
            "rows": str(marked.height),
            "pushes": str(len(pushes)),
        },
    )


def keep_pushed(
    uri: str, predicate: str | None, frames: Iterator[pl.DataFrame] | pl.DataFrame
) -> tuple[str | None, Iterator[pl.DataFrame] | pl.DataFrame]:
    """A materialization's replace predicate and frames that leave pushed rows in place.

    Unchanged for a table no push has touched (it has no :data:`PUSH_COLUMN`).
    """
    if PUSH_COLUMN not in delta.column_names(uri):
        return predicate, frames
    derived = f'"{PUSH_COLUMN}" IS NULL'
    kept = derived if predicate is None else f"({predicate}) AND {derived}"
    null = pl.lit(None, pl.String).alias(PUSH_COLUMN)
    if isinstance(frames, pl.DataFrame):
        return kept, frames.with_columns(null)
    return kept, (f.with_columns(null) for f in frames)


# ---- shaping ------------------------------------------------------------------------------
def _columns(record: VersionRecord, rows: Any) -> dict[str, list[Any]]:
    if isinstance(rows, pl.DataFrame):
        return rows.to_dict(as_series=False)
    if isinstance(rows, Mapping):
        out = {}
        for name, values in rows.items():
            if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
                raise SchemaError(
                    f"pushed rows for view {record.view!r}: column {shown(name, 60)} must be "
                    f"a list of values, got {type(values).__name__}."
                )
            out[str(name)] = list(values)
        if len({len(v) for v in out.values()}) > 1:
            lengths = {k: len(v) for k, v in out.items()}
            raise SchemaError(f"pushed columns must have the same length, got {lengths}.")
        return out
    if isinstance(rows, Sequence) and not isinstance(rows, str | bytes):
        names: dict[str, None] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise SchemaError(
                    f"pushed row {i} for view {record.view!r} must be a mapping of column -> "
                    f"value, got {type(row).__name__}."
                )
            names.update(dict.fromkeys(row))
        return {name: [row.get(name) for row in rows] for name in names}
    raise SchemaError(
        f"rows for view {record.view!r} must be a polars DataFrame, a list of row mappings "
        f"or a mapping of column -> values, got {type(rows).__name__}."
    )


def _column(record: VersionRecord, name: str, values: list[Any], dtype: pl.DataType) -> pl.Series:
    try:
        if isinstance(dtype, pl.Datetime):
            instants = [None if v is None else _instant(v) for v in values]
            return _fit_instants(pl.Series(name, instants, dtype=pl.Datetime("us", "UTC")), dtype)
        if isinstance(dtype, pl.Date):
            days = [date.fromisoformat(v) if isinstance(v, str) else v for v in values]
            return pl.Series(name, days, dtype=dtype)
        return pl.Series(name, values, dtype=dtype, strict=True)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as err:
        raise SchemaError(
            f"pushed column {name!r} of view {record.view!r} does not hold {dtype} values "
            f"({type(err).__name__}: {shown(str(err), 200)})."
        ) from None


def _instant(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or an ISO 8601 string, got {shown(value, 60)}")
    return to_utc_datetime(value)


def _fit_instants(series: pl.Series, dtype: pl.DataType) -> pl.Series:
    """UTC instants in the stored datetime dtype (naive columns hold UTC wall time)."""
    if not isinstance(dtype, pl.Datetime):
        raise TypeError(f"column {series.name!r} is stored as {dtype}, not a datetime")
    if dtype.time_zone is None:
        series = series.dt.replace_time_zone(None)
    else:
        series = series.dt.convert_time_zone(dtype.time_zone)
    return series.cast(dtype)
