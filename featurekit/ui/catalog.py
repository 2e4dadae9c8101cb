"""What the catalog page shows, read from a store: plain JSON-able answers, one per page.

The catalog is a *reading* of the store, never a copy of it: every answer is built on
request from the registry records (:class:`~featurekit.storage.records.VersionRecord`,
:class:`~featurekit.storage.manifest.Manifest`, model records), the Delta commit logs
(:func:`featurekit.storage.runs.runs`), the kept normalized sources
(:func:`featurekit.project.sources.recorded_source`) and the lineage graph. Nothing is
cached between requests, so the page can never disagree with ``featurekit show``.

Sections recorded by newer featurekit parts (statistics, drift, check results in run
records) are feature-detected: when the store object offers them and they hold data for
the view, the answer carries them; otherwise the section says ``"recorded": false`` and
the page shows "not recorded yet". The cost of each answer is bounded for page loads:

- :meth:`Catalog.index` reads each view's version records and the training-set and model
  records (no Delta table is opened), so the first page stays fast on large stores.
- :meth:`Catalog.view` opens the Delta log of one view version (runs, freshness).
- "still rebuilds" opens each pinned Delta version's *log* (no data file is read): a
  vacuumed or deleted version fails to open. It does not rebuild.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from featurekit.core.definitions import FeatureRef
from featurekit.core.errors import DefinitionError, FeatureKitError, NotFoundError, did_you_mean
from featurekit.core.redact import redact
from featurekit.lineage.graph import LineageGraph
from featurekit.lineage.service import resolve_id
from featurekit.notebook.lineage import widget_state
from featurekit.project.sources import recorded_source
from featurekit.serving.auth import PermissionDeniedError
from featurekit.storage import delta
from featurekit.storage.manifest import Manifest
from featurekit.storage.records import ModelRecord, VersionRecord
from featurekit.storage.runs import RunRecord
from featurekit.storage.runs import runs as run_records

if TYPE_CHECKING:
    from featurekit.store import Store

__all__ = ["Allows", "Catalog", "owner_of"]

#: ``allows(kind, name)``: whether the caller may see ``view:<name>`` / ``service:<name>``.
Allows = Callable[[str, str], bool]


#: Tags that name who owns a view, in the order they are looked for.
OWNER_TAGS = ("owner", "team")
#: Most lines a code diff carries (a generated view can be huge; the page shows a cut note).
MAX_DIFF_LINES = 2_000


def owner_of(tags: dict[str, str]) -> str:
    """Who owns a view: its ``owner`` tag, else its ``team`` tag, else ``""``."""
    return next((tags[t] for t in OWNER_TAGS if tags.get(t)), "")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


class Catalog:
    """The catalog's answers for one store (every method reads the store afresh).

    Example:
        >>> catalog = Catalog(fk.Store("./store"))
        >>> [f["name"] for f in catalog.index()["views"][0]["features"]]
    """

    def __init__(self, store: Store, *, allows: Allows | None = None) -> None:
        """Read ``store``; ``allows(kind, name)`` limits what is shown (None: everything).

        On a server with API keys, ``allows`` is the request key's grants: a view, its
        versions and code are shown only if the key holds ``view:<name>``; a training set
        only if it holds every view the set read; a model only through such a training
        set; a service only with ``service:<name>``. What is not granted is left out of
        lists and lineage, and asking for it by name is the server's
        :class:`~featurekit.serving.auth.PermissionDeniedError` (HTTP 403).
        """
        self.store = store
        self.registry = store.registry
        self.allows: Allows = allows or _everything

    # ---- grants ----------------------------------------------------------------------------
    def _view_ok(self, name: str) -> bool:
        return self.allows("view", name)

    def _ts_ok(self, ts_id: str) -> bool:
        if not self.registry.has_manifest(ts_id):
            return False
        return all(self._view_ok(v.view) for v in self.registry.manifest(ts_id).views)

    def _deny(self, what: str, grant: str) -> PermissionDeniedError:
        return PermissionDeniedError(
            f"this API key is not granted {what}; a key needs {grant!r} for it "
            f"(featurekit keys add NAME --grant {grant})."
        )

    # ---- what the store can tell, beyond the base records ----------------------------------
    def sections(self) -> dict[str, bool]:
        """Which optional sections this store can answer (statistics, drift)."""
        return {"stats": callable(getattr(self.store, "stats", None)), "drift": self._has_drift()}

    def _has_drift(self) -> bool:
        return callable(getattr(self.store, "drift", None))

    # ---- the search index (the first page) ---------------------------------------------------
    def index(self) -> dict[str, Any]:
        """Every view's latest version (features, dtypes, tags, owner), training sets, models.

        The page filters this list as the user types, so one request serves every search.
        """
        views = []
        for name in self.registry.view_names():
            records = self.registry.versions(name) if self._view_ok(name) else []
            if not records:
                continue
            latest = records[-1]
            views.append(
                {
                    "name": name,
                    "latest": latest.version,
                    "versions": len(records),
                    "entity": latest.entity,
                    "keys": latest.keys,
                    "description": latest.description,
                    "tags": latest.tags,
                    "owner": owner_of(latest.tags),
                    "updated_at": _iso(latest.created_at),
                    "ttl_seconds": _seconds(latest.ttl_us),
                    "features": [
                        {"name": f, "dtype": dtype} for f, dtype in latest.features.items()
                    ],
                }
            )
        names = self._names_by_id()
        training_sets = []
        for ts_id in self.registry.training_set_ids():
            manifest = self.registry.manifest(ts_id)
            if not all(self._view_ok(v.view) for v in manifest.views):
                continue
            training_sets.append(
                {
                    "id": ts_id,
                    "names": names.get(ts_id, []),
                    "rows": manifest.result_rows,
                    "views": [v.ref for v in manifest.views],
                    "created_at": _iso(manifest.created_at),
                }
            )
        shown = {t["id"] for t in training_sets}
        models = [
            {
                "name": name,
                "versions": len(entries),
                "latest": entries[-1].version,
                "training_set": entries[-1].training_set,
                "created_at": _iso(entries[-1].created_at),
                "tags": entries[-1].tags,
                "description": entries[-1].description,
            }
            for name in self.registry.model_names()
            if (
                entries := [
                    m for m in self.registry.model_versions(name) if m.training_set in shown
                ]
            )
        ]
        return {
            "store": self.store.root.name,
            "sections": self.sections(),
            "views": views,
            "training_sets": training_sets,
            "models": models,
        }

    def _names_by_id(self) -> dict[str, list[str]]:
        names: dict[str, list[str]] = {}
        for name, ts_id in sorted(self.registry.training_set_names().items()):
            names.setdefault(ts_id, []).append(name)
        return names

    # ---- one view -------------------------------------------------------------------------------
    def _record(self, name: str, version: int | None) -> tuple[list[VersionRecord], VersionRecord]:
        if not self._view_ok(name):
            raise self._deny(f"view {name!r}", f"view:{name}")
        records = self.registry.versions(name)
        if not records:
            raise NotFoundError(
                f"no view named {name!r} in this store."
                f"{did_you_mean(name, self.registry.view_names())}"
            )
        if version is None:
            return records, records[-1]
        for record in records:
            if record.version == version:
                return records, record
        raise NotFoundError(
            f"view {name!r} has no version {version}; it has versions "
            f"{', '.join(str(r.version) for r in records)}."
        )

    def view(self, name: str, version: int | None = None) -> dict[str, Any]:
        """One view version: its versions and why each changed, features, runs, freshness,
        what uses it, and the optional sections (statistics, checks) when recorded."""
        records, record = self._record(name, version)
        uri = self.registry.layout.table_uri(name, record.version)
        runs = self._runs(uri)
        materialized = [r for r in runs if r.mode != "optimize"]
        return {
            "name": name,
            "version": record.version,
            "latest": records[-1].version,
            "fingerprint": record.fingerprint,
            "entity": record.entity,
            "keys": record.keys,
            "timestamp": record.timestamp,
            "created_timestamp": record.created_timestamp,
            "description": record.description,
            "tags": record.tags,
            "owner": owner_of(record.tags),
            "ttl_seconds": _seconds(record.ttl_us),
            "features": [
                {"name": f, "dtype": dtype, "ttl_seconds": _seconds(record.ttl_us)}
                for f, dtype in record.features.items()
            ],
            "aggregations": [a.spec() for a in record.aggregations],
            "versions": [
                {
                    "version": r.version,
                    "fingerprint": r.fingerprint,
                    "created_at": _iso(r.created_at),
                    "reason": r.reason,
                    "source_kept": self._source(name, r) is not None,
                }
                for r in records
            ],
            "runs": [self._run(r) for r in runs],
            "freshness": _freshness(materialized, record.ttl_us),
            "used_by": self._used_by(name, record.version),
            "stats": self._stats(name, record.version),
            "checks": _checks(materialized),
        }

    def _runs(self, uri: str) -> list[RunRecord]:
        if delta.current_version(uri) is None:
            return []  # registered, never materialized
        return run_records(uri)

    @staticmethod
    def _run(run: RunRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "delta_version": run.delta_version,
            "committed_at": _iso(run.committed_at),
            "mode": run.mode,
            "operation": run.operation,
            "rows_written": run.rows_written,
            "run_id": run.run_id,
            "window": None
            if run.window is None
            else {"start": _iso(run.window.start), "end": _iso(run.window.end)},
        }
        checks = getattr(run, "checks", None)
        if checks:
            out["checks"] = _jsonable(checks)
        return out

    def _source(self, name: str, record: VersionRecord) -> str | None:
        code = record.parts.get("code")
        if not isinstance(code, str):
            return None
        return recorded_source(self.registry, "view", name, code)

    def _used_by(self, name: str, version: int) -> dict[str, list[str]]:
        """Training sets, services and models that read this view version."""
        ts_ids = [
            ts_id
            for ts_id in self.registry.training_set_ids()
            if any(
                v.view == name and v.version == version for v in self.registry.manifest(ts_id).views
            )
            and self._ts_ok(ts_id)
        ]
        latest = self.registry.versions(name)[-1].version
        services = []
        for service in self.registry.service_names():
            if not self.allows("service", service):
                continue
            entries = self.registry.service_versions(service)
            refs = entries[-1].features if entries else []
            if any(_reads(ref, name, version, latest) for ref in refs):
                services.append(service)
        used = set(ts_ids)
        models = [
            m.id
            for model in self.registry.model_names()
            for m in self.registry.model_versions(model)
            if m.training_set in used
        ]
        return {"training_sets": ts_ids, "services": services, "models": models}

    def _stats(self, name: str, version: int) -> dict[str, Any]:
        stats: Callable[..., Any] | None = getattr(self.store, "stats", None)
        if not callable(stats):
            return {"recorded": False, "message": "statistics are not recorded by this store."}
        try:
            frame = stats(name, version=version)
        except FeatureKitError as err:
            return {"recorded": False, "message": redact(str(err))}
        rows = frame.to_dicts() if hasattr(frame, "to_dicts") else []
        if not rows:
            return {"recorded": False, "message": "no statistics recorded for this version yet."}
        return {"recorded": True, "rows": _jsonable(rows)}

    # ---- drift (asked for separately: it computes) ---------------------------------------------
    def drift(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Drift of the view's features against each training set that reads it.

        Drift computes over stored rows, so the page asks for it on demand, never on load.
        """
        _, record = self._record(name, version)
        drift: Callable[..., Any] | None = getattr(self.store, "drift", None)
        if not callable(drift):
            return {"recorded": False, "message": "drift is not recorded by this store."}
        ts_ids = self._used_by(name, record.version)["training_sets"]
        if not ts_ids:
            return {
                "recorded": False,
                "message": "no training set reads this version: there is no baseline.",
            }
        reports = []
        for ts_id in ts_ids:
            try:
                report = drift(name, reference=ts_id)
                frame = report.to_polars() if hasattr(report, "to_polars") else report
                rows = _jsonable(frame.to_dicts())
                reports.append({"training_set": ts_id, "rows": rows})
            except (FeatureKitError, TypeError) as err:
                reports.append({"training_set": ts_id, "message": redact(str(err))})
        return {"recorded": True, "reports": reports}

    # ---- code diff between two versions --------------------------------------------------------
    def diff(self, name: str, old: int, new: int) -> dict[str, Any]:
        """The unified diff of the kept normalized sources of two versions of a view."""
        _, a = self._record(name, old)
        _, b = self._record(name, new)
        texts = [self._source(name, a), self._source(name, b)]
        missing = [r.version for r, t in zip((a, b), texts, strict=True) if t is None]
        out: dict[str, Any] = {
            "name": name,
            "from": a.version,
            "to": b.version,
            "reason": b.reason,
            "from_source": texts[0],
            "to_source": texts[1],
        }
        if missing:
            out["message"] = (
                f"no source was kept for version {', '.join(map(str, missing))} (registered "
                "before featurekit kept sources); re-register it to see its code."
            )
            out["lines"] = []
            return out
        lines = list(
            difflib.unified_diff(
                (texts[0] or "").splitlines(),
                (texts[1] or "").splitlines(),
                f"{name}@{a.version}",
                f"{name}@{b.version}",
                lineterm="",
            )
        )
        out["cut"] = len(lines) > MAX_DIFF_LINES
        out["lines"] = lines[:MAX_DIFF_LINES]
        return out

    # ---- lineage ---------------------------------------------------------------------------
    def lineage(self, node: str | None) -> dict[str, Any]:
        """The lineage widget's state centred on ``node`` (all of the store when None), with
        stale marks: models and training sets built on a view version no longer current."""
        full = self.store.lineage()
        if node:
            node_id = resolve_id(full, node, self.registry)
            if not self._node_ok(full, node_id):
                raise self._deny(f"lineage node {node_id!r}", _grant_for(full, node_id))
            graph = self._granted(full.subgraph(node_id, upstream=True, downstream=True))
        else:
            graph = self._granted(full)
        stale = self._stale(full)
        stale = {k: v for k, v in stale.items() if k in graph.nodes}
        state = widget_state(graph)
        for node_id, reasons in stale.items():
            state["details"][node_id]["lists"].insert(0, ["stale", reasons])
        raw = graph.raw_columns(graph.focus) if graph.focus else []
        return {"state": state, "stale": stale, "raw_columns": raw}

    def _node_ok(self, graph: LineageGraph, node_id: str) -> bool:
        """Whether a view, feature, training set or model node is granted."""
        node = graph.node(node_id)
        if node.kind in ("view", "feature"):
            return self._view_ok(node.name)
        if node.kind == "training_set":
            return self._ts_ok(node_id.removeprefix("training_set:"))
        if node.kind == "model":
            entries = self.registry.model_versions(node.name)
            used = {m.training_set for m in entries if str(m.version) == (node.version or "")}
            return bool(used) and all(self._ts_ok(t) for t in used)
        return True  # sources and columns: decided by what they feed (see _granted)

    def _granted(self, graph: LineageGraph) -> LineageGraph:
        """``graph`` without the nodes the grants hide; raw sources and columns stay only
        where they feed a node that is shown."""
        raw = ("source", "column")
        shown = {n for n, node in graph.nodes.items() if node.kind not in raw}
        kept = {n for n in shown if self._node_ok(graph, n)}
        if kept == shown:
            return graph  # everything is granted: nothing to drop
        for _ in range(2):  # columns feed features; sources contain the columns
            for edge in graph.edges:
                for a, b in ((edge.source, edge.target), (edge.target, edge.source)):
                    if b in kept and graph.nodes[a].kind in raw:
                        kept.add(a)
        return LineageGraph(
            (graph.nodes[n] for n in sorted(kept)),
            (e for e in graph.edges if e.source in kept and e.target in kept),
            graph.runs.values(),
            focus=graph.focus if graph.focus in kept else None,
        )

    def _stale(self, graph: LineageGraph) -> dict[str, list[str]]:
        out = {k: list(v) for k, v in graph.stale_models().items()}
        for ts_id in self.registry.training_set_ids():
            reasons = self._ts_stale(self.registry.manifest(ts_id))
            if reasons:
                out[f"training_set:{ts_id}"] = reasons
        return out

    def _ts_stale(self, manifest: Manifest) -> list[str]:
        reasons = []
        for pinned in manifest.views:
            records = self.registry.versions(pinned.view)
            if records and records[-1].version > pinned.version:
                newest = records[-1]
                why = f" (changed: {', '.join(newest.reason)})" if newest.reason else ""
                reasons.append(
                    f"code: reads {pinned.ref}; {pinned.view}@{newest.version} is newer{why}"
                )
            current = delta.current_version(self.registry.layout.uri(pinned.table))
            pin = pinned.delta_version
            if pin is not None and current is not None and current > pin:
                reasons.append(
                    f"data: reads {pinned.ref} at Delta version {pin}; "
                    f"its table is now at version {current}"
                )
        return reasons

    # ---- training sets and models ----------------------------------------------------------
    def _ts_id(self, text: str) -> str:
        names = self.registry.training_set_names()
        ts_id = names.get(text, text)
        if not self.registry.has_manifest(ts_id):
            known = [*self.registry.training_set_ids(), *names]
            raise NotFoundError(
                f"no training set named or with id {text!r} in this store."
                f"{did_you_mean(text, known)}"
            )
        return ts_id

    def training_set(self, text: str) -> dict[str, Any]:
        """A training set (by id or saved name): manifest, pinned versions, whether it still
        rebuilds (every pinned Delta version still opens), staleness, the models on it."""
        ts_id = self._ts_id(text)
        manifest = self.registry.manifest(ts_id)
        hidden = [v.view for v in manifest.views if not self._view_ok(v.view)]
        if hidden:
            what = f"training set {text!r}, which reads view {hidden[0]!r}"
            raise self._deny(what, f"view:{hidden[0]}")
        pins = [
            self._pin_check(v.view, v.version, v.table, v.delta_version) for v in manifest.views
        ]
        return {
            "id": ts_id,
            "names": self._names_by_id().get(ts_id, []),
            "manifest": manifest.model_dump(mode="json", by_alias=True),
            "pinned": pins,
            "rebuilds": all(p["ok"] for p in pins),
            "stale": self._ts_stale(manifest),
            "models": [
                m.id
                for model in self.registry.model_names()
                for m in self.registry.model_versions(model)
                if m.training_set == ts_id
            ],
        }

    def _pin_check(
        self, view: str, version: int, table: str, delta_version: int | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"view": view, "version": version, "delta_version": delta_version}
        if delta_version is None:
            out.update(ok=True, message="nothing pinned: the table did not exist at as_of")
            return out
        uri = self.registry.layout.uri(table)
        try:
            delta.file_count(uri, delta_version)  # opens that version's log; reads no data
        except Exception as err:  # a missing or vacuumed version: any error means "no"
            out.update(
                ok=False, message=f"Delta version {delta_version} does not open: {_line(err)}"
            )
            return out
        out.update(ok=True, message=f"Delta version {delta_version} is still there")
        return out

    def model(self, name: str) -> dict[str, Any]:
        """Every version of a model: metrics, params, training set, staleness, rebuilds."""
        entries = self.registry.model_versions(name)
        if not entries:
            raise NotFoundError(
                f"no model named {name!r} in this store."
                f"{did_you_mean(name, self.registry.model_names())}"
            )
        shown = [e for e in entries if self._ts_ok(e.training_set)]
        if not shown:
            what = f"model {name!r}: every view its training sets read"
            raise self._deny(what, "view:<each view>")
        versions = []
        for entry in shown:
            versions.append({**_model(entry), **self._model_trust(entry)})
        return {"name": name, "latest": shown[-1].version, "versions": versions}

    def _model_trust(self, entry: ModelRecord) -> dict[str, Any]:
        if not self.registry.has_manifest(entry.training_set):
            return {"rebuilds": False, "stale": [f"training set {entry.training_set} is gone"]}
        ts = self.training_set(entry.training_set)
        return {"rebuilds": ts["rebuilds"], "stale": ts["stale"]}


def _everything(kind: str, name: str) -> bool:
    return True


def _grant_for(graph: LineageGraph, node_id: str) -> str:
    node = graph.node(node_id)
    return f"view:{node.name}" if node.kind in ("view", "feature") else "view:<each view>"


def _model(entry: ModelRecord) -> dict[str, Any]:
    return {
        "id": entry.id,
        "version": entry.version,
        "created_at": _iso(entry.created_at),
        "training_set": entry.training_set,
        "metrics": entry.metrics,
        "params": _jsonable(entry.params),
        "model": _jsonable(entry.model),
        "mlflow_run_id": entry.mlflow_run_id,
        "description": entry.description,
        "tags": entry.tags,
    }


def _reads(ref: str, view: str, version: int, latest: int) -> bool:
    """Whether a service's feature reference reads ``view@version``."""
    try:
        parsed = FeatureRef.parse(ref)
    except DefinitionError:
        return False
    pinned = parsed.version if parsed.version is not None else latest
    return parsed.view == view and pinned == version


def _seconds(micros: int | None) -> float | None:
    return None if micros is None else micros / 1e6


def _freshness(runs: list[RunRecord], ttl_us: int | None) -> dict[str, Any]:
    """When the view version was last materialized and the newest event time it read."""
    if not runs:
        return {"materialized": False, "message": "never materialized"}
    last = runs[-1]
    events = [
        str(mark["max_event"])
        for mark in last.watermarks.values()
        if isinstance(mark, dict) and mark.get("max_event")
    ]
    age = (datetime.now(UTC) - last.committed_at.astimezone(UTC)).total_seconds()
    return {
        "materialized": True,
        "last_run_at": _iso(last.committed_at),
        "age_seconds": round(age, 3),
        "max_event": max(events) if events else None,
        "ttl_seconds": _seconds(ttl_us),
        "runs": len(runs),
    }


def _checks(runs: list[RunRecord]) -> dict[str, Any]:
    """The latest run's check results, when run records carry them."""
    for run in reversed(runs):
        checks = getattr(run, "checks", None)
        if checks:
            return {"recorded": True, "run_id": run.run_id, "results": _jsonable(checks)}
    return {"recorded": False, "message": "no check results recorded for this version yet."}


def _jsonable(value: Any) -> Any:
    """Plain JSON values from records the catalog does not type itself (models, checks)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return _iso(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return redact(text[0] if text else type(err).__name__)[:200]
