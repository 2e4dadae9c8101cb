"""Read a :class:`~featurekit.Source` as a LazyFrame with UTC timestamps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import polars as pl

from featurekit.core.definitions import Source
from featurekit.core.errors import SchemaError, StorageError
from featurekit.core.timeutil import NS_MAX, NS_MIN, before, iso_datetime_expr, to_utc_expr
from featurekit.storage import delta


def raw_scan(source: Source) -> pl.LazyFrame:
    """The source as stored, no normalization (errors name the source)."""
    if source.frame is not None:
        frame: pl.LazyFrame = source.frame
        return frame
    location: str | list[str] = (
        list(source.location) if isinstance(source.location, tuple) else source.location or ""
    )
    options = dict(source.storage_options) or None
    try:
        if source.kind == "parquet":
            return pl.scan_parquet(location, storage_options=options)
        if source.kind == "csv":
            # time columns stay text here: the CSV reader would cut nanoseconds off
            # (rounding down), scan_source parses them rounding up
            times = {c: pl.String for c in (source.timestamp, source.created_timestamp) if c}
            return pl.scan_csv(
                location, try_parse_dates=True, schema_overrides=times, storage_options=options
            )
        assert isinstance(location, str)
        return delta.scan_table(location, storage_options=options)
    except Exception as err:
        raise StorageError(
            f"source {source.name!r}: cannot open {location!r} as {source.kind}: {err}"
        ) from err


def source_schema(source: Source) -> pl.Schema:
    """The source's schema after normalization (reads file footers only)."""
    try:
        return scan_source(source).collect_schema()
    except (SchemaError, StorageError):
        raise
    except Exception as err:
        raise StorageError(
            f"source {source.name!r}: cannot read the schema of {source.location!r}: {err}"
        ) from err


#: ``(column, op, instant)``: keep rows whose UTC ``column`` compares so with ``instant``.
TimeBound = tuple[str, Literal[">=", ">", "<"], datetime]


def scan_source(source: Source, *, bounds: Sequence[TimeBound] = ()) -> pl.LazyFrame:
    """The source with its timestamp (and created) columns as UTC ``Datetime('us')``.

    ``bounds`` filter rows by time. Each is applied twice: first on the column as stored
    (when it is a us/ns datetime), which polars can push into the scan and check against
    file and row-group statistics, so an incremental run skips files it does not need;
    then exactly, on the normalized column.
    """
    frame = raw_scan(source)
    try:
        schema = frame.collect_schema()
    except Exception as err:
        raise StorageError(
            f"source {source.name!r}: cannot read {source.location!r}: {err}"
        ) from err
    early = [c for c in (_stored_bound(b, schema) for b in bounds) if c is not None]
    if early:
        frame = frame.filter(early)
    fixes = []
    for column, role in ((source.timestamp, "timestamp"), (source.created_timestamp, "created")):
        if column is None:
            continue
        if column not in schema:
            raise SchemaError(
                f"source {source.name!r} has no {role} column {column!r}; "
                f"its columns are {schema.names()}."
            )
        dtype = schema[column]
        if dtype == pl.String:  # CSV and JSON often carry ISO strings
            fixes.append(iso_datetime_expr(column, what=f"source {source.name!r} {role}"))
            continue
        if dtype == pl.Date:
            fixes.append(pl.col(column).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
            continue
        fixes.append(
            to_utc_expr(column, dtype, what=f"source {source.name!r} {role}").alias(column)
        )
    frame = frame.with_columns(fixes) if fixes else frame
    exact = [_compare(pl.col(column), op, pl.lit(_utc(when))) for column, op, when in bounds]
    return frame.filter(exact) if exact else frame


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _compare(column: pl.Expr, op: str, value: pl.Expr) -> pl.Expr:
    if op == ">=":
        return column >= value
    if op == ">":
        return column > value
    return column < value


def _stored_bound(bound: TimeBound, schema: pl.Schema) -> pl.Expr | None:
    """The bound on the stored column, when that is exact (us/ns datetimes), else None."""
    column, op, when = bound
    dtype = schema.get(column)
    if not isinstance(dtype, pl.Datetime) or dtype.time_unit not in ("us", "ns"):
        return None  # a coarser unit would round the instant; the exact filter still applies
    instant = _utc(when)
    if dtype.time_unit == "ns" and not NS_MIN <= instant <= NS_MAX:
        return None  # nanoseconds cannot hold the instant; the exact filter applies
    if dtype.time_unit == "ns" and op == ">=":
        # nanoseconds are stored rounded up: ceil(v) >= t exactly when v > t - 1 us
        earlier = before(instant, timedelta(microseconds=1))
        if earlier is None:
            return None
        op, instant = ">", earlier
    if dtype.time_zone is None:  # naive values are UTC wall times
        value = pl.lit(instant.replace(tzinfo=None), dtype=pl.Datetime(dtype.time_unit))
    else:
        value = pl.lit(instant).dt.convert_time_zone(dtype.time_zone).cast(dtype)
    return _compare(pl.col(column), op, value)
