"""Push: rows written straight to a view version, offline and online, in one call.

``store.push(view, rows)`` (and ``POST /v1/push``) takes rows in the view's output shape
(aggregation views: raw events), stamps them with the ingestion time as their created
time, checks them against the view's checks, then, under the view's lock (the one every
materialization and online sync holds, so pushes and runs are applied in one order):

1. appends them to the version's Delta table in one commit (see
   :mod:`featurekit.offline.push` for how pushed and derived rows share the table);
2. merges them into the online snapshot of the version, entity by entity, and swaps the
   changed entities in one atomic write of the online store.

Group commit: a Delta commit costs milliseconds whatever its size, so one commit per
push would cap small pushes at a few dozen per second however many clients push. Pushes
to one version that arrive while a commit of it runs in this process wait for it, then go
together in the next commit (steps 1 and 2 once for the group); see :class:`Pusher`.
Rows keep their own push's ingestion time and id, and sit in the commit in ingestion
order, so the tie rules below pick between pushes of one group exactly as between
separate commits. Other processes are not grouped with: their commits are serialized by
the view's lock and by Delta's own concurrency control, as before.

Online, a plain view keeps per entity a step function "the row a training set picks at
``t``" (see :mod:`featurekit.online.snapshot`). A pushed row ``r`` becomes a candidate at
``max(event, created)``; from then on the picked row is ``r`` wherever ``r`` beats the
row picked before by the point-in-time order (greater event time, then greater created
time, then the later write). Merging edits that step function exactly, so a lookup after
a push gives what a training set gives with the pushed row in the table, at any instant,
and a later re-snapshot from the table gives the same entries. Aggregation views keep
the events themselves; pushed events are added to them.

If the online snapshot is missing, or lags the table by more than this push (an earlier
online write failed), the push rewrites the whole snapshot from the table instead, so
online never silently misses rows that are offline.

Freshness: the online write is done when ``push`` returns. A lookup in the same process
or in any other (the HTTP server included) sees the pushed rows from its next read: every
read goes to the store, nothing is cached but metadata that a push does not change.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import orjson
import polars as pl

from featurekit.core.checks import evaluate_checks
from featurekit.core.errors import FeatureKitError, NotFoundError, ValidationError
from featurekit.core.names import shown
from featurekit.core.timeutil import utcnow
from featurekit.offline.push import PUSH_COLUMN, append_pushed, pushed_frame
from featurekit.online.aggregates import retention
from featurekit.online.errors import OnlineStoreError
from featurekit.online.snapshot import SnapshotMeta, encode_key, storable_expr
from featurekit.online.stores import OnlineStore
from featurekit.online.sync import sync_view
from featurekit.storage import delta
from featurekit.storage.registry import Registry, VersionRecord

__all__ = ["PushResult", "Pusher", "UpdatableStore"]

_UTC_US = pl.Datetime("us", "UTC")


@runtime_checkable
class UpdatableStore(Protocol):
    """An online store that can change some entities of the current snapshot in place."""

    def update_entries(
        self, view: str, version: int, sid: str, meta: bytes, entries: Sequence[tuple[bytes, bytes]]
    ) -> bool:
        """Replace ``entries`` and the metadata of snapshot ``sid`` atomically.

        Returns False (changing nothing) when ``sid`` is no longer the current snapshot.
        """
        ...


@dataclass(frozen=True)
class PushResult:
    """What one push wrote.

    Attributes:
        view: the view name.
        version: the view version the rows went to.
        rows: how many rows were pushed.
        delta_version: the Delta commit holding them.
        ingested_at: their created time (UTC): training sets see them from this instant.
        push_id: the id stored with each row in the offline table.
    """

    view: str
    version: int
    rows: int
    delta_version: int
    ingested_at: datetime
    push_id: str


#: At most this many rows go into one group commit (a push bigger than that alone).
GROUP_ROWS = 100_000
#: Longest a commit waits for group-mates, in seconds (only after a commit of several).
GROUP_WINDOW = 0.005


@dataclass(eq=False)
class _Pending:
    """One push waiting for the commit that holds its rows."""

    push_id: str
    frame: pl.DataFrame
    now: datetime
    done: bool = False
    version: int = 0
    error: BaseException | None = None


class _Queue:
    """The pushes to one view version not yet committed, and whether a commit is running."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending: list[_Pending] = []
        self.committing = False
        self.last_group = 0  # pushes in the latest commit: how many push concurrently


class Pusher:
    """Pushes rows for one store (keeps each version's stored schema once read).

    Concurrent pushes to one view version are committed in groups: a push that finds no
    commit of that version running in this process commits at once, taking with it every
    push waiting at that moment; pushes that arrive while a commit runs wait for it to end,
    then the next of them commits all that are waiting (up to :data:`GROUP_ROWS` rows).
    Without a window, pushers that each push again as soon as their push returns would
    alternate between a commit of one push and a commit of the rest (the one left waiting
    commits alone while the others come back). So when the latest commit held several
    pushes, the next waits until as many are waiting, at most :data:`GROUP_WINDOW`; after
    a commit of one push nothing waits, so a lone pusher is never delayed. Each push
    returns once the commit holding its rows is done offline and online, exactly as an
    ungrouped push.
    """

    def __init__(self, registry: Registry, online: OnlineStore | None) -> None:
        self.registry = registry
        self.online = online
        self._schemas: dict[tuple[str, int, str], dict[str, pl.DataType]] = {}
        self._queues: dict[tuple[str, int], _Queue] = {}
        self._guard = threading.Lock()

    def waiting(self, view: str, version: int) -> int:
        """How many pushes to ``view`` version ``version`` wait for a commit right now."""
        with self._guard:
            queue = self._queues.get((view, version))
        if queue is None:
            return 0
        with queue.cond:
            return len(queue.pending)

    def push(
        self,
        record: VersionRecord,
        rows: Any,
        *,
        checks: Sequence[Any] = (),
        memory_budget: int | None = None,
    ) -> PushResult:
        """Append ``rows`` to ``record``'s table and merge them online (module docstring).

        The rows are shaped and checked on the caller's thread, so a push refused by the
        checks never joins a group; then they are committed, possibly with other pushes
        (see the class docstring). A failed group commit raises in every push of the group.
        """
        uri = self.registry.layout.table_uri(record.view, record.version)
        schema = self._schema(record, uri)
        now = utcnow()
        frame = pushed_frame(record, schema, rows, now=now)
        if checks:
            check_pushed(record, frame, checks)
        push_id = secrets.token_hex(8)
        if frame.height == 0:
            current = delta.current_version(uri)
            return PushResult(record.view, record.version, 0, current or 0, now, push_id)
        mine = _Pending(push_id, frame, now)
        queue = self._queue(record)
        with queue.cond:
            queue.pending.append(mine)
            queue.cond.notify_all()  # a commit waiting for group-mates counts this one
            try:
                while not mine.done:
                    if queue.committing:
                        queue.cond.wait()
                    else:
                        self._lead(record, uri, queue, mine, memory_budget)
            except BaseException:  # interrupted while waiting: not committed unless taken
                if mine in queue.pending:
                    queue.pending.remove(mine)
                raise
        if mine.error is not None:
            raise mine.error
        return PushResult(record.view, record.version, frame.height, mine.version, now, push_id)

    def _queue(self, record: VersionRecord) -> _Queue:
        key = (record.view, record.version)
        with self._guard:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue()
            return queue

    def _lead(
        self,
        record: VersionRecord,
        uri: str,
        queue: _Queue,
        mine: _Pending,
        budget: int | None,
    ) -> None:
        """Run the next commit of ``queue`` (called and returning with ``queue.cond`` held)."""
        queue.committing = True
        try:
            deadline = time.monotonic() + GROUP_WINDOW
            while len(queue.pending) < queue.last_group:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                queue.cond.wait(left)
            queue.cond.release()
            try:
                self._commit(record, uri, queue, mine, budget)
            finally:
                queue.cond.acquire()
        finally:
            queue.committing = False
            queue.cond.notify_all()

    def _commit(
        self,
        record: VersionRecord,
        uri: str,
        queue: _Queue,
        leader: _Pending,
        budget: int | None,
    ) -> None:
        """Commit the waiting pushes in one Delta commit, then merge them online.

        The group is taken under the view's lock, so pushes that arrive while this
        process waits for another process's commit join it. Every push of the group gets
        the commit's version, or its error: nothing of the group is written then (the
        Delta commit is atomic; online is only written after it).
        """
        group: list[_Pending] = []
        try:
            with self.registry.lock(record.view):
                with queue.cond:
                    rows = 0
                    while queue.pending and (
                        not group or rows + queue.pending[0].frame.height <= GROUP_ROWS
                    ):
                        rows += queue.pending[0].frame.height
                        group.append(queue.pending.pop(0))
                    queue.last_group = len(group)
                # ingestion order, so the later push wins an exact tie offline and online
                group.sort(key=lambda p: p.now)
                pushes = [(p.push_id, p.frame) for p in group]
                version = append_pushed(uri, pushes, record=record)
                for pending in group:
                    pending.version = version
                if self.online is not None:
                    frame = pl.concat([p.frame for p in group], how="vertical")
                    self._online(record, frame, version, budget, pushes=len(group))
        except BaseException as err:
            if not group:  # failed before taking any push (the lock): only this push fails
                with queue.cond:
                    queue.pending.remove(leader)
                group = [leader]
            for pending in group:
                pending.error = err if pending is leader else _copied(err)
        finally:
            with queue.cond:
                for pending in group:
                    pending.done = True

    def _schema(self, record: VersionRecord, uri: str) -> dict[str, pl.DataType]:
        key = (record.view, record.version, record.fingerprint)
        schema = self._schemas.get(key)
        if schema is None:
            current = delta.current_version(uri)
            if current is None:
                raise NotFoundError(
                    f"view {record.view!r} version {record.version} has no table yet; run "
                    f"store.materialize({record.view}) once before pushing to it."
                )
            found = delta.scan_rows(uri, version=current).collect_schema()
            schema = {c: d for c, d in found.items() if c != PUSH_COLUMN}
            self._schemas[key] = schema
        return schema

    def _online(
        self,
        record: VersionRecord,
        frame: pl.DataFrame,
        version: int,
        budget: int | None,
        pushes: int = 1,
    ) -> None:
        assert self.online is not None
        try:
            if not self._merge(record, frame, version):
                sync_view(
                    self.registry,
                    self.online,
                    record.view,
                    record.version,
                    force=True,
                    memory_budget=budget,
                )
        except Exception as err:
            cause = f"{type(err).__name__}: {err}" if not isinstance(err, FeatureKitError) else err
            together = f" by {pushes} pushes committed together" if pushes > 1 else ""
            raise OnlineStoreError(
                f"{frame.height} row(s) pushed to view {record.view!r} version "
                f"{record.version}{together} are committed offline (Delta version {version}), "
                "but the "
                f"online store was not updated: {cause} Training sets already see the rows. "
                f"Once the cause is fixed, run store.materialize({record.view}): it finds "
                "the online store behind the table and rewrites its snapshot."
            ) from err

    def _merge(self, record: VersionRecord, frame: pl.DataFrame, version: int) -> bool:
        """Merge into the current snapshot; False when it must be rewritten whole instead."""
        online = self.online
        if not isinstance(online, UpdatableStore):
            return False
        raw_meta = online.meta(record.view, record.version)
        if raw_meta is None:
            return False
        meta = SnapshotMeta.from_bytes(raw_meta)
        if meta.fingerprint != record.fingerprint or meta.delta_version != version - 1:
            return False  # the snapshot misses other commits: rebuild it from the table
        pushed = _physical(record, frame)
        keys = list(dict.fromkeys(k for k, _ in pushed))
        sid, _, values = online.read([(record.view, record.version, keys)])[0]
        if sid is None:
            return False
        stored = {
            k: (None if v is None else orjson.loads(v)) for k, v in zip(keys, values, strict=True)
        }
        fresh = sum(1 for v in stored.values() if v is None)
        if record.aggregations:
            floor = _floor(record, meta)
            for key, entry in pushed:
                if floor is None or entry[0] > floor:
                    stored[key] = add_event(stored[key] or [], entry)
        else:
            empty = [None, None, None, [None] * len(record.features), None]
            for key, entry in pushed:
                stored[key] = merge_entry(stored[key] or [empty], entry, meta.taken_us)
        events = frame.get_column(record.timestamp).cast(_UTC_US).dt.epoch("us")
        top = events.max()
        newest = meta.max_event_us if meta.max_event_us is not None else top
        updated = dataclasses.replace(
            meta,
            delta_version=version,
            entities=meta.entities + fresh,
            max_event_us=max(newest, top)
            if isinstance(top, int) and newest is not None
            else newest,
        )
        entries = [(k, orjson.dumps(v)) for k, v in stored.items() if v]
        return online.update_entries(record.view, record.version, sid, updated.to_bytes(), entries)


def _copied(err: BaseException) -> BaseException:
    """The group's error for another push of the group: its own object, same cause.

    Each thread raises its own exception object, so the tracebacks of the group's
    pushes do not pile up on one object.
    """
    try:
        mine = copy.copy(err)
    except Exception:  # an exception type that cannot be rebuilt from its args
        return err
    mine.__cause__ = err.__cause__
    mine.__suppress_context__ = err.__suppress_context__
    return mine.with_traceback(None)


def check_pushed(record: VersionRecord, frame: pl.DataFrame, checks: Sequence[Any]) -> None:
    """Run the view's checks on pushed rows; an error-level failure refuses all of them.

    Rows are checked as a batch, as a materialization run checks its output (so
    ``row_count`` and ``unique`` see the push, not the whole table). Nothing is written
    when this raises.
    """
    report = evaluate_checks(frame, checks, keys=record.keys, timestamp=record.timestamp)
    if report.passed:
        return
    lines = [
        f"{len(report.errors)} check(s) failed on {frame.height} row(s) pushed to view "
        f"{record.view!r} version {record.version}; nothing was written:"
    ]
    for result in report.errors:
        lines.append(f"  {result.name}: {result.failing} failing row(s). {result.detail}".rstrip())
        lines.extend(f"    {shown(r, 240)}" for r in result.samples.head(3).iter_rows(named=True))
    raise ValidationError("\n".join(lines), failures=report.errors)


# ---- entries ------------------------------------------------------------------------------
def merge_entry(entries: list[list[Any]], new: list[Any], taken_us: int) -> list[list[Any]]:
    """One entity's step function (see the module docstring) with row ``new`` added.

    ``entries``: ``[[valid_from | None, event, created, values, fix], ...]`` in time order
    (the first valid from the snapshot instant ``taken_us``); ``new``: the pushed row as
    ``[None, event, created, values, fix]``.
    """
    _, event, created, values, fix = new
    since = max(event, created if created is not None else event)
    out: list[list[Any]] = []
    for i, entry in enumerate(entries):
        start = taken_us if entry[0] is None else entry[0]
        end = entries[i + 1][0] if i + 1 < len(entries) else None
        if end is not None and end <= since:
            out.append(entry)
        elif start >= since:
            out.append([entry[0], event, created, values, fix] if _beats(new, entry) else entry)
        else:
            out.append(entry)
            if _beats(new, entry):
                out.append([since, event, created, values, fix])
    compact = [out[0]]
    for entry in out[1:]:
        if entry[1:] != compact[-1][1:]:
            compact.append(entry)
    return compact


def _beats(new: list[Any], old: list[Any]) -> bool:
    """Whether ``new`` is picked over ``old`` by the point-in-time order."""
    if old[1] is None:
        return True
    if new[1] != old[1]:
        return bool(new[1] > old[1])
    if old[2] is None or new[2] is None:
        return old[2] is None
    return bool(new[2] >= old[2])  # equal: the later write wins


def add_event(events: list[list[Any]], new: list[Any]) -> list[list[Any]]:
    """Stored events of an aggregation view with ``new`` added in (event, created) order."""
    out = list(events)
    at = len(out)
    while at > 0 and _event_key(out[at - 1]) > _event_key(new):
        at -= 1
    out.insert(at, new)
    return out


def _event_key(entry: list[Any]) -> tuple[int, int]:
    return entry[0], -1 if entry[1] is None else entry[1]


def _floor(record: VersionRecord, meta: SnapshotMeta) -> int | None:
    """Events at or before this instant can count in no lookup after the snapshot."""
    keep = retention(record)
    return None if keep is None else meta.taken_us - keep // timedelta(microseconds=1)


def _physical(record: VersionRecord, frame: pl.DataFrame) -> list[tuple[bytes, list[Any]]]:
    """Each pushed row as (encoded key, entry) in the snapshot's encoding, in push order."""
    keys = list(record.keys)
    columns = record.event_columns if record.aggregations else list(record.features)
    created = record.created_timestamp
    assert created is not None  # pushed_frame refuses views without one
    physical = frame.select(
        *keys,
        pl.col(record.timestamp).cast(_UTC_US).dt.epoch("us").alias("__fk_e"),
        pl.col(created).cast(_UTC_US).dt.epoch("us").alias("__fk_c"),
        *[storable_expr(c, frame.schema[c]) for c in columns],
    )
    floats = [i for i, c in enumerate(columns) if frame.schema[c].is_float()]
    nkeys = len(keys)
    out = []
    for row in physical.iter_rows():
        values = list(row[nkeys + 2 :])
        fix = None
        for i in floats:
            v = values[i]
            if v is not None and not math.isfinite(v):
                fix = fix or []
                fix.append([i, "nan" if v != v else ("inf" if v > 0 else "-inf")])
                values[i] = None
        times = list(row[nkeys : nkeys + 2])
        entry = [*times, values, fix] if record.aggregations else [None, *times, values, fix]
        out.append((encode_key(row[:nkeys]), entry))
    return out
