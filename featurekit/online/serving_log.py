"""The serving log: online lookups appended to a Delta table, off the request's path.

A lookup hands :meth:`ServingLog.record` the objects it already built (entity columns,
feature value lists, statuses); that call samples, then appends one tuple to a bounded
deque without a lock (a full deque drops the lookup and counts it in
:attr:`ServingLog.dropped`), so a request never blocks on the log, pays about a
microsecond for it, and memory stays bounded. One writer thread turns
queued lookups into rows and appends them to the store's ``serving_log`` table (one Delta
commit per batch): every :data:`FLUSH_SECONDS`, or sooner when :data:`BATCH_LOOKUPS`
lookups are waiting. :meth:`ServingLog.close` (the Store's ``close()``, and
interpreter exit) drains the queue and writes the rest.

Durability: a lookup is on disk once its batch is committed. A crash (the process killed,
not an orderly exit) loses what was queued and not yet written: at most the last
:data:`FLUSH_SECONDS` of lookups, or :data:`QUEUE_SIZE` lookups. A failed write is retried
once with the next batch, then dropped and counted.

One row per (lookup, view, entity):

=============  =================================================================
``request_id``  random id of the lookup (shared by its rows)
``lookup_at``   the lookup instant (UTC)
``view``        view name; ``version`` its version
``entity``      the entity's key values, JSON (``{"driver_id": 1}``)
``features``    the values served, JSON by feature name (``{"fare": 9.5}``)
``status``      ``present``, ``expired`` or ``not_found``
``event_ts``    event time of the row served (null when none)
=============  =================================================================
"""

from __future__ import annotations

import atexit
import collections
import random
import threading
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import polars as pl

from featurekit.core.errors import DefinitionError, FeatureKitWarning
from featurekit.storage import delta

__all__ = ["BATCH_LOOKUPS", "FLUSH_SECONDS", "QUEUE_SIZE", "LoggedView", "ServingLog", "log_schema"]

BATCH_LOOKUPS = 2_000
FLUSH_SECONDS = 1.0
QUEUE_SIZE = 10_000


class LoggedView(NamedTuple):
    """What one lookup served from one view version (references, no copies).

    A named tuple: built on every logged lookup, where a frozen dataclass costs a
    microsecond more.
    """

    view: str
    version: int
    features: tuple[str, ...]
    values: Mapping[str, Sequence[Any]]
    statuses: Sequence[str]
    events: Sequence[int | None]


_Entry = tuple[int, Mapping[str, Sequence[Any]], tuple[str, ...], list[LoggedView]]


def log_schema() -> dict[str, pl.DataType]:
    """The serving log's columns."""
    return {
        "request_id": pl.String(),
        "lookup_at": pl.Datetime("us", "UTC"),
        "view": pl.String(),
        "version": pl.Int64(),
        "entity": pl.String(),
        "features": pl.String(),
        "status": pl.String(),
        "event_ts": pl.Datetime("us", "UTC"),
    }


class ServingLog:
    """Appends sampled lookups to a Delta table from a background thread (see the module)."""

    def __init__(
        self,
        uri: str,
        *,
        sample: float = 1.0,
        batch_lookups: int = BATCH_LOOKUPS,
        flush_seconds: float = FLUSH_SECONDS,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        if not 0.0 < sample <= 1.0:
            raise DefinitionError(
                f"serving log sample rate must be in (0, 1], got {sample!r}; "
                "e.g. log_serving=0.1 logs one lookup in ten."
            )
        self.uri, self.sample = uri, sample
        self.batch_lookups, self.flush_seconds = batch_lookups, flush_seconds
        self._wake = threading.Event()
        self.dropped = 0
        self.written = 0
        # a deque, not queue.Queue: append and popleft are atomic without a lock, where
        # put_nowait + qsize took two lock round trips on every lookup
        self._queue: collections.deque[_Entry] = collections.deque()
        self._queue_size = queue_size
        self._busy = False  # the writer holds lookups taken off the deque, not yet written
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="featurekit-serving-log", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    def record(
        self,
        at_us: int,
        entities: Mapping[str, Sequence[Any]],
        keys: tuple[str, ...],
        views: list[LoggedView],
    ) -> None:
        """Queue one lookup (sampled); never blocks, never raises on a full queue."""
        if self._closed or (self.sample < 1.0 and random.random() >= self.sample):
            return
        pending = len(self._queue)
        if pending >= self._queue_size:
            self.dropped += 1
            return
        self._queue.append((at_us, entities, keys, views))
        if pending + 1 >= self.batch_lookups:
            self._wake.set()

    def close(self) -> None:
        """Write everything queued and stop the writer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join()
        atexit.unregister(self.close)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every lookup queued so far is written (tests, notebooks)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while (self._queue or self._busy) and time.monotonic() < deadline:
            time.sleep(0.01)

    # ---- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        # the writer wakes once per interval (or when a batch is waiting), not per lookup:
        # a wake-up per lookup would take the GIL from the request threads every time
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self._busy = True  # before the deque empties, so that flush() keeps waiting
            pending: list[_Entry] = []
            try:
                while True:
                    pending.append(self._queue.popleft())
            except IndexError:
                pass
            try:
                if pending:
                    self._write(pending)
            finally:
                self._busy = False
            if self._closed and not self._queue:
                return

    def _write(self, entries: list[_Entry], *, retry: bool = True) -> None:
        frame = _rows(entries)
        try:
            batch = uuid.uuid4().hex[:16]
            frame = frame.with_columns(pl.lit(batch).alias("batch_id"))
            exists = delta.table_exists(self.uri)
            predicate = f"batch_id = '{batch}'" if exists else None
            delta.write_rows(self.uri, frame, metadata={"serving_log": batch}, predicate=predicate)
            self.written += len(entries)
        except Exception as err:
            if retry:
                self._write(entries, retry=False)
                return
            self.dropped += len(entries)
            warnings.warn(
                f"serving log {self.uri!r}: {len(entries)} lookups could not be written and "
                f"were dropped: {type(err).__name__}: {err}",
                FeatureKitWarning,
                stacklevel=1,
            )


def _rows(entries: list[_Entry]) -> pl.DataFrame:
    """Turn queued lookups into log rows (on the writer thread, off the request path).

    The writer shares the GIL with the threads answering lookups, so its Python work is
    work taken from them: built one row at a time, a 100-entity lookup cost the writer
    several times the lookup itself, and lookups with logging on slowed by a third at p99.
    So values are gathered into columns with ``list.extend`` and the JSON is encoded by
    polars (native code), which writes the same text as orjson for plain values. Values
    of other types (dates, lists, mixed types) go through the row-by-row builder.
    """
    try:
        return _rows_by_column(entries)
    except _NotPlain:
        return _rows_by_row(entries)


class _NotPlain(Exception):
    """A batch the columnar builder does not encode exactly like orjson."""


def _plain(columns: dict[str, list[Any]]) -> pl.DataFrame:
    """Columns as a frame, if polars encodes every value as orjson does (else raise)."""
    try:
        frame = pl.DataFrame(columns, strict=True)
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError) as err:
        raise _NotPlain from err
    for dtype in frame.dtypes:
        if not (dtype.is_numeric() or dtype in (pl.Boolean, pl.String, pl.Null)):
            raise _NotPlain
    return frame


class _Group:
    """Columns of the rows of one (view, version, features, keys), in arrival order."""

    def __init__(self, features: tuple[str, ...], keys: tuple[str, ...]) -> None:
        self.seq: list[int] = []
        self.request: list[str] = []
        self.at: list[int] = []
        self.keys: dict[str, list[Any]] = {k: [] for k in keys}
        self.values: dict[str, list[Any]] = {f: [] for f in features}
        self.status: list[str] = []
        self.event: list[int | None] = []

    def frame(self, view: str, version: int) -> pl.DataFrame:
        us = pl.Datetime("us", "UTC")
        entity = _plain(self.keys).select(pl.struct(pl.all()).struct.json_encode())
        features = _plain(self.values).select(pl.struct(pl.all()).struct.json_encode())
        return pl.DataFrame(
            {
                "_seq": pl.Series(self.seq, dtype=pl.Int64),
                "request_id": pl.Series(self.request, dtype=pl.String),
                "lookup_at": pl.Series(self.at, dtype=pl.Int64).cast(us),
                "view": pl.repeat(view, len(self.seq), dtype=pl.String, eager=True),
                "version": pl.repeat(version, len(self.seq), dtype=pl.Int64, eager=True),
                "entity": entity.to_series(),
                "features": features.to_series(),
                "status": pl.Series(self.status, dtype=pl.String),
                "event_ts": pl.Series(self.event, dtype=pl.Int64).cast(us),
            }
        )


def _rows_by_column(entries: list[_Entry]) -> pl.DataFrame:
    groups: dict[tuple[str, int, tuple[str, ...], tuple[str, ...]], _Group] = {}
    for seq, (at_us, entities, keys, views) in enumerate(entries):
        request = uuid.uuid4().hex
        for view in views:
            m = len(view.statuses)
            if not keys or not view.features or any(len(entities[k]) != m for k in keys):
                raise _NotPlain
            group = groups.get((view.view, view.version, view.features, keys))
            if group is None:
                group = groups[view.view, view.version, view.features, keys] = _Group(
                    view.features, keys
                )
            group.seq.extend([seq] * m)
            group.request.extend([request] * m)
            group.at.extend([at_us] * m)
            for k in keys:
                group.keys[k].extend(entities[k])
            for f in view.features:
                group.values[f].extend(view.values[f])
            group.status.extend(view.statuses)
            group.event.extend(view.events)
    if not groups:
        return pl.DataFrame(schema=log_schema())
    frames = [group.frame(view, version) for (view, version, _, _), group in groups.items()]
    # one lookup's rows stay together, in the order of its views (a stable sort)
    return pl.concat(frames).sort("_seq", maintain_order=True).drop("_seq")


def _rows_by_row(entries: list[_Entry]) -> pl.DataFrame:
    """Log rows built one by one in Python: any value orjson can encode (``default=str``)."""
    out: dict[str, list[Any]] = {name: [] for name in log_schema()}
    for at_us, entities, keys, views in entries:
        request = uuid.uuid4().hex
        lookup_at = datetime.fromtimestamp(at_us / 1e6, UTC)
        n = len(next(iter(entities.values()))) if entities else 0
        entity_json = [
            orjson.dumps({k: entities[k][i] for k in keys}, default=str).decode() for i in range(n)
        ]
        for view in views:
            for i in range(len(view.statuses)):
                values = {f: view.values[f][i] for f in view.features}
                event = view.events[i]
                out["request_id"].append(request)
                out["lookup_at"].append(lookup_at)
                out["view"].append(view.view)
                out["version"].append(view.version)
                out["entity"].append(entity_json[i])
                out["features"].append(orjson.dumps(values, default=str).decode())
                out["status"].append(view.statuses[i])
                out["event_ts"].append(
                    None if event is None else datetime.fromtimestamp(event / 1e6, UTC)
                )
    return pl.DataFrame(out, schema=log_schema())
