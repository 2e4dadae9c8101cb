"""Feature services and on-demand features in a store: versions, and feature-list planning.

A :class:`FeatureService` names a list of features so a model asks for them by one name,
in ``training_set`` and online alike. On-demand features get versions like views: a
fingerprint of their code, options and the fingerprints of the view versions they read,
and a number ``1, 2, 3…`` in the order fingerprints were first seen. Records are plain
JSON under ``<root>/_featurekit/on_demand/`` and ``<root>/_featurekit/services/``.

:func:`expand` turns a feature list (strings, views, on-demand features, services) into
view references plus on-demand steps; training sets and online lookups both use it, so
they agree on which columns come back and in which order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl
from pydantic import BaseModel, ConfigDict

from featurekit.core.authoring import FeatureView
from featurekit.core.config import FORMAT_VERSION
from featurekit.core.definitions import FeatureRef, check_name
from featurekit.core.errors import (
    DefinitionError,
    FeatureKitError,
    NotFoundError,
    ReproducibilityError,
    did_you_mean,
)
from featurekit.core.hashing import stable_hash
from featurekit.core.on_demand import OnDemandFeature, OnDemandStep, apply_on_demand, parse_dtype
from featurekit.core.timeutil import utcnow
from featurekit.kernels.pit import ViewFrame
from featurekit.kernels.pit import output_names as view_output_names
from featurekit.storage.registry import Registry, VersionRecord, write_json_once

if TYPE_CHECKING:
    from featurekit.offline.training import ViewRequest

__all__ = ["Catalog", "Expanded", "FeatureService", "expand"]

Spec = Any  # str | FeatureView | OnDemandFeature | FeatureService
Lookup = Callable[[Any], tuple[VersionRecord, list[str]]]


class FeatureService(BaseModel):
    """A named list of features, requested by one name in training and online.

    Example:
        >>> pricing = fk.FeatureService("pricing", features=["driver_stats:*", fare_ratio])
        >>> store.training_set(labels, features=[pricing], timestamp="ts")
        >>> store.get_online_features(features=pricing, entities={"driver_id": [1]})
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    features: tuple[Any, ...]
    description: str = ""

    def __init__(self, name: str, features: Sequence[Any], description: str = "") -> None:
        check_name(name, "feature service")
        if isinstance(features, str | FeatureView | OnDemandFeature) or not features:
            raise DefinitionError(
                f"feature service {name!r} needs features=[...]: a non-empty list of "
                "'view:feature' strings, views or on-demand features."
            )
        for item in features:
            if not isinstance(item, str | FeatureView | OnDemandFeature):
                raise DefinitionError(
                    f"feature service {name!r}: features must be 'view:feature' strings, views "
                    f"or on-demand features, got {type(item).__name__}."
                )
        super().__init__(name=name, features=tuple(features), description=description)

    def __hash__(self) -> int:
        return hash((self.name, self.features))

    def __repr__(self) -> str:
        shown = [f if isinstance(f, str) else f.name for f in self.features]
        return f"FeatureService({self.name!r}, features={shown})"


class OnDemandRecord(BaseModel):
    """One version of an on-demand feature, as the registry keeps it."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    fingerprint: str
    inputs: list[str]  # pinned: "view@N:feature"
    request: list[str]
    outputs: list[str]
    parts: dict[str, Any]
    created_at: str
    format_version: int = FORMAT_VERSION


@dataclass
class Catalog:
    """On-demand features and services this process has seen, by name (their code lives here)."""

    on_demand: dict[str, OnDemandFeature] = field(default_factory=dict)
    services: dict[str, FeatureService] = field(default_factory=dict)

    def add(self, obj: OnDemandFeature | FeatureService) -> None:
        """Remember a definition (the latest one with a name wins)."""
        if isinstance(obj, OnDemandFeature):
            self.on_demand[obj.name] = obj
        else:
            self.services[obj.name] = obj
            for item in obj.features:
                if isinstance(item, OnDemandFeature):
                    self.on_demand[item.name] = item


# ---- on-demand versions ----------------------------------------------------------------------
def _on_demand_dir(registry: Registry, name: str) -> Any:
    return registry.dir / "on_demand" / name


def on_demand_records(registry: Registry, name: str) -> list[OnDemandRecord]:
    """Every version of an on-demand feature, oldest first (empty if unknown)."""
    folder = _on_demand_dir(registry, name)
    if not folder.exists():
        return []
    records = [
        OnDemandRecord.model_validate(orjson.loads(p.read_bytes())) for p in folder.glob("v*.json")
    ]
    return sorted(records, key=lambda r: r.version)


def resolve_on_demand(registry: Registry, feature: OnDemandFeature) -> OnDemandRecord:
    """Fingerprint ``feature`` against the view versions it reads; record a new version if new."""
    inputs: list[str] = []
    upstream: dict[str, str] = {}
    dtypes: dict[str, pl.DataType] = {}
    for ref in feature.input_refs:
        view = registry.version(ref.view, ref.version)
        if ref.feature not in view.features:
            raise NotFoundError(
                f"on-demand feature {feature.name!r} reads {str(ref)!r}, but view "
                f"{view.view!r} version {view.version} has no feature {ref.feature!r}."
                f"{did_you_mean(ref.feature, view.features)}"
            )
        inputs.append(f"{view.view}@{view.version}:{ref.feature}")
        upstream[f"{view.view}@{view.version}"] = view.fingerprint
        dtypes[ref.feature] = parse_dtype(view.features[ref.feature])
    parts = {
        "code": feature.code_fingerprint(),
        "options": feature.options(),
        "upstream": upstream,
        "format": FORMAT_VERSION,
    }
    fingerprint = stable_hash(parts)
    for existing in on_demand_records(registry, feature.name):
        if existing.fingerprint == fingerprint:
            return existing
    if registry.versions(feature.name):
        raise DefinitionError(
            f"on-demand feature {feature.name!r} has the name of a feature view; "
            "pick another name (features are addressed as 'name:feature')."
        )
    outputs = _discover_outputs(feature, dtypes)
    with registry.lock(f"on_demand.{feature.name}"):
        records = on_demand_records(registry, feature.name)
        for existing in records:
            if existing.fingerprint == fingerprint:
                return existing
        record = OnDemandRecord(
            name=feature.name,
            version=records[-1].version + 1 if records else 1,
            fingerprint=fingerprint,
            inputs=inputs,
            request=list(feature.request_columns),
            outputs=outputs,
            parts=parts,
            created_at=utcnow().isoformat(),
        )
        path = _on_demand_dir(registry, feature.name) / f"v{record.version}.json"
        write_json_once(path, record.model_dump(mode="json"))
        return record


def _discover_outputs(feature: OnDemandFeature, dtypes: Mapping[str, pl.DataType]) -> list[str]:
    """Output columns, learned by calling the function on an empty frame of the input dtypes."""
    schema: dict[str, pl.DataType] = dict(dtypes)
    for column, dtype in feature.request:
        schema[column] = dtype if isinstance(dtype, pl.DataType) else pl.Float64()
    try:
        result = feature.fn(pl.DataFrame(schema=schema))
        if isinstance(result, pl.LazyFrame):
            result = result.collect()
    except Exception as err:
        raise DefinitionError(
            f"on-demand feature {feature.name!r} failed on an empty frame with columns "
            f"{ {k: str(v) for k, v in schema.items()} } ({type(err).__name__}: {err}); "
            "featurekit calls it once that way to learn its output columns. Declare request "
            "dtypes, e.g. request={'amount': pl.Float64}."
        ) from err
    if not isinstance(result, pl.DataFrame) or not result.columns:
        raise DefinitionError(
            f"on-demand feature {feature.name!r} must return a polars DataFrame with at least "
            f"one column, got {type(result).__name__}."
        )
    return list(result.columns)


# ---- services --------------------------------------------------------------------------------
def register_service(registry: Registry, service: FeatureService, lookup: Lookup) -> list[str]:
    """Record a service (by content: re-registering the same features is a no-op)."""
    refs: list[str] = []
    for item in service.features:
        if isinstance(item, FeatureView):
            record, _ = lookup(item)
            refs.append(f"{record.view}@{record.version}:*")
        elif isinstance(item, OnDemandFeature):
            resolve_on_demand(registry, item)
            refs.append(f"{item.name}:*")
        else:
            refs.append(str(FeatureRef.parse(item)))
    folder = registry.dir / "services" / service.name
    digest = stable_hash({"features": refs})
    existing = service_records(registry, service.name)
    if existing and existing[-1]["hash"] == digest:
        return refs
    with registry.lock(f"service.{service.name}"):
        existing = service_records(registry, service.name)
        if existing and existing[-1]["hash"] == digest:
            return refs
        number = existing[-1]["version"] + 1 if existing else 1
        write_json_once(
            folder / f"v{number}.json",
            {
                "name": service.name,
                "version": number,
                "hash": digest,
                "features": refs,
                "description": service.description,
                "created_at": utcnow().isoformat(),
            },
        )
    return refs


def service_records(registry: Registry, name: str) -> list[dict[str, Any]]:
    """Every version of a service, oldest first."""
    folder = registry.dir / "services" / name
    if not folder.exists():
        return []
    records = [orjson.loads(p.read_bytes()) for p in folder.glob("v*.json")]
    return sorted(records, key=lambda r: int(r["version"]))


def service_names(registry: Registry) -> list[str]:
    """Names of registered services, sorted."""
    folder = registry.dir / "services"
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if any(p.glob("v*.json")))


def service_features(registry: Registry, catalog: Catalog, name: str) -> list[Any]:
    """The feature list of a service known in this process or registered in the store."""
    if name in catalog.services:
        return list(catalog.services[name].features)
    records = service_records(registry, name)
    if not records:
        known = set(service_names(registry)) | set(catalog.services)
        raise NotFoundError(f"no feature service named {name!r}.{did_you_mean(name, known)}")
    return list(records[-1]["features"])


# ---- planning --------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnDemandUse:
    """An on-demand feature version and the outputs wanted from it."""

    feature: OnDemandFeature
    record: OnDemandRecord
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Expanded:
    """A feature list split into view references and on-demand uses.

    Attributes:
        view_specs: what the caller asked from views, in order.
        hidden_specs: pinned inputs of on-demand features the caller did not ask for.
        on_demand: on-demand features in order, each with its wanted outputs.
        watch: registry folders whose change may change this plan (views read as latest).
    """

    view_specs: tuple[Any, ...]
    hidden_specs: tuple[str, ...]
    on_demand: tuple[OnDemandUse, ...]
    watch: tuple[str, ...]


def flatten(specs: Any, registry: Registry, catalog: Catalog) -> list[Any]:
    """Feature list with services replaced by their features (services are remembered)."""
    if isinstance(specs, str | FeatureView | OnDemandFeature | FeatureService):
        specs = [specs]
    out: list[Any] = []
    for spec in specs:
        if isinstance(spec, FeatureService):
            catalog.add(spec)
            out.extend(spec.features)
        elif isinstance(spec, OnDemandFeature):
            catalog.add(spec)
            out.append(spec)
        else:
            out.append(spec)
    return out


def expand(specs: Any, registry: Registry, catalog: Catalog, lookup: Lookup) -> Expanded:
    """Split ``specs`` into view references and on-demand uses (see :class:`Expanded`)."""
    items = flatten(specs, registry, catalog)
    if not items:
        raise DefinitionError("no features requested; pass at least one 'view:feature'.")
    view_specs: list[Any] = []
    uses: dict[str, tuple[OnDemandFeature, OnDemandRecord, list[str]]] = {}
    watch: list[str] = []
    for item in items:
        feature, wanted = _as_on_demand(item, registry, catalog)
        if feature is None:
            view_specs.append(item)
            if isinstance(item, str):
                ref = FeatureRef.parse(item)
                if ref.version is None:
                    watch.append(ref.view)
            continue
        record = resolve_on_demand(registry, feature)
        watch.extend(r.view for r in feature.input_refs if r.version is None)
        if wanted != "*" and wanted not in record.outputs:
            raise NotFoundError(
                f"on-demand feature {feature.name!r} version {record.version} has no output "
                f"{wanted!r}.{did_you_mean(wanted, record.outputs)}"
            )
        _, _, outs = uses.setdefault(feature.name, (feature, record, []))
        for out in record.outputs if wanted == "*" else [wanted]:
            if out not in outs:
                outs.append(out)
    requested: set[tuple[str, int, str]] = set()
    for spec in view_specs:
        view, names = lookup(spec)
        requested.update((view.view, view.version, n) for n in names)
    hidden: list[str] = []
    for _, used, _ in uses.values():
        for pinned in used.inputs:
            parsed = FeatureRef.parse(pinned)
            key = (parsed.view, parsed.version or 0, parsed.feature)
            if key not in requested and pinned not in hidden:
                hidden.append(pinned)
    return Expanded(
        view_specs=tuple(view_specs),
        hidden_specs=tuple(hidden),
        on_demand=tuple(OnDemandUse(f, r, tuple(o)) for f, r, o in uses.values()),
        watch=tuple(dict.fromkeys(watch)),
    )


def _as_on_demand(
    item: Any, registry: Registry, catalog: Catalog
) -> tuple[OnDemandFeature | None, str]:
    if isinstance(item, OnDemandFeature):
        return item, "*"
    if not isinstance(item, str):
        return None, ""
    ref = FeatureRef.parse(item)
    if registry.versions(ref.view):
        return None, ""
    if ref.view in catalog.on_demand:
        feature = catalog.on_demand[ref.view]
        if ref.version is not None:
            record = resolve_on_demand(registry, feature)
            if record.version != ref.version:
                raise NotFoundError(
                    f"{item!r}: on-demand feature {ref.view!r} loaded here is version "
                    f"{record.version}; only the loaded version can run."
                )
        return feature, ref.feature
    if on_demand_records(registry, ref.view):
        raise NotFoundError(
            f"on-demand feature {ref.view!r} is registered in this store, but its code is not "
            "loaded in this process; pass the decorated object (or a FeatureService holding it), "
            "or start the server with --definitions pointing at the module that defines it."
        )
    return None, ""  # not on-demand: the view lookup raises a clear NotFoundError


def column_map(
    label_columns: Sequence[str], merged: Sequence[tuple[VersionRecord, Sequence[str]]]
) -> dict[tuple[str, int, str], str]:
    """(view, version, feature) -> output column, by the training-set naming rule."""
    stubs = [
        ViewFrame(r.view, pl.DataFrame(), tuple(r.keys), r.timestamp, None, tuple(f), None)
        for r, f in merged
    ]
    names = iter(view_output_names(label_columns, stubs))
    return {(r.view, r.version, f): next(names) for r, feats in merged for f in feats}


def steps_for(
    expanded: Expanded, columns: Mapping[tuple[str, int, str], str]
) -> tuple[list[OnDemandStep], list[str]]:
    """On-demand steps wired to frame columns, and the helper columns to drop afterwards."""
    steps = []
    for use in expanded.on_demand:
        inputs = []
        for ref in use.record.inputs:
            parsed = FeatureRef.parse(ref)
            inputs.append(
                (parsed.feature, columns[(parsed.view, parsed.version or 0, parsed.feature)])
            )
        steps.append(
            OnDemandStep(
                use.feature, use.record.version, use.record.fingerprint, tuple(inputs), use.outputs
            )
        )
    drop = []
    for ref in expanded.hidden_specs:
        parsed = FeatureRef.parse(ref)
        drop.append(columns[(parsed.view, parsed.version or 0, parsed.feature)])
    return steps, drop


# ---- training-set hook -----------------------------------------------------------------------
class TrainingHook:
    """Applies on-demand steps to a joined training frame and describes them for the manifest."""

    def __init__(self, steps: Sequence[OnDemandStep], drop: Sequence[str]) -> None:
        self.steps = list(steps)
        self.drop = list(drop)

    def manifest(self) -> list[dict[str, Any]]:
        """What the manifest (and the training set's id) records about on-demand features."""
        return [
            {
                "name": s.feature.name,
                "version": s.version,
                "fingerprint": s.fingerprint,
                "inputs": [list(pair) for pair in s.inputs],
                "outputs": list(s.outputs),
                "drop": self.drop if i == len(self.steps) - 1 else [],
            }
            for i, s in enumerate(self.steps)
        ]

    def __call__(self, joined: pl.DataFrame) -> pl.DataFrame:
        return apply_on_demand(joined, self.steps, drop=self.drop)


def training_plan(
    specs: Any,
    registry: Registry,
    catalog: Catalog,
    lookup: Lookup,
    label_columns: Sequence[str],
) -> tuple[list[Any], Callable[[Sequence[ViewRequest]], TrainingHook] | None]:
    """View specs for ``Store._requests`` and, with on-demand features, a hook factory."""
    plain = not isinstance(specs, FeatureService | OnDemandFeature) and (
        isinstance(specs, str | FeatureView)
        or not any(isinstance(s, FeatureService | OnDemandFeature) for s in specs)
    )
    if plain and not _names_on_demand(specs, registry, catalog):
        return list(specs) if not isinstance(specs, str | FeatureView) else [specs], None
    expanded = expand(specs, registry, catalog, lookup)
    if not expanded.on_demand:
        return list(expanded.view_specs), None

    def factory(requests: Sequence[ViewRequest]) -> TrainingHook:
        merged = [(r.record, r.features) for r in requests]
        steps, drop = steps_for(expanded, column_map(label_columns, merged))
        return TrainingHook(steps, drop)

    return [*expanded.view_specs, *expanded.hidden_specs], factory


def _names_on_demand(specs: Any, registry: Registry, catalog: Catalog) -> bool:
    items = [specs] if isinstance(specs, str | FeatureView) else list(specs)
    for item in items:
        if isinstance(item, str):
            try:
                ref = FeatureRef.parse(item)
            except FeatureKitError:
                return False  # the view path reports the parse error
            if ref.view in catalog.on_demand or (
                not registry.versions(ref.view) and on_demand_records(registry, ref.view)
            ):
                return True
    return False


def rebuild_hook(
    registry: Registry, catalog: Catalog, manifest: Mapping[str, Any]
) -> TrainingHook | None:
    """The hook that re-applies a recorded training set's on-demand features, or None.

    The code loaded in this process must be the code that built the set (same code
    fingerprint as the recorded version), or the rebuild is refused.
    """
    entries = manifest.get("on_demand") or []
    if not entries:
        return None
    steps = []
    drop: list[str] = []
    for entry in entries:
        name, version = entry["name"], int(entry["version"])
        feature = catalog.on_demand.get(name)
        if feature is None:
            raise ReproducibilityError(
                f"training set {manifest['id']!r} uses on-demand feature {name!r} (version "
                f"{version}), whose code is not loaded in this process. Pass it: "
                f"store.training_set_by_id({manifest['id']!r}, on_demand=[{name}])."
            )
        recorded = next(
            (r for r in on_demand_records(registry, name) if r.version == version), None
        )
        if recorded is None or recorded.parts.get("code") != feature.code_fingerprint():
            raise ReproducibilityError(
                f"on-demand feature {name!r} loaded here is not the code of version {version} "
                "that built this training set (its code fingerprint differs). Load that code."
            )
        steps.append(
            OnDemandStep(
                feature,
                version,
                str(entry["fingerprint"]),
                tuple((a, b) for a, b in entry["inputs"]),
                tuple(entry["outputs"]),
            )
        )
        drop.extend(entry.get("drop") or [])
    return TrainingHook(steps, drop)
