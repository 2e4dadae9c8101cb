"""Read a :class:`~featurekit.Source` as a LazyFrame with UTC timestamps.

A source that is being written to changes between two reads: polars lists a glob's files
(and ``scan_delta`` picks the table version) anew for every query. A materialization run
asks several questions of its sources (which rows are new, how large they are, the rows
themselves, the watermark to record), so it first takes one :class:`SourceSnapshot` per
source (the exact file list, or the Delta version) and asks every question of that
snapshot: the watermark it records then describes exactly the rows it read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from featurekit.core.definitions import Source
from featurekit.core.errors import SchemaError, StorageError
from featurekit.core.timeutil import NS_MAX, NS_MIN, before, iso_datetime_expr, to_utc_expr
from featurekit.storage import delta

_GLOB_CHARS = ("*", "?", "[")
_PATH_COLUMN = "__fk_source_file"


@dataclass(frozen=True)
class SourceSnapshot:
    """One fixed state of a source: every scan of it reads the same rows.

    ``files`` (parquet and CSV) are the exact files a glob or folder held when the snapshot
    was taken; ``delta_version`` (Delta) is the table version. Both are None for in-memory
    frames, which cannot change, and for a fixed list of paths.
    """

    source: Source
    files: tuple[str, ...] | None = None
    delta_version: int | None = None

    @property
    def name(self) -> str:
        """The source's name."""
        return self.source.name

    def describe(self) -> dict[str, int]:
        """What was read, for commit metadata: the file count or the Delta version."""
        if self.delta_version is not None:
            return {"delta_version": self.delta_version}
        if self.files is not None:
            return {"files": len(self.files)}
        return {}


def snapshot(source: Source) -> SourceSnapshot:
    """Fix the state of ``source`` now: its current files, or its current Delta version.

    Files are listed by polars itself (the same glob and folder rules as a plain scan):
    on a local disk from the file system alone, elsewhere by a scan that reads each
    file's footer; a file written after this call is not part of the snapshot, so the
    next run reads it.
    """
    if source.frame is not None or not isinstance(source.location, str):
        return SourceSnapshot(source)
    location = source.location
    options = dict(source.storage_options) or None
    try:
        if source.kind == "delta":
            version = delta.current_version(location, options)
            return SourceSnapshot(source, delta_version=version)
        if not _is_pattern(location):
            return SourceSnapshot(source)
        listed = _local_files(location) or (
            raw_scan(source, include_paths=True)
            .select(pl.col(_PATH_COLUMN).unique())
            .collect()
            .get_column(_PATH_COLUMN)
            .to_list()
        )
    except (SchemaError, StorageError):
        raise
    except Exception as err:
        raise StorageError(
            f"source {source.name!r}: cannot list the files of {location!r}: {err}"
        ) from err
    return SourceSnapshot(source, files=tuple(sorted(listed)))


def _local_files(location: str) -> list[str]:
    """The files a scan of the local ``location`` reads, expanded by polars' own glob and
    folder rules without opening them; empty when that cannot be had (then the caller
    lists them with a scan, which reads each file's footer and names what is wrong).

    The scan makes a column of each row's file and takes its unique values: its cost grew
    with the rows (100 ms for 10M rows, a third of an incremental run), this one's with
    the files (under 3 ms). The expansion is polars' internal helper, so it is guarded:
    if it goes away or lists anything but existing files, the scan answers; a test pins
    both to the same answer.
    """
    if "://" in location:
        return []
    try:
        from polars.io._expand_paths import _expand_paths

        found = _expand_paths(location).collect().get_column("path").to_list()
    except Exception:
        return []
    if not found or not all(Path(p).is_file() for p in found):
        return []
    return found


def _is_pattern(location: str) -> bool:
    """Whether ``location`` names files that can come and go (a glob or a folder)."""
    if any(c in location for c in _GLOB_CHARS) or location.endswith("/"):
        return True
    return "://" not in location and Path(location).is_dir()


def raw_scan(source: Source | SourceSnapshot, *, include_paths: bool = False) -> pl.LazyFrame:
    """The source as stored, no normalization (errors name the source).

    A snapshot reads exactly its files or Delta version.
    """
    pinned = source if isinstance(source, SourceSnapshot) else None
    source = source.source if isinstance(source, SourceSnapshot) else source
    if source.frame is not None:
        frame: pl.LazyFrame = source.frame
        return frame
    if pinned is not None and pinned.delta_version is not None:
        assert isinstance(source.location, str)
        options = dict(source.storage_options) or None
        return delta.scan_rows(
            source.location, version=pinned.delta_version, storage_options=options
        )
    if pinned is not None and pinned.files is not None:
        return _scan_files(source, pinned.files)
    location: str | list[str] = (
        list(source.location) if isinstance(source.location, tuple) else source.location or ""
    )
    options = dict(source.storage_options) or None
    paths = _PATH_COLUMN if include_paths else None
    try:
        if source.kind == "parquet":
            return pl.scan_parquet(location, storage_options=options, include_file_paths=paths)
        if source.kind == "csv":
            # time columns stay text here: the CSV reader would cut nanoseconds off
            # (rounding down), scan_source parses them rounding up
            times = {c: pl.String for c in (source.timestamp, source.created_timestamp) if c}
            return pl.scan_csv(
                location,
                try_parse_dates=True,
                schema_overrides=times,
                storage_options=options,
                include_file_paths=paths,
            )
        assert isinstance(location, str)
        return delta.scan_table(location, storage_options=options)
    except Exception as err:
        raise StorageError(
            f"source {source.name!r}: cannot open {location!r} as {source.kind}: {err}"
        ) from err


def _scan_files(source: Source, files: tuple[str, ...]) -> pl.LazyFrame:
    """Exactly ``files`` of a parquet or CSV source, read as a scan of its location would."""
    if not files:  # nothing had rows when the snapshot was taken: no rows, same schema
        return raw_scan(source).clear()
    options = dict(source.storage_options) or None
    # a folder's hive partitions stay columns, as they are when polars scans the folder
    hive = True if not any(c in str(source.location) for c in _GLOB_CHARS) else None
    try:
        if source.kind == "parquet":
            return pl.scan_parquet(list(files), storage_options=options, hive_partitioning=hive)
        # time columns stay text, as in _open: scan_source parses them rounding up
        times = {c: pl.String for c in (source.timestamp, source.created_timestamp) if c}
        return pl.scan_csv(
            list(files), try_parse_dates=True, schema_overrides=times, storage_options=options
        )
    except Exception as err:
        raise StorageError(
            f"source {source.name!r}: cannot open {len(files)} file(s) of {source.location!r} "
            f"as {source.kind}: {err}"
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


def scan_source(
    source: Source | SourceSnapshot, *, bounds: Sequence[TimeBound] = ()
) -> pl.LazyFrame:
    """The source with its timestamp (and created) columns as UTC ``Datetime('us')``.

    ``bounds`` filter rows by time. Each is applied twice: first on the column as stored
    (when it is a us/ns datetime), which polars can push into the scan and check against
    file and row-group statistics, so an incremental run skips files it does not need;
    then exactly, on the normalized column. A :class:`SourceSnapshot` reads its fixed state.
    """
    frame = raw_scan(source)
    source = source.source if isinstance(source, SourceSnapshot) else source
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
