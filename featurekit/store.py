"""``fk.Store``: the one object a user talks to."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from featurekit.authoring import FeatureView
from featurekit.definitions import FeatureRef
from featurekit.errors import DefinitionError, NotFoundError, StorageError, did_you_mean
from featurekit.materialize import MaterializeResult, materialize, register, table_uri
from featurekit.pit import PointInTime
from featurekit.resolve import ResolvedView, resolve
from featurekit.storage import delta
from featurekit.storage.registry import Registry, VersionRecord
from featurekit.timeutil import parse_duration, to_utc_datetime
from featurekit.training import TrainingSet, ViewRequest, build, rebuild

FeatureSpec = str | FeatureView


class Store:
    """A feature store rooted at one folder: registry, Delta tables, training sets.

    The root is created if missing (``create=False`` opens an existing store only).
    ``progress=False`` turns off progress bars.

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
        progress: bool = True,
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
        self.registry = Registry(self.root, create=create)

    # ---- definitions ----------------------------------------------------------------------
    def register(self, view: FeatureView) -> VersionRecord:
        """Record the view's current definition as a version (idempotent); computes nothing."""
        return register(self.registry, self._resolve(view))

    def materialize(
        self,
        view: FeatureView,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        full_refresh: bool = False,
        progress: bool | None = None,
    ) -> MaterializeResult:
        """Compute the view and write it to its version's Delta table (incremental by default).

        Upstream views are computed in the same plan; materialize them too if you want
        their features in training sets.
        """
        resolved = self._resolve(view)
        show = self.progress if progress is None else progress
        bar = _progress(f"materialize {view.name}", 3, show)
        try:
            return materialize(
                self.registry,
                resolved,
                start=start,
                end=end,
                full_refresh=full_refresh,
                step=lambda text: _advance(bar, text),
            )
        finally:
            if bar is not None:
                bar.close()

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

    # ---- training sets --------------------------------------------------------------------
    def training_set(
        self,
        labels: pl.DataFrame | pl.LazyFrame | Any,
        features: Sequence[FeatureSpec],
        timestamp: str,
        *,
        ttl: Mapping[str, str | timedelta | None] | None = None,
        as_of: datetime | None = None,
        point_in_time: PointInTime = "knowledge",
    ) -> TrainingSet:
        """Join features onto labels point-in-time correctly; the result is reproducible by id.

        Args:
            labels: entity keys, a label timestamp and any label columns.
            features: ``"view:feature"``, ``"view@3:feature"``, ``"view:*"`` or view objects.
            timestamp: the labels' datetime column.
            ttl: per-view TTL overrides, e.g. ``{"driver_stats": "1d"}``.
            as_of: read every feature table as it stood at this wall-clock time.
            point_in_time: ``"knowledge"`` (default: rows must be known by the label time)
                or ``"event"`` (event time only).
        """
        frame = _as_frame(labels)
        if point_in_time not in ("knowledge", "event"):
            raise DefinitionError(
                f"point_in_time must be 'knowledge' or 'event', got {point_in_time!r}."
            )
        when = to_utc_datetime(as_of) if as_of is not None else None
        requests = self._requests(features, ttl or {}, when)
        return build(
            self.registry,
            frame,
            timestamp=timestamp,
            requests=requests,
            point_in_time=point_in_time,
            as_of=when,
        )

    def training_set_by_id(self, ts_id: str) -> TrainingSet:
        """Rebuild a recorded training set (by id or saved name) and verify it is identical."""
        names = self.registry.training_set_names()
        return rebuild(self.registry, self.registry.manifest(names.get(ts_id, ts_id)))

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
        rows = "".join(
            f"<tr><td>{html.escape(v)}</td><td>{len(self.registry.versions(v))}</td></tr>"
            for v in self.views()
        )
        return (
            f"<div><b>featurekit Store</b> <code>{html.escape(str(self.root))}</code>"
            f"<table><tr><th>view</th><th>versions</th></tr>{rows}</table></div>"
        )


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


def _progress(label: str, total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, leave=False)


def _advance(bar: Any, text: str) -> None:
    if bar is not None:
        bar.set_postfix_str(text)
        bar.update(1)
