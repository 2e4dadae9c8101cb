"""The planner: one place that turns a feature request into what to read and how to name it.

A request is a list of ``"view:feature"``, ``"view@3:feature"``, ``"view:*"`` and
``"on_demand:output"`` strings, view objects, on-demand feature objects and feature
services (objects, or names registered in the store). :meth:`Planner.plan` turns it into a
:class:`FeaturePlan`: which view versions are read (and, for training sets, which Delta
version of each table is pinned and which TTL applies), which features come from each,
what every output column is named, and which on-demand steps run on the joined frame.
Training sets, online lookups and the HTTP server all plan here, so they agree on the
versions, the columns and their order.

Output names (the one rule; docs/pit.md "Output columns"):

- a feature's column is ``feature``;
- it is ``view__feature`` if ``feature`` is also a label (entity) column or is requested
  from another view, and ``view@N__feature`` when the request reads several versions of
  ``view`` (``"v@1:f"`` and ``"v@2:f"`` give ``v@1__f`` and ``v@2__f``);
- a label column that has a generated name, or uses the reserved ``__fk_`` prefix, is
  refused with a :class:`~featurekit.core.errors.SchemaError` naming it, never silently
  overwritten or renamed.

Code the registry cannot hold (on-demand functions, service objects) comes from one
:class:`Catalog` handed to the planner, never from anywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from featurekit.core.authoring import FeatureView
from featurekit.core.config import RESERVED_PREFIX
from featurekit.core.definitions import FeatureRef
from featurekit.core.errors import (
    DefinitionError,
    NotFoundError,
    ReproducibilityError,
    SchemaError,
    did_you_mean,
)
from featurekit.core.names import shown
from featurekit.core.on_demand import OnDemandFeature, OnDemandStep, apply_on_demand
from featurekit.core.timeutil import parse_duration
from featurekit.kernels.pit import ViewFrame, output_names
from featurekit.offline.resolve import resolve
from featurekit.offline.services import (
    FeatureService,
    OnDemandRecord,
    register_service,
    resolve_on_demand,
)
from featurekit.offline.training import ViewRequest, qualifiers
from featurekit.storage import delta
from featurekit.storage.layout import RecordKind
from featurekit.storage.manifest import Manifest, OnDemandEntry
from featurekit.storage.registry import Registry, VersionRecord

__all__ = [
    "Catalog",
    "FeaturePlan",
    "FeatureSpec",
    "Planner",
    "ServiceName",
    "TrainingHook",
]


class ServiceName:
    """A feature service named by string (HTTP requests), resolved when planning."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        return hash(("service", self.name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServiceName) and other.name == self.name

    def __repr__(self) -> str:
        return f"ServiceName({self.name!r})"


FeatureSpec = str | FeatureView | OnDemandFeature | FeatureService | ServiceName


class Catalog:
    """The code a store can run but not read from disk: on-demand functions and services.

    The registry records fingerprints and feature lists, not functions, so a store that
    rebuilds a training set with on-demand features, or a server that answers for a
    service, gets their code here and only here. Definitions come in through
    :meth:`add`: from ``fk.Store(definitions=[...])``, from the server's
    ``--definitions`` modules, and (as the store has always done) from objects passed in
    a request, so a set built with an on-demand feature rebuilds in the same process.

    Example:
        >>> catalog = Catalog([fare_ratio, pricing])
        >>> catalog.on_demand_feature("fare_ratio") is fare_ratio
        True
    """

    def __init__(self, definitions: Iterable[OnDemandFeature | FeatureService] = ()) -> None:
        self._on_demand: dict[str, OnDemandFeature] = {}
        self._services: dict[str, FeatureService] = {}
        for obj in definitions:
            self.add(obj)

    def add(self, obj: OnDemandFeature | FeatureService) -> None:
        """Know a definition (the latest one with a name wins)."""
        if isinstance(obj, OnDemandFeature):
            self._on_demand[obj.name] = obj
        elif isinstance(obj, FeatureService):
            self._services[obj.name] = obj
            for item in obj.features:
                if isinstance(item, OnDemandFeature):
                    self._on_demand[item.name] = item
        else:
            raise DefinitionError(
                "definitions must be on-demand features (@fk.on_demand) or fk.FeatureService, "
                f"got {type(obj).__name__}."
            )

    def on_demand_feature(self, name: str) -> OnDemandFeature | None:
        """The on-demand feature with this name, or None."""
        return self._on_demand.get(name)

    def service(self, name: str) -> FeatureService | None:
        """The service with this name, or None."""
        return self._services.get(name)

    def service_names(self) -> list[str]:
        """Names of the services known here, sorted."""
        return sorted(self._services)

    def services(self) -> list[FeatureService]:
        """The services known here, by name."""
        return [self._services[n] for n in sorted(self._services)]


@dataclass(frozen=True)
class FeaturePlan:
    """What a feature request reads and how its output is named.

    Attributes:
        views: one entry per view version, in the order views are first mentioned, with
            the features wanted from it (request order; on-demand inputs nobody asked for
            last), the TTL that applies, its table and (when pinned) its Delta version.
        columns: output column of every view feature: ``(view, version, feature) -> name``.
        key_columns: entity key columns every caller must provide.
        request_columns: columns on-demand features read from the caller.
        steps: on-demand steps, in request order, wired to the frame's columns.
        drop: helper columns (on-demand inputs nobody asked for) dropped afterwards.
        watch: registry entries (``(kind, name)``) whose change may change this plan:
            views read as "latest", on-demand features, services named by string.
    """

    views: tuple[ViewRequest, ...]
    columns: Mapping[tuple[str, int, str], str]
    key_columns: tuple[str, ...]
    request_columns: tuple[str, ...]
    steps: tuple[OnDemandStep, ...]
    drop: tuple[str, ...]
    watch: tuple[tuple[RecordKind, str], ...]

    def names(self, view: ViewRequest) -> tuple[str, ...]:
        """Output columns of one planned view, in its feature order."""
        record = view.record
        return tuple(self.columns[(record.view, record.version, f)] for f in view.features)

    def hook(self) -> TrainingHook | None:
        """The hook that applies the on-demand steps to a joined frame, or None."""
        return TrainingHook(self.steps, self.drop) if self.steps else None


class TrainingHook:
    """Applies on-demand steps to a joined training frame and describes them for the manifest."""

    def __init__(self, steps: Sequence[OnDemandStep], drop: Sequence[str]) -> None:
        self.steps = list(steps)
        self.drop = list(drop)

    def manifest(self) -> list[OnDemandEntry]:
        """What the manifest (and the training set's id) records about on-demand features."""
        return [
            OnDemandEntry(
                name=s.feature.name,
                version=s.version,
                fingerprint=s.fingerprint,
                inputs=[(a, b) for a, b in s.inputs],
                outputs=list(s.outputs),
                drop=self.drop if i == len(self.steps) - 1 else [],
            )
            for i, s in enumerate(self.steps)
        ]

    def __call__(self, joined: pl.DataFrame) -> pl.DataFrame:
        return apply_on_demand(joined, self.steps, drop=self.drop)


@dataclass(frozen=True)
class _OnDemandUse:
    feature: OnDemandFeature
    record: OnDemandRecord
    outputs: tuple[str, ...]


class Planner:
    """Plans feature requests against one registry, with code from one catalog.

    Example:
        >>> plan = store.planner.plan(["driver_stats:*"], columns=["driver_id", "ts"])
        >>> [(v.record.view, v.record.version, plan.names(v)) for v in plan.views]
    """

    def __init__(self, registry: Registry, catalog: Catalog) -> None:
        self.registry = registry
        self.catalog = catalog

    # ---- single references ------------------------------------------------------------------
    def resolve(
        self, spec: str | FeatureView, as_of: datetime | None = None
    ) -> tuple[VersionRecord, list[str]]:
        """The view version a reference means and the features it names.

        An unpinned string means the latest version (at ``as_of``, when given); a view
        object means the version of its current definition, whatever ``as_of`` is.
        """
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

    # ---- services ---------------------------------------------------------------------------
    def register_service(self, service: FeatureService) -> list[str]:
        """Know ``service`` and record it in the registry (a no-op when unchanged)."""
        self.catalog.add(service)
        return register_service(self.registry, service, lambda spec: self.resolve(spec))

    def service_features(self, name: str) -> list[Any]:
        """The feature list of a service known to the catalog or registered in the store."""
        known = self.catalog.service(name)
        if known is not None:
            return list(known.features)
        records = self.registry.service_versions(name)
        if not records:
            names = set(self.registry.service_names()) | set(self.catalog.service_names())
            raise NotFoundError(f"no feature service named {name!r}.{did_you_mean(name, names)}")
        return list(records[-1].features)

    # ---- plans ------------------------------------------------------------------------------
    def plan(
        self,
        features: FeatureSpec | Sequence[FeatureSpec],
        *,
        columns: Sequence[str],
        as_of: datetime | None = None,
        ttl: Mapping[str, str | timedelta | None] | None = None,
        pin: bool = False,
    ) -> FeaturePlan:
        """Plan a request whose caller provides ``columns`` (labels or entities).

        Args:
            features: what to return (see the module docstring).
            columns: the caller's columns; features are named around them.
            as_of: resolve unpinned references, and pin tables, as of this instant.
            ttl: per-view TTL overrides (training sets).
            pin: pin each table's Delta version (training sets; online reads snapshots).

        Raises:
            DefinitionError: an empty request, a bad TTL override or a bad reference.
            NotFoundError: an unknown view, version, feature, service or on-demand output.
            SchemaError: a caller column collides with a generated or reserved name.
        """
        watch: list[tuple[RecordKind, str]] = []
        if isinstance(features, ServiceName):
            watch.append(("service", features.name))
            features = self.service_features(features.name)
        items = self._flatten(features)
        if not items:
            raise DefinitionError(
                "no features requested; pass at least one feature, e.g. ['view:feature']."
            )
        view_specs: list[Any] = []
        uses: dict[str, tuple[OnDemandFeature, OnDemandRecord, list[str]]] = {}
        for item in items:
            feature, wanted = self._as_on_demand(item)
            if feature is None:
                view_specs.append(item)
                if isinstance(item, str):
                    ref = FeatureRef.parse(item)
                    if ref.version is None:
                        watch.append(("view", ref.view))
                continue
            record = resolve_on_demand(self.registry, feature)
            watch.append(("on_demand", feature.name))
            watch.extend(("view", r.view) for r in feature.input_refs if r.version is None)
            if wanted != "*" and wanted not in record.outputs:
                raise NotFoundError(
                    f"on-demand feature {feature.name!r} version {record.version} has no output "
                    f"{wanted!r}.{did_you_mean(wanted, record.outputs)}"
                )
            _, _, outs = uses.setdefault(feature.name, (feature, record, []))
            outs.extend(o for o in (record.outputs if wanted == "*" else [wanted]) if o not in outs)
        merged: dict[tuple[str, int], tuple[VersionRecord, list[str]]] = {}
        for spec in view_specs:
            view, wanted_features = self.resolve(spec, as_of)
            _, bucket = merged.setdefault((view.view, view.version), (view, []))
            bucket.extend(n for n in wanted_features if n not in bucket)
        hidden: list[tuple[str, int, str]] = []
        for _, used, _ in uses.values():
            for pinned in used.inputs:
                ref = FeatureRef.parse(pinned)
                key = (ref.view, ref.version or 0)
                requested = key in merged and ref.feature in merged[key][1]
                if not requested and (*key, ref.feature) not in hidden:
                    hidden.append((*key, ref.feature))
        for view_name, version, input_name in hidden:
            pinned_view = self.registry.version(view_name, version)
            _, bucket = merged.setdefault((view_name, version), (pinned_view, []))
            bucket.append(input_name)
        names = _output_columns(columns, [(r, tuple(f)) for r, f in merged.values()])
        requests = self._requests(list(merged.values()), ttl or {}, as_of, pin)
        steps = [
            OnDemandStep(
                f,
                r.version,
                r.fingerprint,
                tuple(_input_column(ref, names) for ref in r.inputs),
                tuple(o),
            )
            for f, r, o in uses.values()
        ]
        drop = tuple(names[h] for h in hidden)
        keys = tuple(dict.fromkeys(k for r, _ in merged.values() for k in r.keys))
        request = tuple(dict.fromkeys(c for f, _, _ in uses.values() for c in f.request_columns))
        return FeaturePlan(
            views=tuple(requests),
            columns=names,
            key_columns=keys,
            request_columns=request,
            steps=tuple(steps),
            drop=drop,
            watch=tuple(dict.fromkeys(watch)),
        )

    def rebuild_hook(self, manifest: Manifest) -> TrainingHook | None:
        """The hook that re-applies a recorded training set's on-demand features, or None.

        The catalog's code must be the code that built the set (same code fingerprint as
        the recorded version), or the rebuild is refused.
        """
        if not manifest.on_demand:
            return None
        steps = []
        drop: list[str] = []
        for entry in manifest.on_demand:
            name, version = entry.name, entry.version
            feature = self.catalog.on_demand_feature(name)
            recorded = next(
                (r for r in self.registry.on_demand_versions(name) if r.version == version), None
            )
            needed = str(recorded.parts.get("code")) if recorded is not None else "unrecorded"
            wanted = (
                f"on-demand feature {name!r} version {version} (fingerprint "
                f"{entry.fingerprint}, code fingerprint {needed})"
            )
            if feature is None:
                raise ReproducibilityError(
                    f"training set {manifest.id!r} needs {wanted}, whose code is not loaded in "
                    f"this process. Add it to the store's definitions (fk.Definitions("
                    f"on_demand=[{name}]) or Store(definitions=[...])), or pass it: "
                    f"store.training_set_by_id({manifest.id!r}, on_demand=[{name}])."
                )
            loaded = feature.code_fingerprint()
            if recorded is None or needed != loaded:
                raise ReproducibilityError(
                    f"training set {manifest.id!r} needs {wanted}, but the {name!r} loaded here "
                    f"has code fingerprint {loaded}: it is not the code that built this "
                    "training set. Load that code (e.g. check out the commit that built it)."
                )
            steps.append(
                OnDemandStep(
                    feature,
                    version,
                    entry.fingerprint,
                    tuple((a, b) for a, b in entry.inputs),
                    tuple(entry.outputs),
                )
            )
            drop.extend(entry.drop)
        return TrainingHook(steps, drop)

    # ---- internals --------------------------------------------------------------------------
    def _flatten(self, specs: Any) -> list[Any]:
        """The request with services replaced by their features (objects join the catalog)."""
        if isinstance(specs, str | FeatureView | OnDemandFeature | FeatureService | ServiceName):
            specs = [specs]
        out: list[Any] = []
        for spec in specs:
            if isinstance(spec, FeatureService):
                self.catalog.add(spec)
                out.extend(spec.features)
            elif isinstance(spec, ServiceName):
                out.extend(self.service_features(spec.name))
            else:
                if isinstance(spec, OnDemandFeature):
                    self.catalog.add(spec)
                out.append(spec)
        return out

    def _as_on_demand(self, item: Any) -> tuple[OnDemandFeature | None, str]:
        if isinstance(item, OnDemandFeature):
            return item, "*"
        if not isinstance(item, str):
            return None, ""
        ref = FeatureRef.parse(item)
        if self.registry.versions(ref.view):
            return None, ""
        feature = self.catalog.on_demand_feature(ref.view)
        if feature is not None:
            if ref.version is not None:
                record = resolve_on_demand(self.registry, feature)
                if record.version != ref.version:
                    raise NotFoundError(
                        f"{item!r}: on-demand feature {ref.view!r} loaded here is version "
                        f"{record.version}; only the loaded version can run."
                    )
            return feature, ref.feature
        if self.registry.on_demand_versions(ref.view):
            raise NotFoundError(
                f"on-demand feature {ref.view!r} is registered in this store, but its code is "
                "not loaded in this process; pass the decorated object (or a FeatureService "
                "holding it), or start the server with --definitions pointing at the module "
                "that defines it."
            )
        return None, ""  # not on-demand: the view lookup raises a clear NotFoundError

    def _requests(
        self,
        merged: Sequence[tuple[VersionRecord, list[str]]],
        ttl: Mapping[str, str | timedelta | None],
        as_of: datetime | None,
        pin: bool,
    ) -> list[ViewRequest]:
        requested = list(dict.fromkeys(r.view for r, _ in merged))
        for view_name in ttl:
            if view_name not in requested:
                raise DefinitionError(
                    f"ttl override names view {view_name!r}, which is not requested."
                    f"{did_you_mean(view_name, requested)}"
                )
        labels = qualifiers([(r.view, r.version) for r, _ in merged])
        out = []
        for (record, names), label in zip(merged, labels, strict=True):
            uri = self.registry.layout.table_uri(record.view, record.version)
            options = self.registry.storage_options
            pinned: int | None = None
            if pin:
                pinned = (
                    delta.version_at(uri, as_of, options)
                    if as_of is not None
                    else delta.current_version(uri, options)
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
            out.append(ViewRequest(record, tuple(names), view_ttl, uri, pinned, label))
        return out


def _output_columns(
    caller: Sequence[str], views: Sequence[tuple[VersionRecord, tuple[str, ...]]]
) -> dict[tuple[str, int, str], str]:
    """(view, version, feature) -> output column, by the rule of the module docstring.

    The names come from the kernel's own rule (:func:`featurekit.kernels.pit.output_names`)
    applied to each view's qualifier, so the plan and the joined frame cannot disagree.
    """
    for column in caller:
        if column.startswith(RESERVED_PREFIX):
            raise SchemaError(
                f"column {shown(column)} uses the prefix {RESERVED_PREFIX!r}, which featurekit "
                "reserves for its internal columns; rename it."
            )
    labels = qualifiers([(r.view, r.version) for r, _ in views])
    stubs = [
        ViewFrame(label, pl.DataFrame(), tuple(r.keys), r.timestamp, None, f, None)
        for (r, f), label in zip(views, labels, strict=True)
    ]
    names = output_names(caller, stubs)
    out: dict[tuple[str, int, str], str] = {}
    taken = set(caller)
    seen: dict[str, str] = {}
    it = iter(names)
    for (record, features), label in zip(views, labels, strict=True):
        for feature in features:
            name = next(it)
            what = f"feature {feature!r} of view {label!r}"
            if name in taken:
                raise SchemaError(
                    f"column {shown(name)} is both a label (entity) column and the name of "
                    f"{what} (a feature whose name clashes is named '<view>__<feature>'); "
                    f"rename the column {shown(name)}."
                )
            if name in seen:
                raise SchemaError(
                    f"{what} and {seen[name]} would both be named {name!r}; request one of "
                    "them only, or rename a feature."
                )
            seen[name] = what
            out[(record.view, record.version, feature)] = name
    return out


def _input_column(pinned: str, names: Mapping[tuple[str, int, str], str]) -> tuple[str, str]:
    ref = FeatureRef.parse(pinned)
    return ref.feature, names[(ref.view, ref.version or 0, ref.feature)]
