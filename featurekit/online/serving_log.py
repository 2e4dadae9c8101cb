"""The serving log: online lookups appended to a Delta table, off the request's path.

A lookup hands :meth:`ServingLog.record` the objects it already built (entity columns,
feature value lists, statuses); that call samples, then appends one tuple to a bounded
deque without a lock (a full deque drops the lookup and counts it in
:attr:`ServingLog.dropped`), so a request never blocks on the log, pays about a
microsecond for it, and memory stays bounded. One writer thread turns queued lookups into
rows (polars frames) as soon as :data:`BATCH_LOOKUPS` are waiting, and appends the rows
built to the store's ``serving_log`` table in one Delta commit every
:data:`FLUSH_SECONDS` (sooner past :data:`BATCH_ROWS` rows). :meth:`ServingLog.close`
(the Store's ``close()``, and interpreter exit) drains the queue and writes the rest.

What a lookup pays for the log, besides ``record``, is the writer's share of the process:

* the GIL: a lookup that needs it while the writer runs Python code waits until the
  writer lets go, up to the interpreter's switch interval (5 ms, a hundred times a
  one-entity lookup). So the writer's Python work comes in slices: it gathers
  :data:`SLICE_LOOKUPS` lookups into columns, or converts :data:`SLICE_VALUES` values to
  polars, then yields the GIL (:func:`yield_gil`): a slice holds it for tens of
  microseconds. What is left (JSON encoding, sorting, concatenation) runs in polars,
  which releases the GIL.
* the garbage collector: queued lookups are live Python containers (lists of values).
  Held for a second, they outlived the young generation and filled the old ones (about 8
  objects per lookup), whose full collections traverse the whole process (about 90 ms
  once featurekit is imported) and run in whichever thread allocates, usually a lookup's. Turned into polars
  frames after a few hundred lookups, about 1 object per lookup gets that far.
* commits: one per interval, not per batch, as a Delta commit holds the GIL in
  stretches of its own.

Durability: a lookup is on disk once its batch is committed. A crash (the process killed,
not an orderly exit) loses what was queued or built and not yet written: at most the last
:data:`FLUSH_SECONDS` of lookups (or :data:`QUEUE_SIZE` lookups plus :data:`BATCH_ROWS`
rows, if that is less). A failed write is retried once, then dropped and counted.

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
import os
import random
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import polars as pl

from featurekit.core.errors import DefinitionError, FeatureKitWarning
from featurekit.storage import delta

__all__ = [
    "BATCH_LOOKUPS",
    "BATCH_ROWS",
    "FLUSH_SECONDS",
    "QUEUE_SIZE",
    "SLICE_LOOKUPS",
    "SLICE_VALUES",
    "LoggedView",
    "ServingLog",
    "log_schema",
    "yield_gil",
]

#: waiting lookups that wake the writer to turn them into rows (the young die young)
BATCH_LOOKUPS = 256
#: rows built that are committed before the interval ends (bounds the memory they hold)
BATCH_ROWS = 200_000
FLUSH_SECONDS = 1.0
QUEUE_SIZE = 10_000
#: lookups the writer gathers into columns between two GIL yields (about 2 µs each)
SLICE_LOOKUPS = 16
#: values the writer converts to polars between two GIL yields (about 25 ns each)
SLICE_VALUES = 2_000


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


# a queued lookup: (lookup instant, key names, entity columns, what each view served)
_Entry = tuple[int, tuple[str, ...], Mapping[str, Sequence[Any]], list[LoggedView]]


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


def yield_gil() -> None:
    """Let a thread waiting for the GIL take it (a zero sleep releases it and reschedules)."""
    time.sleep(0)


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
        batch_rows: int = BATCH_ROWS,
        pause: Callable[[], None] = yield_gil,
    ) -> None:
        if not 0.0 < sample <= 1.0:
            raise DefinitionError(
                f"serving log sample rate must be in (0, 1], got {sample!r}; "
                "e.g. log_serving=0.1 logs one lookup in ten."
            )
        self.uri, self.sample = uri, sample
        self.batch_lookups, self.flush_seconds = batch_lookups, flush_seconds
        self.batch_rows, self._pause = batch_rows, pause
        self._wake = threading.Event()
        self.dropped = 0
        self.written = 0
        # a deque, not queue.Queue: append and popleft are atomic without a lock, where
        # put_nowait + qsize took two lock round trips on every lookup
        self._queue: collections.deque[_Entry] = collections.deque()
        self._queue_size = queue_size
        self._busy = False  # the writer holds lookups taken off the deque, not yet written
        self._closed = False
        self._flush_now = False  # flush() asks for a commit before the interval ends
        self._built: list[pl.DataFrame] = []  # rows built, not yet committed
        self._built_lookups = 0
        self._built_rows = 0
        self._exists = False  # the table exists (known once written; a log is not removed)
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
        self._queue.append((at_us, keys, entities, views))
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
        self._flush_now = True
        self._wake.set()
        while (self._queue or self._busy or self._built) and time.monotonic() < deadline:
            time.sleep(0.01)

    # ---- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        # the writer wakes when a batch is waiting or once per interval, never per lookup:
        # a wake-up per lookup would take the GIL from the request threads every time
        last_commit = time.monotonic()
        while True:
            if not self._closed:
                self._wake.wait(max(0.0, last_commit + self.flush_seconds - time.monotonic()))
            self._wake.clear()
            self._busy = True  # before the deque empties, so that flush() keeps waiting
            try:
                self._build()
                due = time.monotonic() >= last_commit + self.flush_seconds
                if due or self._closed or self._flush_now or self._built_rows >= self.batch_rows:
                    self._flush_now = False
                    last_commit = time.monotonic()
                    self._commit()
            finally:
                self._busy = False
            if self._closed and not self._queue:
                self._commit()  # a lookup that raced close() is written too
                return

    def _build(self) -> None:
        """Turn what is queued into a frame of rows (in slices: see the module)."""
        pending: list[_Entry] = []
        try:
            while True:
                pending.append(self._queue.popleft())
        except IndexError:
            pass
        if pending:
            self._built.append(_rows(pending, self._pause))
            self._built_lookups += len(pending)
            self._built_rows += self._built[-1].height
            self._pause()

    def _commit(self) -> None:
        if not self._built:
            return
        lookups = self._built_lookups
        frame = pl.concat(self._built) if len(self._built) > 1 else self._built[0]
        batch = uuid.uuid4().hex[:16]
        frame = frame.with_columns(pl.lit(batch).alias("batch_id"))
        self._pause()
        for attempt in (1, 2):
            try:
                # a retry replaces the rows of its batch id: a first attempt that committed
                # and then failed is not written twice
                exists = self._exists or delta.table_exists(self.uri)
                predicate = f"batch_id = '{batch}'" if exists else None
                delta.write_rows(
                    self.uri, frame, metadata={"serving_log": batch}, predicate=predicate
                )
            except Exception as err:
                self._exists = False
                if attempt == 1:
                    continue
                self.dropped += lookups
                warnings.warn(
                    f"serving log {self.uri!r}: {lookups} lookups could not be written "
                    f"and were dropped: {type(err).__name__}: {err}",
                    FeatureKitWarning,
                    stacklevel=1,
                )
            else:
                self._exists = True
                self.written += lookups
                break
        self._built, self._built_lookups, self._built_rows = [], 0, 0


def _request_ids(n: int) -> list[str]:
    """``n`` random 32-hex-digit ids, from one system call (a ``uuid4`` each cost 2 µs)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def _rows(entries: list[_Entry], pause: Callable[[], None] = lambda: None) -> pl.DataFrame:
    """Turn queued lookups into log rows (on the writer thread, off the request path).

    The writer shares the GIL with the threads answering lookups, so its Python work is
    work taken from them: built one row at a time, a 100-entity lookup cost the writer
    several times the lookup itself. So values are gathered into columns with
    ``list.extend`` and the JSON is encoded by polars (native code), which writes the same
    text as orjson for plain values; values of other types (dates, lists, mixed types) go
    through the row-by-row builder. Either way ``pause`` is called after every
    :data:`SLICE_LOOKUPS` lookups gathered and every :data:`SLICE_VALUES` values
    converted (the rows do not depend on where the slices fall).
    """
    try:
        return _rows_by_column(entries, pause)
    except _NotPlain:
        return _rows_by_row(entries, pause)


class _NotPlain(Exception):
    """A batch the columnar builder does not encode exactly like orjson."""


_PLAIN_ERRORS = (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError)


def _series(values: list[Any], dtype: pl.DataType | None) -> pl.Series:
    """Python values as a Series of ``dtype`` (inferred when None), strictly."""
    try:
        return pl.Series(values, dtype=dtype, strict=True)
    except _PLAIN_ERRORS as err:
        raise _NotPlain from err


def _column(values: list[Any], dtype: pl.DataType | None, pause: Callable[[], None]) -> pl.Series:
    """``values`` as a Series, converted :data:`SLICE_VALUES` at a time (``pause`` between).

    With ``dtype`` None the dtype is inferred as one frame would: the slices must agree
    (a slice of nulls only takes the others' dtype), and be a JSON scalar that polars
    encodes as orjson does (numbers, booleans, strings); else :class:`_NotPlain`.
    """
    parts = []
    for i in range(0, len(values), SLICE_VALUES):
        parts.append(_series(values[i : i + SLICE_VALUES], dtype))
        pause()
    if not parts:
        return pl.Series([], dtype=dtype or pl.Null())
    if dtype is None:
        kinds = {p.dtype for p in parts} - {pl.Null()}
        if len(kinds) > 1:
            raise _NotPlain
        if kinds:
            kind = kinds.pop()
            if not (kind.is_numeric() or kind in (pl.Boolean, pl.String)):
                raise _NotPlain
            parts = [p.cast(kind) if p.dtype == pl.Null else p for p in parts]
    return pl.concat(parts) if len(parts) > 1 else parts[0]


def _json(columns: dict[str, pl.Series]) -> pl.Series:
    """Each row of ``columns`` as a JSON object (by polars: the GIL is released)."""
    return pl.DataFrame(list(columns.values())).select(pl.struct(pl.all()).struct.json_encode())[
        :, 0
    ]


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

    def frame(self, view: str, version: int, pause: Callable[[], None]) -> pl.DataFrame:
        us = pl.Datetime("us", "UTC")
        n = len(self.seq)
        entity = _json({k: _column(v, None, pause).alias(k) for k, v in self.keys.items()})
        features = _json({f: _column(v, None, pause).alias(f) for f, v in self.values.items()})
        return pl.DataFrame(
            [
                _column(self.seq, pl.Int64(), pause).alias("_seq"),
                _column(self.request, pl.String(), pause).alias("request_id"),
                _column(self.at, pl.Int64(), pause).cast(us).alias("lookup_at"),
                pl.repeat(view, n, dtype=pl.String, eager=True).alias("view"),
                pl.repeat(version, n, dtype=pl.Int64, eager=True).alias("version"),
                entity.alias("entity"),
                features.alias("features"),
                _column(self.status, pl.String(), pause).alias("status"),
                _column(self.event, pl.Int64(), pause).cast(us).alias("event_ts"),
            ]
        )


def _rows_by_column(entries: list[_Entry], pause: Callable[[], None]) -> pl.DataFrame:
    groups: dict[tuple[str, int, tuple[str, ...], tuple[str, ...]], _Group] = {}
    requests = _request_ids(len(entries))
    for seq, (at_us, keys, entities, views) in enumerate(entries):
        if seq % SLICE_LOOKUPS == SLICE_LOOKUPS - 1:
            pause()
        request = requests[seq]
        key_values = [entities[k] for k in keys]
        for view, version, features, values, statuses, events in views:
            m = len(statuses)
            if not keys or not features or any(len(column) != m for column in key_values):
                raise _NotPlain
            group = groups.get((view, version, features, keys))
            if group is None:
                group = groups[view, version, features, keys] = _Group(features, keys)
            group.seq.extend([seq] * m)
            group.request.extend([request] * m)
            group.at.extend([at_us] * m)
            for k, column in zip(keys, key_values, strict=True):
                group.keys[k].extend(column)
            for f in features:
                group.values[f].extend(values[f])
            group.status.extend(statuses)
            group.event.extend(events)
    if not groups:
        return pl.DataFrame(schema=log_schema())
    frames = [group.frame(view, version, pause) for (view, version, _, _), group in groups.items()]
    # one lookup's rows stay together, in the order of its views (a stable sort)
    return pl.concat(frames).sort("_seq", maintain_order=True).drop("_seq")


def _rows_by_row(entries: list[_Entry], pause: Callable[[], None]) -> pl.DataFrame:
    """Log rows built one by one in Python: any value orjson can encode (``default=str``)."""
    out: dict[str, list[Any]] = {name: [] for name in log_schema()}
    for seq, ((at_us, keys, entities, views), request) in enumerate(
        zip(entries, _request_ids(len(entries)), strict=True)
    ):
        if seq % SLICE_LOOKUPS == SLICE_LOOKUPS - 1:
            pause()
        key_values = [entities[k] for k in keys]
        lookup_at = datetime.fromtimestamp(at_us / 1e6, UTC)
        n = len(key_values[0]) if key_values else 0
        entity_json = [
            orjson.dumps(
                {k: column[i] for k, column in zip(keys, key_values, strict=True)}, default=str
            ).decode()
            for i in range(n)
        ]
        for view, version, features, columns, statuses, events in views:
            for i in range(len(statuses)):
                values = {f: columns[f][i] for f in features}
                event = events[i]
                out["request_id"].append(request)
                out["lookup_at"].append(lookup_at)
                out["view"].append(view)
                out["version"].append(version)
                out["entity"].append(entity_json[i])
                out["features"].append(orjson.dumps(values, default=str).decode())
                out["status"].append(statuses[i])
                out["event_ts"].append(
                    None if event is None else datetime.fromtimestamp(event / 1e6, UTC)
                )
    return pl.DataFrame(
        [_column(out[name], dtype, pause).alias(name) for name, dtype in log_schema().items()]
    )
