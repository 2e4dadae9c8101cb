"""The serving log: online lookups appended to a Delta table by a writer process.

A lookup hands :meth:`ServingLog.record` the objects it already built (entity columns,
feature value lists, statuses). ``record`` samples and appends one tuple of references to
a bounded list of pending lookups: no copy, no serialization, no system call on the
lookup's thread. A *sender thread* of the serving process takes the pending lookups every
:data:`SEND_SECONDS` (sooner once :data:`SEND_LOOKUPS` are waiting), serializes them with
``pickle`` (protocol 5) in chunks of at most :data:`CHUNK_LOOKUPS` lookups and about
:data:`CHUNK_CELLS` values, and sends each chunk as one message on a Unix
``SOCK_SEQPACKET`` socket pair to a writer *process*
(:mod:`featurekit.online.serving_log_writer`), which builds the rows and appends them to
the store's ``serving_log`` Delta table. The rows are built from the very Python values
the lookup served, so they are the ones a writer in this process would build. The lookup
code hands over lists it never changes after it returns, so referencing them is enough.

Why a sender thread: pickling one lookup and sending it cost a one-entity lookup about
a fifth of its time (pickle 2.4 µs, ``send`` 1.4 µs, on a 24 µs lookup); ``record`` now
costs it about 0.15 µs. Pickled together, lookups cost less each, and a chunk's ``send``
is one system call for up to :data:`CHUNK_LOOKUPS` lookups. Each hand-over makes the
lookup running at that moment wait while a chunk is pickled, so hand-overs are few
(:data:`SEND_SECONDS`), and the sender pauses between two chunks: released only in
``send``, the GIL was taken back by the sender before a waiting lookup had run, and that
lookup then waited for the interpreter's switch interval (5 ms); behind (half of
:data:`PENDING_LOOKUPS` pending), it sends larger chunks without pausing until it has
caught up. A lookup of more than :data:`INLINE_CELLS` values (all but the smallest
lookups) is pickled when it is recorded, by its own thread (:class:`Packed`), while its
objects are still in the CPU's caches: its cost is then a share of that lookup's own,
where the sender's pickling of such lookups stalled other lookups, and cost more, the
objects having left the caches (and, held as lists, survived young collections) by
then; the sender sends their pickles together as one message (``sendmsg``: gathered by
the kernel, never joined while it holds the GIL; the writer reads every pickle of a
message), pausing between two such messages as between two chunks (without the pauses,
a 100-entity lookup that met a hand-over waited for all of it: p99 1.2-1.5x that of no
logging, against 1.13 with them, measured). A one-entity lookup is held as one flat
tuple (:data:`One`, :meth:`ServingLog.record_one`): held as lists and dicts for the send
interval, pending lookups reached the collector's oldest generation and set off full
collections.

Why a process and not a thread for the writer: its Python work (unpacking lookups into
columns, calling polars and delta-rs) needs the GIL, and each time it takes it back a
lookup waits for as long as it holds it (a hundred microseconds or more, twice a
one-entity lookup), however small its slices. In a process of its own it shares nothing
with the lookups but the CPU.

What ``record`` guarantees:

* it never blocks and never raises into the lookup. Past :data:`PENDING_LOOKUPS` pending
  lookups (the sender waiting for room in a full socket buffer: the writer behind by
  :data:`SEND_BUFFER` bytes, or stopped) the lookup is dropped and counted in
  :attr:`ServingLog.dropped`; so are the lookups the sender had for a writer that died,
  and a new writer is started by the sender at most once per :data:`RESTART_SECONDS`;
* a lookup whose message alone exceeds :data:`MAX_MESSAGE` bytes is split by entity rows
  into several messages that carry the same request id, so its rows in the table are
  those of one message (if the writer goes away midway, the rows sent are logged and the
  lookup is counted as dropped); one entity row that alone exceeds it is dropped and
  counted;
* memory stays bounded: the pending lookups (:data:`PENDING_LOOKUPS`), the chunk being
  sent, the socket buffer, the writer's queue (:data:`QUEUE_SIZE` lookups: past it the
  writer stops reading, the buffer fills, the pending list fills and lookups are
  dropped), and the rows it has built (:data:`BATCH_ROWS`).

The writer is started with the :class:`ServingLog` (``subprocess``: fork and exec, never a
bare fork of a process that runs Rust thread pools). It gets the table URI and storage
options as the first message on the socket, never on its command line or environment,
where ``ps`` would show credentials. It commits one batch per :data:`FLUSH_SECONDS`
(sooner past :data:`BATCH_ROWS` rows), retrying a failed commit once under the same
batch id so that a commit that landed is not written twice.

:meth:`ServingLog.flush` hands the pending lookups to the writer, sends a marker and waits
until the writer has committed every lookup sent before it; :meth:`ServingLog.close`
(the Store's ``close()``, interpreter exit, the server's shutdown) hands over the pending
lookups, sends a close, waits for the writer to commit and exit (bounded by its timeout)
and reaps it. A process forked from the serving process starts its own sender thread and
logs to the same writer.

Durability: a lookup is on disk once its batch is committed. If the serving process dies
(killed, ``os._exit``), the lookups still pending in it are lost: those recorded in the
last :data:`SEND_SECONDS` (more if the writer was behind and the pending list had grown),
not counted. The writer reads what is in the socket up to end of file, commits it and
exits: a serving-process crash loses no lookup the sender had sent. A crash of the
writer loses what it had received or was still in its socket and not yet committed (at
most :data:`FLUSH_SECONDS` of lookups, not counted), and what the sender has for it until
the next writer runs (counted as dropped).

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
import contextlib
import os
import pickle
import random
import select
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from featurekit.core.errors import DefinitionError
from featurekit.online import priority
from featurekit.storage.remote import options_for

__all__ = [
    "BATCH_LOOKUPS",
    "BATCH_ROWS",
    "CHUNK_CELLS",
    "CHUNK_LOOKUPS",
    "FLUSH_SECONDS",
    "HURRY_SECONDS",
    "INLINE_CELLS",
    "MAX_MESSAGE",
    "PENDING_LOOKUPS",
    "QUEUE_SIZE",
    "RESTART_SECONDS",
    "SEND_BUFFER",
    "SEND_LOOKUPS",
    "SEND_SECONDS",
    "Entry",
    "LoggedView",
    "One",
    "Packed",
    "Served",
    "ServingLog",
    "WriterConfig",
    "as_entry",
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
#: how often the sender thread hands the pending lookups to the writer: the most a
#: serving-process crash loses while the writer keeps up. Each hand-over makes one lookup
#: wait for the GIL while a chunk is pickled, so fewer, larger hand-overs delay fewer
#: lookups (measured: 10 ms gave one-entity lookups a p99 1.3x that of no logging, 50 ms
#: none measurable)
SEND_SECONDS = 0.05
#: pending lookups that wake the sender before its interval ends
SEND_LOOKUPS = 2048
#: pending lookups past which a lookup is dropped (counted): bounds what they hold
PENDING_LOOKUPS = 8192
#: lookups per message, and values (entity rows x key and served columns) past which a
#: message is closed: a chunk is pickled in a few hundred microseconds and fits in
#: MAX_MESSAGE with plain values
CHUNK_LOOKUPS = 1024
CHUNK_CELLS = 16384
#: values past which a lookup is pickled by the lookup's own thread (see :class:`Packed`).
#: Low: a lookup of 50 entities x 2 features (250 values), pickled by the sender 50 ms
#: later, cost it 20 us of CPU, cold, against about 10 in place (8 threads on Redis,
#: measured); left pending, it also held its lists through young collections
INLINE_CELLS = 16
#: a writer that died is replaced at most once per this many seconds
RESTART_SECONDS = 1.0
#: the sender brings a writer that is behind back to normal priority at most this often
HURRY_SECONDS = 0.1
#: how long close() waits for the writer to commit and exit before killing it
CLOSE_SECONDS = 30.0

_SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
_PICKLE = 5
#: how long the sender waits before trying a full socket again
_ROOM_SECONDS = 0.002
#: the sender's pause between two chunks, so that a lookup waiting for the GIL gets it
_YIELD_SECONDS = 0.0002
#: the most buffers one ``sendmsg`` takes (more are joined into one first)
_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16


#: what one lookup served from one view version (references, no copies): view, version,
#: features, values by feature, statuses, event times. The lookups build plain tuples:
#: pickled by the thousand, a named tuple costs twice as much (its class is reduced each
#: time), and building one costs the lookup a few tenths of a microsecond more.
Served = tuple[
    str, int, tuple[str, ...], Mapping[str, Sequence[Any]], Sequence[str], Sequence[int | None]
]


class LoggedView(NamedTuple):
    """:data:`Served` with names (tests and callers that build one by hand)."""

    view: str
    version: int
    features: tuple[str, ...]
    values: Mapping[str, Sequence[Any]]
    statuses: Sequence[str]
    events: Sequence[int | None]


#: one logged lookup as pending and as sent: (lookup instant, key names, entity columns,
#: what each view served, request id or None: the writer draws one; a lookup split into
#: several messages carries one). A message is a list of them.
Entry = tuple[int, tuple[str, ...], Mapping[str, Sequence[Any]], Sequence[Served], str | None]

#: a lookup of one entity from one view, flat: (lookup instant, key names, key values,
#: view, version, features, values in feature order, status, event time). It holds no
#: list or dict, so once the collector has seen it, it stops tracking it: pending
#: lookups held as lists and dicts survived into the oldest generation by the thousand a
#: second and set off full collections of the serving process (25 ms each, measured).
One = tuple[
    int, tuple[str, ...], tuple[Any, ...], str, int, tuple[str, ...], tuple[Any, ...], str, Any
]


#: what one send carries: a pickle, or pickles sent together as one message
Message = bytes | list[bytes]


def as_entry(item: Entry | One) -> Entry:
    """A pending lookup in the general form (a :data:`One` becomes one-row columns)."""
    if len(item) == 5:
        return item  # type: ignore[return-value]
    at_us, keys, key_values, view, version, features, values, status, event = item
    entities = {k: [v] for k, v in zip(keys, key_values, strict=True)}
    served = {f: [v] for f, v in zip(features, values, strict=True)}
    return at_us, keys, entities, [(view, version, features, served, [status], [event])], None


class Packed(NamedTuple):
    """A large lookup, pickled into its messages by the thread that made the lookup.

    Pickling a lookup of many entities costs about a tenth of the lookup itself; paid
    by the sender, it held the GIL for that long in the middle of another lookup, several
    times per hand-over (a 100-entity lookup's p99 was twice that of no logging). Paid by
    its own lookup, it is a cost proportional to that lookup, and the sender only sends.
    """

    messages: tuple[tuple[bytes | None, int], ...]
    #: the lookup's one message (None: it was split, or cannot be sent)
    whole: bytes | None

    @classmethod
    def of(cls, messages: tuple[tuple[bytes | None, int], ...]) -> Packed:
        """A lookup's messages, and its one message when it fits one (found here, on the
        lookup's thread, not by the sender while it holds the GIL)."""
        one = messages[0][0] if len(messages) == 1 and messages[0][1] == 1 else None
        return cls(messages, one)


class WriterConfig(NamedTuple):
    """The writer's settings: the first message on its socket (never its argv or env)."""

    uri: str
    storage_options: dict[str, str] | None
    batch_lookups: int
    flush_seconds: float
    queue_size: int
    batch_rows: int
    #: run at idle CPU priority when it can come back (see :mod:`featurekit.online.priority`)
    idle: bool = True


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
        self.gone = False  # a send failed: the writer died or its socket is closed
        self.give_up: float | None = None  # set by close(): a send waits for room until then
        self._hurried = 0.0  # when hurry() last brought the writer to normal priority
        ours.sendall(pickle.dumps(config, protocol=_PICKLE))  # fits: the buffer is empty

    def send(self, message: Message, until: float | None) -> bool:
        """Send ``message``, waiting for room until ``until`` (None: until ``give_up``).

        A list of pickles goes as one message, gathered by the kernel (``sendmsg``) while
        the GIL is released: joined here first, they cost every hand-over a copy of each
        message made while the lookups wait for the GIL.

        Returns:
            False when not sent: no room in time, or the writer is gone (then ``gone``).
        """
        while True:
            try:
                if isinstance(message, bytes):
                    self.sock.send(message, _SEND_FLAGS)
                else:
                    self.sock.sendmsg(message, (), _SEND_FLAGS)
                return True
            except BlockingIOError:
                self.hurry()  # the writer is behind: at idle priority it may be starving
                limit = until if until is not None else self.give_up
                if limit is not None and time.monotonic() >= limit:
                    return False
                # a short sleep, not select(): a SEQPACKET socket is writable as soon as
                # any room frees, long before a large message fits
                time.sleep(_ROOM_SECONDS)
            except OSError:
                self.gone = True
                return False

    def hurry(self) -> None:
        """Bring the writer to normal priority (it goes idle again once caught up; see
        :mod:`featurekit.online.priority`): at most once per :data:`HURRY_SECONDS`."""
        now = time.monotonic()
        if now - self._hurried >= HURRY_SECONDS:
            self._hurried = now
            priority.hurry(self.process.pid)

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


#: every open log, so that a forked child can restart their sender threads
_OPEN: weakref.WeakSet[ServingLog] = weakref.WeakSet()


class ServingLog:
    """Hands sampled lookups to a writer process that appends them to Delta (see the module)."""

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
        idle: bool = True,
    ) -> None:
        if not 0.0 < sample <= 1.0:
            raise DefinitionError(
                f"serving log sample rate must be in (0, 1], got {sample!r}; "
                "e.g. log_serving=0.1 logs one lookup in ten."
            )
        self.uri, self.sample = uri, sample
        options = dict(storage_options) if storage_options else options_for(uri)
        self._config = WriterConfig(
            uri, options, batch_lookups, flush_seconds, queue_size, batch_rows, idle
        )
        # appended by lookups, taken by the sender (a deque: both are atomic under the GIL)
        self._pending: collections.deque[Entry | One | Packed] = collections.deque()
        self._dropped = 0  # lookups not recorded: the pending list full (lookup threads)
        self._lost = 0  # lookups taken and not sent: no writer, too big (under _lock)
        self._past_written = 0  # counts of the writers replaced
        self._past_dropped = 0
        self._closed = False
        # taking and sending pending lookups, flush, close and restarts (never record): one
        # lock, so that a flush marker follows every lookup the sender had taken
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._handing = 0  # lookups taken from the pending list and not yet sent
        self._token = 0
        self._started = time.monotonic()
        self._writer: _Writer | None = _Writer(self._config)
        self._sender = self._start_sender()
        _OPEN.add(self)
        atexit.register(self.close)

    @property
    def dropped(self) -> int:
        """Lookups not logged: not recorded (pending list full), not sent (no writer, too
        big) or not written."""
        writer = self._writer
        return self._dropped + self._lost + self._past_dropped + (writer.dropped if writer else 0)

    @property
    def written(self) -> int:
        """Lookups committed, as last reported by the writer (after flush or close)."""
        writer = self._writer
        return self._past_written + (writer.written if writer else 0)

    @property
    def pending(self) -> int:
        """Lookups recorded and not yet handed to the writer (lost if this process dies)."""
        return len(self._pending) + self._handing  # read in this order: never a false 0

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
        views: Sequence[Served],
    ) -> None:
        """Queue one lookup (sampled) for the writer; never blocks, never raises.

        A lookup of more than :data:`INLINE_CELLS` values is pickled here (see
        :class:`Packed`); a smaller one is pickled later by the sender thread.

        ``entities`` and the lists in ``views`` are kept by reference until the sender
        thread has pickled them: the caller must not change them afterwards.
        """
        if self._closed or (self.sample < 1.0 and random.random() >= self.sample):
            return
        pending = self._pending
        if len(pending) >= PENDING_LOOKUPS:
            self._dropped += 1
            return
        entry: Entry = (at_us, keys, entities, views, None)
        if _cells(entry) > INLINE_CELLS:
            try:
                pending.append(Packed.of(tuple(_messages([entry]))))
            except Exception:
                self._dropped += 1  # never raises into the lookup
        else:
            pending.append(entry)
        if len(pending) == SEND_LOOKUPS:
            self._wake.set()

    def record_one(self, lookup: One) -> None:
        """:meth:`record` for a lookup of one entity from one view, given flat (see
        :data:`One`): logged exactly as ``record`` logs it."""
        if self._closed or (self.sample < 1.0 and random.random() >= self.sample):
            return
        pending = self._pending
        if len(pending) >= PENDING_LOOKUPS:
            self._dropped += 1
            return
        pending.append(lookup)
        if len(pending) == SEND_LOOKUPS:
            self._wake.set()

    # ---- the sender thread ------------------------------------------------------------------
    def _start_sender(self) -> threading.Thread:
        sender = threading.Thread(
            target=self._send_loop, name="featurekit-serving-log", daemon=True
        )
        sender.start()
        return sender

    def _send_loop(self) -> None:
        wake, lock = self._wake, self._lock
        while not self._closed:
            wake.wait(SEND_SECONDS)
            wake.clear()
            if not self._pending:
                continue
            with lock:
                if self._closed:
                    return  # close() hands over what is pending
                # never raises: a failure here would stop logging for good
                with contextlib.suppress(Exception):
                    self._hand_over(None)

    def _hand_over(self, until: float | None) -> bool:
        """Send the lookups pending now to the writer, in chunks (``_lock`` held).

        ``until``: how long to wait for room in the socket (None: until sent, or until
        close() gives up). Lookups that find no room in time stay pending.

        Returns:
            True when every lookup pending at the call was sent.
        """
        writer = self._writer
        if writer is None or writer.gone:
            writer = self._restart()
        pending = self._pending
        left = len(pending)  # not those recorded meanwhile: a busy log would never end
        self._handing = left  # before they leave the list (see pending)
        try:
            return self._send_pending(writer, left, until)
        finally:
            self._handing = 0

    def _send_pending(self, writer: _Writer | None, left: int, until: float | None) -> bool:
        """:meth:`_hand_over` for the first ``left`` pending lookups."""
        pending = self._pending
        if writer is None:
            self._lost += left  # no writer (it died, none could start): counted
            for _ in range(left):
                pending.popleft()
            return left == 0
        # Behind (half the bound pending): larger chunks and no pauses. When the
        # lookups never release the GIL (a memory online store), a paused sender gets it
        # back only by the interpreter's forced switch, once per switch interval (5 ms),
        # and fell behind for good on 100-entity lookups (measured).
        behind = left > PENDING_LOOKUPS // 2
        if behind:
            writer.hurry()
        bound = 4 * CHUNK_CELLS if behind else CHUNK_CELLS
        while left:
            chunk: list[Entry | One | Packed] = []
            cells = size = 0  # size: bytes of the pickled lookups in chunk
            while left and len(chunk) < CHUNK_LOOKUPS and cells < bound:
                entry = pending.popleft()
                if isinstance(entry, Packed):  # sent as pickled: joined to the next ones
                    whole = entry.whole
                    if chunk and (not size or whole is None or size + len(whole) > MAX_MESSAGE):
                        pending.appendleft(entry)
                        break
                    chunk.append(entry)
                    left -= 1
                    if whole is None:
                        break
                    size += len(whole)
                    continue
                if size:  # a chunk of pickled lookups takes no other
                    pending.appendleft(entry)
                    break
                left -= 1
                chunk.append(entry)
                cells += _cells(entry)
            unsent = self._send_chunk(writer, chunk, until)
            if unsent is None:
                if left and until is None and not behind:
                    # Released in send(), the GIL is taken back by this thread before a
                    # lookup woken to take it has run: without a pause the lookup waits
                    # for the switch interval (5 ms) for each chunk (measured: 1-6 ms),
                    # or, pickled lookups sent back to back, for the whole hand-over
                    time.sleep(_YIELD_SECONDS)
                continue
            if writer.gone:  # what this writer was to get is lost with it
                self._lost += len(unsent) + left
                for _ in range(left):
                    pending.popleft()
            else:  # no room in time: back to the front, in order, for the next try
                rest = [pending.popleft() for _ in range(left)]
                pending.extendleft(reversed(unsent + rest))
            return False
        return True

    def _send_chunk(
        self, writer: _Writer, chunk: list[Entry | One | Packed], until: float | None
    ) -> list[Entry | One | Packed] | None:
        """Send ``chunk`` as one message or more.

        Returns:
            None when all went, else the lookups of ``chunk`` not sent (a lookup split
            into several messages and sent in part is counted as dropped instead).
        """
        done = 0  # lookups of chunk fully sent (or dropped)
        partial = False  # some parts of the next lookup were sent
        for message, completes in _chunk_messages(chunk):
            if message is None:
                self._lost += 1  # a value pickle cannot carry, or an entity row too big
                done += 1
                continue
            if not writer.send(message, until):
                if partial:
                    self._lost += 1  # its rows sent so far are logged
                    done += 1
                return chunk[done:]
            done += completes
            partial = completes == 0
        return None

    def _restart(self) -> _Writer | None:
        """Replace a dead or missing writer (at most once per RESTART_SECONDS; ``_lock``)."""
        if self._closed or time.monotonic() - self._started < RESTART_SECONDS:
            return self._writer if self._writer is not None and not self._writer.gone else None
        old, self._writer = self._writer, None
        if old is not None:
            self._past_written += old.written
            self._past_dropped += old.dropped
            old.sock.close()
            _reap(old, 0.0)
        self._started = time.monotonic()
        # on failure: retried by the sender, RESTART_SECONDS on
        with contextlib.suppress(OSError):
            self._writer = _Writer(self._config)
        return self._writer

    def _forked(self) -> None:
        """In a forked child: fresh locks and a sender thread of its own.

        The parent's pending lookups are the parent's to send. The writer and its socket
        are shared with the parent, as a lookup's send was before the sender thread.
        """
        self._pending = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        if not self._closed:
            self._sender = self._start_sender()

    # ---- flush and close --------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Hand over the pending lookups and wait until every lookup recorded so far is
        committed (tests, notebooks).

        Returns:
            True when the writer confirmed it before ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            return False  # the sender waits for room in a full socket
        try:
            if self._closed:
                return False
            sent = self._hand_over(deadline)
            writer = self._writer
            if writer is None or writer.gone:
                return False
            self._token += 1
            writer.hurry()  # waited for: not at idle priority behind busy cores
            message = pickle.dumps(("flush", self._token), protocol=_PICKLE)
            return sent and writer.send(message, deadline) and writer.reply(self._token, deadline)
        finally:
            self._lock.release()

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Hand over the pending lookups, write everything sent, stop the writer and reap it
        (idempotent)."""
        deadline = time.monotonic() + timeout
        writer = self._writer
        if writer is not None:
            writer.give_up = deadline  # a sender waiting for room gives up then
        locked = self._lock.acquire(timeout=timeout)
        try:
            if self._closed:
                return
            self._closed = True
            self._wake.set()  # the sender thread ends
            atexit.unregister(self.close)
            _OPEN.discard(self)
            if locked:
                self._hand_over(deadline)
            self._lost += len(self._pending)  # no room before the deadline (or no lock)
            self._pending.clear()
            writer = self._writer
            if writer is None:
                return
            if locked and not writer.gone:
                writer.hurry()
                self._token += 1
                message = pickle.dumps(("close", self._token), protocol=_PICKLE)
                if writer.send(message, deadline):
                    writer.reply(self._token, deadline)
            writer.sock.close()
            _reap(writer, max(0.0, deadline - time.monotonic()))
        finally:
            if locked:
                self._lock.release()


def _cells(entry: Entry | One) -> int:
    """About how many values a lookup sends: entity rows x (keys + served columns)."""
    if len(entry) != 5:
        return len(entry[1]) + len(entry[5]) + 2
    views = entry[3]
    if not views:
        return 1
    first = views[0]  # the views of one lookup are alike enough for an estimate
    return len(first[4]) * (len(entry[1]) + (len(first[2]) + 2) * len(views))


def _chunk_messages(chunk: list[Entry | One | Packed]) -> Iterator[tuple[Message | None, int]]:
    """:func:`_messages` of a chunk. A chunk of :class:`Packed` lookups, already pickled,
    is sent as they are: one split lookup alone, else their pickles as one message (the
    writer reads every pickle of a message)."""
    lookups: list[Entry | One] = []
    wholes: list[bytes] = []
    for item in chunk:
        if isinstance(item, Packed):
            whole = item.whole
            if whole is None:
                return iter(item.messages)
            wholes.append(whole)
        else:
            lookups.append(item)
    if wholes:
        return iter([(wholes if len(wholes) <= _IOV_MAX else b"".join(wholes), len(wholes))])
    return _messages(lookups)


def _messages(chunk: list[Entry | One]) -> Iterator[tuple[bytes | None, int]]:
    """``chunk`` pickled into messages of at most MAX_MESSAGE bytes, with the lookups each
    completes (None: a lookup that cannot be sent, to count)."""
    try:
        message: bytes | None = pickle.dumps(chunk, protocol=_PICKLE)
    except Exception:
        message = None  # a value pickle cannot carry: find the lookup
    if message is not None and len(message) <= MAX_MESSAGE:
        yield message, len(chunk)
    elif len(chunk) > 1:
        middle = len(chunk) // 2
        yield from _messages(chunk[:middle])
        yield from _messages(chunk[middle:])
    elif message is None:
        yield None, 1
    else:
        yield from _split(as_entry(chunk[0]))


def _split(entry: Entry) -> Iterator[tuple[bytes | None, int]]:
    """A lookup larger than a message as messages of entity rows with one request id; the
    last completes it (None: one entity row alone is too big, the lookup is dropped)."""
    at_us, keys, entities, views, _ = entry
    request = os.urandom(16).hex()
    n = len(next(iter(entities.values()))) if entities else 0
    parts = [(0, n)]
    messages: list[bytes] = []
    while parts:
        start, stop = parts.pop()
        part = [
            (
                view,
                version,
                features,
                {f: values[f][start:stop] for f in features},
                statuses[start:stop],
                events[start:stop],
            )
            for view, version, features, values, statuses, events in views
        ]
        rows = {k: entities[k][start:stop] for k in entities}
        try:
            message = pickle.dumps([(at_us, keys, rows, part, request)], protocol=_PICKLE)
        except Exception:
            yield None, 1
            return
        if len(message) <= MAX_MESSAGE:
            messages.append(message)
        elif stop - start > 1:
            middle = (start + stop) // 2
            parts += [(middle, stop), (start, middle)]  # popped in row order
        else:
            yield None, 1  # one entity row larger than a message
            return
    for i, message in enumerate(messages):
        yield message, int(i == len(messages) - 1)


def _reap(writer: _Writer, timeout: float) -> None:
    """Wait for the writer process to exit (kill it past ``timeout``)."""
    try:
        writer.process.wait(timeout)
    except subprocess.TimeoutExpired:
        writer.process.kill()
        writer.process.wait()


def _after_fork_in_child() -> None:
    for log in list(_OPEN):
        log._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
