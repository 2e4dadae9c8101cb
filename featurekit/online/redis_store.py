"""Redis as the online store (``fk.Store(root, online="redis://127.0.0.1:6379/0")``).

Layout, under a prefix (``featurekit`` unless the URL says ``?prefix=...``)::

    <prefix>:ptr:<view>:<version>   -> current snapshot id
    <prefix>:meta:<sid>             -> snapshot metadata (JSON)
    <prefix>:rows:<sid>             -> hash: encoded entity key -> encoded entries

A write fills a new hash under a new id (with an expiry, so a crashed writer leaves no
garbage), then one Lua script swaps the pointer and removes the expiry; the old snapshot
is deleted afterwards. A read is one Lua script per request: it reads each pointer and
its entries atomically, so a reader never mixes two materializations of one view.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from featurekit.core.redact import redact, redact_url
from featurekit.online.errors import OnlineStoreError
from featurekit.online.types import ReadRequest, ReadResult

__all__ = ["RedisOnlineStore"]

_READ = """
local prefix = ARGV[1]
local out = {}
local pos = 2
for i, ptr in ipairs(KEYS) do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local sid = redis.call('GET', ptr)
  if sid then
    local values = {}
    local rows = prefix .. ':rows:' .. sid
    local start = 0
    while start < n do
      local stop = math.min(start + 4000, n)
      local got = redis.call('HMGET', rows, unpack(ARGV, pos + start, pos + stop - 1))
      for j = 1, #got do values[start + j] = got[j] end
      start = stop
    end
    out[i] = {sid, values}
  else
    out[i] = {false, {}}
  end
  pos = pos + n
end
return out
"""

_SWAP = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PERSIST', KEYS[2])
redis.call('PERSIST', KEYS[3])
return old
"""

_BATCH = 2_000
_PENDING_TTL_S = 24 * 3600


class RedisOnlineStore:
    """Online store on a Redis server (one database, keys under a prefix)."""

    def __init__(self, url: str, *, socket_timeout: float = 2.0) -> None:
        try:
            import redis
        except ImportError as err:  # pragma: no cover - redis is a dependency
            raise OnlineStoreError(
                "the Redis online store needs the 'redis' package: pip install redis"
            ) from err
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.prefix = (query.pop("prefix", ["featurekit"]) or ["featurekit"])[0]
        clean = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        #: The URL for display: the password (and secret query values) masked. The real
        #: one is only handed to the client below.
        self.url = redact_url(url)
        secrets_ = [parts.password or "", "" if parts.password else parts.username or ""]
        self._secrets = tuple(s for s in (*secrets_, *_secret_values(query)) if s)
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        try:
            self._client = redis.Redis.from_url(
                clean,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                health_check_interval=0,
            )
        except ValueError as err:  # redis-py's message may quote the URL, password and all
            raise OnlineStoreError(
                redact(f"the Redis URL {self.url} is not valid: {err}", known=self._secrets)
            ) from None
        self._read = self._client.register_script(_READ)
        self._swap = self._client.register_script(_SWAP)
        self._metas: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"RedisOnlineStore({self.url!r})"

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, *(str(p) for p in parts)])

    def _unavailable(self, err: BaseException, doing: str) -> OnlineStoreError:
        # redis-py's messages are not ours: mask anything secret they may carry
        return OnlineStoreError(
            redact(
                f"the Redis online store {self.url} is unavailable while {doing}: "
                f"{type(err).__name__}: {err}. Check that redis-server is running and "
                "reachable (and the password, if it asks for one).",
                known=self._secrets,
            )
        )

    def write_snapshot(
        self, view: str, version: int, meta: bytes, entries: Iterable[tuple[bytes, bytes]]
    ) -> None:
        """Fill a new snapshot, swap the pointer atomically, then drop the old snapshot."""
        sid = secrets.token_hex(8)
        rows, meta_key = self._key("rows", sid), self._key("meta", sid)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.set(meta_key, meta, ex=_PENDING_TTL_S)
            batch: dict[bytes, bytes] = {}
            for key, value in entries:
                batch[key] = value
                if len(batch) >= _BATCH:
                    pipe.hset(rows, mapping=batch)  # type: ignore[arg-type]
                    pipe.execute()
                    batch = {}
            if batch:
                pipe.hset(rows, mapping=batch)  # type: ignore[arg-type]
            pipe.expire(rows, _PENDING_TTL_S)
            pipe.execute()
            old = self._swap(keys=[self._key("ptr", view, version), rows, meta_key], args=[sid])
            if old:
                old_sid = old.decode() if isinstance(old, bytes) else str(old)
                self._client.unlink(self._key("rows", old_sid), self._key("meta", old_sid))
        except self._errors as err:
            raise self._unavailable(err, f"writing view {view!r} version {version}") from err

    def update_entries(
        self, view: str, version: int, sid: str, meta: bytes, entries: Sequence[tuple[bytes, bytes]]
    ) -> bool:
        """Replace some entities and the metadata of snapshot ``sid`` in one MULTI/EXEC,
        watched on the pointer so a swap in between changes nothing."""
        import redis

        ptr = self._key("ptr", view, version)
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.watch(ptr)  # type: ignore[no-untyped-call]
                current = pipe.get(ptr)
                if current is None or _text(current) != sid:
                    return False
                pipe.multi()
                if entries:
                    pipe.hset(self._key("rows", sid), mapping=dict(entries))  # type: ignore[arg-type]
                pipe.set(self._key("meta", sid), meta)
                pipe.execute()
        except redis.exceptions.WatchError:
            return False
        except self._errors as err:
            raise self._unavailable(err, f"updating view {view!r} version {version}") from err
        self._metas[sid] = meta
        return True

    def read(self, requests: Sequence[ReadRequest]) -> list[ReadResult]:
        """One atomic script for all view versions of a request."""
        keys: list[str] = []
        args: list[Any] = [self.prefix]
        for view, version, wanted in requests:
            keys.append(self._key("ptr", view, version))
            args.append(len(wanted))
            args.extend(wanted)
        for _ in range(3):
            try:
                raw = self._read(keys=keys, args=args)
            except self._errors as err:
                raise self._unavailable(err, "reading features") from err
            out: list[ReadResult] = []
            stale = False
            for (_, _, wanted), (sid_raw, values) in zip(requests, raw, strict=True):
                if not sid_raw:
                    out.append((None, None, []))
                    continue
                sid = sid_raw.decode()
                meta = self._metas.get(sid) or self._fetch_meta(sid)
                if meta is None:  # swapped and deleted since the read: read again
                    stale = True
                    break
                padded = list(values) + [None] * (len(wanted) - len(values))
                out.append((sid, meta, padded))
            if not stale:
                return out
        raise OnlineStoreError(
            f"the Redis online store {self.url} kept changing during a read; retry the request."
        )

    def _fetch_meta(self, sid: str) -> bytes | None:
        try:
            meta = self._client.get(self._key("meta", sid))
        except self._errors as err:
            raise self._unavailable(err, "reading snapshot metadata") from err
        if meta is None:
            return None
        data = meta if isinstance(meta, bytes) else str(meta).encode()
        if len(self._metas) > 4096:
            self._metas.clear()
        self._metas[sid] = data
        return data

    def meta(self, view: str, version: int) -> bytes | None:
        """The current snapshot's metadata, or None."""
        try:
            sid = self._client.get(self._key("ptr", view, version))
        except self._errors as err:
            raise self._unavailable(err, "reading snapshot metadata") from err
        return None if sid is None else self._fetch_meta(_text(sid))

    def all_meta(self) -> list[bytes]:
        """Metadata of every current snapshot."""
        out = []
        try:
            for ptr in sorted(self._client.scan_iter(match=self._key("ptr", "*"), count=500)):
                sid = self._client.get(ptr)
                meta = None if sid is None else self._fetch_meta(_text(sid))
                if meta is not None:
                    out.append(meta)
        except self._errors as err:
            raise self._unavailable(err, "listing snapshots") from err
        return out

    def ping(self) -> None:
        """Raise :class:`OnlineStoreError` if Redis does not answer."""
        try:
            self._client.ping()
        except self._errors as err:
            raise self._unavailable(err, "pinging") from err

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _secret_values(query: dict[str, list[str]]) -> list[str]:
    """Values of query parameters that carry credentials (``?password=...``)."""
    return [
        v
        for name, values in query.items()
        if name.lower() in ("password", "username")
        for v in values
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
