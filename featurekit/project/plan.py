"""``featurekit plan``: what applying a project's definitions would change in a store.

Every view (upstream views included), on-demand feature and feature service of an
``fk.Definitions`` is compared with the store's registry, without writing anything:

- **status**: ``new`` (the name is unknown), ``unchanged`` (its fingerprint is
  registered), or ``new_version``;
- **reason**: which fingerprint parts differ from the latest version (``code``,
  ``options``, ``source_schema``, ``upstream``, ``format`` for views, as
  ``store.versions(name)[-1].reason`` records them; services: ``features``);
- **diff**: for a code change, a unified diff of the normalized source (helpers and
  constants included) of the latest version and the definition, when the store recorded
  the latest version's source (``featurekit apply`` does; older stores did not);
- **impact**: ``breaking`` when an output column (a feature, an on-demand output, a
  service's feature, or a view's keys or timestamp) is removed or changes dtype;
  ``additive`` otherwise;
- **stale**: what downstream now reads an older version: views, on-demand features and
  services of the definitions, services recorded in the store, and logged models whose
  training sets used the object;
- **used_by**: the services and models that read a removed or retyped column; a breaking
  change with users fails ``featurekit plan --check``.

A plan carries a digest of all of this. ``featurekit apply`` re-plans and refuses to run
when the digest differs (the definitions or the store moved since the plan was shown),
so it registers exactly what the plan showed.

Normalized sources come from :mod:`featurekit.project.sources`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
import polars as pl
from pydantic import BaseModel, ConfigDict

from featurekit.core.authoring import FeatureView
from featurekit.core.definitions import FeatureRef
from featurekit.core.errors import DefinitionError, NotFoundError, did_you_mean
from featurekit.core.hashing import stable_hash
from featurekit.core.on_demand import OnDemandFeature, parse_dtype
from featurekit.offline.models import ModelRecord, models
from featurekit.offline.resolve import changed_parts, resolve
from featurekit.offline.services import (
    FeatureService,
    discover_outputs,
    on_demand_parts,
    service_digest,
)
from featurekit.project.definitions import Definitions
from featurekit.project.sources import code_source, recorded_source
from featurekit.storage.registry import Registry

__all__ = ["Change", "Plan", "make_plan"]

Kind = Literal["view", "on_demand", "service"]
Status = Literal["new", "unchanged", "new_version"]
Impact = Literal["none", "additive", "breaking"]


class Change(BaseModel):
    """What applying one definition does.

    Attributes:
        kind: ``view``, ``on_demand`` or ``service``.
        name: its name.
        status: ``new``, ``unchanged`` or ``new_version``.
        version: the version number it has (or will have) once applied.
        previous: the latest registered version before applying (None when new).
        fingerprint: the definition's fingerprint (services: the hash of their features).
        reason: the parts that differ from ``previous`` (``["new"]`` when new).
        impact: ``none``, ``additive`` or ``breaking`` (see the module docstring).
        added: output columns added (``name: dtype`` for views and on-demand features).
        removed: output columns removed.
        retyped: ``name: old -> new`` for columns whose dtype changes.
        diff: unified diff of the normalized code (empty without a code change).
        stale: node ids downstream that keep reading an older version until re-applied.
        used_by: services and models that read a removed or retyped column.
        note: anything else worth saying (e.g. a revert to an older version).
    """

    model_config = ConfigDict(frozen=True)

    kind: Kind
    name: str
    status: Status
    version: int
    previous: int | None
    fingerprint: str
    reason: list[str]
    impact: Impact
    added: list[str] = []
    removed: list[str] = []
    retyped: list[str] = []
    diff: str = ""
    stale: list[str] = []
    used_by: list[str] = []
    note: str = ""

    @property
    def changed(self) -> bool:
        """True when applying registers something."""
        return self.status != "unchanged"

    @property
    def blocks_check(self) -> bool:
        """A breaking change that a service or model uses (``plan --check`` fails on it)."""
        if not self.changed or self.impact != "breaking":
            return False
        return self.kind == "service" or bool(self.used_by)


class Plan(BaseModel):
    """The changes applying a project would make, and their digest."""

    model_config = ConfigDict(frozen=True)

    store: str
    changes: list[Change]
    digest: str

    @property
    def has_changes(self) -> bool:
        """True when ``apply`` would register anything."""
        return any(c.changed for c in self.changes)

    def blocking(self) -> list[Change]:
        """Breaking changes that services or models use."""
        return [c for c in self.changes if c.blocks_check]

    def to_json(self) -> str:
        """The plan as indented JSON (what ``featurekit plan --json`` prints)."""
        data = self.model_dump(mode="json")
        data["has_changes"] = self.has_changes
        data["blocking"] = [f"{c.kind}:{c.name}" for c in self.blocking()]
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()


# ---- planning ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ModelUse:
    """What a logged model's training set read: ``(view, version, features)`` and on-demand."""

    id: str
    views: tuple[tuple[str, int, tuple[str, ...]], ...]
    on_demand: tuple[str, ...]


class _Planned:
    """A view as it will be once applied: number, fingerprint, features."""

    def __init__(self, version: int, fingerprint: str, features: Mapping[str, str]) -> None:
        self.version, self.fingerprint, self.features = version, fingerprint, dict(features)


def make_plan(registry: Registry, definitions: Definitions) -> Plan:
    """Compare ``definitions`` with the store of ``registry``; writes nothing.

    Raises:
        UserCodeError, SchemaError, VersionError: a view cannot be resolved against its
            sources (the same errors ``store.register`` raises).
        NotFoundError: an on-demand feature or service reads a view that neither the
            store nor the definitions hold.
    """
    context = _Context(registry, definitions)
    changes: list[Change] = []
    for view in definitions.all_views:
        changes.append(context.view_change(view))
    for feature in definitions.on_demand:
        changes.append(context.on_demand_change(feature))
    for service in definitions.services:
        changes.append(context.service_change(service))
    changes = context.with_users(changes)
    body = [c.model_dump(mode="json") for c in changes]
    digest = stable_hash({"store": str(registry.root), "changes": body})
    return Plan(store=str(registry.root), changes=changes, digest=digest)


class _Context:
    def __init__(self, registry: Registry, definitions: Definitions) -> None:
        self.registry = registry
        self.defs = definitions
        #: the view version each definition maps to once applied
        self.own: dict[str, _Planned] = {}
        #: what an unpinned ``"view:feature"`` will mean once applied
        self.latest: dict[str, _Planned] = {}
        self.on_demand_outputs: dict[str, list[str]] = {}
        self._models: list[_ModelUse] | None = None

    # ---- views --------------------------------------------------------------------------
    def view_change(self, view: FeatureView) -> Change:
        resolved = resolve(view)
        features = {n: str(d) for n, d in resolved.layout.feature_dtypes}
        records = self.registry.versions(view.name)
        match = next((r for r in records if r.fingerprint == resolved.fingerprint), None)
        latest = records[-1] if records else None
        next_number = latest.version + 1 if latest else 1
        number = match.version if match is not None else next_number
        planned = _Planned(number, resolved.fingerprint, features)
        self.own[view.name] = planned
        if latest is None or match is None:
            self.latest[view.name] = planned
        else:
            self.latest[view.name] = _Planned(latest.version, latest.fingerprint, latest.features)
        if latest is None:
            return Change(
                kind="view",
                name=view.name,
                status="new",
                version=number,
                previous=None,
                fingerprint=resolved.fingerprint,
                reason=["new"],
                impact="additive",
                added=[f"{n}: {d}" for n, d in features.items()],
            )
        if match is not None:
            note = ""
            if match.version != latest.version:
                note = (
                    f"matches version {match.version}; the latest is version {latest.version}, "
                    f"which unpinned references ('{view.name}:feature') keep reading"
                )
            return Change(
                kind="view",
                name=view.name,
                status="unchanged",
                version=number,
                previous=latest.version,
                fingerprint=resolved.fingerprint,
                reason=[],
                impact="none",
                note=note,
            )
        reason = changed_parts(latest.parts, resolved.parts)
        added, removed, retyped = _columns(latest.features, features)
        layout = resolved.layout
        for what, old, new in (
            ("keys", list(latest.keys), list(layout.keys)),
            ("timestamp", latest.timestamp, layout.timestamp),
        ):
            if old != new:
                retyped.append(f"{what}: {old} -> {new}")
        diff = ""
        if "code" in reason:
            diff = _diff(
                recorded_source(self.registry, "view", view.name, str(latest.parts.get("code"))),
                code_source(view),
                view.name,
                latest.version,
            )
        return Change(
            kind="view",
            name=view.name,
            status="new_version",
            version=number,
            previous=latest.version,
            fingerprint=resolved.fingerprint,
            reason=reason,
            impact="breaking" if removed or retyped else "additive",
            added=added,
            removed=removed,
            retyped=retyped,
            diff=diff,
            stale=self._view_stale(view.name, number),
        )

    def _view_stale(self, name: str, number: int) -> list[str]:
        stale = [f"view:{v.name}" for v in self.defs.all_views if _reads(v, name)]
        for feature in self.defs.on_demand:
            if any(r.view == name and r.version is None for r in feature.input_refs):
                stale.append(f"on_demand:{feature.name}")
        stale.extend(f"service:{s}" for s in self._services_reading(name))
        for use in self._model_uses():
            if any(v == name and version != number for v, version, _ in use.views):
                stale.append(use.id)
        return list(dict.fromkeys(stale))

    # ---- on-demand features ---------------------------------------------------------------
    def on_demand_change(self, feature: OnDemandFeature) -> Change:
        upstream: dict[str, str] = {}
        dtypes: dict[str, pl.DataType] = {}
        for ref in feature.input_refs:
            planned = self._view_version(
                ref.view, ref.version, f"on-demand feature {feature.name!r}"
            )
            if ref.feature not in planned.features:
                raise NotFoundError(
                    f"on-demand feature {feature.name!r} reads {str(ref)!r}, but view "
                    f"{ref.view!r} version {planned.version} has no feature {ref.feature!r}."
                    f"{did_you_mean(ref.feature, planned.features)}"
                )
            upstream[f"{ref.view}@{planned.version}"] = planned.fingerprint
            dtypes[ref.feature] = parse_dtype(planned.features[ref.feature])
        parts = on_demand_parts(feature, upstream)
        fingerprint = stable_hash(parts)
        outputs = _outputs(feature, dtypes)
        self.on_demand_outputs[feature.name] = outputs
        records = self.registry.on_demand_versions(feature.name)
        match = next((r for r in records if r.fingerprint == fingerprint), None)
        latest = records[-1] if records else None
        if latest is None:
            return Change(
                kind="on_demand",
                name=feature.name,
                status="new",
                version=1,
                previous=None,
                fingerprint=fingerprint,
                reason=["new"],
                impact="additive",
                added=outputs,
            )
        if match is not None:
            return Change(
                kind="on_demand",
                name=feature.name,
                status="unchanged",
                version=match.version,
                previous=latest.version,
                fingerprint=fingerprint,
                reason=[],
                impact="none",
            )
        reason = changed_parts(latest.parts, parts)
        removed = [o for o in latest.outputs if o not in outputs]
        number = latest.version + 1
        stale = [f"service:{s}" for s in self._services_reading(feature.name)]
        stale.extend(use.id for use in self._model_uses() if feature.name in use.on_demand)
        return Change(
            kind="on_demand",
            name=feature.name,
            status="new_version",
            version=number,
            previous=latest.version,
            fingerprint=fingerprint,
            reason=reason,
            impact="breaking" if removed else "additive",
            added=[o for o in outputs if o not in latest.outputs],
            removed=removed,
            diff=(
                _diff(
                    recorded_source(
                        self.registry, "on_demand", feature.name, str(latest.parts.get("code"))
                    ),
                    code_source(feature),
                    feature.name,
                    latest.version,
                )
                if "code" in reason
                else ""
            ),
            stale=list(dict.fromkeys(stale)),
        )

    # ---- services -------------------------------------------------------------------------
    def service_change(self, service: FeatureService) -> Change:
        refs = self._planned_refs(service)
        digest = service_digest(refs)
        new_columns = self._expand(refs, planned=True)
        records = self.registry.service_versions(service.name)
        if not records:
            return Change(
                kind="service",
                name=service.name,
                status="new",
                version=1,
                previous=None,
                fingerprint=digest,
                reason=["new"],
                impact="additive",
                added=new_columns,
            )
        latest = records[-1]
        old_columns = self._expand(list(latest.features), planned=False)
        if latest.hash == digest:
            return Change(
                kind="service",
                name=service.name,
                status="unchanged",
                version=latest.version,
                previous=latest.version,
                fingerprint=digest,
                reason=[],
                impact="none",
            )
        removed = [c for c in old_columns if c not in new_columns]
        return Change(
            kind="service",
            name=service.name,
            status="new_version",
            version=latest.version + 1,
            previous=latest.version,
            fingerprint=digest,
            reason=["features"],
            impact="breaking" if removed else "additive",
            added=[c for c in new_columns if c not in old_columns],
            removed=removed,
        )

    def _expand(self, refs: Sequence[str], *, planned: bool) -> list[str]:
        """``view:feature`` columns a service's refs give (once applied, or as recorded now)."""
        out: list[str] = []
        for text in refs:
            ref = FeatureRef.parse(text)
            recorded = self.registry.on_demand_versions(ref.view)
            if ref.view in self.on_demand_outputs or recorded:
                outputs = self.on_demand_outputs.get(ref.view) if planned else None
                if outputs is None:
                    outputs = recorded[-1].outputs if recorded else []
                names = outputs if ref.feature == "*" else [ref.feature]
            else:
                if planned:
                    view = self._view_version(ref.view, ref.version, f"a service reading {text!r}")
                    features = view.features
                else:
                    try:
                        features = self.registry.version(ref.view, ref.version).features
                    except NotFoundError:
                        features = {}
                names = list(features) if ref.feature == "*" else [ref.feature]
                names = [n for n in names if n in features]
            out.extend(f"{ref.view}:{n}" for n in names if f"{ref.view}:{n}" not in out)
        return out

    # ---- users of breaking changes ------------------------------------------------------
    def with_users(self, changes: list[Change]) -> list[Change]:
        out = []
        for change in changes:
            if change.kind == "service" or change.impact != "breaking":
                out.append(change)
                continue
            lost = {c.split(":", 1)[0] for c in [*change.removed, *change.retyped]}
            whole = any(c.startswith(("keys:", "timestamp:")) for c in change.retyped)
            users: list[str] = []
            for name, refs in self._all_service_refs().items():
                for text in refs:
                    ref = FeatureRef.parse(text)
                    pinned_here = ref.version is not None and ref.version != change.version
                    if ref.view != change.name or pinned_here:
                        continue
                    if whole or ref.feature == "*" or ref.feature in lost:
                        users.append(f"service:{name}")
                        break
            for use in self._model_uses():
                if change.kind == "view":
                    if any(v == change.name and (whole or lost & set(f)) for v, _, f in use.views):
                        users.append(use.id)
                elif change.name in use.on_demand:
                    users.append(use.id)
            out.append(change.model_copy(update={"used_by": list(dict.fromkeys(users))}))
        return out

    def _all_service_refs(self) -> dict[str, list[str]]:
        """Every service's feature refs: the definitions' (as planned) and the store's."""
        refs: dict[str, list[str]] = {}
        for name in self.registry.service_names():
            records = self.registry.service_versions(name)
            if records:
                refs[name] = list(records[-1].features)
        for service in self.defs.services:
            refs[service.name] = self._planned_refs(service)
        return refs

    def _planned_refs(self, service: FeatureService) -> list[str]:
        """A service's feature refs once applied, as ``register_service`` records them."""
        refs: list[str] = []
        for item in service.features:
            if isinstance(item, FeatureView):
                refs.append(f"{item.name}@{self._own(item).version}:*")
            elif isinstance(item, OnDemandFeature):
                refs.append(f"{item.name}:*")
            else:
                refs.append(str(FeatureRef.parse(item)))
        return refs

    def _services_reading(self, name: str) -> list[str]:
        """Services with a feature of the view or on-demand feature ``name``."""
        out = []
        for service, refs in self._all_service_refs().items():
            if any(FeatureRef.parse(r).view == name for r in refs):
                out.append(service)
        return out

    def _model_uses(self) -> list[_ModelUse]:
        """Per logged model (latest entry of each): what its training set read."""
        if self._models is None:
            found = []
            latest: dict[str, ModelRecord] = {}
            for entry in models(self.registry):
                latest[entry.name] = entry
            for entry in latest.values():
                try:
                    manifest = self.registry.manifest(entry.training_set)
                except NotFoundError:
                    continue
                views = tuple((v.view, v.version, tuple(v.features)) for v in manifest.views)
                found.append(_ModelUse(entry.id, views, tuple(o.name for o in manifest.on_demand)))
            self._models = found
        return self._models

    # ---- view lookups ---------------------------------------------------------------------
    def _own(self, view: FeatureView) -> _Planned:
        planned = self.own.get(view.name)
        if planned is None:  # pragma: no cover - services' views are part of the definitions
            raise DefinitionError(f"view {view.name!r} is used by a service but not defined.")
        return planned

    def _view_version(self, view: str, version: int | None, who: str) -> _Planned:
        if version is None and view in self.latest:
            return self.latest[view]
        if version is not None and view in self.own and self.own[view].version == version:
            return self.own[view]
        try:
            record = self.registry.version(view, version)
        except NotFoundError as err:
            raise NotFoundError(
                f"{who} reads view {view!r}"
                f"{'' if version is None else f' version {version}'}, which neither the store "
                f"nor the definitions hold.{did_you_mean(view, self.defs.names())}"
            ) from err
        return _Planned(record.version, record.fingerprint, record.features)


def _reads(view: FeatureView, name: str) -> bool:
    """True when ``view`` reads view ``name``, directly or through upstream views."""
    return any(
        isinstance(s, FeatureView) and (s.name == name or _reads(s, name)) for s in view.sources
    )


def _columns(
    old: Mapping[str, str], new: Mapping[str, str]
) -> tuple[list[str], list[str], list[str]]:
    added = [f"{n}: {d}" for n, d in new.items() if n not in old]
    removed = [f"{n}: {d}" for n, d in old.items() if n not in new]
    retyped = [f"{n}: {d} -> {new[n]}" for n, d in old.items() if n in new and new[n] != d]
    return added, removed, retyped


def _outputs(feature: OnDemandFeature, dtypes: Mapping[str, pl.DataType]) -> list[str]:
    """An on-demand feature's output columns, learned as the store learns them.

    A function that cannot run on an empty frame is refused when it is registered, with the
    explanation, so here it only means "outputs unknown".
    """
    try:
        return discover_outputs(feature, dtypes)
    except DefinitionError:
        return []


def _diff(old: str | None, new: str, name: str, version: int) -> str:
    if old is None:
        return (
            f"(the source of {name} version {version} was not recorded: it was registered "
            "before featurekit kept sources, so only the new source can be shown)\n"
            + "".join(f"+{line}\n" for line in new.splitlines())
        )
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{name}@{version}",
        tofile=f"{name} (definitions)",
    )
    return "".join(lines)
