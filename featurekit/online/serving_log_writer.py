"""The serving log's writer process: lookups from a socket, rows to a Delta table.

Started by :class:`~featurekit.online.serving_log.ServingLog` as
``python -m featurekit.online.serving_log_writer FD``, where ``FD`` is its end of a Unix
``SOCK_SEQPACKET`` socket pair. The first message is its
:class:`~featurekit.online.serving_log.WriterConfig` (table URI, storage options: never
on the command line or in the environment). Then come messages: a pickled list of
lookups (:data:`~featurekit.online.serving_log.Entry`, as the serving process's sender
thread took them), ``("flush", token)`` or ``("close", token)``.

Two threads: one takes what is waiting on the socket every :data:`POLL_SECONDS` into a
queue of at most ``queue_size`` lookups (past it, it stops reading and the serving process
drops lookups), the other builds rows and commits them,
once per ``flush_seconds`` or past ``batch_rows`` rows, and at a flush or close marker
(then it answers with the token and its counts). At end of file (the serving process is
gone) it commits what it received and exits. SIGINT is ignored: a Ctrl-C on the server
reaches the whole process group, and the writer stops when the server closes the log.
It runs under Linux's ``SCHED_IDLE`` policy where it can come back from it
(:mod:`featurekit.online.priority`): only on a core that has nothing else to run, so
that its work delays lookups less (a little, measured: see that module; niced, it
changed nothing). When it falls behind (its queue half full) or the serving process
finds its socket full or waits for a flush or close, it is brought back to normal
priority until its queue is short again, so an idle writer does not starve on busy cores
and make the log drop lookups.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import io
import os
import pickle
import signal
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import polars as pl

from featurekit.core.errors import FeatureKitWarning
from featurekit.online import priority
from featurekit.online.serving_log import (
    SEND_BUFFER,
    Entry,
    One,
    WriterConfig,
    as_entry,
    log_schema,
)
from featurekit.storage import delta

__all__ = ["POLL_SECONDS", "UNINDEXED", "Writer", "main", "rows"]

#: how long the reader sleeps when the socket is empty (the buffer holds far more)
POLL_SECONDS = 0.005

#: columns written without parquet statistics: reads filter on ``lookup_at`` only, and
#: the min and max of random ids or JSON text would skip no file
UNINDEXED = ("request_id", "entity", "features")


class Writer:
    """Reads lookups from ``sock`` and appends them to the table of ``config``."""

    def __init__(self, config: WriterConfig, sock: socket.socket) -> None:
        self.config = config
        self.sock = sock
        self.dropped = 0  # lookups received and not written (undecodable, failed commits)
        self.written = 0
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._built: list[pl.DataFrame] = []
        self._built_lookups = 0
        self._built_rows = 0
        # held open between commits; its JSON and random ids are never filtered on
        self._log = delta.Appender(
            config.uri, storage_options=config.storage_options, unindexed=UNINDEXED
        )
        # idle priority when it is reversible; set before the reader thread (and the
        # thread pools of polars and delta-rs) start, so that they inherit it
        self._idle = config.idle and priority.idle_is_reversible()

    def run(self) -> None:
        """Serve until a close marker or end of file, committing as it goes."""
        if self._idle:
            priority.relax()
        threading.Thread(target=self._read, name="serving-log-reader", daemon=True).start()
        last_commit = time.monotonic()
        while True:
            short = len(self._queue) <= self.config.queue_size // 8
            if self._idle and short and not priority.is_idle():
                priority.relax()  # hurried, and caught up (or the flush is answered)
            self._wake.wait(max(0.0, last_commit + self.config.flush_seconds - time.monotonic()))
            self._wake.clear()
            pending: list[Entry | One] = []
            control = None
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item[0], str):
                    control = item
                    self._wake.set()  # what follows the marker is taken on the next turn
                    break
                pending.append(item)
            if pending:
                self._built.append(rows(pending))
                self._built_lookups += len(pending)
                self._built_rows += self._built[-1].height
            due = time.monotonic() >= last_commit + self.config.flush_seconds
            if control is not None or due or self._built_rows >= self.config.batch_rows:
                last_commit = time.monotonic()
                self._commit()
                gc.collect()  # the only collection (see main); the batch is freed by now
            if control is None:
                continue
            kind = control[0]
            if kind in ("flush", "close"):
                # failing: the serving process is gone, nobody waits for the answer
                with contextlib.suppress(OSError):
                    self.sock.send(pickle.dumps((control[1], self.written, self.dropped)))
            if kind in ("close", "eof"):
                return

    def _read(self) -> None:
        buffer = bytearray(SEND_BUFFER)
        view = memoryview(buffer)
        while True:
            if (
                self._idle
                and len(self._queue) >= self.config.queue_size // 2
                and priority.is_idle()
            ):
                priority.hurry()  # behind: at idle priority it would starve on busy cores
            while len(self._queue) >= self.config.queue_size:
                # bounded memory: rows are built (and committed past batch_rows) first;
                # meanwhile the socket fills and the serving process drops lookups
                self._wake.set()
                time.sleep(0.005)
            try:
                n, _, flags, _ = self.sock.recvmsg_into([buffer], 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                # polled, not waited for: a sender that finds no reader asleep on the
                # socket does not have to wake one (a context switch per lookup, on
                # cores the lookups need), and the messages come in batches
                time.sleep(POLL_SECONDS)
                continue
            except OSError:
                n, flags = 0, 0
            if n == 0:
                self._queue.append(("eof", 0))
                self._wake.set()
                return
            try:
                if flags & socket.MSG_TRUNC:
                    raise ValueError("message larger than the buffer")
                items = _pickles(view[:n])
            except Exception:
                self.dropped += 1  # its lookups are not known: counted as one
                continue
            for item in items:
                if isinstance(item, list):  # lookups
                    self._queue.extend(item)
                    continue
                self._queue.append(item)  # a marker
                if self._idle:
                    priority.hurry()  # the serving process waits for the answer
                self._wake.set()
                if item[0] == "close":
                    return
            if len(self._queue) >= self.config.batch_lookups:
                self._wake.set()

    def _commit(self) -> None:
        if not self._built:
            return
        lookups = self._built_lookups
        frame = pl.concat(self._built) if len(self._built) > 1 else self._built[0]
        batch = uuid.uuid4().hex[:16]
        frame = frame.with_columns(pl.lit(batch).alias("batch_id"))
        meta = {"serving_log": batch}
        try:
            # a new batch id has no rows in the table yet: a plain append (a replace by
            # predicate cost about a third more CPU, measured)
            self._log.append(frame, metadata=meta)
        except Exception:
            try:
                # the first attempt may have committed and then failed: its rows are
                # replaced by their batch id, never written twice
                self._log.replace(frame, f"batch_id = '{batch}'", metadata=meta)
            except Exception as err:
                self.dropped += lookups
                warnings.warn(
                    f"serving log {self.config.uri!r}: {lookups} lookups could not be written "
                    f"and were dropped: {type(err).__name__}: {err}",
                    FeatureKitWarning,
                    stacklevel=1,
                )
            else:
                self.written += lookups
        else:
            self.written += lookups
        self._built, self._built_lookups, self._built_rows = [], 0, 0


def main(argv: Sequence[str] | None = None) -> None:
    """Run a writer on the socket whose descriptor is the first argument."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(args[0]))
    buffer = bytearray(SEND_BUFFER)
    n = sock.recv_into(buffer)
    if n == 0:
        return  # the serving process went away before configuring us
    config = pickle.loads(memoryview(buffer)[:n])
    if not isinstance(config, WriterConfig):
        raise SystemExit(f"serving log writer: expected a WriterConfig, got {type(config)}")
    # Unpickled lookups are live containers by the thousand: automatic collections,
    # triggered by their allocations, made unpickling cost 22 us a lookup instead of 4
    # (measured, 20,000 lookups). The objects of the imports are frozen out of the
    # collector's reach, and one collection runs after each commit, when the batch is gone.
    gc.freeze()
    gc.disable()
    Writer(config, sock).run()


def _pickles(message: memoryview) -> list[Any]:
    """Every object pickled in ``message``: lookups pickled apart (large ones, by the
    lookup's own thread) are joined into one message by the sender."""
    stream = io.BytesIO(message)
    items = [pickle.load(stream)]
    while stream.tell() < len(message):
        items.append(pickle.load(stream))
    return items


def _request_ids(n: int) -> list[str]:
    """``n`` random 32-hex-digit ids, from one system call (a ``uuid4`` each cost 2 µs)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def rows(received: Sequence[Entry | One]) -> pl.DataFrame:
    """Turn received lookups into log rows.

    Values are gathered into columns with ``list.extend`` (a flat one-entity lookup,
    :data:`~featurekit.online.serving_log.One`, value by value: expanding it into one-row
    columns first cost more than the rest of its row) and the JSON is encoded by polars,
    which writes the same text as orjson for plain values; values of other types (dates,
    lists, mixed types) go through the row-by-row builder.
    """
    entries = list(received)
    drawn = _request_ids(len(entries))
    requests = [
        e[4] if len(e) == 5 and e[4] is not None else r  # type: ignore[misc]
        for e, r in zip(entries, drawn, strict=True)
    ]
    try:
        return _rows_by_column(entries, requests)
    except _NotPlain:
        return _rows_by_row([as_entry(e) for e in entries], requests)


class _NotPlain(Exception):
    """A batch the columnar builder does not encode exactly like orjson."""


_PLAIN_ERRORS = (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError)


def _column(values: list[Any], dtype: pl.DataType | None) -> pl.Series:
    """``values`` as a Series of ``dtype``, strictly.

    With ``dtype`` None the dtype is inferred, and must be a JSON scalar that polars
    encodes as orjson does (numbers, booleans, strings, or nulls only); else
    :class:`_NotPlain`.
    """
    try:
        series = pl.Series(values, dtype=dtype, strict=True)
    except _PLAIN_ERRORS as err:
        raise _NotPlain from err
    kind = series.dtype
    plain = kind == pl.Null or kind.is_numeric() or kind in (pl.Boolean, pl.String)
    if dtype is None and not plain:
        raise _NotPlain
    return series


def _json(columns: dict[str, pl.Series]) -> pl.Series:
    """Each row of ``columns`` as a JSON object (encoded by polars)."""
    return pl.DataFrame(list(columns.values())).select(pl.struct(pl.all()).struct.json_encode())[
        :, 0
    ]


#: rows of a group from which what a lookup shares by all its rows is repeated by polars
#: (indexing costs about 30 µs, then little a row), below it in Python lists (50 ns a row)
_INDEXED_ROWS = 512


def _repeated(values: list[Any], counts: list[int]) -> list[Any]:
    """Each of ``values`` repeated its count of times."""
    out: list[Any] = []
    for value, count in zip(values, counts, strict=True):
        out += [value] * count
    return out


class _Group:
    """Columns of the rows of one (view, version, features, keys), in arrival order.

    What a lookup shares by all its rows (its position, request id and instant) is kept
    once per lookup, with its row count, and repeated when the frame is built: by polars
    for many rows (repeated in Python lists, it was a sixth of the time to build the rows
    of 4,000 lookups of 50 entities), in Python for a few (polars' indexing costs more).
    """

    def __init__(self, features: tuple[str, ...], keys: tuple[str, ...]) -> None:
        self.seq: list[int] = []  # per lookup, as request, at and count
        self.request: list[str] = []
        self.at: list[int] = []
        self.count: list[int] = []
        self.keys: dict[str, list[Any]] = {k: [] for k in keys}  # per row
        self.values: dict[str, list[Any]] = {f: [] for f in features}
        self.status: list[str] = []
        self.event: list[int | None] = []

    def frame(self, view: str, version: int) -> pl.DataFrame:
        us = pl.Datetime("us", "UTC")
        n = len(self.status)
        shared: list[list[Any]] = [self.seq, self.request, self.at]
        if len(self.count) != n and n < _INDEXED_ROWS:  # few rows: repeated in Python
            shared = [_repeated(values, self.count) for values in shared]
        seq = _column(shared[0], pl.Int64())
        request = _column(shared[1], pl.String())
        at = _column(shared[2], pl.Int64()).cast(us)
        if len(seq) != n:  # repeated by polars, indexed by a numpy array
            rows = np.repeat(np.arange(len(self.count)), self.count)
            seq, request, at = seq[rows], request[rows], at[rows]
        entity = _json({k: _column(v, None).alias(k) for k, v in self.keys.items()})
        features = _json({f: _column(v, None).alias(f) for f, v in self.values.items()})
        return pl.DataFrame(
            [
                seq.alias("_seq"),
                request.alias("request_id"),
                at.alias("lookup_at"),
                pl.repeat(view, n, dtype=pl.String, eager=True).alias("view"),
                pl.repeat(version, n, dtype=pl.Int64, eager=True).alias("version"),
                entity.alias("entity"),
                features.alias("features"),
                _column(self.status, pl.String()).alias("status"),
                _column(self.event, pl.Int64()).cast(us).alias("event_ts"),
            ]
        )


def _rows_by_column(entries: list[Entry | One], requests: list[str]) -> pl.DataFrame:
    groups: dict[tuple[str, int, tuple[str, ...], tuple[str, ...]], _Group] = {}
    for seq, entry in enumerate(entries):
        request = requests[seq]
        if len(entry) != 5:  # One: appended value by value, without building its columns
            at_us, keys, key_row, view, version, features, row, status, event = entry  # type: ignore[misc]
            if not keys or not features or len(key_row) != len(keys):
                raise _NotPlain
            group = groups.get((view, version, features, keys))
            if group is None:
                group = groups[view, version, features, keys] = _Group(features, keys)
            group.seq.append(seq)
            group.request.append(request)
            group.at.append(at_us)
            group.count.append(1)
            for k, value in zip(keys, key_row, strict=True):
                group.keys[k].append(value)
            for f, value in zip(features, row, strict=True):
                group.values[f].append(value)
            group.status.append(status)
            group.event.append(event)
            continue
        at_us, keys, entities, views, _ = entry  # type: ignore[misc]
        key_values = [entities[k] for k in keys]
        for view, version, features, values, statuses, events in views:
            m = len(statuses)
            if not keys or not features or any(len(column) != m for column in key_values):
                raise _NotPlain
            group = groups.get((view, version, features, keys))
            if group is None:
                group = groups[view, version, features, keys] = _Group(features, keys)
            group.seq.append(seq)
            group.request.append(request)
            group.at.append(at_us)
            group.count.append(m)
            for k, column in zip(keys, key_values, strict=True):
                group.keys[k].extend(column)
            for f in features:
                group.values[f].extend(values[f])
            group.status.extend(statuses)
            group.event.extend(events)
    if not groups:
        return pl.DataFrame(schema=log_schema())
    frames = [group.frame(view, version) for (view, version, _, _), group in groups.items()]
    if len(frames) == 1:
        return frames[0].drop("_seq")  # one group: in arrival order already
    # one lookup's rows stay together, in the order of its views (a stable sort)
    return pl.concat(frames).sort("_seq", maintain_order=True).drop("_seq")


def _rows_by_row(entries: list[Entry], requests: list[str]) -> pl.DataFrame:
    """Log rows built one by one in Python: any value orjson can encode (``default=str``)."""
    out: dict[str, list[Any]] = {name: [] for name in log_schema()}
    for (at_us, keys, entities, views, _), request in zip(entries, requests, strict=True):
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
        [_column(out[name], dtype).alias(name) for name, dtype in log_schema().items()]
    )


if __name__ == "__main__":
    main()
