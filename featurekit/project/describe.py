"""``featurekit ls`` and ``featurekit show``: what a store holds, described for people.

Everything comes from the registry, so it works on any store; owner, description and
tags are the ones the definitions carried when they were registered (a view's docstring
or ``description=``, its ``tags=``; ``tags={"owner": ...}`` is shown as the owner).
Feature-level search matches a feature's name, its view's name, description and tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from featurekit.core.errors import NotFoundError, did_you_mean
from featurekit.offline.models import models
from featurekit.storage.registry import Registry

__all__ = ["Entry", "FeatureEntry", "describe", "list_entries", "search_features"]

EntryKind = Literal["view", "on_demand", "service", "model"]


@dataclass(frozen=True)
class FeatureEntry:
    """One feature of a view's latest version."""

    view: str
    version: int
    name: str
    dtype: str
    description: str
    owner: str
    tags: dict[str, str]

    @property
    def ref(self) -> str:
        """``view:feature``."""
        return f"{self.view}:{self.name}"


@dataclass(frozen=True)
class Entry:
    """One named object of a store, with what ``ls`` and ``show`` print about it."""

    kind: EntryKind
    name: str
    version: int
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    #: views: ``feature: dtype``; on-demand: outputs; services: refs; models: metrics
    items: list[str] = field(default_factory=list)
    #: more lines for ``show`` (versions, inputs, training set…)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields."""
        return dict(self.__dict__)


def list_entries(registry: Registry) -> list[Entry]:
    """Every view, on-demand feature, service and model of the store, by kind then name."""
    out: list[Entry] = []
    for name in registry.view_names():
        out.append(_view(registry, name))
    for name in registry.names("on_demand"):
        out.append(_on_demand(registry, name))
    for name in registry.service_names():
        out.append(_service(registry, name))
    for name in sorted({entry.name for entry in models(registry)}):
        out.append(_model(registry, name))
    return out


def describe(registry: Registry, name: str) -> list[Entry]:
    """Every object called ``name`` (``kind:name`` picks one kind), with details.

    Raises:
        NotFoundError: nothing has that name; the message suggests close names.
    """
    kind, _, bare = name.rpartition(":") if ":" in name else ("", "", name)
    entries = list_entries(registry)
    found = [e for e in entries if e.name == bare and (not kind or e.kind == kind)]
    if not found:
        names = [e.name for e in entries]
        raise NotFoundError(
            f"nothing named {bare!r} in this store (views, on-demand features, services, "
            f"models).{did_you_mean(bare, names)}"
        )
    return found


def search_features(registry: Registry, text: str) -> list[FeatureEntry]:
    """Features whose name, view, description or tags contain ``text`` (any case)."""
    needle = text.lower()
    out = []
    for name in registry.view_names():
        record = registry.version(name)
        for feature, dtype in record.features.items():
            entry = FeatureEntry(
                view=name,
                version=record.version,
                name=feature,
                dtype=dtype,
                description=record.description,
                owner=record.tags.get("owner", ""),
                tags=dict(record.tags),
            )
            haystack = " ".join(
                [feature, name, record.description, *(f"{k}={v}" for k, v in record.tags.items())]
            )
            if needle in haystack.lower():
                out.append(entry)
    return out


def _view(registry: Registry, name: str) -> Entry:
    records = registry.versions(name)
    latest = records[-1]
    return Entry(
        kind="view",
        name=name,
        version=latest.version,
        description=latest.description,
        owner=latest.tags.get("owner", ""),
        tags=dict(latest.tags),
        items=[f"{f}: {d}" for f, d in latest.features.items()],
        details={
            "entity": f"{latest.entity} ({', '.join(latest.keys)})",
            "timestamp": latest.timestamp,
            "upstream": ", ".join(sorted(latest.parts.get("upstream", {}))) or "-",
            "versions": [
                f"v{r.version} {r.fingerprint} {r.created_at.isoformat()[:16]} "
                f"{', '.join(r.reason)}"
                for r in records
            ],
        },
    )


def _on_demand(registry: Registry, name: str) -> Entry:
    records = registry.on_demand_versions(name)
    latest = records[-1]
    return Entry(
        kind="on_demand",
        name=name,
        version=latest.version,
        items=list(latest.outputs),
        details={
            "inputs": ", ".join(latest.inputs) or "-",
            "request": ", ".join(latest.request) or "-",
            "versions": [
                f"v{r.version} {r.fingerprint} {r.created_at.isoformat()[:16]}" for r in records
            ],
        },
    )


def _service(registry: Registry, name: str) -> Entry:
    records = registry.service_versions(name)
    latest = records[-1]
    return Entry(
        kind="service",
        name=name,
        version=latest.version,
        description=latest.description,
        items=[str(f) for f in latest.features],
        details={"versions": [f"v{r.version} {r.created_at.isoformat()[:16]}" for r in records]},
    )


def _model(registry: Registry, name: str) -> Entry:
    entries = models(registry, name)
    latest = entries[-1]
    return Entry(
        kind="model",
        name=name,
        version=latest.version,
        description=latest.description,
        owner=latest.tags.get("owner", ""),
        tags=dict(latest.tags),
        items=[f"{k} = {v:g}" for k, v in sorted(latest.metrics.items())],
        details={
            "training set": latest.training_set,
            "versions": [f"v{e.version} {e.created_at.isoformat()[:16]}" for e in entries],
        },
    )
