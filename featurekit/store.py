"""``fk.Store``: the one object a user talks to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from featurekit.core.authoring import FeatureView
from featurekit.core.definitions import FeatureRef
from featurekit.core.errors import DefinitionError, NotFoundError, StorageError, did_you_mean
from featurekit.core.on_demand import OnDemandFeature
from featurekit.core.timeutil import parse_duration, to_utc_datetime
from featurekit.kernels.pit import PointInTime
from featurekit.lineage.graph import LineageGraph
from featurekit.lineage.service import StoreLineage
from featurekit.notebook.progress import Progress
from featurekit.offline.batching import parse_size
from featurekit.offline.materialize import MaterializeResult, materialize, register, table_uri
from featurekit.offline.models import ModelRecord, log_model
from featurekit.offline.resolve import ResolvedView, resolve
from featurekit.offline.services import Catalog, FeatureService, rebuild_hook, training_plan
from featurekit.offline.training import TrainingSet, ViewRequest, build, rebuild
from featurekit.storage import delta
from featurekit.storage.registry import Registry, VersionRecord

if TYPE_CHECKING:
    from featurekit.offline.optimize import OptimizeResult
    from featurekit.online.lookup import OnlineService
    from featurekit.online.stores import OnlineStore

FeatureSpec = str | FeatureView | OnDemandFeature | FeatureService
#: Labels with at least this many rows get a progress bar in ``training_set``.
LONG_TRAINING_SET = 100_000


class Store:
    """A feature store rooted at one folder: registry, Delta tables, training sets.

    The root is created if missing (``create=False`` opens an existing store only).
    ``progress=False`` turns off progress bars (default: on, unless the environment sets
    ``FEATUREKIT_PROGRESS=0``). ``memory_budget`` (e.g. ``"4GiB"``; default 8 GiB) bounds
    a materialization run's memory, its online sync included: larger inputs are computed,
    written and synced in batches of entity keys.

    Example:
        >>> store = fk.Store("./my-store")
        >>> store.materialize(driver_stats)
        >>> ts = store.training_set(labels, features=["driver_stats:conv_rate"], timestamp="ts")
    """

    def __init__(
        self,
        root: str | Path,
        storage_options: Mapping[str, str] | None = None,
        *,
        create: bool = True,
        progress: bool | None = None,
        online: str | OnlineStore | bool | None = None,
        lineage_emitter: Any = None,
        memory_budget: str | int | None = None,
    ) -> None:
        text = str(root)
        if "://" in text and not text.startswith("file://"):
            raise StorageError(
                f"store root {text!r}: remote roots are not supported yet (the registry needs "
                "a local or mounted filesystem). Mount the bucket or use a local folder."
            )
        self.root = Path(text.removeprefix("file://")).expanduser().resolve()
        self.storage_options = dict(storage_options or {})
        self.progress = progress
        # performance (issue 7): materialization streams in batches above this budget
        self.memory_budget = parse_size(memory_budget)
        self.registry = Registry(self.root, create=create)
        # lineage (issue 5): recorded as a side effect; optionally emitted as OpenLineage
        self._lineage = StoreLineage(self.registry, lineage_emitter)
        # online serving (issue 4): opened on first use, so a Store costs nothing until then
        self._online_spec = online
        self._online_service: OnlineService | None = None
        self._catalog = Catalog()

    # ---- definitions ----------------------------------------------------------------------
    def register(self, view: FeatureView) -> VersionRecord:
        """Record the view's current definition as a version (idempotent); computes nothing."""
        return register(self.registry, self._resolve(view))

    def materialize(
        self,
        view: FeatureView,
        start: datetime | date | str | None = None,
        end: datetime | date | str | None = None,
        *,
        full_refresh: bool = False,
        progress: bool | None = None,
        memory_budget: str | int | None = None,
    ) -> MaterializeResult:
        """Compute the view and write it to its version's Delta table (incremental by default).

        Upstream views are computed in the same plan; materialize them too if you want
        their features in training sets. ``memory_budget`` overrides the store's for this run.
        """
        resolved = self._resolve(view)
        sources = self._lineage.before_materialize(resolved)
        show = self.progress if progress is None else progress
        bar = _progress(f"materialize {view.name}", 3, show)
        budget = parse_size(memory_budget) or self.memory_budget
        try:
            result = materialize(
                self.registry,
                resolved,
                start=None if start is None else to_utc_datetime(start, what="start"),
                end=None if end is None else to_utc_datetime(end, what="end"),
                full_refresh=full_refresh,
                step=lambda text: _advance(bar, text),
                memory_budget=budget,
            )
        finally:
            bar.close()
        self._sync_online(result, budget)  # after the commit; a no-op run repairs a lagging store
        self._lineage.after_materialize(resolved, result, sources)
        return result

    def views(self) -> list[str]:
        """Names of the views this store holds."""
        return self.registry.view_names()

    def versions(self, name: str) -> list[VersionRecord]:
        """Every version of a view, oldest first, with when and why it changed."""
        records = self.registry.versions(name)
        if not records:
            self.registry.version(name)  # raises NotFoundError with suggestions
        return records

    def runs(self, name: str, version: int | None = None) -> list[dict[str, Any]]:
        """Materialization runs of a view version (from its Delta commit log), oldest first."""
        record = self.registry.version(name, version)
        return delta.history(table_uri(self.root, name, record.version))

    def read(self, name: str, version: int | None = None) -> pl.DataFrame:
        """The stored rows of a view version (latest Delta version)."""
        record = self.registry.version(name, version)
        uri = table_uri(self.root, name, record.version)
        current = delta.current_version(uri)
        if current is None:
            raise NotFoundError(
                f"view {name!r} version {record.version} has no data yet; run store.materialize."
            )
        return delta.read_rows(uri, version=current)

    def optimize(self, view: FeatureView | str, version: int | None = None) -> OptimizeResult:
        """Compact a view version's table into globally sorted files (issue 7).

        After many incremental runs a table is many small per-run files; this rewrites the
        latest Delta version's rows in (keys, event time) order in one commit, so training
        sets read it without re-sorting. It changes no training set: the rows are the
        same, and older versions stay readable for training sets pinned to them.

        Example:
            >>> store.optimize("driver_stats")
        """
        from featurekit.offline.optimize import optimize

        name = view.name if isinstance(view, FeatureView) else view
        return optimize(self.registry, name, version)

    # ---- training sets --------------------------------------------------------------------
    def training_set(
        self,
        labels: pl.DataFrame | pl.LazyFrame | Any,
        features: Sequence[FeatureSpec],
        timestamp: str,
        *,
        ttl: Mapping[str, str | timedelta | None] | None = None,
        as_of: datetime | date | str | None = None,
        point_in_time: PointInTime = "knowledge",
        progress: bool | None = None,
    ) -> TrainingSet:
        """Join features onto labels point-in-time correctly; the result is reproducible by id.

        Args:
            labels: entity keys, a label timestamp and any label columns.
            features: ``"view:feature"``, ``"view@3:feature"``, ``"view:*"`` or view objects.
            timestamp: the labels' datetime column.
            ttl: per-view TTL overrides, e.g. ``{"driver_stats": "1d"}``.
            as_of: read every feature table as it stood at this wall-clock time (a
                datetime, a date or an ISO 8601 string; naive means UTC).
            point_in_time: ``"knowledge"`` (default: rows must be known by the label time)
                or ``"event"`` (event time only).
            progress: show a progress bar (default: the store's setting; only for labels
                of at least ``LONG_TRAINING_SET`` rows).
        """
        frame = _as_frame(labels)
        if point_in_time not in ("knowledge", "event"):
            raise DefinitionError(
                f"point_in_time must be 'knowledge' or 'event', got {point_in_time!r}."
            )
        when = to_utc_datetime(as_of, what="as_of") if as_of is not None else None
        specs, on_demand = training_plan(  # services and on-demand features (issue 4)
            features, self.registry, self._catalog, lambda s: self._lookup(s, when), frame.columns
        )
        requests = self._requests(specs, ttl or {}, when)
        show = self.progress if progress is None else progress
        bar = _progress("training set", 2, show if frame.height >= LONG_TRAINING_SET else False)
        try:
            _advance(bar, f"joining {len(requests)} views onto {frame.height:,} labels")
            ts = build(
                self.registry,
                frame,
                timestamp=timestamp,
                requests=requests,
                point_in_time=point_in_time,
                as_of=when,
                on_demand=on_demand(requests) if on_demand is not None else None,
            )
            _advance(bar, "recording lineage")
        finally:
            bar.close()
        self._lineage.after_training_set(ts)
        return ts

    def training_set_by_id(
        self, ts_id: str, *, on_demand: Sequence[OnDemandFeature] = ()
    ) -> TrainingSet:
        """Rebuild a recorded training set (by id or saved name) and verify it is identical.

        A set with on-demand features needs their code: pass the decorated objects in
        ``on_demand=`` unless this store has already used them.
        """
        names = self.registry.training_set_names()
        manifest = self.registry.manifest(names.get(ts_id, ts_id))
        for feature in on_demand:
            self._catalog.add(feature)
        hook = rebuild_hook(self.registry, self._catalog, manifest)
        return rebuild(self.registry, manifest, on_demand=hook)

    def training_sets(self) -> list[dict[str, Any]]:
        """Recorded training sets: id, names, rows, views, created."""
        names: dict[str, list[str]] = {}
        for name, ts_id in self.registry.training_set_names().items():
            names.setdefault(ts_id, []).append(name)
        out = []
        for ts_id in self.registry.training_set_ids():
            m = self.registry.manifest(ts_id)
            out.append(
                {
                    "id": ts_id,
                    "names": names.get(ts_id, []),
                    "rows": m["result_rows"],
                    "views": [f"{v['view']}@{v['version']}" for v in m["views"]],
                    "created_at": m["created_at"],
                }
            )
        return out

    # ---- online serving (issue 4; logic lives in featurekit.online) -------------------------
    def get_online_features(
        self,
        features: FeatureSpec | Sequence[FeatureSpec],
        entities: Mapping[str, Sequence[Any]] | pl.DataFrame,
        *,
        with_metadata: bool = False,
        at: datetime | date | str | None = None,
    ) -> pl.DataFrame:
        """Latest feature values per entity, exactly what ``training_set`` gives at this instant.

        Args:
            features: like ``training_set`` (``"view:f"``, ``"view@2:f"``, views, on-demand
                features) or a :class:`FeatureService`.
            entities: key columns (and request columns of on-demand features), e.g.
                ``{"driver_id": [1, 2]}``; rows come back in this order.
            with_metadata: add ``<view>__event_ts`` and ``<view>__status`` (``present``,
                ``expired``: older than the TTL, values null; ``not_found``).
            at: the lookup instant (default now; not before the latest materialization).

        Example:
            >>> store.get_online_features(["driver_stats:conv_rate"], {"driver_id": [1, 2]})
        """
        service = self._online()
        when = None if at is None else to_utc_datetime(at, what="at")
        return service.lookup(features, entities, with_metadata=with_metadata, at=when).frame

    @property
    def online(self) -> OnlineStore:
        """The online store (embedded SQLite under ``<root>/online/`` unless configured)."""
        return self._online().online

    def _online(self) -> OnlineService:
        if self._online_service is None:
            from featurekit.online.lookup import OnlineService
            from featurekit.online.stores import open_online_store

            if self._online_spec is False:
                raise StorageError(
                    "this store was opened with online=False; open it with online=None "
                    "(embedded) or a Redis URL to serve features online."
                )
            spec = None if self._online_spec is True else self._online_spec
            store = open_online_store(spec, self.root)
            self._online_service = OnlineService(self, store, self._catalog)
        return self._online_service

    def _sync_online(self, result: MaterializeResult, budget: int | None) -> None:
        if self._online_spec is False:
            return
        from featurekit.online.errors import OnlineStoreError
        from featurekit.online.sync import sync_view

        try:
            sync_view(
                self.registry,
                self._online().online,
                result.view,
                result.version,
                memory_budget=budget,
            )
        except OnlineStoreError as err:
            raise OnlineStoreError(
                f"view {result.view!r} version {result.version} was materialized (Delta "
                f"version {result.delta_version}), but the online store was not updated: "
                f"{err} Re-run store.materialize({result.view}) to retry; the offline data "
                "is safe."
            ) from err

    # ---- models and lineage (issue 5) -----------------------------------------------------
    def log_model(
        self,
        name: str,
        *,
        training_set: TrainingSet | str,
        model: Any = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        mlflow_run_id: str | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> ModelRecord:
        """Record a model entry (the next version of ``name``) linked to its training set.

        ``model`` is any object (its type and a digest are kept, not its bytes), a URI, or an
        MLflow reference (``"runs:/<run id>/model"``, ``"models:/churn/2"`` or the
        ``ModelInfo`` that ``mlflow.<flavor>.log_model`` returns); ``training_set`` is a
        :class:`TrainingSet`, an id or a saved name.

        Example:
            >>> entry = store.log_model("churn", training_set=ts, model=clf, metrics={"auc": 0.91})
            >>> entry.id
            'model:churn@1'
        """
        ts_id = training_set.id if isinstance(training_set, TrainingSet) else str(training_set)
        ts_id = self.registry.training_set_names().get(ts_id, ts_id)
        self.registry.manifest(ts_id)  # unknown id: NotFoundError with suggestions
        entry = log_model(
            self.registry,
            name,
            training_set=ts_id,
            model=model,
            metrics=metrics,
            params=params,
            mlflow_run_id=mlflow_run_id,
            description=description,
            tags=tags,
        )
        self._lineage.after_log_model(entry)
        return entry

    def models(self, name: str | None = None) -> list[ModelRecord]:
        """Model entries (of one model, or all), by name then version."""
        from featurekit.offline.models import model, models

        if name is not None:
            model(self.registry, name)  # unknown name: NotFoundError with suggestions
        return models(self.registry, name)

    def lineage(
        self,
        node: str | None = None,
        *,
        upstream: bool = True,
        downstream: bool = True,
        depth: int | None = None,
    ) -> LineageGraph:
        """Lineage around ``node`` (or the whole store when None) as a :class:`LineageGraph`.

        Node ids: ``source:trips@v12``, ``column:trips@v12:fare``, ``view:driver_stats@3``,
        ``feature:driver_stats@3:conv``, ``training_set:<id or name>``, ``model:churn@2``;
        leave out ``@version`` for the latest.

        Example:
            >>> graph = store.lineage("model:churn")
            >>> graph.raw_columns("model:churn@1"); graph.stale_models()
        """
        return self._lineage.graph(node, upstream=upstream, downstream=downstream, depth=depth)

    # ---- internals ------------------------------------------------------------------------
    def _resolve(self, view: FeatureView) -> ResolvedView:
        if not isinstance(view, FeatureView):
            raise DefinitionError(
                f"expected a feature view (decorated with @fk.feature_view), got "
                f"{type(view).__name__}."
            )
        return resolve(view)

    def _requests(
        self,
        features: Sequence[FeatureSpec],
        ttl: Mapping[str, str | timedelta | None],
        as_of: datetime | None,
    ) -> list[ViewRequest]:
        if isinstance(features, str | FeatureView):
            features = [features]
        if not features:
            raise DefinitionError("training_set needs at least one feature.")
        wanted: dict[tuple[str, int], list[str]] = {}
        records: dict[tuple[str, int], VersionRecord] = {}
        for spec in features:
            record, names = self._lookup(spec, as_of)
            key = (record.view, record.version)
            records[key] = record
            bucket = wanted.setdefault(key, [])
            bucket.extend(n for n in names if n not in bucket)
        for view_name in ttl:
            if view_name not in {v for v, _ in wanted}:
                raise DefinitionError(
                    f"ttl override names view {view_name!r}, which is not requested."
                    f"{did_you_mean(view_name, [v for v, _ in wanted])}"
                )
        out = []
        for key, names in wanted.items():
            record = records[key]
            uri = table_uri(self.root, record.view, record.version)
            pinned = (
                delta.version_at(uri, as_of) if as_of is not None else delta.current_version(uri)
            )
            if pinned is None and as_of is None:
                raise NotFoundError(
                    f"view {record.view!r} version {record.version} has no data yet; "
                    f"run store.materialize({record.view})."
                )
            if record.view in ttl and record.aggregations:
                raise DefinitionError(
                    f"ttl override for {record.view!r}: it is an aggregation view, whose "
                    "windows already bound what it reads."
                )
            if record.view in ttl:
                view_ttl = parse_duration(ttl[record.view], what=f"ttl of {record.view!r}")
            else:
                view_ttl = None if record.ttl_us is None else timedelta(microseconds=record.ttl_us)
            out.append(ViewRequest(record, tuple(names), view_ttl, uri, pinned))
        return out

    def _lookup(self, spec: FeatureSpec, as_of: datetime | None) -> tuple[VersionRecord, list[str]]:
        if isinstance(spec, FeatureView):
            resolved = resolve(spec)
            for record in self.registry.versions(spec.name):
                if record.fingerprint == resolved.fingerprint:
                    return record, list(record.features)
            raise NotFoundError(
                f"the current definition of view {spec.name!r} (fingerprint "
                f"{resolved.fingerprint}) is not in this store; run store.materialize({spec.name})."
            )
        if not isinstance(spec, str):
            raise DefinitionError(
                f"features must be 'view:feature' strings or views, got {type(spec).__name__}."
            )
        ref = FeatureRef.parse(spec)
        if ref.version is None and as_of is not None:
            record = self._latest_at(ref.view, as_of)
        else:
            record = self.registry.version(ref.view, ref.version)
        if ref.feature == "*":
            return record, list(record.features)
        if ref.feature not in record.features:
            raise NotFoundError(
                f"view {record.view!r} version {record.version} has no feature {ref.feature!r}."
                f"{did_you_mean(ref.feature, record.features)}"
            )
        return record, [ref.feature]

    def _latest_at(self, view: str, as_of: datetime) -> VersionRecord:
        records = [r for r in self.registry.versions(view) if r.created_at <= as_of]
        if not records:
            self.registry.version(view)  # unknown view: raises with suggestions
            raise NotFoundError(f"view {view!r} had no version yet at {as_of.isoformat()}.")
        return records[-1]

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}, views={self.views()})"

    def _repr_html_(self) -> str:
        from featurekit.notebook.reprs import store_html

        return store_html(self)


def _as_frame(labels: Any) -> pl.DataFrame:
    if isinstance(labels, pl.DataFrame):
        return labels
    if isinstance(labels, pl.LazyFrame):
        return labels.collect()
    try:
        frame = pl.DataFrame(labels)
    except Exception as err:
        raise DefinitionError(
            f"labels must be a polars/pyarrow/pandas frame, got {type(labels).__name__}."
        ) from err
    return frame


def _progress(label: str, total: int, show: bool | None) -> Progress:
    return Progress(label, total, show=show)


def _advance(bar: Progress, text: str) -> None:
    bar.step(text)
