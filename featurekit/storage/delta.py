"""Delta Lake tables: the only module that talks to ``deltalake``.

Every commit carries featurekit's custom metadata (view, version, fingerprint, run id,
window, source watermarks), so a table's history is also its materialization log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import orjson
import polars as pl
from polars.datatypes import DataTypeClass

from featurekit.core.errors import StorageError, is_rust_panic
from featurekit.kernels.bucketing import BUCKET, BUCKETS, bucket_ids, by_bucket

META_PREFIX = "featurekit."
#: How often delta-rs retries a commit that lost a race to another writer before failing
#: (its default is 15; machines sharing a team store race more).
COMMIT_RETRIES = 100


#: A predicate matching every row: an overwrite with it replaces the whole table like a plain
#: overwrite, but (unlike one) fails when another writer adds rows while it runs.
REPLACE_ALL = "true"


class CommitConflict(StorageError):
    """A Delta commit lost to a concurrent writer and could not be retried (re-plan and retry)."""


def _options(storage_options: Mapping[str, str] | None, uri: str) -> dict[str, str] | None:
    """The options to open ``uri`` with: the caller's, else those of the store root it is
    under (so every table of a team store gets its credentials, whoever opens it)."""
    if storage_options:
        return dict(storage_options)
    from featurekit.storage.remote import options_for

    return options_for(uri)


def table_exists(uri: str, storage_options: Mapping[str, str] | None = None) -> bool:
    """Whether a Delta table lives at ``uri``."""
    from deltalake import DeltaTable

    try:
        return bool(DeltaTable.is_deltatable(uri, storage_options=_options(storage_options, uri)))
    except BaseException as err:
        if not _is_failure(err):
            raise
        raise StorageError(
            f"Delta table {uri!r} cannot be opened: {_first_line(err)}. {_DAMAGED}"
        ) from err


#: What to do about a table damaged outside featurekit.
_DAMAGED = (
    "The table was changed outside featurekit (a truncated, edited or deleted file, or a "
    "damaged _delta_log): restore its folder from a backup."
)


def _is_failure(err: BaseException) -> bool:
    """Whether ``err`` is a failure to report: an Exception, or a Rust panic.

    Rust panics in polars and deltalake arrive as ``PanicException``, which derives from
    ``BaseException`` (each library has its own class, so it is known by name); they mean
    a file or log the reader could not make sense of. KeyboardInterrupt and SystemExit
    are not failures of the table and pass through.
    """
    return isinstance(err, Exception) or is_rust_panic(err)


def _first_line(err: BaseException) -> str:
    """The message of a library error without the Rust backtrace lines it may carry."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _open(
    uri: str, version: int | None = None, storage_options: Mapping[str, str] | None = None
) -> Any:
    """The DeltaTable at ``uri`` (at ``version``), or a StorageError naming the table."""
    from deltalake import DeltaTable

    try:
        return DeltaTable(uri, version=version, storage_options=_options(storage_options, uri))
    except BaseException as err:
        if not _is_failure(err):
            raise
        at = "" if version is None else f" at version {version}"
        raise StorageError(
            f"Delta table {uri!r}: its transaction log (_delta_log) cannot be read{at}: "
            f"{_first_line(err)}. {_DAMAGED}"
        ) from err


def write_rows(
    uri: str,
    frame: pl.DataFrame | Iterable[pl.DataFrame],
    *,
    metadata: Mapping[str, Any],
    predicate: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    create: bool = False,
    replace_schema: bool = False,
    partition_by: Sequence[str] | None = None,
) -> int:
    """Atomically replace the rows matching ``predicate`` (all rows when None); returns the new version.

    One Delta commit: readers see the old rows or the new ones, never a mix. ``frame`` may be
    an iterable of frames with one schema (batches): they are streamed into that one
    commit, and an error raised while producing them aborts it (and is re-raised as is).
    ``create=True`` only creates a new table: if one appears at ``uri`` first (another
    writer's), nothing is written and :class:`CommitConflict` is raised.
    ``replace_schema=True`` lets the rows replace a table of another schema.
    ``partition_by`` partitions the files (bucketed tables); a full replace may change a
    table's partitioning, older versions keep theirs.
    """
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    custom = _commit_metadata(metadata)
    failures: list[BaseException] = []
    data = _one_batch(frame) if isinstance(frame, pl.DataFrame) else _stream(frame, failures)
    schema_mode: Literal["overwrite"] | None = "overwrite" if replace_schema else None
    full = predicate is None or predicate == REPLACE_ALL
    if partition_by is not None and full and not create and table_exists(uri, storage_options):
        current = _open(uri, storage_options=storage_options).metadata().partition_columns
        if list(current) != list(partition_by):  # re-bucketing: a new partitioning
            schema_mode, predicate = "overwrite", None  # a partitioning change replaces all
    try:
        # "error" creates only: it fails if a table appeared, and takes no predicate
        mode: dict[str, Any] = (
            {"mode": "error"} if create else {"mode": "overwrite", "predicate": predicate}
        )
        write_deltalake(
            uri,
            data,
            writer_properties=_writer_properties(data.schema),
            **mode,
            partition_by=list(partition_by) if partition_by else None,
            schema_mode=schema_mode,
            storage_options=_options(storage_options, uri),
            commit_properties=CommitProperties(
                custom_metadata=custom,
                # a create must not be retried: a retry would land on the winner's table
                max_commit_retries=0 if create else COMMIT_RETRIES,
            ),
        )
        return int(DeltaTable(uri, storage_options=_options(storage_options, uri)).version())
    except BaseException as err:
        if failures:  # the batches' producer failed (e.g. user code): that is the error
            raise failures[0] from None
        if not _is_failure(err):
            raise
        raise _write_error(uri, err, storage_options) from err


def append_rows(
    uri: str,
    frame: pl.DataFrame,
    *,
    metadata: Mapping[str, Any],
    storage_options: Mapping[str, str] | None = None,
    bucket_keys: Sequence[str] = (),
) -> int:
    """Append ``frame`` in one commit, adding its new (nullable) columns to the schema.

    Returns the new version. Used for rows pushed into a feature table, which carry a
    column the view's own runs do not write (see :mod:`featurekit.offline.push`). On a
    bucketed table, the rows get their bucket of ``bucket_keys`` (see
    :mod:`featurekit.kernels.bucketing`) and land in that bucket's partition.
    """
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    custom = _commit_metadata(metadata)
    data = _one_batch(frame)
    try:
        # one open of the log, not two: the writer commits through this object and
        # leaves it at the version it wrote (a push is small; the log read dominates it)
        table = DeltaTable(uri, storage_options=_options(storage_options, uri))
        if BUCKETS in table.metadata().partition_columns:
            data = _one_batch(_bucketed(table, frame, bucket_keys))
        write_deltalake(
            table,
            data,
            writer_properties=_writer_properties(data.schema),
            mode="append",
            schema_mode="merge",
            commit_properties=CommitProperties(custom_metadata=custom),
        )
        return int(table.version())
    except BaseException as err:
        if not _is_failure(err):
            raise
        raise StorageError(f"appending to Delta table {uri!r} failed: {_first_line(err)}") from err


def _bucketed(table: Any, frame: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """``frame`` with the partition columns of the bucketed ``table`` it is appended to."""
    import pyarrow as pa

    if not keys:
        raise StorageError(
            f"Delta table {table.table_uri!r} is bucketed: appended rows need their entity keys "
            "to find their bucket."
        )
    actions = pa.table(table.get_add_actions(flatten=True))
    column = f"partition.{BUCKETS}"
    count = int(actions.column(column)[0].as_py()) if actions.num_rows else 2
    return frame.with_columns(
        pl.lit(count, dtype=pl.Int32).alias(BUCKETS), bucket_ids(frame, keys, count)
    )


def column_names(uri: str, storage_options: Mapping[str, str] | None = None) -> list[str]:
    """The columns of the table's latest version (empty when there is no table)."""
    if not table_exists(uri, storage_options):
        return []
    from deltalake import DeltaTable

    return [
        f.name
        for f in DeltaTable(uri, storage_options=_options(storage_options, uri)).schema().fields
    ]


def _stream(frames: Iterable[pl.DataFrame], failures: list[BaseException]) -> Any:
    """A pyarrow RecordBatchReader over frames, recording the producer's own errors.

    Holds one frame at a time: each is released before the next one is computed, so a
    batched run's peak is one batch, not two.
    """
    import pyarrow as pa

    iterator = iter(frames)
    try:
        first = _one_batch(next(iterator))
    except StopIteration:
        raise StorageError("nothing to write: no batches were produced.") from None
    schema = first.schema
    pending: list[Any] = [first]
    del first

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            while pending:
                yield from pending.pop().to_batches()
                frame = next(iterator, None)
                if frame is None:
                    return
                table = _one_batch(frame)
                del frame
                pending.append(table if table.schema == schema else table.cast(schema))
                del table
        except BaseException as err:
            failures.append(err)
            raise

    return pa.RecordBatchReader.from_batches(schema, batches())


def window_predicate(column: str, start: datetime | None, end: datetime | None) -> str | None:
    """SQL predicate selecting ``[start, end)`` on a UTC timestamp column."""
    parts = []
    quoted = '"' + column.replace('"', '""') + '"'
    if start is not None:
        parts.append(f"{quoted} >= '{_iso(start)}'")
    if end is not None:
        parts.append(f"{quoted} < '{_iso(end)}'")
    return " AND ".join(parts) or None


def _iso(value: datetime) -> str:
    # isoformat, not strftime("%Y"): that writes year 1 as "1", which Delta cannot parse
    plain = value.astimezone(UTC).replace(tzinfo=None)
    return plain.isoformat(timespec="microseconds") + "Z"


def current_version(uri: str, storage_options: Mapping[str, str] | None = None) -> int | None:
    """Latest version of the table, or None if there is no table."""
    if not table_exists(uri, storage_options):
        return None
    return int(_open(uri, storage_options=storage_options).version())


def history(uri: str, storage_options: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Commits oldest first, with featurekit metadata decoded under ``"featurekit"``."""
    if not table_exists(uri, storage_options):
        return []
    table = _open(uri, storage_options=storage_options)
    try:
        entries = table.history()
    except BaseException as err:
        if not _is_failure(err):
            raise
        raise StorageError(
            f"Delta table {uri!r}: its history (_delta_log) cannot be read: "
            f"{_first_line(err)}. {_DAMAGED}"
        ) from err
    out = []
    for entry in sorted(entries, key=lambda e: int(e["version"])):
        meta = {}
        for key, value in entry.items():
            if key.startswith(META_PREFIX):
                name = key[len(META_PREFIX) :]
                try:
                    meta[name] = orjson.loads(value) if name in _JSON_KEYS else value
                except orjson.JSONDecodeError:
                    meta[name] = value
        out.append(
            {
                "version": int(entry["version"]),
                "timestamp": datetime.fromtimestamp(int(entry["timestamp"]) / 1000, UTC),
                "operation": entry.get("operation"),
                "rows_written": (entry.get("operationMetrics") or {}).get("num_added_rows"),
                "featurekit": meta,
            }
        )
    return out


_JSON_KEYS = {"window", "watermarks", "rows"}


def version_at(
    uri: str, when: datetime, storage_options: Mapping[str, str] | None = None
) -> int | None:
    """The table version current at wall-clock ``when`` (Delta time travel), or None."""
    versions = [h["version"] for h in history(uri, storage_options) if h["timestamp"] <= when]
    return max(versions) if versions else None


def scan_rows(
    uri: str, *, version: int, storage_options: Mapping[str, str] | None = None
) -> pl.LazyFrame:
    """A lazy scan of the table at a pinned ``version`` (filters are pushed to file stats).

    The data files are checked against the log first (local tables: every file is there,
    with the size the log recorded), because a damaged file found later, while the scan
    runs, would surface in the caller as a bare polars error or a Rust panic.
    """
    return scan_table(uri, version=version, storage_options=storage_options)


def scan_table(
    uri: str, *, version: int | None = None, storage_options: Mapping[str, str] | None = None
) -> pl.LazyFrame:
    """A lazy scan of any Delta table (latest version by default), checked as
    :func:`scan_rows` checks it; for source tables as well as featurekit's own."""
    table = _open(uri, version, storage_options)
    at = int(table.version())
    _check_files(uri, at, table)
    try:
        return _hide_buckets(_decode(table, pl.scan_delta(table)), None)
    except BaseException as err:
        if not _is_failure(err):
            raise
        raise _read_error(uri, at, table, err) from err


def read_rows(
    uri: str,
    *,
    version: int,
    columns: Sequence[str] | None = None,
    where: pl.Expr | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Read ``columns`` of the table at a pinned ``version``, filtered by ``where``.

    Raises:
        StorageError: the table or one of its files cannot be read; the message names
            the table and, when it can be found, the damaged file.
    """
    table = _open(uri, version, storage_options)
    _check_files(uri, version, table)
    try:
        lf = _hide_buckets(_decode(table, pl.scan_delta(table)), columns)
        if columns is not None:
            lf = lf.select(list(columns))
        if where is not None:
            lf = lf.filter(where)
        return lf.collect()
    except BaseException as err:
        if not _is_failure(err):
            raise
        raise _read_error(uri, version, table, err) from err


def read_buckets(
    uri: str,
    *,
    version: int,
    columns: Sequence[str],
    storage_options: Mapping[str, str] | None = None,
    fits: Callable[[pl.Schema, int], bool] | None = None,
) -> Iterator[tuple[int, pl.DataFrame]] | None:
    """Every bucket's ``columns`` of a bucketed table at a pinned ``version``, read in one
    scan and given bucket by bucket as soon as the scan has read all of a bucket's rows:
    ``(bucket, rows)``, each bucket of the table's ``B`` once (those without rows last,
    empty). None when ``fits``, given the schema of ``columns`` and the table's row count
    (the log's, else counted from the files' footers), says they do not fit in memory.

    A bucket's rows keep the table's order (what :func:`read_rows` of that bucket alone
    gives). It is one scan (opening the table and planning a read per bucket costs more
    than the read), streamed so that the caller can work on the first buckets while the
    next are read. A bucket is complete when its files' rows, as the log counts them,
    have all come; a table whose log lacks the counts, or whose counts are not the rows
    read (deleted rows), gives those buckets at the end of the scan.

    Raises:
        StorageError: as :func:`read_rows`; the table is opened and its files checked
            before this returns, and a file found damaged while reading fails the
            iteration.
        ValueError: the table is not bucketed.
    """
    import pyarrow as pa

    table = _open(uri, version, storage_options)
    _check_files(uri, version, table)
    if BUCKETS not in table.metadata().partition_columns:
        raise ValueError(f"Delta table {uri!r} is not bucketed")
    actions = pa.table(table.get_add_actions(flatten=True))
    ids = [int(b) for b in actions.column(f"partition.{BUCKET}").to_pylist()]
    buckets = max((int(b) for b in actions.column(f"partition.{BUCKETS}").to_pylist()), default=1)
    expected: dict[int, int] = {}
    counts = (
        actions.column("num_records").to_pylist() if "num_records" in actions.column_names else []
    )
    if len(counts) == len(ids) and None not in counts:
        for bucket, count in zip(ids, counts, strict=True):
            expected[bucket] = expected.get(bucket, 0) + int(count)
    try:
        lf = _decode(table, pl.scan_delta(table))
        schema = lf.select(list(columns)).collect_schema()
        if fits is not None:
            # the log's counts (an upper bound when rows were deleted) save reading footers
            logged = bool(expected) or not ids
            rows = sum(expected.values()) if logged else int(lf.select(pl.len()).collect().item())
            if not fits(schema, rows):
                return None
        # started here: the scan runs while the caller gets ready for its first bucket
        stream = lf.select([*columns, BUCKET]).collect_batches()
    except BaseException as err:
        if not _is_failure(err):
            raise
        raise _read_error(uri, version, table, err) from err
    batches = _bucket_batches(stream, list(columns), expected)
    return _given(uri, version, table, batches, buckets, pl.DataFrame(schema=schema))


def _bucket_batches(
    stream: Iterator[pl.DataFrame], columns: list[str], expected: Mapping[int, int]
) -> Iterator[tuple[int, pl.DataFrame]]:
    """:func:`read_buckets`' buckets with rows, from the scan's batches."""
    pending: dict[int, list[pl.DataFrame]] = {}
    seen: dict[int, int] = {}
    for batch in stream:
        # the partition column may come in other chunks than the rest: split apart (a
        # frame of the batch's columns, not a select, which would plan a query for each)
        rows = pl.DataFrame([batch.get_column(c) for c in columns])
        for bucket, part in by_bucket(rows, batch.get_column(BUCKET)).items():
            if bucket in seen and bucket not in pending:  # given already: it was not whole
                raise StorageError(
                    f"bucket {bucket} has more rows than the log counts for its files"
                )
            pending.setdefault(bucket, []).append(part)
            seen[bucket] = seen.get(bucket, 0) + part.height
            if seen[bucket] == expected.get(bucket):
                yield bucket, _stacked(pending.pop(bucket))
    for bucket in sorted(pending):
        yield bucket, _stacked(pending.pop(bucket))


def _given(
    uri: str,
    version: int,
    table: Any,
    batches: Iterator[tuple[int, pl.DataFrame]],
    buckets: int,
    empty: pl.DataFrame,
) -> Iterator[tuple[int, pl.DataFrame]]:
    """``batches``' buckets, then the others of ``buckets`` empty; a failed read as
    :func:`read_rows` reports it."""
    given = set()
    try:
        for bucket, rows in batches:
            given.add(bucket)
            yield bucket, rows
    except BaseException as err:
        if not _is_failure(err):
            raise
        raise _read_error(uri, version, table, err) from err
    for bucket in range(buckets):
        if bucket not in given:
            yield bucket, empty


def _stacked(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """One frame of a bucket's parts, in order (kept in their chunks: no copy)."""
    return parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical", rechunk=False)


def _hide_buckets(lf: pl.LazyFrame, columns: Sequence[str] | None) -> pl.LazyFrame:
    """Bucketed tables' partition columns are storage, not rows: shown only when asked for."""
    if columns is not None:
        return lf
    hidden = [c for c in (BUCKET, BUCKETS) if c in lf.collect_schema()]
    return lf.drop(hidden) if hidden else lf


def bucket_count(
    uri: str, version: int, storage_options: Mapping[str, str] | None = None, *, empty: int = 1
) -> int:
    """How many buckets the table had at ``version`` (1: not bucketed).

    Each bucketed file's partition values carry ``B`` (column ``__fk_buckets``), so a pinned
    version says by itself how it was written, whatever happened to the table later. A
    bucketed table without files gives ``empty`` (any count reads nothing from it; a
    writer passes one above 1, so its rows get the partition columns the table has).
    """
    import pyarrow as pa

    table = _open(uri, version, storage_options)
    if BUCKETS not in table.metadata().partition_columns:
        return 1
    actions = pa.table(table.get_add_actions(flatten=True))
    column = f"partition.{BUCKETS}"
    if actions.num_rows == 0 or column not in actions.column_names:
        return empty
    return int(actions.column(column)[0].as_py())


def _files(table: Any) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every data file of ``table``, as its log records."""
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=False))
    return list(
        zip(
            actions.column("path").to_pylist(),
            actions.column("size_bytes").to_pylist(),
            strict=True,
        )
    )


def _local_root(table: Any) -> Path | None:
    """The folder of a table on the local file system, or None for object stores."""
    root = str(table.table_uri)
    if root.startswith("file://"):
        return Path(unquote(urlparse(root).path))
    return None if "://" in root else Path(root)


def _file_problems(table: Any, *, read_footers: bool) -> list[str]:
    """What is wrong with each damaged data file (at most three): missing, wrong size, or
    (``read_footers``) a footer that does not parse. Local tables only; else []."""
    root = _local_root(table)
    if root is None:
        return []
    problems = []
    for relative, size in _files(table):
        if "://" in relative:  # a file outside the table's folder (a shallow clone): not ours
            continue
        path = root / unquote(relative)
        if not path.is_file():
            problems.append(f"data file {relative!r} is missing")
        elif path.stat().st_size != size:
            problems.append(
                f"data file {relative!r} is {path.stat().st_size} bytes, but the log "
                f"recorded {size}"
            )
        elif read_footers:
            import pyarrow.parquet as pq

            try:
                pq.read_metadata(path)
            except Exception as err:
                problems.append(f"data file {relative!r} is not valid parquet ({_first_line(err)})")
        if len(problems) == 3:
            break
    return problems


def _check_files(uri: str, version: int, table: Any) -> None:
    """Refuse, before reading, a local table whose files are missing or were resized."""
    try:
        problems = _file_problems(table, read_footers=False)
    except BaseException as err:
        if not _is_failure(err):
            raise
        raise _read_error(uri, version, table, err) from err
    if problems:
        raise StorageError(
            f"reading Delta table {uri!r} at version {version} failed: "
            f"{'; '.join(problems)}. {_DAMAGED}"
        )


def _read_error(uri: str, version: int, table: Any, err: BaseException) -> StorageError:
    """A StorageError for a failed read, naming the damaged files when they can be found."""
    try:
        problems = _file_problems(table, read_footers=True)
    except Exception:  # the diagnosis is best effort: the original error is the news
        problems = []
    cause = "; ".join(problems) if problems else _first_line(err)
    return StorageError(
        f"reading Delta table {uri!r} at version {version} failed: {cause}. {_DAMAGED}"
    )


def _commit_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """A commit's custom metadata: each key under featurekit's prefix, values as text
    (JSON for anything not a string)."""
    return {
        META_PREFIX + k: v if isinstance(v, str) else orjson.dumps(v).decode()
        for k, v in metadata.items()
    }


def _one_batch(frame: pl.DataFrame, *, string_views: bool = False) -> Any:
    """The frame as an Arrow table of one record batch, in types Delta Lake can hold.

    delta-rs deals record batches round-robin to parallel writers, so the rows of two
    batches can land in the table in either order; inside one batch the order is kept.
    Keeping each frame in one batch keeps its (sorted) order, and with it the order of
    exact ties that the point-in-time tie-break reads.

    ``string_views`` hands strings over as polars holds them (Arrow string views) instead
    of copying them into plain Arrow strings: the Delta schema says ``string`` either way
    and readers get the same values, but the parquet files carry a string-view type hint
    that Arrow readers before pyarrow 16 do not know.
    """
    import pyarrow as pa

    frame, encoded = _encode(frame)
    compat = pl.CompatLevel.newest() if string_views else None
    table = (frame.rechunk() if frame.n_chunks() > 1 else frame).to_arrow(compat_level=compat)
    if encoded:
        fields = [
            f.with_metadata({DTYPE_KEY: encoded[f.name]}) if f.name in encoded else f
            for f in table.schema
        ]
        table = table.cast(pa.schema(fields))  # same types, with the metadata
    return table.combine_chunks() if table.num_rows else table


# ---- dtypes Delta Lake cannot hold --------------------------------------------------------
# Delta has no unsigned or 128-bit integers, times of day, durations, fixed-size arrays or
# enums. Such columns are stored in a type that holds every value exactly (and keeps the
# order where it can: UInt64 as Decimal(20, 0)), with the original polars dtype in the
# Delta schema's field metadata; reads cast them back, so a UInt64 key comes back UInt64
# with values above the signed range intact. Other dtypes are stored as they are.

#: Field metadata key holding the original dtype of a column stored in another type.
DTYPE_KEY = "featurekit.dtype"

_WIDER: dict[Any, pl.DataType] = {
    pl.UInt8: pl.Int16(),
    pl.UInt16: pl.Int32(),
    pl.UInt32: pl.Int64(),
    pl.UInt64: pl.Decimal(20, 0),
    pl.Int128: pl.String(),
    pl.UInt128: pl.String(),
    pl.Time: pl.Int64(),
}


def _storable(dtype: pl.DataType | DataTypeClass) -> pl.DataType | None:
    """The dtype ``dtype`` is stored as, or None when Delta holds it as it is."""
    dtype = _instance(dtype)
    for kind, stored in _WIDER.items():
        if dtype == kind:
            return stored
    if isinstance(dtype, pl.Duration):
        return pl.Int64()
    if isinstance(dtype, pl.Enum):
        return pl.String()
    if isinstance(dtype, pl.Array):
        inner = dtype.inner
        return pl.List(_storable(inner) or inner)
    if isinstance(dtype, pl.List):
        inner_stored = _storable(dtype.inner)
        return None if inner_stored is None else pl.List(inner_stored)
    if isinstance(dtype, pl.Struct):
        stored_fields = [_storable(f.dtype) for f in dtype.fields]
        if all(f is None for f in stored_fields):
            return None
        return pl.Struct(
            [
                pl.Field(f.name, s or f.dtype)
                for f, s in zip(dtype.fields, stored_fields, strict=True)
            ]
        )
    return None


def _encode(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, str]]:
    """``frame`` in storable dtypes, and the original dtype (JSON) of each changed column."""
    encoded: dict[str, str] = {}
    casts = []
    for name, dtype in frame.schema.items():
        stored = _storable(dtype)
        if stored is None:
            continue
        encoded[name] = orjson.dumps(dtype_to_json(dtype)).decode()
        expr = pl.col(name)
        if dtype == pl.Time or isinstance(dtype, pl.Duration):
            expr = expr.to_physical()
        casts.append(expr.cast(stored))
    return (frame.with_columns(casts) if casts else frame), encoded


def _decode(table: Any, lf: pl.LazyFrame) -> pl.LazyFrame:
    """Cast the columns stored in another dtype (see :func:`_encode`) back to theirs."""
    casts = []
    for field in table.schema().fields:
        spec = (field.metadata or {}).get(DTYPE_KEY)
        if spec is None:
            continue
        dtype = dtype_from_json(orjson.loads(spec))
        casts.append(pl.col(field.name).cast(dtype))
    return lf.with_columns(casts) if casts else lf


_SIMPLE: dict[str, pl.DataType] = {
    str(d): d
    for d in (
        pl.Int8(),
        pl.Int16(),
        pl.Int32(),
        pl.Int64(),
        pl.Int128(),
        pl.UInt8(),
        pl.UInt16(),
        pl.UInt32(),
        pl.UInt64(),
        pl.UInt128(),
        pl.Float32(),
        pl.Float64(),
        pl.Boolean(),
        pl.String(),
        pl.Binary(),
        pl.Date(),
        pl.Time(),
        pl.Null(),
        pl.Categorical(),
    )
}


def _instance(dtype: pl.DataType | DataTypeClass) -> pl.DataType:
    """Nested dtypes may hold their inner dtypes as classes (``pl.Int64``): an instance."""
    return dtype() if isinstance(dtype, type) else dtype


def dtype_to_json(dtype: pl.DataType | DataTypeClass) -> Any:
    """A polars dtype as plain JSON data (stable across polars versions, unlike its repr)."""
    dtype = _instance(dtype)
    if isinstance(dtype, pl.Datetime):
        return {"datetime": dtype.time_unit, "zone": dtype.time_zone}
    if isinstance(dtype, pl.Duration):
        return {"duration": dtype.time_unit}
    if isinstance(dtype, pl.Decimal):
        return {"decimal": [dtype.precision, dtype.scale]}
    if isinstance(dtype, pl.Enum):
        return {"enum": dtype.categories.to_list()}
    if isinstance(dtype, pl.Array):
        return {"array": dtype_to_json(dtype.inner), "size": dtype.size}
    if isinstance(dtype, pl.List):
        return {"list": dtype_to_json(dtype.inner)}
    if isinstance(dtype, pl.Struct):
        return {"struct": [[f.name, dtype_to_json(f.dtype)] for f in dtype.fields]}
    name = str(dtype)
    if name not in _SIMPLE:
        raise StorageError(f"dtype {dtype} cannot be recorded in a Delta table's schema.")
    return name


def dtype_from_json(data: Any) -> pl.DataType:
    """The inverse of :func:`dtype_to_json`."""
    if isinstance(data, str):
        return _SIMPLE[data]
    if "datetime" in data:
        return pl.Datetime(data["datetime"], data["zone"])
    if "duration" in data:
        return pl.Duration(data["duration"])
    if "decimal" in data:
        return pl.Decimal(*data["decimal"])
    if "enum" in data:
        return pl.Enum(data["enum"])
    if "array" in data:
        return pl.Array(dtype_from_json(data["array"]), data["size"])
    if "list" in data:
        return pl.List(dtype_from_json(data["list"]))
    return pl.Struct([pl.Field(n, dtype_from_json(d)) for n, d in data["struct"]])


def file_count(uri: str, version: int, storage_options: Mapping[str, str] | None = None) -> int:
    """Number of data files in the table at ``version``."""
    return len(_open(uri, version, storage_options).file_uris())


def _writer_properties(schema: Any, unindexed: Sequence[str] = ()) -> Any:
    """Parquet settings: no dictionary encoding for float and time columns, no statistics
    for the ``unindexed`` columns.

    Feature values and timestamps rarely repeat, so the writer's dictionary attempt is
    wasted work (it falls back to plain encoding anyway): skipping it halves the write
    time and speeds up reads. Keys keep their dictionaries.

    Given properties, the files are written uncompressed (the Rust parquet writer's
    default; delta-rs uses snappy only when no properties are given). Kept so: feature
    values are mostly floats, which compress poorly (2M rows of keys, times and floats,
    measured: 132 MB uncompressed, 120 MB snappy, 113 MB zstd level 1), while snappy
    costs 40% more write time and zstd twice the write and three times the read time.
    A table with no float or time column and no unindexed column gets no properties,
    hence snappy.

    Statistics (each file's min, max and null count of a column, in the file and in the
    Delta log) only serve to skip files when reading with a filter on that column; for
    columns nobody filters on, or whose values are random (ids, JSON text), they are
    work with no use: a sixth of the serving log's write time (measured).
    """
    import pyarrow as pa
    from deltalake import ColumnProperties, WriterProperties

    plain = {
        field.name
        for field in schema
        if pa.types.is_floating(field.type) or pa.types.is_temporal(field.type)
    }
    bare = set(unindexed) & set(schema.names)
    if not plain and not bare:
        return None
    return WriterProperties(
        column_properties={
            name: ColumnProperties(
                dictionary_enabled=False if name in plain else None,
                statistics_enabled="NONE" if name in bare else None,
            )
            for name in sorted(plain | bare)
        }
    )


#: commits an :class:`Appender` makes through a table before it opens it afresh
REOPEN_COMMITS = 10


class Appender:
    """Commits batches of rows to one Delta table, holding the table open between commits.

    For a process that commits to one table again and again (the serving log's writer,
    a commit a second). Opening a table reads its log (the last checkpoint and the commits
    since): :func:`write_rows` opens it twice a commit (to write, then to read the new
    version). Held open, the table is moved by delta-rs to each version it commits; but
    each commit then costs more than the one before (delta-rs goes over every commit
    since the table was opened: from 3 to 31 ms of CPU over 400 commits, measured), so it
    is opened afresh every :data:`REOPEN_COMMITS` commits, and after a failed commit.
    Measured over 300 commits of a small batch, CPU per commit: 45 ms by
    :func:`write_rows` with a predicate, 26 ms opened afresh each time, 12 ms held for 10.

    Example:
        >>> log = Appender("store/serving_log", unindexed=["entity"])
        >>> log.append(frame, metadata={"serving_log": "a1b2"})
    """

    def __init__(
        self,
        uri: str,
        *,
        storage_options: Mapping[str, str] | None = None,
        unindexed: Sequence[str] = (),
    ) -> None:
        """Commit to the table at ``uri``; ``unindexed`` columns are written without
        parquet statistics: columns no read filters on, whose statistics are pure cost."""
        self.uri = uri
        self.storage_options = storage_options
        self.unindexed = tuple(unindexed)
        self._table: Any = None
        self._held = 0  # commits made through the table held

    def append(self, frame: pl.DataFrame, *, metadata: Mapping[str, Any]) -> int:
        """Append ``frame`` in one commit, creating the table if there is none; returns
        the new version. Appends never conflict with other writers' appends."""
        return self._commit(frame, metadata, None)

    def replace(self, frame: pl.DataFrame, predicate: str, *, metadata: Mapping[str, Any]) -> int:
        """Replace the rows matching ``predicate`` with ``frame`` in one commit (append
        when there is no table yet); returns the new version.

        The table is opened afresh first: a replace reads the table, and one held since
        another writer's commit would fail as stale.
        """
        self._table, self._held = None, 0
        return self._commit(frame, metadata, predicate)

    def _commit(
        self, frame: pl.DataFrame, metadata: Mapping[str, Any], predicate: str | None
    ) -> int:
        from deltalake import CommitProperties, write_deltalake

        custom = _commit_metadata(metadata)
        # string views: strings copied into plain Arrow strings first cost about 15% more
        # CPU to write (the copy and its encoding; the serving log's rows, paired runs)
        data = _one_batch(frame, string_views=True)
        try:
            if self._table is None and table_exists(self.uri, self.storage_options):
                self._table = _open(self.uri, storage_options=self.storage_options)
            held = self._table is not None
            if predicate is not None and held:
                mode: dict[str, Any] = {"mode": "overwrite", "predicate": predicate}
            else:
                mode = {"mode": "append"}
            write_deltalake(
                self._table if held else self.uri,
                data,
                writer_properties=_writer_properties(data.schema, self.unindexed),
                **mode,
                storage_options=None if held else _options(self.storage_options, self.uri),
                commit_properties=CommitProperties(
                    custom_metadata=custom, max_commit_retries=COMMIT_RETRIES
                ),
            )
            if not held:  # just created: held from the next commit on
                self._table = _open(self.uri, storage_options=self.storage_options)
            version = int(self._table.version())
            self._held += 1
            if self._held >= REOPEN_COMMITS:
                self._table, self._held = None, 0
            return version
        except BaseException as err:
            self._table, self._held = None, 0  # its state is unknown: opened afresh next time
            if not _is_failure(err):
                raise
            if isinstance(err, StorageError):
                raise
            raise _write_error(self.uri, err, self.storage_options) from err


# ---- team stores: conflicts, deletion and vacuum ----------------------------------------


def _write_error(
    uri: str, err: BaseException, storage_options: Mapping[str, str] | None
) -> StorageError:
    """The StorageError for a failed write: a :class:`CommitConflict` when another writer won."""
    from deltalake.exceptions import CommitFailedError

    from featurekit.core.redact import redact, redact_url
    from featurekit.storage.remote import secret_values

    text = redact(_first_line(err), known=secret_values(storage_options or {}))
    if isinstance(err, CommitFailedError) or "already exists" in text:
        return CommitConflict(
            f"writing Delta table {redact_url(uri)!r} lost to a concurrent writer after "
            f"{COMMIT_RETRIES} retries: {text}"
        )
    return StorageError(f"writing Delta table {redact_url(uri)!r} failed: {text}")


def delete_rows(
    uri: str,
    predicate: str,
    *,
    metadata: Mapping[str, Any],
    storage_options: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Delete the rows matching ``predicate`` in one commit: (rows deleted, new version).

    Files holding matching rows are rewritten without them; the old files stay on storage
    (older table versions still name them) until :func:`vacuum` style removal.
    """
    from deltalake import CommitProperties, DeltaTable

    custom = _commit_metadata(metadata)
    try:
        table = DeltaTable(uri, storage_options=_options(storage_options, uri))
        metrics = table.delete(
            predicate,
            commit_properties=CommitProperties(
                custom_metadata=custom, max_commit_retries=COMMIT_RETRIES
            ),
        )
        deleted = int(metrics.get("num_deleted_rows", 0) or 0)
        return deleted, int(table.version())
    except Exception as err:
        raise _write_error(uri, err, storage_options) from err


def data_files(
    uri: str, version: int, storage_options: Mapping[str, str] | None = None
) -> list[str]:
    """Paths (relative to the table) of the data files of the table at ``version``."""
    import pyarrow as pa
    from deltalake import DeltaTable

    table = DeltaTable(uri, version=version, storage_options=_options(storage_options, uri))
    actions = pa.table(table.get_add_actions(flatten=True))  # Arrow C stream -> pyarrow
    return sorted(str(p) for p in actions.column("path").to_pylist())


def first_commit_meta(
    uri: str, storage_options: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """featurekit metadata of the table's first commit (who created it), or None."""
    entries = history(uri, storage_options)
    return entries[0]["featurekit"] if entries else None
