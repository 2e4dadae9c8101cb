"""API keys for the feature server: a file of hashed keys, each with its grants.

``featurekit serve --api-keys FILE`` (or ``FEATUREKIT_API_KEYS=FILE``) makes every request
except ``/health``, ``/docs`` and ``/openapi.json`` (and ``/metrics`` unless
``--metrics-auth``) carry ``Authorization: Bearer <key>``: no key or a wrong key is a 401,
a key asking for something outside its grants is a 403.

The file is JSON and holds no key, only a salted SHA-256 of each::

    {"format": "featurekit-api-keys/1",
     "keys": [{"name": "ranker", "salt": "<32 hex>", "sha256": "<64 hex>",
               "grants": ["service:pricing", "view:driver_stats"]}]}

Keys are made by :func:`new_key` (``featurekit keys add NAME --grant ...``): 32 random
bytes, so a fast hash is enough. A slow KDF (scrypt, PBKDF2) protects guessable
passwords; it would add tens of milliseconds to every request and protect nothing here,
because a 256-bit random key cannot be guessed from its hash. The salt makes two files
holding the same key look unrelated.

Checking a key hashes it with every entry's salt and compares each digest with
:func:`hmac.compare_digest`, always all of them, so the time taken says nothing about
which entry, or how much of a digest, matched. The key itself is never stored, logged or
echoed: errors name the key's *name* only.

Grants (``kind:name``; ``*`` for every name of that kind):

- ``view:driver_stats``: the view's features in ``features`` lists, and
  ``GET /v1/feature-views/driver_stats``; an on-demand feature is allowed when every
  view it reads is granted.
- ``service:pricing``: ``{"feature_service": "pricing"}`` (not the views inside it).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from featurekit.core.errors import DefinitionError, FeatureKitError, NotFoundError
from featurekit.core.names import shown, validate_name

__all__ = [
    "API_KEYS_ENV",
    "FORMAT",
    "ApiKey",
    "ApiKeys",
    "AuthenticationError",
    "Grant",
    "PermissionDeniedError",
    "add_key",
    "is_loopback",
    "new_key",
    "remove_key",
]

#: Environment variable naming the key file when ``--api-keys`` is not given.
API_KEYS_ENV = "FEATUREKIT_API_KEYS"
#: The ``format`` value of a key file.
FORMAT = "featurekit-api-keys/1"
#: Prefix of generated keys: makes a leaked key easy to find with secret scanners.
KEY_PREFIX = "fk_"
#: How often (seconds, at most) a server looks for a changed key file.
RELOAD_SECONDS = 2.0

_log = logging.getLogger("featurekit.serving")

GrantKind = Literal["view", "service", "push"]
_KINDS: tuple[GrantKind, ...] = ("view", "service", "push")


class AuthenticationError(FeatureKitError):
    """A request has no API key, or one the server does not know (HTTP 401)."""


class PermissionDeniedError(FeatureKitError):
    """A valid API key asked for a view or service outside its grants (HTTP 403)."""


@dataclass(frozen=True)
class Grant:
    """What a key may do: read ``view:NAME`` or ``service:NAME``, or ``push:NAME`` rows to a
    view (``*``: every name). Reading never implies pushing."""

    kind: GrantKind
    name: str

    @classmethod
    def parse(cls, text: str) -> Grant:
        """``"view:driver_stats"`` -> ``Grant("view", "driver_stats")``.

        Raises:
            DefinitionError: not ``view:NAME``, ``service:NAME`` or ``push:NAME`` with a
                valid name or ``*``.
        """
        kind, sep, name = text.partition(":")
        if not sep or kind not in _KINDS:
            raise DefinitionError(
                f"grant {shown(text)} is not understood; use 'view:NAME', 'service:NAME' or "
                "'push:NAME' ('*' for every name), e.g. --grant view:driver_stats."
            )
        if name != "*":
            validate_name(name, "service" if kind == "service" else "view")
        return cls(kind, name)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class ApiKey:
    """One entry of a key file: a name, a salted hash of the key, and its grants."""

    name: str
    salt: bytes
    digest: bytes
    grants: tuple[Grant, ...]

    def allows(self, kind: GrantKind, name: str) -> bool:
        """Whether this key holds ``kind:name`` or ``kind:*``."""
        return any(g.kind == kind and g.name in ("*", name) for g in self.grants)

    def to_json(self) -> dict[str, object]:
        """The entry as the key file holds it: name, hex salt and digest, grants."""
        return {
            "name": self.name,
            "salt": self.salt.hex(),
            "sha256": self.digest.hex(),
            "grants": [str(g) for g in self.grants],
        }


def _digest(salt: bytes, key: str) -> bytes:
    return hashlib.sha256(salt + key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """The keys a server accepts (loaded from a key file), and the check of a request's key.

    Loaded from a file, the keys follow it: a changed file (``featurekit keys add`` or
    ``remove``, a rotated Kubernetes Secret) is read again within ``reload_every``
    seconds, so revoking a key needs no restart. A changed file that cannot be read keeps
    the keys loaded before (and logs why), so a half-written file never locks everyone out.

    Example:
        >>> keys = ApiKeys.load(Path("keys.json"))
        >>> keys.verify("Bearer fk_...").name
        'ranker'
    """

    def __init__(
        self,
        keys: Sequence[ApiKey],
        *,
        path: Path | None = None,
        reload_every: float = RELOAD_SECONDS,
    ) -> None:
        self.keys = _checked(keys, path)
        self.path = path
        self.reload_every = reload_every
        self._stamp = None if path is None else _stamp(path)
        self._checked_at = time.monotonic()

    @classmethod
    def load(cls, path: Path, *, reload_every: float = RELOAD_SECONDS) -> ApiKeys:
        """Read a key file (see the module docstring for its shape) and follow its changes.

        Raises:
            NotFoundError: the file does not exist.
            DefinitionError: it is not a key file, an entry is malformed, a name repeats or
                it holds no key; the message names the entry, never a hash.
        """
        return cls(_read_entries(path), path=path, reload_every=reload_every)

    def refresh(self) -> None:
        """Read the file again if it changed (at most once per ``reload_every`` seconds)."""
        now = time.monotonic()
        if self.path is None or now - self._checked_at < self.reload_every:
            return
        self._checked_at = now
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.keys = _checked(_read_entries(self.path), self.path)
        except FeatureKitError as err:
            _log.warning("%s Keeping the %d key(s) loaded before.", err, len(self.keys))
            return
        _log.info("API key file %s read again: %d key(s).", self.path, len(self.keys))

    def verify(self, authorization: str | None) -> ApiKey:
        """The key entry an ``Authorization`` header value proves, or AuthenticationError.

        Every entry is compared (constant time per entry, no early exit).
        """
        scheme, _, key = (authorization or "").strip().partition(" ")
        key = key.strip()
        self.refresh()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError(
                "this server needs an API key; send the header 'Authorization: Bearer <key>'."
            )
        found: ApiKey | None = None
        for entry in self.keys:  # all of them, even after a match
            if hmac.compare_digest(_digest(entry.salt, key), entry.digest):
                found = entry
        if found is None:
            raise AuthenticationError(
                "the API key is not valid (unknown, revoked or mistyped); the key is not shown."
            )
        return found

    def names(self) -> list[str]:
        """The names of the keys loaded now, in file order."""
        return [k.name for k in self.keys]


def _checked(keys: Sequence[ApiKey], path: Path | None) -> tuple[ApiKey, ...]:
    """``keys`` if their names are unique and there is at least one."""
    where = "API keys" if path is None else f"API key file {str(path)!r}"
    names = [k.name for k in keys]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DefinitionError(f"{where}: key names must be unique; repeated: {', '.join(twice)}.")
    if not keys:
        raise DefinitionError(
            f"{where} holds no keys, so every request would be refused; add one with "
            "`featurekit keys add NAME --grant ...`."
        )
    return tuple(keys)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is rewritten or its symlink swapped (None: unreadable)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read_entries(path: Path) -> list[ApiKey]:
    """The entries of a key file (possibly none)."""
    if not path.is_file():
        raise NotFoundError(
            f"API key file {str(path)!r} does not exist; create it with "
            f"`featurekit keys add NAME --grant view:VIEW --file {path}`."
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DefinitionError(
            f"API key file {str(path)!r} is not readable JSON ({type(err).__name__})."
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DefinitionError(
            f"API key file {str(path)!r} is not a featurekit key file (expected "
            f'"format": "{FORMAT}"); make one with `featurekit keys add`.'
        )
    entries = raw.get("keys")
    if not isinstance(entries, list):
        raise DefinitionError(f"API key file {str(path)!r}: 'keys' must be a list.")
    return [_entry(path, i, e) for i, e in enumerate(entries)]


def _entry(path: Path, index: int, raw: object) -> ApiKey:
    where = f"API key file {str(path)!r}, entry {index}"
    if not isinstance(raw, dict):
        raise DefinitionError(f"{where} is not an object.")
    name = raw.get("name")
    if isinstance(name, str):
        where = f"API key file {str(path)!r}, key {name!r}"
    try:
        salt = bytes.fromhex(str(raw["salt"]))
        digest = bytes.fromhex(str(raw["sha256"]))
        grants = raw.get("grants", [])
        if not isinstance(name, str) or not isinstance(grants, list):
            raise TypeError
        parsed = tuple(Grant.parse(str(g)) for g in grants)
    except (KeyError, ValueError, TypeError):
        raise DefinitionError(
            f"{where} is malformed; each key needs 'name', 'salt' (hex), 'sha256' (hex) and "
            "'grants' (a list like ['view:driver_stats'])."
        ) from None
    if len(digest) != 32 or len(salt) < 8:
        raise DefinitionError(f"{where}: 'sha256' must be 64 hex digits and 'salt' 16 or more.")
    validate_name(name, "API key")
    return ApiKey(name, salt, digest, parsed)


def new_key(name: str, grants: Iterable[str]) -> tuple[str, ApiKey]:
    """A fresh random key and its file entry (the key is shown once, never stored).

    Example:
        >>> key, entry = new_key("ranker", ["service:pricing"])
        >>> key.startswith("fk_")
        True
    """
    validate_name(name, "API key")
    parsed = tuple(Grant.parse(g) for g in grants)
    if not parsed:
        raise DefinitionError(
            f"API key {name!r} has no grants, so it could read nothing; pass "
            "--grant view:VIEW or --grant service:SERVICE (repeatable)."
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    return key, ApiKey(name, salt, _digest(salt, key), parsed)


def add_key(path: Path, name: str, grants: Iterable[str]) -> str:
    """Add a new key named ``name`` to the file at ``path`` (created if missing); return it.

    Raises:
        DefinitionError: a key with this name exists (remove it first), or a bad grant.
    """
    entries = _read_entries(path) if path.exists() else []
    if any(e.name == name for e in entries):
        raise DefinitionError(
            f"API key file {str(path)!r} already has a key named {name!r}; remove it first "
            f"(`featurekit keys remove {name} --file {path}`) to replace it."
        )
    key, entry = new_key(name, grants)
    _write(path, [*entries, entry])
    return key


def remove_key(path: Path, name: str) -> None:
    """Remove the key named ``name`` from the file at ``path`` (servers follow within seconds)."""
    entries = _read_entries(path)
    kept = [e for e in entries if e.name != name]
    if len(kept) == len(entries):
        raise NotFoundError(
            f"API key file {str(path)!r} has no key named {name!r}; it has: "
            f"{', '.join(e.name for e in entries)}."
        )
    _write(path, kept)


def _write(path: Path, entries: Sequence[ApiKey]) -> None:
    """Write the file atomically, readable by its owner only (it is still a credential list)."""
    text = json.dumps({"format": FORMAT, "keys": [e.to_json() for e in entries]}, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (127.0.0.0/8, ::1, localhost).

    Any other address, ``0.0.0.0`` and host names included, counts as exposed.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
