"""The serving log: online lookups appended to a Delta table by a writer process.

A lookup hands :meth:`ServingLog.record` the objects it already built (entity columns,
feature value lists, statuses). ``record`` samples, serializes them with
``pickle`` (protocol 5) and sends them, without waiting, on a Unix ``SOCK_SEQPACKET``
socket pair to a writer *process* (:mod:`featurekit.online.serving_log_writer`), which
builds the rows and appends them to the store's ``serving_log`` Delta table. The rows are
built from the very Python values the lookup served, so they are the ones a writer in
this process would build.

Why a process and not a thread: a writer thread's Python work (unpacking lookups into
columns, calling polars and delta-rs) needs the GIL, and each time it takes it back a
lookup waits for as long as it holds it (a hundred microseconds or more, twice a
one-entity lookup), however small its slices. In a process of its own it shares nothing
with the lookups but the CPU.

What ``record`` guarantees:

* it never blocks and never raises into the lookup. A full socket buffer (the writer
  behind by :data:`SEND_BUFFER` bytes, or stopped) drops the lookup and counts it in
  :attr:`ServingLog.dropped`; so does a writer that died, and a new writer is started in
  the background at most once per :data:`RESTART_SECONDS`;
* a lookup whose message exceeds :data:`MAX_MESSAGE` bytes is split by entity rows into
  several messages that carry the same request id, so its rows in the table are those of
  one message (if the buffer fills midway, the rows sent are logged and the lookup is
  counted as dropped); one entity row that alone exceeds it is dropped and counted;
* memory stays bounded: the socket buffer, the writer's queue (:data:`QUEUE_SIZE`
  lookups: past it the writer stops reading, the buffer fills and lookups are dropped),
  and the rows it has built (:data:`BATCH_ROWS`).

The writer is started with the :class:`ServingLog` (``subprocess``: fork and exec, never a
bare fork of a process that runs Rust thread pools). It gets the table URI and storage
options as the first message on the socket, never on its command line or environment,
where ``ps`` would show credentials. It commits one batch per :data:`FLUSH_SECONDS`
(sooner past :data:`BATCH_ROWS` rows), retrying a failed commit once under the same
batch id so that a commit that landed is not written twice.

:meth:`ServingLog.flush` sends a marker and waits until the writer has committed every
lookup sent before it; :meth:`ServingLog.close` (the Store's ``close()``, interpreter
exit, the server's shutdown) sends a close, waits for the writer to commit and exit
(bounded by its timeout) and reaps it.

Durability: a lookup is on disk once its batch is committed. If the serving process dies
(killed, ``os._exit``), the writer reads what is in the socket up to end of file, commits
it and exits: a serving-process crash loses no lookup that ``record`` had sent. A crash
of the writer loses what it had received or was still in its socket and not yet
committed (at most :data:`FLUSH_SECONDS` of lookups, not counted), and what the serving
process sends until the next writer runs (counted as dropped).

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
import contextlib
import errno
import os
import pickle
import random
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from featurekit.core.errors import DefinitionError
from featurekit.storage.remote import options_for

__all__ = [
    "BATCH_LOOKUPS",
    "BATCH_ROWS",
    "FLUSH_SECONDS",
    "MAX_MESSAGE",
    "QUEUE_SIZE",
    "RESTART_SECONDS",
    "SEND_BUFFER",
    "LoggedView",
    "ServingLog",
    "WriterConfig",
    "log_schema",
]

#: waiting lookups that wake the writer to turn them into rows
BATCH_LOOKUPS = 256
#: rows built that are committed before the interval ends (bounds the memory they hold)
BATCH_ROWS = 200_000
FLUSH_SECONDS = 1.0
#: lookups received and not yet built past which the writer stops reading the socket
QUEUE_SIZE = 10_000
#: the socket's send buffer: a burst of lookups this large waits for the writer (the
#: kernel caps it at ``net.core.wmem_max``)
SEND_BUFFER = 4 * 1024 * 1024
#: the largest message sent; a larger lookup is split by entity rows
MAX_MESSAGE = 256 * 1024
#: a writer that died is replaced at most once per this many seconds
RESTART_SECONDS = 1.0
#: how long close() waits for the writer to commit and exit before killing it
CLOSE_SECONDS = 30.0

_SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
_PICKLE = 5


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


class WriterConfig(NamedTuple):
    """The writer's settings: the first message on its socket (never its argv or env)."""

    uri: str
    storage_options: dict[str, str] | None
    batch_lookups: int
    flush_seconds: float
    queue_size: int
    batch_rows: int


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


class _Writer:
    """One writer process and this side of its socket."""

    def __init__(self, config: WriterConfig) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            # the package this process runs, first on the writer's path: the same code
            package_root = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (package_root, env.get("PYTHONPATH")) if p
            )
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "featurekit.online.serving_log_writer",
                    str(theirs.fileno()),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the writer's end: held here, it would hide this end's EOF
        self.sock = ours
        self.written = 0
        self.dropped = 0
        ours.sendall(pickle.dumps(config, protocol=_PICKLE))  # fits: the buffer is empty

    def send(self, message: bytes, deadline: float) -> bool:
        """Send a control message, waiting for room until ``deadline`` (False: not sent)."""
        while True:
            try:
                self.sock.send(message, _SEND_FLAGS)
                return True
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                select.select([], [self.sock], [], min(left, 0.1))
            except OSError:
                return False

    def reply(self, token: int, deadline: float) -> bool:
        """Wait for the writer's answer to ``token`` (False: none before ``deadline``)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.sock], [], [], min(left, 0.1))
            if not ready:
                continue
            try:
                data = self.sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                return False
            if not data:
                return False  # the writer is gone
            got, self.written, self.dropped = pickle.loads(data)
            if got == token:
                return True


class ServingLog:
    """Sends sampled lookups to a writer process that appends them to Delta (see the module)."""

    def __init__(
        self,
        uri: str,
        *,
        sample: float = 1.0,
        batch_lookups: int = BATCH_LOOKUPS,
        flush_seconds: float = FLUSH_SECONDS,
        queue_size: int = QUEUE_SIZE,
        batch_rows: int = BATCH_ROWS,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        if not 0.0 < sample <= 1.0:
            raise DefinitionError(
                f"serving log sample rate must be in (0, 1], got {sample!r}; "
                "e.g. log_serving=0.1 logs one lookup in ten."
            )
        self.uri, self.sample = uri, sample
        options = dict(storage_options) if storage_options else options_for(uri)
        self._config = WriterConfig(
            uri, options, batch_lookups, flush_seconds, queue_size, batch_rows
        )
        self._dropped = 0  # lookups not sent (buffer full, writer gone, too big)
        self._past_written = 0  # counts of the writers replaced
        self._past_dropped = 0
        self._closed = False
        self._lock = threading.Lock()  # flush, close and restarts (never record)
        self._token = 0
        self._restarting = False
        self._started = time.monotonic()
        self._writer: _Writer | None = _Writer(self._config)
        atexit.register(self.close)

    @property
    def dropped(self) -> int:
        """Lookups not logged: not sent (full buffer, no writer, too big) or not written."""
        writer = self._writer
        return self._dropped + self._past_dropped + (writer.dropped if writer else 0)

    @property
    def written(self) -> int:
        """Lookups committed, as last reported by the writer (after flush or close)."""
        writer = self._writer
        return self._past_written + (writer.written if writer else 0)

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id (None: none running)."""
        writer = self._writer
        return writer.process.pid if writer else None

    def record(
        self,
        at_us: int,
        entities: Mapping[str, Sequence[Any]],
        keys: tuple[str, ...],
        views: list[LoggedView],
    ) -> None:
        """Send one lookup (sampled) to the writer; never blocks, never raises."""
        if self._closed or (self.sample < 1.0 and random.random() >= self.sample):
            return
        writer = self._writer
        try:
            message = pickle.dumps((at_us, keys, entities, views, None), protocol=_PICKLE)
        except Exception:
            self._dropped += 1  # a value pickle cannot carry
            return
        if writer is None:
            self._dropped += 1
            self._restart()
            return
        if len(message) > MAX_MESSAGE:
            self._send_split(writer, at_us, entities, keys, views)
            return
        try:
            writer.sock.send(message, _SEND_FLAGS)
        except BlockingIOError:
            self._dropped += 1
        except OSError as err:
            self._dropped += 1
            if err.errno == errno.EMSGSIZE:
                return
            self._restart()  # the writer is gone (EPIPE, ECONNRESET) or its socket closed

    def _send_split(
        self,
        writer: _Writer,
        at_us: int,
        entities: Mapping[str, Sequence[Any]],
        keys: tuple[str, ...],
        views: list[LoggedView],
    ) -> None:
        """Send a large lookup as several messages of entity rows, with one request id."""
        request = os.urandom(16).hex()
        n = len(next(iter(entities.values()))) if entities else 0
        parts = [(0, n)]
        messages: list[bytes] = []
        while parts:
            start, stop = parts.pop()
            part = [
                LoggedView(
                    v.view,
                    v.version,
                    v.features,
                    {f: v.values[f][start:stop] for f in v.features},
                    v.statuses[start:stop],
                    v.events[start:stop],
                )
                for v in views
            ]
            rows = {k: entities[k][start:stop] for k in entities}
            try:
                message = pickle.dumps((at_us, keys, rows, part, request), protocol=_PICKLE)
            except Exception:
                self._dropped += 1
                return
            if len(message) <= MAX_MESSAGE:
                messages.append(message)
            elif stop - start > 1:
                middle = (start + stop) // 2
                parts += [(middle, stop), (start, middle)]  # popped in row order
            else:
                self._dropped += 1  # one entity row larger than a message
                return
        for message in messages:
            try:
                writer.sock.send(message, _SEND_FLAGS)
            except OSError:
                self._dropped += 1  # the rows sent so far are logged, the rest are not
                return

    def _restart(self) -> None:
        """Start a new writer in the background (at most once per RESTART_SECONDS)."""
        if self._restarting or self._closed:
            return
        if time.monotonic() - self._started < RESTART_SECONDS:
            return
        self._restarting = True
        threading.Thread(target=self._replace, name="featurekit-serving-log", daemon=True).start()

    def _replace(self) -> None:
        try:
            with self._lock:
                if self._closed:
                    return
                old, self._writer = self._writer, None
                if old is not None:
                    self._past_written += old.written
                    self._past_dropped += old.dropped
                    old.sock.close()
                    _reap(old, 0.0)
                self._started = time.monotonic()
                # on failure: retried on a later lookup, RESTART_SECONDS on
                with contextlib.suppress(OSError):
                    self._writer = _Writer(self._config)
        finally:
            self._restarting = False

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every lookup sent so far is committed (tests, notebooks).

        Returns:
            True when the writer confirmed it before ``timeout`` seconds.
        """
        with self._lock:
            writer = self._writer
            if writer is None or self._closed:
                return False
            self._token += 1
            deadline = time.monotonic() + timeout
            message = pickle.dumps(("flush", self._token), protocol=_PICKLE)
            return writer.send(message, deadline) and writer.reply(self._token, deadline)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Write everything sent, stop the writer and reap it (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self.close)
            writer = self._writer
            if writer is None:
                return
            self._token += 1
            deadline = time.monotonic() + timeout
            message = pickle.dumps(("close", self._token), protocol=_PICKLE)
            if writer.send(message, deadline):
                writer.reply(self._token, deadline)
            writer.sock.close()
            _reap(writer, max(0.0, deadline - time.monotonic()))


def _reap(writer: _Writer, timeout: float) -> None:
    """Wait for the writer process to exit (kill it past ``timeout``)."""
    try:
        writer.process.wait(timeout)
    except subprocess.TimeoutExpired:
        writer.process.kill()
        writer.process.wait()
