"""Delta Lake tables: the only module that talks to ``deltalake``.

Every commit carries featurekit's custom metadata (view, version, fingerprint, run id,
window, source watermarks), so a table's history is also its materialization log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl

from featurekit.errors import StorageError

META_PREFIX = "featurekit."


def _options(storage_options: Mapping[str, str] | None) -> dict[str, str] | None:
    return dict(storage_options) if storage_options else None


def table_exists(uri: str, storage_options: Mapping[str, str] | None = None) -> bool:
    """Whether a Delta table lives at ``uri``."""
    from deltalake import DeltaTable

    return bool(DeltaTable.is_deltatable(uri, storage_options=_options(storage_options)))


def write_rows(
    uri: str,
    frame: pl.DataFrame,
    *,
    metadata: Mapping[str, Any],
    predicate: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> int:
    """Atomically replace the rows matching ``predicate`` (all rows when None); returns the new version.

    One Delta commit: readers see the old rows or the new ones, never a mix.
    """
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    custom = {
        META_PREFIX + k: v if isinstance(v, str) else orjson.dumps(v).decode()
        for k, v in metadata.items()
    }
    try:
        write_deltalake(
            uri,
            frame.to_arrow(),
            mode="overwrite",
            predicate=predicate,
            schema_mode=None,
            storage_options=_options(storage_options),
            commit_properties=CommitProperties(custom_metadata=custom),
        )
        return int(DeltaTable(uri, storage_options=_options(storage_options)).version())
    except Exception as err:
        raise StorageError(f"writing Delta table {uri!r} failed: {err}") from err


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
