"""``fk.Definitions``: everything a project serves, declared in one object.

A project lists its views, feature services and on-demand features in one module-level
object instead of relying on whichever objects a :class:`~featurekit.store.Store` happened
to see. The CLI (``plan``, ``apply``, ``materialize``, ``ls``, ``show``) and
``fk.Store(root, definitions=defs)`` read it; nothing is registered when it is built.

Validation happens once, when the object is made: every item has the right type, names
are valid identifiers, and no name is declared twice (views and on-demand features share
one namespace, because both are addressed as ``"name:feature"``). Upstream views a listed
view reads are part of the definitions even when not listed, because ``apply`` must
register them for the listed view to exist.

Example:
    >>> defs = fk.Definitions(views=[driver_stats], services=[pricing], on_demand=[fare_ratio])
    >>> store = fk.Store("./store", definitions=defs)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurekit.core.authoring import FeatureView
from featurekit.core.errors import DefinitionError
from featurekit.core.names import shown, validate_name
from featurekit.core.on_demand import OnDemandFeature
from featurekit.offline.planner import Catalog
from featurekit.offline.services import FeatureService

__all__ = ["Definitions"]


@dataclass(frozen=True, init=False)
class Definitions:
    """The views, feature services and on-demand features of one project.

    Args:
        views: feature views (decorated with ``@fk.feature_view``); views they read are
            included automatically.
        services: feature services; on-demand features they hold are included.
        on_demand: on-demand features (decorated with ``@fk.on_demand``).

    Raises:
        DefinitionError: an item of the wrong type, an invalid name, or one name declared
            twice for different objects.

    Example:
        >>> defs = fk.Definitions(views=[driver_stats], on_demand=[fare_ratio])
        >>> [v.name for v in defs.views]
        ['driver_stats']
    """

    views: tuple[FeatureView, ...]
    services: tuple[FeatureService, ...]
    on_demand: tuple[OnDemandFeature, ...]
    #: every view, upstream views included, each after the views it reads
    all_views: tuple[FeatureView, ...] = field(repr=False)

    def __init__(
        self,
        views: Sequence[FeatureView] = (),
        services: Sequence[FeatureService] = (),
        on_demand: Sequence[OnDemandFeature] = (),
    ) -> None:
        views_t = _typed(views, FeatureView, "views", "feature views (@fk.feature_view)")
        services_t = _typed(services, FeatureService, "services", "fk.FeatureService objects")
        on_demand_t = _typed(on_demand, OnDemandFeature, "on_demand", "@fk.on_demand features")
        for service in services_t:
            on_demand_t += tuple(
                f
                for f in service.features
                if isinstance(f, OnDemandFeature) and f not in on_demand_t
            )
        ordered = _topological(views_t)
        names: dict[str, tuple[str, object]] = {}
        for kind, objs in (
            ("view", ordered),
            ("on-demand feature", on_demand_t),
        ):
            for obj in objs:
                _claim(names, validate_name(obj.name, kind), kind, obj)  # type: ignore[arg-type]
        service_names: dict[str, tuple[str, object]] = {}
        for service in services_t:
            _claim(service_names, validate_name(service.name, "service"), "service", service)
        object.__setattr__(self, "views", views_t)
        object.__setattr__(self, "services", services_t)
        object.__setattr__(self, "on_demand", on_demand_t)
        object.__setattr__(self, "all_views", ordered)

    def view(self, name: str) -> FeatureView | None:
        """The view (listed or upstream) with this name, or None."""
        return next((v for v in self.all_views if v.name == name), None)

    def service(self, name: str) -> FeatureService | None:
        """The service with this name, or None."""
        return next((s for s in self.services if s.name == name), None)

    def on_demand_feature(self, name: str) -> OnDemandFeature | None:
        """The on-demand feature with this name, or None."""
        return next((f for f in self.on_demand if f.name == name), None)

    def catalog(self) -> Catalog:
        """A planner catalog holding this project's on-demand features and services."""
        return Catalog([*self.on_demand, *self.services])

    def names(self) -> list[str]:
        """Every declared name (views, on-demand features, services), for suggestions."""
        return [
            *(v.name for v in self.all_views),
            *(f.name for f in self.on_demand),
            *(s.name for s in self.services),
        ]

    def __repr__(self) -> str:
        return (
            f"Definitions(views={[v.name for v in self.views]}, "
            f"services={[s.name for s in self.services]}, "
            f"on_demand={[f.name for f in self.on_demand]})"
        )


def _typed(items: Any, kind: type, arg: str, what: str) -> tuple[Any, ...]:
    if isinstance(items, str | kind) or not isinstance(items, Iterable):
        raise DefinitionError(
            f"fk.Definitions({arg}=...) takes a list of {what}, got {type(items).__name__}; "
            f"wrap it in a list: {arg}=[...]."
        )
    out: list[Any] = []
    for item in items:
        if not isinstance(item, kind):
            raise DefinitionError(
                f"fk.Definitions({arg}=...) takes {what}, got {type(item).__name__} "
                f"{shown(getattr(item, 'name', item))}."
            )
        if item not in out:
            out.append(item)
    return tuple(out)


def _claim(names: dict[str, tuple[str, object]], name: str, kind: str, obj: object) -> None:
    previous = names.get(name)
    if previous is not None and previous[1] != obj:
        raise DefinitionError(
            f"fk.Definitions declares the name {name!r} twice (a {previous[0]} and a {kind}); "
            "every view, on-demand feature and service needs its own name (features are "
            "addressed as 'name:feature'). Rename one of them."
        )
    names[name] = (kind, obj)


def _topological(views: Sequence[FeatureView]) -> tuple[FeatureView, ...]:
    """Views with the views they read first (depth-first, in declaration order)."""
    out: list[FeatureView] = []
    visiting: set[int] = set()

    def visit(view: FeatureView) -> None:
        if view in out:
            return
        if id(view) in visiting:  # pragma: no cover - the decorators cannot build a cycle
            raise DefinitionError(f"view {view.name!r} reads itself through its upstream views.")
        visiting.add(id(view))
        for src in view.sources:
            if isinstance(src, FeatureView):
                visit(src)
        visiting.discard(id(view))
        out.append(view)

    for view in views:
        visit(view)
    return tuple(out)
