"""The registry: typed, immutable JSON records under ``<root>/_featurekit/``.

Every record is written once, atomically and create-only through the store's
:class:`~featurekit.storage.objectstore.ObjectStore`, so a reader never sees half a record
and two writers never overwrite each other. Paths come from
:class:`~featurekit.storage.layout.StoreLayout`; record schemas from
:mod:`featurekit.storage.records`. This module is the one place that reads and writes them.

Versions of views, services, on-demand features and models are handed out by one
mechanism, :meth:`Registry.append_version`: numbers are dense (1, 2, 3…) and unique per
name. On a local root it takes a per-name lock so local writers do not race, but its
correctness rests on the create-only write alone: a writer that loses the race for ``v<N>``
re-lists and tries the next number. On object storage there are no locks at all: the
create-only write is a conditional PUT, and a store whose backend does not honour it (probed
when the store is opened) is refused for writing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from featurekit.core.config import FORMAT_VERSION
from featurekit.core.errors import NotFoundError, StorageError, did_you_mean
from featurekit.storage.layout import LineageKind, RecordKind, StoreLayout
from featurekit.storage.manifest import Manifest, parse_manifest
from featurekit.storage.objectstore import ObjectStore
from featurekit.storage.records import (
    CodeSourceRecord,
    DeletionEvent,
    ModelRecord,
    OnDemandRecord,
    Record,
    ServiceRecord,
    VersionRecord,
)
from featurekit.storage.remote import probe_create_only

__all__ = [
    "ModelRecord",
    "OnDemandRecord",
    "Registry",
    "ServiceRecord",
    "VersionRecord",
]

R = TypeVar("R", bound=Record)

_TYPES: dict[RecordKind, type[Record]] = {
    "view": VersionRecord,
    "service": ServiceRecord,
    "on_demand": OnDemandRecord,
    "model": ModelRecord,
}
#: How many times :meth:`Registry.append_version` re-lists after losing a race before it
#: gives up (each loss means another writer took a number, so progress is being made).
_MAX_ATTEMPTS = 1000


class Registry:
    """The registry of one store root."""

    def __init__(
        self,
        root: Path | str,
        *,
        create: bool = True,
        objects: ObjectStore | None = None,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        self.layout = StoreLayout(root, objects, storage_options)
        self.root = self.layout.root
        self.objects = self.layout.objects
        #: why writes are refused (None: writable); set by the create-only probe
        self.read_only_reason: str | None = None
        if not self.layout.is_local:
            self._probe()
        self._open_or_create(create)

    @property
    def storage_options(self) -> dict[str, str]:
        """Options for the Delta tables under the root (credentials included: never show)."""
        return self.layout.storage_options

    def _probe(self) -> None:
        """Refuse writes unless the backend honours create-only writes (checked now).

        Without them, two machines could both "create" ``v3`` of a view and one would
        silently lose; failing loudly before anything is written is the only safe answer.
        """
        try:
            honoured = probe_create_only(self.objects, self.layout.probe_prefix())
        except StorageError as err:
            self.read_only_reason = f"the create-only probe could not write ({err})"
            return
        if not honoured:
            self.read_only_reason = (
                "its backend ignores conditional writes (If-None-Match): a second create "
                "of one probe object succeeded, so racing writers could overwrite each other"
            )

    def check_writable(self) -> None:
        """Raise StorageError when this store must not be written (see :meth:`_probe`)."""
        if self.read_only_reason is not None:
            raise StorageError(
                f"store {self.layout.shown_root!r} is read-only here: "
                f"{self.read_only_reason}. Use a backend that supports conditional PUT "
                "(AWS S3, GCS, Azure, MinIO, ...) to write; reading still works."
            )

    # ---- store marker -----------------------------------------------------------------
    def _open_or_create(self, create: bool) -> None:
        marker = self.layout.marker_key
        if self.objects.exists(marker):
            info = self._read(marker, check=False)
            found = int(info.get("format_version", 0))
            if found > FORMAT_VERSION:
                raise StorageError(
                    f"store {self.layout.shown_root!r} was written by a newer featurekit (format "
                    f"{found}, this one reads up to {FORMAT_VERSION}); upgrade featurekit. "
                    "Nothing was modified."
                )
            return
        if not create:
            raise StorageError(
                f"no featurekit store at {self.layout.shown_root!r} (no {self.layout.marker_key}); "
                "check the path, or open it with create=True to make a new store."
            )
        root = self.root
        if isinstance(root, Path) and root.exists() and not root.is_dir():
            raise StorageError(f"store root {str(root)!r} is a file, not a folder.")
        # another process creating this store right now may have written the marker (or
        # the probe) since the check above: that is not "someone else's data"
        ours = (self.layout.marker_key, self.layout.probe_prefix())
        occupied = (
            root.exists() and any(root.iterdir())
            if isinstance(root, Path)
            else any(not k.startswith(ours) for k in self.objects.list(""))
        )
        if occupied:
            raise StorageError(
                f"{self.layout.shown_root!r} is not a featurekit store (no "
                f"{self.layout.marker_key}) and is not empty; refusing to write into it. "
                "Pick an empty or new folder."
            )
        self._write_once(marker, {"format_version": FORMAT_VERSION, "kind": "featurekit-store"})

    # ---- locks --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, kind: RecordKind = "view") -> Iterator[None]:
        """Cross-process lock for one name of one kind (re-entrant within a thread).

        Materialization holds a view's lock for its whole run, so the version number it
        writes its table under is the one :meth:`append_version` records after the commit.
        On object storage there are no locks: nothing here may depend on one for
        correctness, only for fewer retries.
        """
        if not self.layout.is_local:
            yield
            return
        from filelock import FileLock

        path = self.layout.lock_path(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path), is_singleton=True):
            yield

    # ---- versioned records (views, services, on-demand features, models) -----------------
    def names(self, kind: RecordKind) -> list[str]:
        """Names that have at least one version of ``kind``, sorted."""
        found = set()
        for key in self.objects.list(self.layout.kind_prefix(kind)):
            parsed = self.layout.parse_record_key(kind, key)
            if parsed is not None:
                found.add(parsed[0])
        return sorted(found)

    def records(self, kind: RecordKind, name: str) -> list[Record]:
        """Every version of ``name``, oldest first (empty if unknown)."""
        model = _TYPES[kind]
        out = []
        for key in self.objects.list(self.layout.record_prefix(kind, name)):
            if self.layout.parse_record_key(kind, key) is None:
                continue
            data = self._read(key)
            try:
                out.append(model.model_validate(data))
            except ValidationError as err:
                raise StorageError(
                    f"registry file {key!r} is not a valid {kind} record ({err.error_count()} "
                    f"problems, first: {err.errors()[0]['msg']}); the store is damaged."
                ) from err
        return sorted(out, key=lambda r: r.version)

    def next_version(self, kind: RecordKind, name: str) -> int:
        """The number the next version of ``name`` would get now (1 for a new name)."""
        records = self.records(kind, name)
        return records[-1].version + 1 if records else 1

    def append_version(
        self,
        kind: RecordKind,
        name: str,
        build: Callable[[int], R],
        *,
        reuse: Callable[[Sequence[R]], R | None] | None = None,
    ) -> R:
        """Record the next version of ``name``, unless ``reuse`` picks an existing one.

        ``build(number)`` makes the record for a number; it may be called again with a
        higher number if another writer took that one first. Numbers are dense and unique
        per name: the record for ``v<N>`` is written create-only, and a writer that loses
        re-lists (``reuse``, given the versions oldest first, may now pick the winner's
        record) and tries ``v<N+1>``.

        Example:
            >>> registry.append_version(
            ...     "view", "trips", make, reuse=lambda rs: next((r for r in rs if r.fingerprint == fp), None)
            ... )
        """
        with self.lock(name, kind):
            for _ in range(_MAX_ATTEMPTS):
                if reuse is None:  # the listing alone gives the next number: no record reads
                    number = self._last_number(kind, name) + 1
                else:
                    records: list[R] = self.records(kind, name)  # type: ignore[assignment]
                    found = reuse(records)
                    if found is not None:
                        return found
                    number = records[-1].version + 1 if records else 1
                record = build(number)
                if record.version != number:
                    raise StorageError(
                        f"{kind} {name!r}: built version {record.version} for number {number}."
                    )
                if self._write_once(self.layout.record_key(kind, name, number), record):
                    return record
        raise StorageError(
            f"{kind} {name!r}: could not claim a version number after {_MAX_ATTEMPTS} tries; "
            "another writer keeps taking them. Try again."
        )

    def _last_number(self, kind: RecordKind, name: str) -> int:
        """The highest version number of ``name`` (0 when it has none).

        One listing and one read (of the latest record, which refuses a newer format),
        whatever the number of versions: on object storage each read is a request.
        """
        numbers = {
            parsed[1]: key
            for key in self.objects.list(self.layout.record_prefix(kind, name))
            if (parsed := self.layout.parse_record_key(kind, key)) is not None
        }
        if not numbers:
            return 0
        last = max(numbers)
        self._read(numbers[last])
        return last

    # ---- views --------------------------------------------------------------------------
    def view_names(self) -> list[str]:
        """Names of registered views, sorted."""
        return self.names("view")

    def versions(self, view: str) -> list[VersionRecord]:
        """All versions of ``view``, oldest first (empty if unknown)."""
        return self.records("view", view)  # type: ignore[return-value]

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

    # ---- services and on-demand features ------------------------------------------------
    def service_names(self) -> list[str]:
        """Names of registered feature services, sorted."""
        return self.names("service")

    def service_versions(self, name: str) -> list[ServiceRecord]:
        """Every version of a feature service, oldest first (empty if unknown)."""
        return self.records("service", name)  # type: ignore[return-value]

    def on_demand_versions(self, name: str) -> list[OnDemandRecord]:
        """Every version of an on-demand feature, oldest first (empty if unknown)."""
        return self.records("on_demand", name)  # type: ignore[return-value]

    # ---- models -------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """Names of logged models, sorted."""
        return self.names("model")

    def model_versions(self, name: str) -> list[ModelRecord]:
        """Every entry of one model, oldest first."""
        return self.records("model", name)  # type: ignore[return-value]

    # ---- training sets ------------------------------------------------------------------
    def training_set_ids(self) -> list[str]:
        """Ids of recorded training sets, sorted."""
        keys = self.objects.list(self.layout.training_sets_prefix())
        return sorted(i for i in map(self.layout.parse_manifest_key, keys) if i is not None)

    def has_manifest(self, ts_id: str) -> bool:
        """True when training set ``ts_id`` is recorded."""
        return self.objects.exists(self.layout.manifest_key(ts_id))

    def manifest(self, ts_id: str) -> Manifest:
        """A training set's manifest, or NotFoundError."""
        key = self.layout.manifest_key(ts_id)
        if not self.objects.exists(key):
            known = self.training_set_ids() + list(self.training_set_names())
            raise NotFoundError(
                f"no training set {ts_id!r} in this store.{did_you_mean(ts_id, known)}"
            )
        return parse_manifest(self._read(key, check=False), key)

    def add_manifest(self, manifest: Manifest) -> bool:
        """Record a training set's manifest once; False if it is already recorded."""
        return self._write_once(self.layout.manifest_key(manifest.id), manifest.to_json())

    def training_set_names(self) -> dict[str, str]:
        """Saved names -> training set ids."""
        prefix = self.layout.training_set_names_prefix()
        out = {}
        for key in self.objects.list(prefix):
            name = key.removeprefix(prefix).removesuffix(".json")
            if "/" not in name and key.endswith(".json"):
                out[name] = str(self._read(key)["id"])
        return out

    def name_training_set(self, name: str, ts_id: str) -> None:
        """Give a training set a name; a name, once given, always means the same set."""
        key = self.layout.training_set_name_key(name)
        self.layout.manifest_key(ts_id)  # the id must be a valid id, too
        if not self._write_once(key, {"id": ts_id, "name": name}):
            existing = str(self._read(key)["id"])
            if existing != ts_id:
                raise StorageError(
                    f"training set name {name!r} already names {existing!r}; "
                    "names are permanent, pick another."
                )

    # ---- lineage (immutable records; see featurekit.lineage) -----------------------------
    def add_lineage_record(self, kind: LineageKind, key: str, data: dict[str, Any]) -> bool:
        """Write one lineage record once; False if ``kind/key`` already exists."""
        return self._write_once(self.layout.lineage_key(kind, key), data)

    def lineage_record(self, kind: LineageKind, key: str) -> dict[str, Any] | None:
        """One lineage record, or None."""
        path = self.layout.lineage_key(kind, key)
        return self._read(path) if self.objects.exists(path) else None

    def lineage_records(self, kind: LineageKind) -> list[dict[str, Any]]:
        """Every lineage record of one kind, in key order."""
        keys = self.objects.list(self.layout.lineage_prefix(kind))
        return [self._read(k) for k in keys if k.endswith(".json")]

    # ---- deletion events -----------------------------------------------------------------
    def add_deletion(self, event: DeletionEvent) -> bool:
        """Record one deletion event once; False if its id is already recorded."""
        body = event.model_dump(mode="json")
        return self._write_once(self.layout.deletion_key(event.id), body)

    def deletions(self) -> list[DeletionEvent]:
        """Every deletion event, in id order (ids start with their UTC time)."""
        out = []
        for key in self.objects.list(self.layout.deletions_prefix()):
            if not key.endswith(".json"):
                continue
            try:
                out.append(DeletionEvent.model_validate(self._read(key)))
            except ValidationError as err:
                raise StorageError(
                    f"registry file {key!r} is not a valid deletion event; the store is damaged."
                ) from err
        return out

    # ---- kept sources (what `featurekit plan` diffs) -------------------------------------
    def add_code_source(self, kind: RecordKind, digest: str, record: CodeSourceRecord) -> bool:
        """Keep a definition's normalized source once (under ``digest`` of its code
        fingerprint); False if it is already kept."""
        return self._write_once(self.layout.code_key(kind, record.name, digest), record)

    def code_source(self, kind: RecordKind, name: str, digest: str) -> CodeSourceRecord | None:
        """The kept source record under ``digest``, or None (stores from before it was kept)."""
        key = self.layout.code_key(kind, name, digest)
        if not self.objects.exists(key):
            return None
        return CodeSourceRecord.model_validate(self._read(key))

    # ---- reading and writing ------------------------------------------------------------
    def _read(self, key: str, *, check: bool = True) -> dict[str, Any]:
        """One record's JSON, refused when it is unreadable or (``check``) of a newer format."""
        raw = self.objects.read(key)
        if raw is None:
            raise StorageError(f"registry file {key!r} disappeared while it was being read.")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise StorageError(f"registry file {key!r} cannot be read: {err}") from err
        if not isinstance(data, dict):
            raise StorageError(f"registry file {key!r} is not a JSON object.")
        found = data.get("format_version", 0) or 0
        if check and (not isinstance(found, int) or found > FORMAT_VERSION):
            raise StorageError(
                f"registry file {key!r} was written by a newer featurekit (format {found}, "
                f"this one reads up to {FORMAT_VERSION}); upgrade featurekit. Nothing was "
                "modified."
            )
        return data

    def _write_once(self, key: str, data: BaseModel | Mapping[str, Any]) -> bool:
        """Create ``key`` holding ``data`` as JSON; False if it exists (nothing written)."""
        self.check_writable()
        body = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        # insertion order is kept (feature order matters); records are immutable, so stable
        return self.objects.write_if_absent(key, orjson.dumps(body, option=orjson.OPT_INDENT_2))
