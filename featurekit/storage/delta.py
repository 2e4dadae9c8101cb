"""Delta Lake tables: the only module that talks to ``deltalake``.

Every commit carries featurekit's custom metadata (view, version, fingerprint, run id,
window, source watermarks), so a table's history is also its materialization log.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl

from featurekit.core.errors import StorageError

META_PREFIX = "featurekit."
#: How often delta-rs retries a commit that lost a race to another writer before failing
#: (its default is 15; machines sharing a team store race more).
COMMIT_RETRIES = 100


#: A predicate matching every row: an overwrite with it replaces the whole table like a plain
#: overwrite, but (unlike one) fails when another writer adds rows while it runs.
REPLACE_ALL = "true"


class CommitConflict(StorageError):
    """A Delta commit lost to a concurrent writer and could not be retried (re-plan and retry)."""


def _options(storage_options: Mapping[str, str] | None) -> dict[str, str] | None:
    return dict(storage_options) if storage_options else None


def table_exists(uri: str, storage_options: Mapping[str, str] | None = None) -> bool:
    """Whether a Delta table lives at ``uri``."""
    from deltalake import DeltaTable

    return bool(DeltaTable.is_deltatable(uri, storage_options=_options(storage_options)))


def write_rows(
    uri: str,
    frame: pl.DataFrame | Iterable[pl.DataFrame],
    *,
    metadata: Mapping[str, Any],
    predicate: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    create: bool = False,
    replace_schema: bool = False,
) -> int:
    """Atomically replace the rows matching ``predicate`` (all rows when None); returns the new version.

    One Delta commit: readers see the old rows or the new ones, never a mix. ``frame`` may be
    an iterable of frames with one schema (batches): they are streamed into that one
    commit, and an error raised while producing them aborts it (and is re-raised as is).
    ``create=True`` only creates a new table: if one appears at ``uri`` first (another
    writer's), nothing is written and :class:`CommitConflict` is raised.
    ``replace_schema=True`` lets the rows replace a table of another schema.
    """
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    custom = {
        META_PREFIX + k: v if isinstance(v, str) else orjson.dumps(v).decode()
        for k, v in metadata.items()
    }
    failures: list[BaseException] = []
    data = _one_batch(frame) if isinstance(frame, pl.DataFrame) else _stream(frame, failures)
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
            schema_mode="overwrite" if replace_schema else None,
            storage_options=_options(storage_options),
            commit_properties=CommitProperties(
                custom_metadata=custom,
                # a create must not be retried: a retry would land on the winner's table
                max_commit_retries=0 if create else COMMIT_RETRIES,
            ),
        )
        return int(DeltaTable(uri, storage_options=_options(storage_options)).version())
    except Exception as err:
        if failures:  # the batches' producer failed (e.g. user code): that is the error
            raise failures[0] from None
        raise _write_error(uri, err, storage_options) from err


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
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def current_version(uri: str, storage_options: Mapping[str, str] | None = None) -> int | None:
    """Latest version of the table, or None if there is no table."""
    from deltalake import DeltaTable

    if not table_exists(uri, storage_options):
        return None
    return int(DeltaTable(uri, storage_options=_options(storage_options)).version())


def history(uri: str, storage_options: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Commits oldest first, with featurekit metadata decoded under ``"featurekit"``."""
    from deltalake import DeltaTable

    if not table_exists(uri, storage_options):
        return []
    entries = DeltaTable(uri, storage_options=_options(storage_options)).history()
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
    """A lazy scan of the table at a pinned ``version`` (filters are pushed to file stats)."""
    try:
        return pl.scan_delta(uri, version=version, storage_options=_options(storage_options))
    except Exception as err:
        raise StorageError(
            f"reading Delta table {uri!r} at version {version} failed: {err}"
        ) from err


def read_rows(
    uri: str,
    *,
    version: int,
    columns: Sequence[str] | None = None,
    where: pl.Expr | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Read ``columns`` of the table at a pinned ``version``, filtered by ``where``."""
    try:
        lf = pl.scan_delta(uri, version=version, storage_options=_options(storage_options))
        if columns is not None:
            lf = lf.select(list(columns))
        if where is not None:
            lf = lf.filter(where)
        return lf.collect()
    except Exception as err:
        raise StorageError(
            f"reading Delta table {uri!r} at version {version} failed: {err}"
        ) from err


def _one_batch(frame: pl.DataFrame) -> Any:
    """The frame as an Arrow table of one record batch.

    delta-rs deals record batches round-robin to parallel writers, so the rows of two
    batches can land in the table in either order; inside one batch the order is kept.
    Keeping each frame in one batch keeps its (sorted) order, and with it the order of
    exact ties that the point-in-time tie-break reads.
    """
    table = (frame.rechunk() if frame.n_chunks() > 1 else frame).to_arrow()
    return table.combine_chunks() if table.num_rows else table


def file_count(uri: str, version: int, storage_options: Mapping[str, str] | None = None) -> int:
    """Number of data files in the table at ``version``."""
    from deltalake import DeltaTable

    return len(
        DeltaTable(uri, version=version, storage_options=_options(storage_options)).file_uris()
    )


def _writer_properties(schema: Any) -> Any:
    """Parquet settings: no dictionary encoding for float and time columns.

    Feature values and timestamps rarely repeat, so the writer's dictionary attempt is
    wasted work (it falls back to plain encoding anyway): skipping it halves the write
    time and speeds up reads, at the same file size. Keys keep their dictionaries.
    """
    import pyarrow as pa
    from deltalake import ColumnProperties, WriterProperties

    plain = [
        field.name
        for field in schema
        if pa.types.is_floating(field.type) or pa.types.is_temporal(field.type)
    ]
    if not plain:
        return None
    return WriterProperties(
        column_properties={name: ColumnProperties(dictionary_enabled=False) for name in plain}
    )


# ---- team stores: conflicts, deletion and vacuum ----------------------------------------


def _write_error(
    uri: str, err: Exception, storage_options: Mapping[str, str] | None
) -> StorageError:
    """The StorageError for a failed write: a :class:`CommitConflict` when another writer won."""
    from deltalake.exceptions import CommitFailedError

    from featurekit.core.redact import redact, redact_url
    from featurekit.storage.remote import secret_values

    text = redact(str(err), known=secret_values(storage_options or {}))
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

    custom = {
        META_PREFIX + k: v if isinstance(v, str) else orjson.dumps(v).decode()
        for k, v in metadata.items()
    }
    try:
        table = DeltaTable(uri, storage_options=_options(storage_options))
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

    table = DeltaTable(uri, version=version, storage_options=_options(storage_options))
    actions = pa.table(table.get_add_actions(flatten=True))  # Arrow C stream -> pyarrow
    return sorted(str(p) for p in actions.column("path").to_pylist())


def first_commit_meta(
    uri: str, storage_options: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """featurekit metadata of the table's first commit (who created it), or None."""
    entries = history(uri, storage_options)
    return entries[0]["featurekit"] if entries else None
