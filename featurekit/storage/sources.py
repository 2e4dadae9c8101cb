"""Read a :class:`~featurekit.Source` as a LazyFrame with UTC timestamps."""

from __future__ import annotations

import polars as pl

from featurekit.definitions import Source
from featurekit.errors import SchemaError, StorageError
from featurekit.timeutil import to_utc_expr


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
            return pl.scan_csv(location, try_parse_dates=True, storage_options=options)
        assert isinstance(location, str)
        return pl.scan_delta(location, storage_options=options)
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


def scan_source(source: Source) -> pl.LazyFrame:
    """The source with its timestamp (and created) columns as UTC ``Datetime('us')``."""
    frame = raw_scan(source)
    try:
        schema = frame.collect_schema()
    except Exception as err:
        raise StorageError(
            f"source {source.name!r}: cannot read {source.location!r}: {err}"
        ) from err
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
            fixes.append(_parse_iso(column))
            continue
        if dtype == pl.Date:
            fixes.append(pl.col(column).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
            continue
        fixes.append(
            to_utc_expr(column, dtype, what=f"source {source.name!r} {role}").alias(column)
        )
    return frame.with_columns(fixes) if fixes else frame


def _parse_iso(column: str) -> pl.Expr:
    return (
        pl.col(column).str.to_datetime(time_unit="us", time_zone="UTC", strict=True).alias(column)
    )
