"""Feature services and on-demand features in a store: their versions.

A :class:`FeatureService` names a list of features so a model asks for them by one name,
in ``training_set`` and online alike. On-demand features get versions like views: a
fingerprint of their code, options and the fingerprints of the view versions they read,
and a number ``1, 2, 3…`` in the order fingerprints were first seen. Records are plain
JSON under ``<root>/_featurekit/on_demand/`` and ``<root>/_featurekit/services/``.

Planning a request that uses them is :mod:`featurekit.offline.planner`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict

from featurekit.core.authoring import FeatureView
from featurekit.core.config import FORMAT_VERSION
from featurekit.core.definitions import FeatureRef, check_name
from featurekit.core.errors import DefinitionError, NotFoundError, did_you_mean
from featurekit.core.hashing import stable_hash
from featurekit.core.on_demand import OnDemandFeature, parse_dtype
from featurekit.core.timeutil import utcnow
from featurekit.storage.registry import OnDemandRecord, Registry, ServiceRecord, VersionRecord

__all__ = [
    "FeatureService",
    "OnDemandRecord",
    "discover_outputs",
    "on_demand_parts",
    "register_service",
    "resolve_on_demand",
    "service_digest",
]

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


# ---- on-demand versions ----------------------------------------------------------------------
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
    parts = on_demand_parts(feature, upstream)
    fingerprint = stable_hash(parts)
    for existing in registry.on_demand_versions(feature.name):
        if existing.fingerprint == fingerprint:
            return existing
    if registry.versions(feature.name):
        raise DefinitionError(
            f"on-demand feature {feature.name!r} has the name of a feature view; "
            "pick another name (features are addressed as 'name:feature')."
        )
    outputs = discover_outputs(feature, dtypes)
    record: OnDemandRecord = registry.append_version(
        "on_demand",
        feature.name,
        lambda number: OnDemandRecord(
            name=feature.name,
            version=number,
            fingerprint=fingerprint,
            inputs=inputs,
            request=list(feature.request_columns),
            outputs=outputs,
            parts=parts,
            created_at=utcnow(),
        ),
        reuse=lambda records: next((r for r in records if r.fingerprint == fingerprint), None),
    )
    return record


def on_demand_parts(feature: OnDemandFeature, upstream: Mapping[str, str]) -> dict[str, Any]:
    """What an on-demand version's fingerprint hashes, part by part.

    ``upstream`` maps each ``view@version`` read to its fingerprint. The parts are kept in the
    record, so a plan can say which of them changed; the plan computes them here too, so a
    planned fingerprint is the one a registration would record.
    """
    return {
        "code": feature.code_fingerprint(),
        "options": feature.options(),
        "upstream": dict(upstream),
        "format": FORMAT_VERSION,
    }


def discover_outputs(feature: OnDemandFeature, dtypes: Mapping[str, pl.DataType]) -> list[str]:
    """Output columns, learned by calling the function on an empty frame of the input dtypes.

    Raises:
        DefinitionError: the function fails on an empty frame, or returns no columns.
    """
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
def service_digest(refs: Sequence[str]) -> str:
    """The hash a service version is recorded under: its feature refs, in order."""
    return stable_hash({"features": list(refs)})


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
    digest = service_digest(refs)
    existing = registry.service_versions(service.name)
    if existing and existing[-1].hash == digest:
        return refs

    def build(number: int) -> ServiceRecord:
        return ServiceRecord(
            name=service.name,
            version=number,
            hash=digest,
            features=refs,
            description=service.description,
            created_at=utcnow(),
        )

    registry.append_version(  # a change back to an older list is a new version
        "service",
        service.name,
        build,
        reuse=lambda records: records[-1] if records and records[-1].hash == digest else None,
    )
    return refs
