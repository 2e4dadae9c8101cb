"""Deletion on request, and vacuum: a person's rows leave every table, then the disk.

**Delete.** :func:`delete` removes an entity's keys from the table of every version of
every view of that entity: one Delta delete (one commit) per table, so readers of the
latest version never see them again. Older Delta versions still name the files that held
them, so before deleting, every data file on storage is checked for the keys: those files,
and the table versions that reference them, are recorded in a
:class:`~featurekit.storage.records.DeletionEvent` (who, when, why, counts per table, the
keys only as a salted hash). The online store is re-synced from the new latest version,
which no longer holds the keys.

**Vacuum.** :func:`vacuum` removes data files that nothing needs: a file stays when the
latest version of its table references it, or a *kept* training set (saved under a name,
or linked to a logged model) pins a table version that references it, or it is younger
than ``retain`` (it may belong to a commit in flight). Files that held deleted rows go
whatever their age and whoever pins them: that is what makes a deletion physical. Delta
logs stay, so history stays readable as history.

**Rebuilding after a deletion.** A training set pinned to a table version whose files held
deleted rows can never be rebuilt to the same rows; :func:`check_rebuildable` raises
:class:`~featurekit.core.errors.ReproducibilityError` naming the deletion event, before any
read. Every other training set rebuilds exactly, and its hash is still verified.
"""

from __future__ import annotations

import getpass
import hashlib
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import polars as pl

from featurekit.core.errors import DefinitionError, NotFoundError, ReproducibilityError
from featurekit.core.names import shown
from featurekit.core.timeutil import utcnow
from featurekit.storage import delta
from featurekit.storage.manifest import Manifest
from featurekit.storage.records import DeletedTable, DeletionEvent, VersionRecord
from featurekit.storage.registry import Registry

__all__ = ["VacuumItem", "VacuumReport", "check_rebuildable", "delete", "vacuum"]

_LOG = "_delta_log/"


def delete(
    registry: Registry,
    entity: str,
    key_columns: Sequence[str] | None,
    keys: Any,
    *,
    reason: str,
    resync: Any = None,
) -> DeletionEvent:
    """Delete ``keys`` of ``entity`` from every view version's table; record the event.

    ``resync(view, version)`` rewrites that view version's online entries (and returns how
    many of the deleted keys it held before); None when the store has no online store.
    """
    registry.check_writable()
    if not isinstance(reason, str) or not reason.strip():
        raise DefinitionError("store.delete needs a reason=..., e.g. reason='GDPR request 123'.")
    records = [
        record
        for name in registry.view_names()
        for record in registry.versions(name)
        if record.entity == entity
    ]
    if not records and key_columns is None:
        raise NotFoundError(f"no view of entity {entity!r} in this store; nothing to delete.")
    columns = list(key_columns) if key_columns is not None else list(records[0].keys)
    frame = _key_frame(keys, columns)
    event_id = f"{utcnow().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    tables = [_delete_from(registry, record, frame, event_id, reason, resync) for record in records]
    salt = secrets.token_hex(16)
    event = DeletionEvent(
        id=event_id,
        created_at=utcnow(),
        by=_who(),
        reason=reason.strip(),
        entity=entity,
        key_columns=columns,
        key_count=frame.height,
        salt=salt,
        keys_hash=keys_hash(frame, salt),
        tables=tables,
    )
    registry.add_deletion(event)
    return event


def keys_hash(frame: pl.DataFrame, salt: str) -> str:
    """SHA-256 of the salt and the sorted keys (the only trace of the values kept)."""
    rows = sorted(orjson.dumps(list(r), default=str) for r in frame.iter_rows())
    digest = hashlib.sha256(salt.encode())
    for row in rows:
        digest.update(row)
    return digest.hexdigest()


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment (some containers)
        return "unknown"


def _key_frame(keys: Any, columns: list[str]) -> pl.DataFrame:
    """The keys as a frame with one column per key column, duplicates dropped."""
    if isinstance(keys, pl.DataFrame):
        frame = keys
    elif isinstance(keys, Mapping):
        frame = pl.DataFrame({str(k): list(v) for k, v in keys.items()})
    elif isinstance(keys, Sequence) and not isinstance(keys, str):
        values = list(keys)
        if len(columns) == 1:
            frame = pl.DataFrame({columns[0]: values})
        else:
            frame = pl.DataFrame([tuple(v) for v in values], schema=columns, orient="row")
    else:
        raise DefinitionError(
            f"keys must be a mapping of key columns to values, a frame, or a list of values; "
            f"got {type(keys).__name__}."
        )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DefinitionError(
            f"keys lack the key column(s) {missing} of the entity (keys: {columns})."
        )
    frame = frame.select(columns).unique(maintain_order=True)
    if frame.is_empty():
        raise DefinitionError("no keys given to delete.")
    return frame


def _delete_from(
    registry: Registry,
    record: VersionRecord,
    keys: pl.DataFrame,
    event_id: str,
    reason: str,
    resync: Any,
) -> DeletedTable:
    layout, options = registry.layout, registry.storage_options
    uri = layout.table_uri(record.view, record.version)
    table = layout.table_key(record.view, record.version)
    current = delta.current_version(uri, options)
    if current is None:  # registered, never materialized
        return DeletedTable(
            view=record.view,
            version=record.version,
            table=table,
            rows_deleted=0,
            delta_version=None,
            affected_versions=[],
            files=[],
        )
    held = _files_holding(registry, table, keys)
    affected = [
        v for v in range(current + 1) if held and held & set(delta.data_files(uri, v, options))
    ]
    rows, version = 0, None
    if held:
        rows, version = delta.delete_rows(
            uri,
            _predicate(keys, record),
            metadata={"deletion": event_id, "reason": reason, "mode": "delete"},
            storage_options=options,
        )
    online = int(resync(record.view, record.version, keys)) if resync is not None else 0
    return DeletedTable(
        view=record.view,
        version=record.version,
        table=table,
        rows_deleted=rows,
        delta_version=version,
        affected_versions=affected,
        files=sorted(held),
        online_keys_removed=online,
    )


def _files_holding(registry: Registry, table: str, keys: pl.DataFrame) -> set[str]:
    """Data files of the table (every one on storage, any version's) holding any key."""
    layout, options = registry.layout, registry.storage_options
    found = set()
    prefix = f"{table}/"
    for info in registry.objects.list_info(prefix):
        relative = info.key[len(prefix) :]
        if relative.startswith(_LOG) or not relative.endswith(".parquet"):
            continue
        scan = pl.scan_parquet(layout.uri(info.key), storage_options=options or None)
        schema = scan.collect_schema()
        wanted = keys.with_columns(pl.col(c).cast(schema[c]) for c in keys.columns)
        hits = scan.select(keys.columns).join(wanted.lazy(), on=keys.columns, how="semi")
        if hits.select(pl.len()).collect().item():
            found.add(relative)
    return found


def _predicate(keys: pl.DataFrame, record: VersionRecord) -> str:
    """A SQL predicate matching exactly the key rows (for Delta's delete)."""
    columns = keys.columns
    if len(columns) == 1:
        values = ", ".join(_literal(v, columns[0], record) for v in keys[columns[0]])
        return f"{_quoted(columns[0])} IN ({values})"
    rows = [
        "("
        + " AND ".join(
            f"{_quoted(c)} = {_literal(v, c, record)}" for c, v in zip(columns, r, strict=True)
        )
        + ")"
        for r in keys.iter_rows()
    ]
    return " OR ".join(rows)


def _quoted(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _literal(value: Any, column: str, record: VersionRecord) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise DefinitionError(
        f"key column {column!r} of view {record.view!r}: cannot delete by a "
        f"{type(value).__name__} key ({shown(value)}); keys must be integers, floats, "
        "booleans or strings."
    )


# ---- vacuum -------------------------------------------------------------------------------
@dataclass(frozen=True)
class VacuumItem:
    """One file vacuum removes (or would remove), and why."""

    key: str
    size: int
    reason: str


@dataclass(frozen=True)
class VacuumReport:
    """What a vacuum removed (``dry_run``: would remove)."""

    items: list[VacuumItem]
    dry_run: bool
    retain: timedelta

    @property
    def bytes(self) -> int:
        """Total size of the files."""
        return sum(i.size for i in self.items)

    def to_polars(self) -> pl.DataFrame:
        """One row per file: key, size, reason."""
        return pl.DataFrame(
            {
                "key": [i.key for i in self.items],
                "size": [i.size for i in self.items],
                "reason": [i.reason for i in self.items],
            },
            schema={"key": pl.String, "size": pl.Int64, "reason": pl.String},
        )

    def __repr__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return f"VacuumReport({verb} {len(self.items)} files, {self.bytes:,} bytes)"


def vacuum(registry: Registry, retain: timedelta, *, dry_run: bool = False) -> VacuumReport:
    """Remove data files nothing needs (see the module docstring for what stays)."""
    if not dry_run:
        registry.check_writable()
    layout, options = registry.layout, registry.storage_options
    cutoff: datetime = utcnow() - retain
    held: dict[str, dict[str, str]] = {}  # table -> file -> deletion event id
    for event in registry.deletions():
        for entry in event.tables:
            for file in entry.files:
                held.setdefault(entry.table, {})[file] = event.id
    pins = _pinned(registry)
    items = []
    for name in registry.view_names():
        for record in registry.versions(name):
            table = layout.table_key(name, record.version)
            uri = layout.table_uri(name, record.version)
            current = delta.current_version(uri, options)
            if current is None:
                continue
            keep = set(delta.data_files(uri, current, options))
            for version in sorted(pins.get(table, set())):
                if version <= current:
                    keep |= set(delta.data_files(uri, version, options))
            tainted = held.get(table, {})
            prefix = f"{table}/"
            for info in registry.objects.list_info(prefix):
                relative = info.key[len(prefix) :]
                if relative.startswith(_LOG):
                    continue
                if relative in tainted:
                    why = f"held rows deleted by deletion {tainted[relative]}"
                elif relative in keep or info.modified > cutoff:
                    continue
                else:
                    why = "not referenced by the latest version or a kept training set"
                items.append(VacuumItem(info.key, info.size, why))
    if not dry_run:
        for item in items:
            registry.objects.delete(item.key)
    return VacuumReport(items, dry_run, retain)


def _pinned(registry: Registry) -> dict[str, set[int]]:
    """Table key -> Delta versions pinned by kept training sets (saved, or behind a model)."""
    kept = set(registry.training_set_names().values())
    for name in registry.model_names():
        kept.update(m.training_set for m in registry.model_versions(name))
    pins: dict[str, set[int]] = {}
    for ts_id in sorted(kept):
        if not registry.has_manifest(ts_id):
            continue
        for view in registry.manifest(ts_id).views:
            if view.delta_version is not None:
                pins.setdefault(view.table, set()).add(view.delta_version)
    return pins


def check_rebuildable(registry: Registry, manifest: Manifest) -> None:
    """Raise ReproducibilityError when the set's pinned data held since-deleted rows."""
    events = registry.deletions()
    if not events:
        return
    for view in manifest.views:
        for event in events:
            for entry in event.tables:
                if entry.table == view.table and view.delta_version in entry.affected_versions:
                    raise ReproducibilityError(
                        f"training set {manifest.id!r} cannot be rebuilt: the rows it read "
                        f"from view {view.view!r} version {view.version} (Delta version "
                        f"{view.delta_version}) included rows deleted by deletion event "
                        f"{event.id!r} at {event.created_at.isoformat()} (reason: "
                        f"{event.reason!r}). Build a new training set from the same labels "
                        "instead."
                    )
