"""Every path under a store root is built here, and only here.

A store root holds::

    _featurekit/store.json                          the store marker (format version)
    _featurekit/views/<view>/v<N>.json              view versions
    _featurekit/services/<service>/v<N>.json        feature-service versions
    _featurekit/on_demand/<feature>/v<N>.json       on-demand feature versions
    _featurekit/models/<model>/v<N>.json            model entries
    _featurekit/training_set_names/<name>.json      saved training-set names
    _featurekit/lineage/<kind>/<key>.json           lineage records
    _featurekit/deletions/<id>.json                 deletion events
    _featurekit/probes/probe-<uuid>                 create-only probe (removed at once)
    _featurekit/locks/<kind>.<name>.lock            cross-process locks (local stores only)
    features/<view>/v<N>/                           a view version's Delta table
    training_sets/<id>/manifest.json                a training set's manifest
    training_sets/<id>/labels/, data/               its labels, its saved rows (Delta)
    training_sets/<id>/stats/                       its feature statistics (the training baseline)
    quarantine/<view>/v<N>/                         rows refused by a view version's checks (Delta)
    stats/<view>/v<N>/                              per-run feature statistics (Delta)
    serving_log/                                    logged online lookups (Delta)
    monitoring/drift/, monitoring/checks/           drift results and check verdicts, per run (Delta)
    online/config.json, online/online.sqlite        the embedded online store

Keeping the layout in one module is what lets a store live on object storage: registry
records go through an :class:`~featurekit.storage.objectstore.ObjectStore` by key, Delta
tables by URI (with the root's ``storage_options``), and both are built from the same
names here. A root is a local folder (a :class:`~pathlib.Path`) or an object-storage URI
(``s3://bucket/prefix``, a ``str``); only local roots have lock files and an embedded
online store.

Every name is checked by :func:`featurekit.core.names.validate_name` before it becomes
part of a path, so no caller, however it got the name (Python, CLI, HTTP, a record on
disk), can make a path that escapes its folder.

Example:
    >>> layout = StoreLayout(Path("/data/store"))
    >>> layout.record_key("view", "driver_stats", 3)
    '_featurekit/views/driver_stats/v3.json'
    >>> layout.table_uri("driver_stats", 3)
    '/data/store/features/driver_stats/v3'
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

from featurekit.core.config import REGISTRY_DIR
from featurekit.core.errors import StorageError
from featurekit.core.names import NameKind, shown, validate_name
from featurekit.core.redact import redact_url
from featurekit.storage.objectstore import LocalObjectStore, ObjectStore
from featurekit.storage.remote import RemoteObjectStore, remember_options
from featurekit.storage.roots import options_for_root

#: What the registry versions: each kind is a folder of ``<name>/v<N>.json`` records.
RecordKind = Literal["view", "service", "on_demand", "model"]
#: Kinds of lineage record (see :mod:`featurekit.lineage.record`).
LineageKind = Literal["materialize", "training_set", "model", "columns"]
#: Delta tables of one training set: its labels and, once saved, its rows.
TrainingSetPart = Literal["labels", "data", "stats", "result"]
#: Tables of monitoring results: drift reports and check verdicts, appended per run.
MonitoringTable = Literal["drift", "checks"]
#: Files of the embedded online store.
OnlineFile = Literal["config.json", "online.sqlite"]

_FOLDERS: dict[RecordKind, str] = {
    "view": "views",
    "service": "services",
    "on_demand": "on_demand",
    "model": "models",
}
_NAME_KINDS: dict[RecordKind, NameKind] = {
    "view": "view",
    "service": "service",
    "on_demand": "on-demand feature",
    "model": "model",
}
_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.json\Z")
_TABLES = "features"
_TRAINING_SETS = "training_sets"
_ONLINE = "online"
_QUARANTINE = "quarantine"
_STATS = "stats"
_STAGING = "staging"
_SERVING_LOG = "serving_log"


class StoreLayout:
    """The folder layout of one store root (see the module docstring).

    Registry records are addressed by *key* (a ``/``-separated path relative to the root,
    read and written through :attr:`objects`); Delta tables by *URI* (what deltalake opens,
    with :attr:`storage_options`).
    """

    def __init__(
        self,
        root: Path | str,
        objects: ObjectStore | None = None,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        self.root: Path | str = root if isinstance(root, Path) else root.rstrip("/")
        #: options for every Delta table and object under the root (credentials included);
        #: none given: FEATUREKIT_STORAGE_OPTIONS for a remote root
        self.storage_options: dict[str, str] = options_for_root(self.root, storage_options)
        if isinstance(self.root, str):
            remember_options(self.root, self.storage_options)
        if objects is None:
            objects = (
                LocalObjectStore(self.root)
                if isinstance(self.root, Path)
                else RemoteObjectStore(self.root, self.storage_options)
            )
        self.objects: ObjectStore = objects

    @property
    def is_local(self) -> bool:
        """True for a local (or mounted) folder, False for an object-storage URI."""
        return isinstance(self.root, Path)

    @property
    def shown_root(self) -> str:
        """The root as it may be shown to a person (credentials in a URI masked)."""
        return str(self.root) if isinstance(self.root, Path) else redact_url(self.root)

    def local_root(self, purpose: str) -> Path:
        """The root folder, for what only a local folder can hold (locks, SQLite)."""
        if not isinstance(self.root, Path):
            raise StorageError(
                f"store {self.shown_root!r} is on object storage, which cannot hold {purpose}."
            )
        return self.root

    # ---- registry records ---------------------------------------------------------------
    @property
    def marker_key(self) -> str:
        """Key of the store marker, whose presence makes a folder a featurekit store."""
        return f"{REGISTRY_DIR}/store.json"

    def has_store(self) -> bool:
        """True when the root holds a featurekit store (its marker exists)."""
        return self.objects.exists(self.marker_key)

    def kind_prefix(self, kind: RecordKind) -> str:
        """Prefix of every record of ``kind`` (``_featurekit/views/``)."""
        return f"{REGISTRY_DIR}/{_FOLDERS[_record_kind(kind)]}/"

    def record_prefix(self, kind: RecordKind, name: str) -> str:
        """Prefix of the versions of one name (``_featurekit/views/<view>/``)."""
        return f"{self.kind_prefix(kind)}{validate_name(name, _NAME_KINDS[kind])}/"

    def record_key(self, kind: RecordKind, name: str, version: int) -> str:
        """Key of one version record (``_featurekit/views/<view>/v<N>.json``)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise StorageError(f"{kind} {name!r}: version numbers start at 1, got {version!r}.")
        return f"{self.record_prefix(kind, name)}v{version}.json"

    def parse_record_key(self, kind: RecordKind, key: str) -> tuple[str, int] | None:
        """``(name, version)`` of a record key of ``kind``; None for anything else."""
        prefix = self.kind_prefix(kind)
        if not key.startswith(prefix):
            return None
        name, _, file = key[len(prefix) :].partition("/")
        match = _VERSION_FILE.match(file)
        if match is None or "/" in file:
            return None
        return name, int(match.group(1))

    def training_set_names_prefix(self) -> str:
        """Prefix of the saved training-set names."""
        return f"{REGISTRY_DIR}/training_set_names/"

    def training_set_name_key(self, name: str) -> str:
        """Key of one saved training-set name."""
        return f"{self.training_set_names_prefix()}{validate_name(name, 'training set')}.json"

    def lineage_prefix(self, kind: LineageKind) -> str:
        """Prefix of the lineage records of one kind."""
        if kind not in get_args(LineageKind):
            raise StorageError(f"unknown lineage record kind {shown(kind)}.")
        return f"{REGISTRY_DIR}/lineage/{kind}/"

    def lineage_key(self, kind: LineageKind, key: str) -> str:
        """Key of one lineage record (``key`` is a run id, ``<view>-<fingerprint>``, …)."""
        return f"{self.lineage_prefix(kind)}{validate_name(key, 'lineage record')}.json"

    def deletions_prefix(self) -> str:
        """Prefix of the deletion events."""
        return f"{REGISTRY_DIR}/deletions/"

    def deletion_key(self, event_id: str) -> str:
        """Key of one deletion event."""
        return f"{self.deletions_prefix()}{validate_name(event_id, 'lineage record')}.json"

    def probe_prefix(self) -> str:
        """Prefix of the sentinel objects that probe create-only writes."""
        return f"{REGISTRY_DIR}/probes/"

    def code_key(self, kind: RecordKind, name: str, code_fingerprint: str) -> str:
        """Key of the normalized source kept for one code fingerprint of a definition."""
        checked = validate_name(name, _NAME_KINDS[_record_kind(kind)])
        if not re.fullmatch(r"[0-9a-f]{8,64}", code_fingerprint):
            raise StorageError(f"not a code fingerprint: {shown(code_fingerprint)}.")
        return f"{REGISTRY_DIR}/code/{_FOLDERS[kind]}/{checked}/{code_fingerprint}.json"

    def lock_path(self, kind: RecordKind, name: str) -> Path:
        """The lock file serializing writers of one name (a local file: locks need one)."""
        checked = validate_name(name, _NAME_KINDS[_record_kind(kind)])
        return self.local_root("lock files") / REGISTRY_DIR / "locks" / f"{kind}.{checked}.lock"

    def watch_path(self, kind: RecordKind, name: str) -> Path | None:
        """The local folder whose modification time changes when ``name`` gets a version.

        None on object storage, where there is no such time to watch.
        """
        if not isinstance(self.root, Path):
            return None
        return self.root.joinpath(*self.record_prefix(kind, name).rstrip("/").split("/"))

    # ---- Delta tables -------------------------------------------------------------------
    def table_key(self, view: str, version: int) -> str:
        """Key of a view version's Delta table, relative to the root (manifests record it)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise StorageError(f"view {view!r}: version numbers start at 1, got {version!r}.")
        return f"{_TABLES}/{validate_name(view, 'view')}/v{version}"

    def table_uri(self, view: str, version: int) -> str:
        """Where a view version's Delta table lives."""
        return self.uri(self.table_key(view, version))

    def view_tables_prefix(self, view: str) -> str:
        """Prefix of every version's table of one view (``features/<view>/``)."""
        return f"{_TABLES}/{validate_name(view, 'view')}/"

    def quarantine_uri(self, view: str, version: int) -> str:
        """Where the rows a view version's checks refused are kept (a Delta table)."""
        return self.uri(_QUARANTINE + self.table_key(view, version).removeprefix(_TABLES))

    def stats_uri(self, view: str, version: int) -> str:
        """Where a view version's per-run feature statistics live (a Delta table)."""
        return self.uri(_STATS + self.table_key(view, version).removeprefix(_TABLES))

    def staging_uri(self, view: str, version: int, run_id: str) -> str:
        """A folder a distributed materialization run writes its intermediate parts to
        (bucketed input, per-bucket output) before the driver's one commit; the run
        deletes it, and a run that died leaves it behind, safe to delete."""
        table = self.table_key(view, version).removeprefix(_TABLES)
        return self.uri(f"{_STAGING}{table}/{validate_name(run_id, 'run')}")

    def serving_log_uri(self) -> str:
        """Where logged online lookups are appended (a Delta table)."""
        return self.uri(_SERVING_LOG)

    def monitoring_uri(self, table: MonitoringTable) -> str:
        """Where drift results or check verdicts of every view are appended (Delta)."""
        if table not in get_args(MonitoringTable):
            raise StorageError(f"unknown monitoring table {shown(table)}.")
        return self.uri(f"monitoring/{table}")

    # ---- training sets ------------------------------------------------------------------
    def training_sets_prefix(self) -> str:
        """Prefix of every training set's folder."""
        return f"{_TRAINING_SETS}/"

    def training_set_prefix(self, ts_id: str) -> str:
        """Prefix of one training set's folder."""
        return f"{self.training_sets_prefix()}{validate_name(ts_id, 'training set id')}/"

    def manifest_key(self, ts_id: str) -> str:
        """Key of a training set's manifest."""
        return f"{self.training_set_prefix(ts_id)}manifest.json"

    def parse_manifest_key(self, key: str) -> str | None:
        """The training-set id of a manifest key; None for anything else."""
        prefix = self.training_sets_prefix()
        ts_id, _, rest = key.removeprefix(prefix).partition("/")
        return ts_id if key.startswith(prefix) and rest == "manifest.json" else None

    def training_set_uri(self, ts_id: str, part: TrainingSetPart | None = None) -> str:
        """Where a training set's folder (or one of its Delta tables) lives."""
        if part is not None and part not in get_args(TrainingSetPart):
            raise StorageError(f"unknown training-set table {shown(part)}.")
        return self.uri(self.training_set_prefix(ts_id) + (part or ""))

    def training_set_scratch(self, token: str) -> str:
        """A folder a training set too big for memory is written to while it is built
        (its id is known only once it is joined); it then moves to ``<id>/result``."""
        return self.uri(f"{_TRAINING_SETS}/_building/{validate_name(token, 'training set id')}")

    def remove_folder(self, uri: str) -> None:
        """Remove every file under a folder of this root (missing is fine)."""
        if isinstance(self.root, Path):
            shutil.rmtree(uri, ignore_errors=True)
            return
        for key in self.objects.list(self.key_of(uri) + "/"):
            self.objects.delete(key)

    def move_folder(self, uri: str, new_uri: str) -> None:
        """Move a folder's files under ``new_uri`` (what it held is removed first).

        On an object store each file is copied then deleted (there are no folders to
        rename); a training set's result is a few files, so this stays cheap.
        """
        self.remove_folder(new_uri)
        if isinstance(self.root, Path):
            Path(new_uri).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(uri, new_uri)
            return
        old, new = self.key_of(uri) + "/", self.key_of(new_uri) + "/"
        for key in self.objects.list(old):
            self.objects.rename(key, new + key[len(old) :])

    # ---- online -------------------------------------------------------------------------
    def online_path(self, file: OnlineFile) -> Path:
        """A file of the embedded online store (a local file: SQLite needs one)."""
        if file not in get_args(OnlineFile):
            raise StorageError(f"unknown online store file {shown(file)}.")
        return self.local_root("an embedded online store") / _ONLINE / file

    # ---- keys and URIs ------------------------------------------------------------------
    def uri(self, key: str) -> str:
        """The location of a key (such as a manifest's recorded table) under this root.

        Refuses keys that are absolute or climb out of the root, so a record on disk
        cannot point a reader at another folder.
        """
        parts = key.removesuffix("/").split("/") if isinstance(key, str) else [""]
        if any(p in ("..", ".", "") or "\\" in p or "\x00" in p for p in parts):
            raise StorageError(
                f"stored path {shown(key)} is not inside the store; the record is corrupt."
            )
        if isinstance(self.root, Path):
            return str(self.root.joinpath(*parts))
        return f"{self.root}/{'/'.join(parts)}"

    def key_of(self, uri: str) -> str:
        """The key of a location under this root (inverse of :meth:`uri`)."""
        if isinstance(self.root, Path):
            try:
                return Path(uri).relative_to(self.root).as_posix()
            except ValueError:
                pass
        elif uri.startswith(self.root + "/"):
            return uri[len(self.root) + 1 :].rstrip("/")
        raise StorageError(f"{shown(redact_url(uri))} is not inside the store {self.shown_root!r}.")


def _record_kind(kind: str) -> RecordKind:
    if kind not in _FOLDERS:
        raise StorageError(f"unknown registry record kind {shown(kind)}.")
    return kind  # type: ignore[return-value]
