"""The registry: plain JSON files under ``<root>/_featurekit/``.

Records are immutable and written atomically (temp file, fsync, hard link without
overwrite), so a reader never sees half a record and two writers never overwrite each
other. Version numbers are handed out under a per-view file lock, so two processes
registering different views never wait on each other, and two registering the same view
agree on its numbers.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from featurekit.core.config import FORMAT_VERSION, REGISTRY_DIR
from featurekit.core.errors import NotFoundError, StorageError, did_you_mean


class VersionRecord(BaseModel):
    """One version of one view, as the registry keeps it."""

    model_config = ConfigDict(frozen=True)

    view: str
    version: int
    fingerprint: str
    created_at: datetime
    reason: list[str]
    entity: str
    keys: list[str]
    timestamp: str
    created_timestamp: str | None
    features: dict[str, str]
    ttl_us: int | None
    parts: dict[str, Any]
    description: str = ""
    tags: dict[str, str] = {}
    #: aggregation views: the aggregates (column, function, window_us, name) and the event
    #: columns stored for them; ``features`` then names the aggregates
    aggregations: list[dict[str, Any]] = []
    event_columns: list[str] = []
    #: created-time columns of the view's inputs that its output does not carry as its
    #: knowledge time; with ``created_timestamp`` None, the rows have no knowledge time
    #: at all and the training sets' guard against late-arriving values cannot apply
    knowledge_time_dropped: list[str] = []
    format_version: int = FORMAT_VERSION

    def _repr_html_(self) -> str:
        from featurekit.notebook.reprs import version_html

        return version_html(self)


class Registry:
    """File-backed registry of one store root."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
        self.dir = root / REGISTRY_DIR
        self._open_or_create(create)

    # ---- store marker -----------------------------------------------------------------
    def _open_or_create(self, create: bool) -> None:
        marker = self.dir / "store.json"
        if marker.exists():
            info = _read_json(marker)
            found = int(info.get("format_version", 0))
            if found > FORMAT_VERSION:
                raise StorageError(
                    f"store {str(self.root)!r} was written by a newer featurekit (format "
                    f"{found}, this one reads up to {FORMAT_VERSION}); upgrade featurekit. "
                    "Nothing was modified."
                )
            return
        if not create:
            raise StorageError(
                f"no featurekit store at {str(self.root)!r} (no {REGISTRY_DIR}/store.json); "
                "check the path, or open it with create=True to make a new store."
            )
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"store root {str(self.root)!r} is a file, not a folder.")
        if self.root.exists() and any(self.root.iterdir()):
            raise StorageError(
                f"{str(self.root)!r} is not a featurekit store (no {REGISTRY_DIR}/store.json) and "
                "is not empty; refusing to write into it. Pick an empty or new folder."
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_once(marker, {"format_version": FORMAT_VERSION, "kind": "featurekit-store"})

    # ---- locks --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Cross-process lock for one name (a view, a model)."""
        from filelock import FileLock

        path = self.dir / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path)):
            yield

    # ---- views --------------------------------------------------------------------------
    def view_names(self) -> list[str]:
        """Names of registered views, sorted."""
        folder = self.dir / "views"
        if not folder.exists():
            return []
        return sorted(p.name for p in folder.iterdir() if any(p.glob("v*.json")))

    def versions(self, view: str) -> list[VersionRecord]:
        """All versions of ``view``, oldest first (empty if unknown)."""
        folder = self.dir / "views" / view
        if not folder.exists():
            return []
        records = [VersionRecord.model_validate(_read_json(p)) for p in folder.glob("v*.json")]
        for record in records:
            if record.format_version > FORMAT_VERSION:
                raise StorageError(
                    f"view {view!r} version {record.version} was registered by a newer "
                    "featurekit; upgrade featurekit. Nothing was modified."
                )
        return sorted(records, key=lambda r: r.version)

    def version(self, view: str, number: int | None = None) -> VersionRecord:
        """One version (latest when ``number`` is None), or a NotFoundError with suggestions."""
        records = self.versions(view)
        if not records:
            raise NotFoundError(
                f"no view named {view!r} in this store.{did_you_mean(view, self.view_names())} "
                "Register or materialize it first."
            )
        if number is None:
            return records[-1]
        for record in records:
            if record.version == number:
                return record
        raise NotFoundError(
            f"view {view!r} has no version {number}; it has versions "
            f"{[r.version for r in records]}."
        )

    def add_version(self, record: VersionRecord) -> None:
        """Record a new version (call under ``lock(view)``)."""
        path = self.dir / "views" / record.view / f"v{record.version}.json"
        write_json_once(path, record.model_dump(mode="json"))

    # ---- training sets ------------------------------------------------------------------
    def training_set_dir(self, ts_id: str) -> Path:
        """Folder of one training set: manifest, labels, optional saved copy."""
        return self.root / "training_sets" / ts_id

    def training_set_ids(self) -> list[str]:
        """Ids of recorded training sets, sorted."""
        folder = self.root / "training_sets"
        if not folder.exists():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "manifest.json").exists())

    def manifest(self, ts_id: str) -> dict[str, Any]:
        """A training set's manifest, or NotFoundError."""
        path = self.training_set_dir(ts_id) / "manifest.json"
        if not path.exists():
            known = self.training_set_ids() + list(self.training_set_names())
            raise NotFoundError(
                f"no training set {ts_id!r} in this store.{did_you_mean(ts_id, known)}"
            )
        return _read_json(path)

    def training_set_names(self) -> dict[str, str]:
        """Saved names -> training set ids."""
        folder = self.dir / "training_set_names"
        if not folder.exists():
            return {}
        return {p.stem: _read_json(p)["id"] for p in sorted(folder.glob("*.json"))}

    def name_training_set(self, name: str, ts_id: str) -> None:
        """Give a training set a name; a name, once given, always means the same set."""
        path = self.dir / "training_set_names" / f"{name}.json"
        if path.exists():
            existing = _read_json(path)["id"]
            if existing != ts_id:
                raise StorageError(
                    f"training set name {name!r} already names {existing!r}; "
                    "names are permanent, pick another."
                )
            return
        write_json_once(path, {"id": ts_id, "name": name})

    # ---- lineage and models (immutable records; see featurekit.lineage) -----------------
    def add_lineage_record(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        """Write one lineage record once; False if ``kind/key`` already exists."""
        return write_json_once(self.dir / "lineage" / kind / f"{key}.json", data)

    def lineage_record(self, kind: str, key: str) -> dict[str, Any] | None:
        """One lineage record, or None."""
        path = self.dir / "lineage" / kind / f"{key}.json"
        return _checked(_read_json(path), path) if path.exists() else None

    def lineage_records(self, kind: str) -> list[dict[str, Any]]:
        """Every lineage record of one kind, in file-name order."""
        folder = self.dir / "lineage" / kind
        if not folder.exists():
            return []
        return [_checked(_read_json(p), p) for p in sorted(folder.glob("*.json"))]

    def model_names(self) -> list[str]:
        """Names of logged models, sorted."""
        folder = self.dir / "models"
        if not folder.exists():
            return []
        return sorted(p.name for p in folder.iterdir() if any(p.glob("v*.json")))

    def model_versions(self, name: str) -> list[dict[str, Any]]:
        """Every entry of one model, oldest first (raw records)."""
        folder = self.dir / "models" / name
        if not folder.exists():
            return []
        records = [_checked(_read_json(p), p) for p in folder.glob("v*.json")]
        return sorted(records, key=lambda r: int(r["version"]))

    def add_model_version(self, name: str, version: int, data: dict[str, Any]) -> bool:
        """Write one model entry once; False if that version number is taken."""
        return write_json_once(self.dir / "models" / name / f"v{version}.json", data)


def _checked(data: dict[str, Any], path: Path) -> dict[str, Any]:
    found = int(data.get("format_version", 0) or 0)
    if found > FORMAT_VERSION:
        raise StorageError(
            f"registry file {str(path)!r} was written by a newer featurekit (format {found}, "
            f"this one reads up to {FORMAT_VERSION}); upgrade featurekit. Nothing was modified."
        )
    return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as err:
        raise StorageError(f"registry file {str(path)!r} cannot be read: {err}") from err
    if not isinstance(data, dict):
        raise StorageError(f"registry file {str(path)!r} is not a JSON object.")
    return data


def write_json_once(path: Path, data: dict[str, Any]) -> bool:
    """Atomically create ``path``; returns False (and writes nothing) if it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # insertion order is kept (feature order matters); records are immutable, so it is stable
    payload = orjson.dumps(data, option=orjson.OPT_INDENT_2)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)
