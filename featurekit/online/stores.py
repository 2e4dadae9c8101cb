"""Online stores: where snapshots live and how a lookup reads them.

Every store keeps, per view version, a pointer to its current snapshot (an id), the
snapshot's metadata and its entries (entity key -> encoded entries). A new snapshot is
written whole under a new id and the pointer is swapped atomically, so a reader sees one
materialization of a view or the next, never a mix.

- :class:`SQLiteOnlineStore`: the embedded default, ``<root>/online/online.sqlite`` in WAL
  mode (readers never block the writer or each other; one transaction per swap).
- :class:`MemoryOnlineStore`: a dict; a test double for users' own tests and the floor in
  benchmarks.
- ``RedisOnlineStore`` (:mod:`featurekit.online.redis_store`): a real server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from featurekit.core.names import shown
from featurekit.core.redact import redact
from featurekit.online.errors import OnlineStoreError
from featurekit.online.types import ReadRequest, ReadResult
from featurekit.storage.layout import StoreLayout

__all__ = ["MemoryOnlineStore", "OnlineStore", "SQLiteOnlineStore", "open_online_store"]


@runtime_checkable
class OnlineStore(Protocol):
    """What an online store provides. Implement it to plug in another backend."""

    url: str

    def write_snapshot(
        self, view: str, version: int, meta: bytes, entries: Iterable[tuple[bytes, bytes]]
    ) -> None:
        """Replace the view version's snapshot atomically."""
        ...

    def read(self, requests: Sequence[ReadRequest]) -> list[ReadResult]:
        """Entries for each view version, all from one consistent state of each view."""
        ...

    def meta(self, view: str, version: int) -> bytes | None:
        """The current snapshot's metadata, or None."""
        ...

    def all_meta(self) -> list[bytes]:
        """Metadata of every current snapshot (for listings and freshness metrics)."""
        ...

    def ping(self) -> None:
        """Raise :class:`OnlineStoreError` when the store cannot be reached."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class MemoryOnlineStore:
    """An in-process online store: a dict per view version, swapped in one assignment.

    Useful as a test double in users' own tests (``fk.Store(root, online="memory")``).
    """

    def __init__(self) -> None:
        self.url = "memory://"
        self._data: dict[tuple[str, int], tuple[str, bytes, dict[bytes, bytes]]] = {}

    def __repr__(self) -> str:
        return "MemoryOnlineStore()"

    def write_snapshot(
        self, view: str, version: int, meta: bytes, entries: Iterable[tuple[bytes, bytes]]
    ) -> None:
        """Replace the snapshot (one dict assignment: atomic for readers)."""
        self._data[(view, version)] = (secrets.token_hex(8), meta, dict(entries))

    def update_entries(
        self, view: str, version: int, sid: str, meta: bytes, entries: Sequence[tuple[bytes, bytes]]
    ) -> bool:
        """Replace some entities of snapshot ``sid`` (one dict update: atomic for readers)."""
        found = self._data.get((view, version))
        if found is None or found[0] != sid:
            return False
        found[2].update(entries)
        self._data[(view, version)] = (sid, meta, found[2])
        return True

    def read(self, requests: Sequence[ReadRequest]) -> list[ReadResult]:
        """Entries per view version from the snapshot current when the read began."""
        out: list[ReadResult] = []
        for view, version, keys in requests:
            found = self._data.get((view, version))
            if found is None:
                out.append((None, None, []))
                continue
            sid, meta, rows = found
            get = rows.get
            out.append((sid, meta, [get(k) for k in keys]))
        return out

    def meta(self, view: str, version: int) -> bytes | None:
        """The current snapshot's metadata, or None."""
        found = self._data.get((view, version))
        return None if found is None else found[1]

    def all_meta(self) -> list[bytes]:
        """Metadata of every current snapshot."""
        return [meta for _, meta, _ in list(self._data.values())]

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    view TEXT NOT NULL,
    version INTEGER NOT NULL,
    sid TEXT NOT NULL,
    meta BLOB NOT NULL,
    PRIMARY KEY (view, version)
);
CREATE TABLE IF NOT EXISTS entries (
    sid TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (sid, key)
) WITHOUT ROWID;
"""
_ONE_KEY = (
    "SELECT s.sid, e.value FROM snapshots s LEFT JOIN entries e "
    "ON e.sid = s.sid AND e.key = ? WHERE s.view = ? AND s.version = ?"
)
_CHUNK = 500  # keys per SELECT ... IN (...), well under SQLite's variable limit


class SQLiteOnlineStore:
    """The embedded online store: one SQLite file in WAL mode under ``<root>/online/``.

    Why SQLite: it ships with Python (no extra dependency or server), WAL mode lets any
    number of readers in any number of processes read while one writer writes, a swap is
    one ACID transaction, and a point lookup costs a few microseconds.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._local = threading.local()
        self._metas: dict[str, bytes] = {}
        self._ready = False

    def __repr__(self) -> str:
        return f"SQLiteOnlineStore({str(self.path)!r})"

    # ---- connections ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        pid = getattr(self._local, "pid", None)
        if conn is not None and pid == os.getpid():
            return conn
        if not self._ready:
            self._init()
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, cached_statements=256
            )
            conn.execute("PRAGMA busy_timeout = 10000")
        except sqlite3.Error as err:
            raise OnlineStoreError(f"cannot open the online store {self.url}: {err}") from err
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _init(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute("PRAGMA busy_timeout = 10000")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as err:
            raise OnlineStoreError(
                f"cannot create the online store {self.url}: {err}. Check that the store "
                "root is writable."
            ) from err
        self._ready = True

    # ---- writes -----------------------------------------------------------------------------
    def write_snapshot(
        self, view: str, version: int, meta: bytes, entries: Iterable[tuple[bytes, bytes]]
    ) -> None:
        """Insert the new snapshot, swap the pointer and delete the old one in one transaction."""
        conn = self._conn()
        sid = secrets.token_hex(8)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO entries (sid, key, value) VALUES (?, ?, ?)",
                    ((sid, k, v) for k, v in entries),
                )
                old = conn.execute(
                    "SELECT sid FROM snapshots WHERE view = ? AND version = ?", (view, version)
                ).fetchone()
                conn.execute(
                    "INSERT OR REPLACE INTO snapshots (view, version, sid, meta) VALUES (?, ?, ?, ?)",
                    (view, version, sid, meta),
                )
                if old is not None:
                    conn.execute("DELETE FROM entries WHERE sid = ?", (old[0],))
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise OnlineStoreError(
                f"writing view {view!r} version {version} to the online store {self.url} "
                f"failed: {err}"
            ) from err

    def update_entries(
        self, view: str, version: int, sid: str, meta: bytes, entries: Sequence[tuple[bytes, bytes]]
    ) -> bool:
        """Replace some entities and the metadata of snapshot ``sid`` in one transaction."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT sid FROM snapshots WHERE view = ? AND version = ?", (view, version)
                ).fetchone()
                if row is None or row[0] != sid:
                    conn.execute("ROLLBACK")
                    return False
                conn.executemany(
                    "INSERT OR REPLACE INTO entries (sid, key, value) VALUES (?, ?, ?)",
                    ((sid, k, v) for k, v in entries),
                )
                conn.execute(
                    "UPDATE snapshots SET meta = ? WHERE view = ? AND version = ?",
                    (meta, view, version),
                )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise OnlineStoreError(
                f"updating view {view!r} version {version} in the online store {self.url} "
                f"failed: {err}"
            ) from err
        self._metas[sid] = meta
        return True

    # ---- reads ------------------------------------------------------------------------------
    def read(self, requests: Sequence[ReadRequest]) -> list[ReadResult]:
        """All view versions from one read transaction (one consistent state)."""
        conn = self._conn()
        if len(requests) == 1 and len(requests[0][2]) <= _CHUNK:
            return [self._read_single(conn, *requests[0])]
        out: list[ReadResult] = []
        try:
            conn.execute("BEGIN")
            try:
                for view, version, keys in requests:
                    out.append(self._read_one(conn, view, version, keys))
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise OnlineStoreError(f"reading the online store {self.url} failed: {err}") from err
        return out

    def _read_single(
        self, conn: sqlite3.Connection, view: str, version: int, keys: Sequence[bytes]
    ) -> ReadResult:
        """One view version in one statement: consistent without a transaction, and a
        quarter of the calls into SQLite of the general path (the common request)."""
        if len(keys) == 1:  # one entity: one constant statement (a cached prepared one)
            try:
                one = conn.execute(_ONE_KEY, (keys[0], view, version)).fetchone()
            except sqlite3.Error as err:
                raise OnlineStoreError(
                    f"reading the online store {self.url} failed: {err}"
                ) from err
            if one is None:
                return None, None, []
            meta = self._metas.get(one[0])
            if meta is not None:
                return one[0], meta, [one[1]]
            found = [(one[0], keys[0] if one[1] is not None else None, one[1])]
        else:
            unique = list(dict.fromkeys(keys))
            marks = ",".join("?" * len(unique))
            try:
                found = conn.execute(
                    "SELECT s.sid, e.key, e.value FROM snapshots s LEFT JOIN entries e "
                    f"ON e.sid = s.sid AND e.key IN ({marks}) WHERE s.view = ? AND s.version = ?",
                    (*unique, view, version),
                ).fetchall()
            except sqlite3.Error as err:
                raise OnlineStoreError(
                    f"reading the online store {self.url} failed: {err}"
                ) from err
            if not found:
                return None, None, []
        sid: str = found[0][0]
        meta = self._metas.get(sid)
        if meta is None:
            meta = self.meta_of_sid(conn, sid)
            if meta is None:  # swapped since the read: the general path reads it whole
                return self.read([(view, version, keys)])[0]
        values = {k: v for _, k, v in found if k is not None}
        return sid, meta, [values.get(k) for k in keys]

    def meta_of_sid(self, conn: sqlite3.Connection, sid: str) -> bytes | None:
        """Metadata of snapshot ``sid`` (cached: a snapshot's metadata never changes)."""
        row = conn.execute("SELECT meta FROM snapshots WHERE sid = ?", (sid,)).fetchone()
        if row is None:
            return None
        if len(self._metas) > 4096:
            self._metas.clear()
        self._metas[sid] = row[0]
        return bytes(row[0])

    def _read_one(
        self, conn: sqlite3.Connection, view: str, version: int, keys: Sequence[bytes]
    ) -> ReadResult:
        row = conn.execute(
            "SELECT sid FROM snapshots WHERE view = ? AND version = ?", (view, version)
        ).fetchone()
        if row is None:
            return None, None, []
        sid: str = row[0]
        meta = self._metas.get(sid)
        if meta is None:
            meta = conn.execute("SELECT meta FROM snapshots WHERE sid = ?", (sid,)).fetchone()[0]
            self._metas[sid] = meta
        if len(keys) == 1:
            found = conn.execute(
                "SELECT value FROM entries WHERE sid = ? AND key = ?", (sid, keys[0])
            ).fetchone()
            return sid, meta, [None if found is None else found[0]]
        values: dict[bytes, bytes] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            values.update(
                conn.execute(
                    f"SELECT key, value FROM entries WHERE sid = ? AND key IN ({marks})",
                    (sid, *chunk),
                ).fetchall()
            )
        return sid, meta, [values.get(k) for k in keys]

    def meta(self, view: str, version: int) -> bytes | None:
        """The current snapshot's metadata, or None."""
        try:
            row = (
                self._conn()
                .execute(
                    "SELECT meta FROM snapshots WHERE view = ? AND version = ?", (view, version)
                )
                .fetchone()
            )
        except sqlite3.Error as err:
            raise OnlineStoreError(f"reading the online store {self.url} failed: {err}") from err
        return None if row is None else bytes(row[0])

    def all_meta(self) -> list[bytes]:
        """Metadata of every current snapshot."""
        try:
            rows = self._conn().execute("SELECT meta FROM snapshots ORDER BY view, version")
            return [bytes(r[0]) for r in rows.fetchall()]
        except sqlite3.Error as err:
            raise OnlineStoreError(f"reading the online store {self.url} failed: {err}") from err

    def ping(self) -> None:
        """Open (and create if needed) the file."""
        self._conn()

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


#: Environment setting naming the online store when ``online=`` is not given: one setting
#: makes every process of a deployment (server, scheduled materialization) use the same one.
ONLINE_ENV = "FEATUREKIT_ONLINE"


def open_online_store(spec: Any, root: Path | StoreLayout) -> OnlineStore:
    """The online store named by ``spec``.

    ``None``: the environment's ``FEATUREKIT_ONLINE`` if set, else
    ``<root>/online/config.json`` if present (``{"url": "redis://..."}``), else the
    embedded SQLite file. ``"sqlite"``, ``"memory"``, ``"redis://host:port/db"``
    (``?prefix=name`` keeps several stores apart in one Redis database), a local SQLite
    file (a :class:`~pathlib.Path`, or a path string ending in ``.sqlite``/``.db``), or an
    object implementing :class:`OnlineStore`. A store root on object storage has no
    embedded file: it needs one of the explicit forms.
    """
    layout = root if isinstance(root, StoreLayout) else StoreLayout(root)
    if spec is None:
        spec = os.environ.get(ONLINE_ENV, "").strip() or None
    if isinstance(spec, Path):
        return SQLiteOnlineStore(spec.expanduser())
    if isinstance(spec, str) and spec.strip().endswith((".sqlite", ".db")) and "://" not in spec:
        return SQLiteOnlineStore(Path(spec.strip()).expanduser())
    if not layout.is_local and (spec is None or spec in ("sqlite", "embedded")):
        raise OnlineStoreError(
            f"store {layout.shown_root!r} is on object storage, where an embedded SQLite "
            "online store cannot live; pass online='redis://…', a local SQLite file path "
            "(e.g. online='/var/lib/featurekit/online.sqlite') or online=False."
        )
    if spec is None:
        config = layout.online_path("config.json")
        if config.exists():
            try:
                data = orjson.loads(config.read_bytes())
                spec = data["url"]
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as err:
                raise OnlineStoreError(
                    f"online store config {str(config)!r} cannot be read "
                    f"({redact(str(err))}); it must be JSON like "
                    '{"url": "redis://127.0.0.1:6379/0"}.'
                ) from None  # the cause may quote the file, password and all
        else:
            spec = "sqlite"
    if isinstance(spec, str):
        text = spec.strip()
        if text in ("sqlite", "embedded"):
            return SQLiteOnlineStore(layout.online_path("online.sqlite"))
        if text == "memory":
            return MemoryOnlineStore()
        if text.startswith(("redis://", "rediss://", "unix://")):
            from featurekit.online.redis_store import RedisOnlineStore

            return RedisOnlineStore(text)
        raise OnlineStoreError(
            f"online store {shown(redact(text))} is not understood; use 'sqlite' (the "
            "default), 'memory' "
            "or a Redis URL such as 'redis://127.0.0.1:6379/0'."
        )
    if isinstance(spec, OnlineStore):
        return spec
    raise OnlineStoreError(
        f"online= must be a string or an online store object, got {type(spec).__name__}."
    )
