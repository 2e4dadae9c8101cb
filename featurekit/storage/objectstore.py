"""The few object-store operations the registry needs, and a local-folder implementation.

Registry records are small immutable files. Everything the registry does with them fits
six operations that every object store offers: read a key, create a key only if it is
absent (atomically: a reader sees the whole object or nothing, and of two writers exactly
one wins), list the keys under a prefix (with sizes and times, for vacuum), check that a key exists, delete a key. Keys are
``/``-separated paths relative to the store root, built only by
:mod:`featurekit.storage.layout`.

:class:`LocalObjectStore` keeps them in a folder: a create-only write goes to a temporary
file, is fsynced, and is hard-linked to its key, which fails if the key exists (never an
overwrite). :class:`~featurekit.storage.remote.RemoteObjectStore` (S3, GCS, Azure) maps
create-only writes onto the service's conditional put (``If-None-Match: *``).

Example:
    >>> objects = LocalObjectStore(Path("./store"))
    >>> objects.write_if_absent("_featurekit/views/trips/v1.json", b"{}")
    True
"""

from __future__ import annotations

import builtins
import contextlib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

#: Prefix of the temporary files a local create-only write leaves while it runs; listings
#: never show them.
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class ObjectInfo:
    """One object in a listing: its key, size in bytes and last modification (UTC)."""

    key: str
    size: int
    modified: datetime


@runtime_checkable
class ObjectStore(Protocol):
    """Where registry records live: six operations over ``/``-separated keys."""

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key."""
        ...

    def write_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` atomically; False (and nothing written) if it already exists."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder-like prefix ending in ``/``), sorted."""
        ...

    def list_info(self, prefix: str) -> builtins.list[ObjectInfo]:
        """Every object under ``prefix`` with size and modification time, by key."""
        ...

    def exists(self, key: str) -> bool:
        """True when ``key`` holds an object."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is already gone."""
        ...

    def rename(self, key: str, new_key: str) -> None:
        """Move ``key`` to ``new_key``, replacing what ``new_key`` held."""
        ...


class LocalObjectStore:
    """An :class:`ObjectStore` in a local (or mounted) folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        """The file that holds ``key``."""
        return self.root.joinpath(*key.split("/"))

    def read(self, key: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write_if_absent(self, key: str, data: bytes) -> bool:
        """Temp file, fsync, hard link without overwrite: atomic and create-only."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)

    def list(self, prefix: str) -> list[str]:
        """Every file under ``prefix``, as keys, sorted (temporary files left out)."""
        base = prefix.rstrip("/")
        keys: list[str] = []
        pending = [(str(self.path(base)) if base else str(self.root), base)]
        while pending:  # scandir, not Path objects: the registry lists on every lookup
            folder, key = pending.pop()
            try:
                entries = os.scandir(folder)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for entry in entries:
                    child = f"{key}/{entry.name}" if key else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((entry.path, child))
                    elif not entry.name.startswith(TEMP_PREFIX):
                        keys.append(child)
        return sorted(keys)

    def list_info(self, prefix: str) -> builtins.list[ObjectInfo]:
        """Every file under ``prefix`` with its size and modification time, by key."""
        out = []
        for key in self.list(prefix):
            try:
                stat = self.path(key).stat()
            except FileNotFoundError:  # removed since the listing
                continue
            out.append(ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)))
        return out

    def exists(self, key: str) -> bool:
        """True when the file exists."""
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the file (missing is fine)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def rename(self, key: str, new_key: str) -> None:
        """Move the file (one atomic rename on the same file system)."""
        target = self.path(new_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path(key), target)
