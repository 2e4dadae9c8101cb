"""``fk.Store``: the one object a user talks to."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from featurekit.core.authoring import FeatureView
from featurekit.core.errors import DefinitionError, NotFoundError, StorageError
from featurekit.core.on_demand import OnDemandFeature
from featurekit.core.timeutil import to_utc_datetime
from featurekit.kernels.pit import PointInTime
from featurekit.lineage.graph import LineageGraph
from featurekit.lineage.service import StoreLineage
from featurekit.notebook.progress import Progress
from featurekit.offline.batching import parse_size
from featurekit.offline.engine import LOCAL, Runner
from featurekit.offline.materialize import MaterializeResult, materialize, register, table_uri
from featurekit.offline.models import ModelRecord, log_model
from featurekit.offline.planner import Catalog, Planner
from featurekit.offline.ray_engine import runner_for
from featurekit.offline.resolve import ResolvedView, resolve
from featurekit.offline.services import FeatureService
from featurekit.offline.training import TrainingSet, build, rebuild
from featurekit.project.definitions import Definitions
from featurekit.project.sources import save_source
from featurekit.storage import delta
from featurekit.storage.registry import Registry, VersionRecord
from featurekit.storage.runs import RunRecord, runs

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
    written and synced in batches of entity keys. When it is set, a training set larger
    than it is written to the store as it is produced and read lazily (``ts.scan()``; see
    docs/scale.md). ``engine="ray"`` (or ``"ray://host:port"``) runs a training set's
    per-bucket joins as Ray tasks, with the same ids and rows (``featurekit[ray]``).
    ``definitions`` (an ``fk.Definitions``,
    or a list of on-demand features and services) gives the code of on-demand features
    and services the registry records by fingerprint only (needed to rebuild training
    sets that use them, or to serve services by name).

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
        definitions: Definitions | Catalog | Iterable[OnDemandFeature | FeatureService] = (),
        engine: str = "local",
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
        # materialization streams in batches above this budget
        self.memory_budget = parse_size(memory_budget)
        #: where a training set's per-bucket joins run: here, or on a Ray cluster
        self.engine = engine
        self._runner: Runner = LOCAL if engine == "local" else runner_for(engine)
        self.registry = Registry(self.root, create=create)
        # lineage: recorded as a side effect; optionally emitted as OpenLineage
        self._lineage = StoreLineage(self.registry, lineage_emitter)
        # online serving: opened on first use, so a Store costs nothing until then
        self._online_spec = online
        self._online_service: OnlineService | None = None
        #: the project's declared definitions (``fk.Definitions``), when it was given them
        self.definitions = definitions if isinstance(definitions, Definitions) else None
        if isinstance(definitions, Definitions):
            catalog = definitions.catalog()
        elif isinstance(definitions, Catalog):
            catalog = definitions
        else:
            catalog = Catalog(definitions)
        #: plans every feature request (training sets, online lookups, the server)
        self.planner = Planner(self.registry, catalog)

    # ---- definitions ----------------------------------------------------------------------
    def register(self, view: FeatureView) -> VersionRecord:
        """Record the view's current definition as a version (idempotent); computes nothing."""
        resolved = self._resolve(view)
        record = register(self.registry, resolved)
        self._keep_source(resolved)
        return record

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
        bar = Progress(f"materialize {view.name}", 3, show=show)
        budget = parse_size(memory_budget) or self.memory_budget
        try:
            result = materialize(
                self.registry,
                resolved,
                start=None if start is None else to_utc_datetime(start, what="start"),
                end=None if end is None else to_utc_datetime(end, what="end"),
                full_refresh=full_refresh,
                step=bar.step,
                memory_budget=budget,
                before_commit=self._online_check(),
            )
        finally:
            bar.close()
        self._keep_source(resolved)
        self._lineage.after_materialize(resolved, result, sources)  # the commit is done
        self._sync_online(result, budget)  # after the commit; a no-op run repairs a lagging store
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

    def runs(self, name: str, version: int | None = None) -> list[RunRecord]:
        """Materialization runs of a view version (from its Delta commit log), oldest first.

        Example:
            >>> [(r.delta_version, r.mode, r.rows_written) for r in store.runs("driver_stats")]
        """
        record = self.registry.version(name, version)
        return runs(table_uri(self.root, name, record.version))

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

    def optimize(
        self, view: FeatureView | str, version: int | None = None, *, buckets: int | None = None
    ) -> OptimizeResult:
        """Compact a view version's table into globally sorted files.

        After many incremental runs a table is many small per-run files; this rewrites the
        latest Delta version's rows in (keys, event time) order in one commit, so training
        sets read it without re-sorting. It changes no training set: the rows are the
        same, and older versions stay readable for training sets pinned to them.
        ``buckets=N`` (a power of two) also splits the table into ``N`` buckets of entity
        keys, which later runs keep (docs/scale.md).

        Example:
            >>> store.optimize("driver_stats", buckets=16)
        """
        from featurekit.offline.optimize import optimize

        name = view.name if isinstance(view, FeatureView) else view
        return optimize(self.registry, name, version, buckets=buckets)

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
        plan = self.planner.plan(features, columns=frame.columns, as_of=when, ttl=ttl, pin=True)
        requests = plan.views
        show = self.progress if progress is None else progress
        bar = Progress("training set", 2, show=show if frame.height >= LONG_TRAINING_SET else False)
        try:
            bar.step(f"joining {len(requests)} views onto {frame.height:,} labels")
            ts = build(
                self.registry,
                frame,
                timestamp=timestamp,
                requests=requests,
                point_in_time=point_in_time,
                as_of=when,
                on_demand=plan.hook(),
                memory_budget=self.memory_budget,
                runner=self._runner,
            )
            bar.step("recording lineage")
        finally:
            bar.close()
        self._lineage.after_training_set(ts)
        return ts

    def training_set_by_id(
        self, ts_id: str, *, on_demand: Sequence[OnDemandFeature] = ()
    ) -> TrainingSet:
        """Rebuild a recorded training set (by id or saved name) and verify it is identical.

        A set with on-demand features needs their code: pass the decorated objects in
        ``on_demand=``, or give them to the store as ``definitions`` (a store also keeps
        the ones it was handed in earlier requests).
        """
        names = self.registry.training_set_names()
        manifest = self.registry.manifest(names.get(ts_id, ts_id))
        for feature in on_demand:
            self.planner.catalog.add(feature)
        hook = self.planner.rebuild_hook(manifest)
        return rebuild(
            self.registry,
            manifest,
            on_demand=hook,
            memory_budget=self.memory_budget,
            runner=self._runner,
        )

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
                    "rows": m.result_rows,
                    "views": [v.ref for v in m.views],
                    "created_at": m.created_at.isoformat(),
                }
            )
        return out

    # ---- definitions the registry cannot hold ---------------------------------------------
    def add_definitions(self, definitions: Iterable[OnDemandFeature | FeatureService]) -> None:
        """Give this store the code of on-demand features and services; record services.

        Services are registered (by content: re-adding an unchanged one is a no-op), so a
        server can answer ``feature_service`` requests by name.

        Example:
            >>> store.add_definitions([fare_ratio, pricing])
        """
        for obj in definitions:
            if isinstance(obj, FeatureService):
                self.planner.register_service(obj)
            else:
                self.planner.catalog.add(obj)

    # ---- online serving (logic lives in featurekit.online) --------------------------------
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
                ``expired``: older than the TTL, values null; ``not_found``); the prefix is
                ``<view>@<N>`` when two versions of a view are requested.
            at: the lookup instant (default now; not before the latest materialization).

        Example:
            >>> store.get_online_features(["driver_stats:conv_rate"], {"driver_id": [1, 2]})
        """
        service = self.online_service()
        when = None if at is None else to_utc_datetime(at, what="at")
        return service.lookup(features, entities, with_metadata=with_metadata, at=when).frame

    @property
    def online(self) -> OnlineStore:
        """The online store (embedded SQLite under ``<root>/online/`` unless configured)."""
        return self.online_service().online

    def online_service(self) -> OnlineService:
        """The online lookup service of this store (opened on first use, then shared).

        The HTTP server answers through it; ``get_online_features`` is its ``lookup``.
        """
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
            self._online_service = OnlineService(self.planner, store)
        return self._online_service

    def _online_check(self) -> Callable[[VersionRecord, pl.Schema], None] | None:
        """What materialize checks before its commit so that the online sync cannot fail."""
        if self._online_spec is False:
            return None
        from featurekit.online.sync import check_syncable

        self.online_service()  # a misconfigured online store fails here, before anything is written
        return check_syncable

    def _sync_online(self, result: MaterializeResult, budget: int | None) -> None:
        if self._online_spec is False:
            return
        from featurekit.online.sync import sync_materialized

        sync_materialized(self.registry, self.online_service().online, result, memory_budget=budget)

    # ---- models and lineage -----------------------------------------------------------
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
    def _keep_source(self, resolved: ResolvedView) -> None:
        """Keep the normalized source of a registered version, so `featurekit plan` can
        diff a later change against it (a no-op once kept)."""
        save_source(
            self.registry, "view", resolved.name, resolved.view, str(resolved.parts["code"])
        )

    def _resolve(self, view: FeatureView) -> ResolvedView:
        if not isinstance(view, FeatureView):
            raise DefinitionError(
                f"expected a feature view (decorated with @fk.feature_view), got "
                f"{type(view).__name__}."
            )
        return resolve(view)

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
