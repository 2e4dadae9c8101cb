"""``fk.Store``: the one object a user talks to."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from featurekit.core.authoring import FeatureView
from featurekit.core.definitions import Entity
from featurekit.core.errors import DefinitionError, NotFoundError, StorageError
from featurekit.core.on_demand import OnDemandFeature
from featurekit.core.timeutil import parse_duration, to_utc_datetime
from featurekit.kernels.pit import PointInTime
from featurekit.lineage.graph import LineageGraph
from featurekit.lineage.service import StoreLineage
from featurekit.notebook.progress import Progress
from featurekit.offline.batching import parse_size
from featurekit.offline.deletion import VacuumReport, check_rebuildable
from featurekit.offline.engine import LOCAL, Runner
from featurekit.offline.materialize import MaterializeResult, materialize, register
from featurekit.offline.models import ModelRecord, log_model
from featurekit.offline.planner import Catalog, Planner
from featurekit.offline.quality import save_training_stats
from featurekit.offline.ray_engine import runner_for
from featurekit.offline.resolve import ResolvedView, resolve
from featurekit.offline.services import FeatureService
from featurekit.offline.training import TrainingSet, build, rebuild
from featurekit.project.definitions import Definitions
from featurekit.project.sources import save_source
from featurekit.storage import delta
from featurekit.storage.records import DeletionEvent
from featurekit.storage.registry import Registry, VersionRecord
from featurekit.storage.roots import options_for_root, parse_root
from featurekit.storage.runs import RunRecord, runs

if TYPE_CHECKING:
    from featurekit.kernels.drift import DriftThresholds
    from featurekit.offline.monitoring import SkewReport, ViewDrift
    from featurekit.offline.optimize import OptimizeResult
    from featurekit.online.lookup import OnlineService
    from featurekit.online.push import Pusher, PushResult
    from featurekit.online.serving_log import ServingLog
    from featurekit.online.stores import OnlineStore

FeatureSpec = str | FeatureView | OnDemandFeature | FeatureService
#: Labels with at least this many rows get a progress bar in ``training_set``.
LONG_TRAINING_SET = 100_000


class Store:
    """A feature store rooted at one folder or object-storage URI: registry, Delta tables, training sets.

    The root is a local folder or ``s3://``, ``gs://``, ``az://``/``abfss://`` URI, with
    ``storage_options`` (delta-rs/object_store option names, credentials included) used for
    every object and table under it; without ``storage_options`` a remote root takes them
    from ``FEATUREKIT_STORAGE_OPTIONS`` (a JSON object), else the backends' usual
    environment variables and credential chains. It is created if missing (``create=False`` opens an
    existing store only). ``online`` picks the online store: ``None`` means the embedded
    SQLite file for a local root and *off* for a remote one (SQLite cannot live on object
    storage); ``"redis://…"``, a local SQLite file path, an :class:`OnlineStore`, or
    ``False`` (off).
    ``progress=False`` turns off progress bars (default: on, unless the environment sets
    ``FEATUREKIT_PROGRESS=0``). ``memory_budget`` (e.g. ``"4GiB"``; default 8 GiB) bounds
    a materialization run's memory, its online sync included: larger inputs are computed,
    written and synced in batches of entity keys. When it is set, a training set larger
    than it is written to the store as it is produced and read lazily (``ts.scan()``; see
    docs/scale.md). ``engine="ray"`` (or ``"ray://host:port"``) runs a training set's
    per-bucket joins, and the materialization of entity-local views of bucketed tables,
    as Ray tasks, with the same ids and rows (``featurekit[ray]``).
    ``definitions`` (an ``fk.Definitions``,
    or a list of on-demand features and services) gives the code of on-demand features
    and services the registry records by fingerprint only (needed to rebuild training
    sets that use them, or to serve services by name). ``log_serving`` (True, or a sample
    rate such as ``0.1``) appends online lookups to the store's serving log in the
    background (see :meth:`close`), for ``drift(current="serving")`` and :meth:`skew`.

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
        log_serving: bool | float = False,
        engine: str = "local",
    ) -> None:
        self.root: Path | str = parse_root(root)
        self.storage_options = options_for_root(self.root, storage_options)
        remote = isinstance(self.root, str)
        if remote and online is None and not os.environ.get("FEATUREKIT_ONLINE", "").strip():
            # explicit for remote roots (an argument or FEATUREKIT_ONLINE): nothing puts
            # SQLite on object storage
            online = False
        self.progress = progress
        # materialization streams in batches above this budget
        self.memory_budget = parse_size(memory_budget)
        #: where a training set's per-bucket joins run: here, or on a Ray cluster
        self.engine = engine
        self._runner: Runner = LOCAL if engine == "local" else runner_for(engine)
        self.registry = Registry(self.root, create=create, storage_options=self.storage_options)
        # lineage: recorded as a side effect; optionally emitted as OpenLineage
        self._lineage = StoreLineage(self.registry, lineage_emitter)
        # online serving: opened on first use, so a Store costs nothing until then
        self._online_spec = online
        self._online_service: OnlineService | None = None
        self._log_serving = float(log_serving)  # 0.0: off; else the sample rate
        self._serving_log: ServingLog | None = None
        self._pusher: Pusher | None = None
        # one Pusher per store even when the first pushes race (the HTTP server's threads):
        # concurrent pushes are grouped into one Delta commit only through the same Pusher
        self._pusher_lock = threading.Lock()
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
                runner=self._runner,
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
        uri = self.registry.layout.table_uri(name, record.version)
        return runs(uri, self.storage_options)

    def read(self, name: str, version: int | None = None) -> pl.DataFrame:
        """The stored rows of a view version (latest Delta version)."""
        record = self.registry.version(name, version)
        uri = self.registry.layout.table_uri(name, record.version)
        current = delta.current_version(uri, self.storage_options)
        if current is None:
            raise NotFoundError(
                f"view {name!r} version {record.version} has no data yet; run store.materialize."
            )
        return delta.read_rows(uri, version=current, storage_options=self.storage_options)

    # ---- data quality and monitoring ------------------------------------------------------
    def stats(
        self,
        view: FeatureView | str | TrainingSet,
        version: int | None = None,
        run: str | int | None = None,
    ) -> pl.DataFrame:
        """Per-feature statistics of one materialization run (default: the latest run).

        Computed while the run wrote its rows (no second read): one row per stored value
        column with ``count``, ``nulls``, ``nans``, ``min``, ``max``, ``mean``, ``std``,
        quantiles ``p01``..``p99``, ``distinct``, a histogram (numeric) or top values
        (categorical), then the run: ``run_id``, ``delta_version``, ``mode``,
        ``computed_at``, ``rows``. ``run`` is a run id or a Delta version of the table.
        Given a training set, the statistics of its features recorded when it was built
        (the training baseline), with ``view``, ``version`` and its ``column``.

        Example:
            >>> store.stats("driver_stats").select("feature", "mean", "p50")
            >>> store.stats(ts)  # the training baseline
        """
        from featurekit.offline.quality import StatsTable, read_table

        if isinstance(view, TrainingSet):
            found = read_table(self.registry.layout.training_set_uri(view.id, "stats"))
            if found is None:
                raise NotFoundError(f"training set {view.id!r} has no recorded statistics.")
            return StatsTable(found)
        name = view.name if isinstance(view, FeatureView) else view
        record = self.registry.version(name, version)
        frame = read_table(self.registry.layout.stats_uri(name, record.version))
        if frame is None:
            raise NotFoundError(
                f"view {name!r} version {record.version} has no statistics yet: they are "
                f"computed by store.materialize({name!r})."
            )
        if run is None:
            top = frame.get_column("delta_version").max()
            return StatsTable(frame.filter(pl.col("delta_version") == top))
        column = "delta_version" if isinstance(run, int) else "run_id"
        picked = frame.filter(pl.col(column) == run)
        if picked.height == 0:
            known = frame.get_column(column).unique(maintain_order=True).to_list()
            raise NotFoundError(
                f"view {name!r} version {record.version} has no statistics for run {run!r}; "
                f"runs with statistics ({column}): {known}."
            )
        return StatsTable(picked)

    def drift(
        self,
        view: FeatureView | str,
        reference: TrainingSet | str | tuple[Any, Any],
        current: tuple[Any, Any] | str = "serving",
        *,
        features: Sequence[str] | None = None,
        thresholds: DriftThresholds | None = None,
    ) -> ViewDrift:
        """Drift of a view's features from a reference sample to a current one.

        Args:
            view: the view (its latest version, or the one the training set read).
            reference: a training set (object, id or saved name: its values of the view's
                features) or an event-time range ``(start, end)`` of the stored rows.
            current: an event-time range ``(start, end)``, or ``"serving"``: the values
                logged by lookups (``Store(log_serving=True)``, ``serve --log-features``).
            features: the features to compare (default: every numeric or categorical one).
            thresholds: when a metric counts as drift (default ``fk.DriftThresholds()``).

        Returns:
            An ``fk.DriftReport`` (PSI and KS per numeric feature, PSI and Jensen-Shannon
            per categorical one; ``.to_polars()``, ``.drifted``), drawn in Jupyter as
            reference vs current per feature. It is also logged for the metrics.

        Example:
            >>> report = store.drift("driver_stats", reference=ts, current=(monday, today))
            >>> report.drifted_features
        """
        from featurekit.offline.monitoring import save_drift, view_drift, view_rows

        name = view.name if isinstance(view, FeatureView) else view
        version: int | None = None
        if isinstance(reference, tuple):
            ref_rows = view_rows(self.registry, name, None, *reference)
            ref_label = f"{name} from {reference[0]} to {reference[1]}"
        else:
            ts = reference if isinstance(reference, TrainingSet) else self._training_set(reference)
            entries = [v for v in ts.manifest.views if v.view == name]
            if not entries:
                read = ", ".join(v.ref for v in ts.manifest.views)
                raise NotFoundError(
                    f"training set {ts.id!r} has no features of view {name!r} (it read {read})."
                )
            entry = entries[-1]
            version = entry.version
            columns = entry.columns or list(entry.features)
            ref_rows = ts.to_polars().select(
                pl.col(c).alias(f) for c, f in zip(columns, entry.features, strict=True)
            )
            ref_label = f"training set {ts.id}"
        if isinstance(current, tuple):
            cur_rows = view_rows(self.registry, name, version, *current)
            cur_label = f"{name} from {current[0]} to {current[1]}"
        elif current == "serving":
            cur_rows = self._served_values(name, version)
            cur_label = "serving log"
        else:
            raise DefinitionError(
                f"drift: current must be an event-time range (start, end) or 'serving', got "
                f"{current!r}."
            )
        record = self.registry.version(name, version)
        report = view_drift(
            name,
            ref_rows,
            cur_rows,
            list(features) if features is not None else list(record.features),
            thresholds=thresholds,
            labels=(ref_label, cur_label),
        )
        save_drift(self.registry.layout, report)
        return report

    def skew(
        self, since: datetime | date | str | None = None, *, view: str | None = None
    ) -> SkewReport:
        """Replay logged lookups through ``training_set`` at their lookup instants; compare.

        Online lookups answer what a training set with labels at the lookup instant would
        hold, so by construction nothing differs. Every value that does is reported with
        the reason when it can be named: a stale online snapshot (the offline store has a
        newer row than the one served), a TTL that expired online only, a row served online
        that the offline store no longer knows at that instant, and the served version when
        it is not the view's latest. Each view version's replay is a recorded training set
        (``report.training_sets``).

        Example:
            >>> report = store.skew(since="2026-01-01")
            >>> report.count, report.to_polars().select("feature", "reason")
        """
        from featurekit.offline.monitoring import SKEW_SCHEMA, SkewReport, skew_rows

        log = self.serving_log(since)
        if view is not None:
            log = log.filter(pl.col("view") == view)
        differences: list[dict[str, Any]] = []
        built = []
        for (name, version), group in log.group_by("view", "version", maintain_order=True):
            record = self.registry.version(str(name), int(version))  # type: ignore[call-overload]
            stored = self._stored_times(record)
            labels = (
                pl.DataFrame([orjson.loads(e) for e in group["entity"]])
                .select(record.keys)
                .cast({k: stored.schema[k] for k in record.keys})
                .with_columns(group["lookup_at"].alias("lookup_at"))
            )
            features = list(orjson.loads(group["features"][0]))
            ts = self.training_set(
                labels,
                features=[f"{name}@{version}:{f}" for f in features],
                timestamp="lookup_at",
                progress=False,
            )
            built.append(ts.id)
            entry = ts.manifest.views[0]
            columns = dict(zip(entry.features, entry.columns or entry.features, strict=True))
            newest = (
                labels.with_row_index("__row")
                .sort("lookup_at")
                .join_asof(
                    stored.sort(record.timestamp),
                    left_on="lookup_at",
                    right_on=record.timestamp,
                    by=record.keys,
                    strategy="backward",
                    check_sortedness=False,  # both sides are sorted by time
                )
                .sort("__row")
                .get_column(record.timestamp)
                .to_list()
            )
            latest = self.registry.versions(str(name))[-1].version
            differences += skew_rows(group, ts.to_polars(), columns, newest, latest)
        frame = pl.DataFrame(differences, schema=SKEW_SCHEMA)
        return SkewReport(_value_count(log), frame, tuple(built))

    def _stored_times(self, record: VersionRecord) -> pl.DataFrame:
        """Keys and event times of a view version's stored rows (UTC), for skew reasons."""
        uri = self.registry.layout.table_uri(record.view, record.version)
        current = delta.current_version(uri)
        if current is None:
            raise NotFoundError(f"view {record.view!r} version {record.version} has no data.")
        rows = delta.read_rows(uri, version=current, columns=[*record.keys, record.timestamp])
        return rows.with_columns(pl.col(record.timestamp).cast(pl.Datetime("us", "UTC")))

    def _training_set(self, ts_id: str) -> TrainingSet:
        """A recorded training set by id or saved name (its saved rows when it has them)."""
        return self.training_set_by_id(ts_id)

    def _served_values(self, name: str, version: int | None) -> pl.DataFrame:
        """The feature values lookups served from a view (present rows of the serving log)."""
        log = self.serving_log().filter((pl.col("view") == name) & (pl.col("status") == "present"))
        if version is not None:
            log = log.filter(pl.col("version") == version)
        if log.height == 0:
            raise NotFoundError(
                f"view {name!r}: the serving log holds no values of it; log lookups with "
                "fk.Store(root, log_serving=True) or `featurekit serve --log-features`."
            )
        values = pl.DataFrame([orjson.loads(v) for v in log["features"]])
        return values.select(c for c in values.columns if c in self.registry.version(name).features)

    def quarantine(self, view: FeatureView | str, version: int | None = None) -> pl.DataFrame:
        """Rows a view version's error-level checks refused, with ``__fk_failed_checks``.

        Every refused run appends its failing rows (at most 10,000 per run) with its
        ``run_id`` and ``quarantined_at``; nothing of those runs was committed.

        Example:
            >>> store.quarantine("driver_stats").select("driver_id", "__fk_failed_checks")
        """
        from featurekit.offline.quality import read_table

        name = view.name if isinstance(view, FeatureView) else view
        layout = self.registry.layout
        if version is None:  # the newest, also a version refused before its first commit
            newest = max((r.version for r in self.registry.versions(name)), default=0) + 1
            tried = range(newest, 0, -1)
        else:
            tried = range(version, version - 1, -1)
        for number in tried:
            frame = read_table(layout.quarantine_uri(name, number))
            if frame is not None:
                return frame
        which = "any version" if version is None else f"version {version}"
        raise NotFoundError(f"view {name!r} has no quarantined rows in {which}.")

    def optimize(
        self, view: FeatureView | str, version: int | None = None, *, buckets: int | None = None
    ) -> OptimizeResult:
        """Compact a view version's table into globally sorted files.

        After many incremental runs a table is many small per-run files; this rewrites the
        latest Delta version's rows in (keys, event time) order in one commit, so training
        sets read it without re-sorting. It changes no training set: the rows are the
        same, and older versions stay readable for training sets pinned to them.
        ``buckets=N`` (a power of two) also splits the table into ``N`` buckets of entity
        keys, which later runs keep (docs/scale.md). A table bigger than the store's
        ``memory_budget`` allows is rewritten in parts of entity keys, into the same one commit.

        Example:
            >>> store.optimize("driver_stats", buckets=16)
        """
        from featurekit.offline.optimize import optimize

        name = view.name if isinstance(view, FeatureView) else view
        return optimize(
            self.registry, name, version, buckets=buckets, memory_budget=self.memory_budget
        )

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
        # the baseline drift compares against; read in ranges when the set is out of core
        save_training_stats(self.registry.layout, ts, memory_budget=self.memory_budget)
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
        check_rebuildable(self.registry, manifest)  # deleted rows cannot come back
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

    # ---- deletion and retention -----------------------------------------------------------
    def delete(self, entity: Entity | str, keys: Any, *, reason: str) -> DeletionEvent:
        """Delete an entity's keys from every version of every view of it, offline and online.

        One Delta delete (one commit) per table; the online store is rewritten without the
        keys. The event (who, when, why, rows per table; the keys only as a salted hash)
        is recorded in the registry and shows in the lineage. Run :meth:`vacuum` afterwards
        to remove the files that still hold the rows for older table versions.

        Args:
            entity: the entity (or its name) whose keys go.
            keys: ``{"driver_id": [1, 2]}``, a frame of key columns, or a list of values
                (tuples for multi-column keys).
            reason: why (kept in the event), e.g. ``"erasure request 2026-118"``.

        Example:
            >>> event = store.delete(driver, {"driver_id": [42]}, reason="erasure request 118")
            >>> store.vacuum(retain="7d")
        """
        from featurekit.offline.deletion import delete

        name = entity.name if isinstance(entity, Entity) else str(entity)
        columns = list(entity.keys) if isinstance(entity, Entity) else None
        resync = None if self._online_spec is False else self._resync_deleted
        return delete(self.registry, name, columns, keys, reason=reason, resync=resync)

    def vacuum(self, retain: str | timedelta = "7d", *, dry_run: bool = False) -> VacuumReport:
        """Remove data files nothing needs any more; ``dry_run`` lists them with the reason.

        A file stays when the latest version of its table uses it, when a saved training
        set or one behind a logged model pins a version that uses it, or when it is younger
        than ``retain``, unless it held rows removed by :meth:`delete`: those go regardless.

        Example:
            >>> store.vacuum(retain="7d", dry_run=True).to_polars()
        """
        from featurekit.offline.deletion import vacuum

        return vacuum(self.registry, _retention(retain), dry_run=dry_run)

    def deletions(self) -> list[DeletionEvent]:
        """Every recorded deletion event, oldest first."""
        return self.registry.deletions()

    def _resync_deleted(self, view: str, version: int, keys: pl.DataFrame) -> int:
        """Rewrite a view version's online entries; how many of ``keys`` it held before."""
        from featurekit.online.snapshot import encode_key
        from featurekit.online.sync import sync_view

        online = self.online_service().online
        encoded = [encode_key(row) for row in keys.iter_rows()]
        before = online.read([(view, version, encoded)])[0][2]
        if online.meta(view, version) is not None:
            sync_view(
                self.registry, online, view, version, force=True, memory_budget=self.memory_budget
            )
        return sum(value is not None for value in before)

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

    def push(self, view: FeatureView | str, rows: Any, *, version: int | None = None) -> PushResult:
        """Write rows straight to a view: online at once, and appended to its offline table.

        ``rows`` are in the view's output shape: keys, event time and features (for an
        aggregation view, the raw events it aggregates), as a polars DataFrame, a list of
        row mappings or a mapping of column -> values. Each row's created time is set to
        the ingestion time (UTC, this machine's clock): training sets see it from then
        on, never before; lookups see it as soon as ``push`` returns, with the same
        tie rules as training sets (a pushed row older than the served one does not
        replace it). The view's checks run on the rows first. Pushes to one view made
        concurrently from several threads (the HTTP server's, say) may share one Delta
        commit; each returns once its own rows are committed and online. See
        docs/online.md.

        Args:
            view: the view (its registered version) or its name (its latest version).
            rows: the rows to push.
            version: push to this version of a view named by string.

        Example:
            >>> store.push("driver_stats", [{"driver_id": 1, "event_ts": now, "conv_rate": 0.4}])
        """
        from featurekit.online.push import Pusher

        if isinstance(view, FeatureView):
            record, checks = self._push_version(view), tuple(view.checks)
        else:
            record = self.registry.version(view, version)
            declared = self.definitions.views if self.definitions is not None else ()
            checks = next((tuple(v.checks) for v in declared if v.name == record.view), ())
        with self._pusher_lock:
            if self._pusher is None:
                online = None if self._online_spec is False else self.online_service().online
                self._pusher = Pusher(self.registry, online)
        return self._pusher.push(record, rows, checks=checks, memory_budget=self.memory_budget)

    def _push_version(self, view: FeatureView) -> VersionRecord:
        """The registered version of ``view`` to push to, read without the view's lock.

        Registering takes the view's lock, which a push commit holds: pushes that find
        their version already recorded (all but the first) skip it, so they can queue
        behind a running commit and share the next one. Records are written once, so
        reading them unlocked is safe.
        """
        resolved = self._resolve(view)
        found = (
            r for r in self.registry.versions(view.name) if r.fingerprint == resolved.fingerprint
        )
        return next(found, None) or self.register(view)

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
                    f"store {self.registry.layout.shown_root!r} has no online store (online="
                    "False, the default for object-storage roots); open it with "
                    "online='redis://…' or a local SQLite file path to serve features online."
                )
            spec = None if self._online_spec is True else self._online_spec
            store = open_online_store(spec, self.registry.layout)
            self._online_service = OnlineService(self.planner, store)
            if self._log_serving:
                from featurekit.online.serving_log import ServingLog

                uri = self.registry.layout.serving_log_uri()
                self._serving_log = ServingLog(uri, sample=self._log_serving)
                self._online_service.serving_log = self._serving_log
        return self._online_service

    def close(self) -> None:
        """Write the lookups still queued for the serving log and stop its writer.

        Also done at interpreter exit; a crash loses at most the last unwritten batch
        (about a second of lookups). A no-op when lookups are not logged.
        """
        if self._serving_log is not None:
            self._serving_log.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serving_log(self, since: datetime | date | str | None = None) -> pl.DataFrame:
        """Logged lookups (``Store(log_serving=True)``, ``serve --log-features``), oldest first.

        One row per lookup, view and entity: ``request_id``, ``lookup_at``, ``view``,
        ``version``, ``entity`` and ``features`` (JSON), ``status``, ``event_ts``. Lookups
        still queued in this process are written first.

        Example:
            >>> store.serving_log(since="2026-01-01").group_by("view").len()
        """
        from featurekit.online.serving_log import log_schema

        if self._serving_log is not None:
            self._serving_log.flush()
        uri = self.registry.layout.serving_log_uri()
        current = delta.current_version(uri)
        if current is None:
            return pl.DataFrame(schema=log_schema())
        where = None
        if since is not None:
            where = pl.col("lookup_at") >= to_utc_datetime(since, what="since")
        rows = delta.read_rows(uri, version=current, where=where)
        return rows.drop("batch_id", strict=False).sort(
            "lookup_at", "request_id", maintain_order=True
        )

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
        return f"Store({self.registry.layout.shown_root!r}, views={self.views()})"

    def _repr_html_(self) -> str:
        from featurekit.notebook.reprs import store_html

        return store_html(self)


def _retention(retain: str | timedelta) -> timedelta:
    """``retain`` as a duration; zero (``"0s"``, ``"0d"``) is allowed: keep nothing old."""
    if isinstance(retain, str) and re.fullmatch(r"\s*0+\s*[smhdw]?\s*", retain):
        return timedelta(0)
    if isinstance(retain, timedelta) and retain == timedelta(0):
        return retain
    window = parse_duration(retain, what="retain")
    if window is None:
        raise DefinitionError("vacuum needs retain=, e.g. retain='7d'.")
    return window


def _value_count(log: pl.DataFrame) -> int:
    """Feature values in the logged lookups (one per entity and feature)."""
    return sum(len(orjson.loads(v)) for v in log["features"])


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
