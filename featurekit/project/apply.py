"""``featurekit apply`` and ``featurekit materialize``: change a store to match a project.

``apply`` registers exactly what a shown plan listed. The plan is identified by its
digest (:mod:`featurekit.project.plan`); ``apply`` re-plans and refuses when the digest
differs, because then either the definitions or the store changed since a person read
the plan, and what would be registered is not what they approved. It computes nothing.

``materialize`` runs the project's views through ``store.materialize``: incremental by
default, so re-running finds nothing new and writes nothing. It is safe to run twice at
once (two cron jobs overlapping): runs of one view version hold the registry's per-view
lock while they plan and commit, so the second run starts after the first committed and
sees its watermarks. It refuses views whose definition is not applied, so a deploy that
skipped ``apply`` cannot create versions nobody reviewed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from featurekit.core.errors import FeatureKitError, NotFoundError, did_you_mean
from featurekit.offline.materialize import MaterializeResult
from featurekit.offline.resolve import resolve
from featurekit.offline.services import resolve_on_demand
from featurekit.project.definitions import Definitions
from featurekit.project.plan import Change, Plan, make_plan
from featurekit.project.sources import save_source
from featurekit.store import Store

__all__ = ["PlanChangedError", "RunSummary", "apply_plan", "materialize_views"]


class PlanChangedError(FeatureKitError):
    """The definitions or the store changed between ``plan`` and ``apply``."""


def apply_plan(store: Store, definitions: Definitions, digest: str) -> Plan:
    """Register what the plan with ``digest`` showed; return that plan.

    Sources are kept for every definition (see :func:`~featurekit.project.sources.save_source`),
    so the next plan can diff code changes against them.

    Raises:
        PlanChangedError: planning now gives another digest; run ``featurekit plan`` again.
    """
    plan = make_plan(store.registry, definitions)
    if plan.digest != digest:
        raise PlanChangedError(
            f"the store or the definitions changed since the plan was made (planned digest "
            f"{digest}, now {plan.digest}); nothing was applied. Run `featurekit plan` again, "
            "review it, then `featurekit apply`."
        )
    for change in plan.changes:
        _apply(store, definitions, change)
    return plan


def _apply(store: Store, definitions: Definitions, change: Change) -> None:
    if change.kind == "view":
        view = definitions.view(change.name)
        assert view is not None  # the plan was made from these definitions
        if change.changed:
            store.register(view)
        save_source(store.registry, "view", view.name, view)
    elif change.kind == "on_demand":
        feature = definitions.on_demand_feature(change.name)
        assert feature is not None
        store.planner.catalog.add(feature)
        if change.changed:
            resolve_on_demand(store.registry, feature)
        save_source(store.registry, "on_demand", feature.name, feature)
    else:
        service = definitions.service(change.name)
        assert service is not None
        if change.changed:
            store.planner.register_service(service)
        else:
            store.planner.catalog.add(service)


@dataclass(frozen=True)
class RunSummary:
    """One view's materialization run, as ``featurekit materialize --json`` reports it."""

    view: str
    version: int
    mode: str
    rows_written: int
    delta_version: int | None
    window_start: str | None
    window_end: str | None
    run_id: str
    seconds: float

    @classmethod
    def of(cls, result: MaterializeResult, seconds: float) -> RunSummary:
        """The summary of one :class:`~featurekit.offline.materialize.MaterializeResult`."""
        start, end = result.window.start, result.window.end
        return cls(
            view=result.view,
            version=result.version,
            mode=result.mode,
            rows_written=result.rows_written,
            delta_version=result.delta_version,
            window_start=None if start is None else start.isoformat(),
            window_end=None if end is None else end.isoformat(),
            run_id=result.run_id,
            seconds=round(seconds, 3),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields."""
        return dict(self.__dict__)


def materialize_views(
    store: Store,
    definitions: Definitions,
    names: Sequence[str] = (),
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[RunSummary]:
    """Materialize the named views of the project (default: all, upstream views first).

    Raises:
        NotFoundError: a name that is not a view of the definitions.
        NotAppliedError: a view whose current definition is not registered.
    """
    known = [v.name for v in definitions.all_views]
    for name in names:
        if name not in known:
            raise NotFoundError(
                f"no view named {name!r} in the definitions.{did_you_mean(name, known)}"
            )
    chosen = [v for v in definitions.all_views if not names or v.name in names]
    for view in chosen:
        fingerprint = resolve(view).fingerprint
        if not any(r.fingerprint == fingerprint for r in store.registry.versions(view.name)):
            raise NotAppliedError(
                f"view {view.name!r}: its current definition (fingerprint {fingerprint}) is not "
                "applied to the store; run `featurekit plan` and `featurekit apply` first."
            )
    out = []
    for view in chosen:
        began = time.perf_counter()
        result = store.materialize(view, start, end, progress=False)
        out.append(RunSummary.of(result, time.perf_counter() - began))
    return out


class NotAppliedError(FeatureKitError):
    """A view's definition is not registered; ``featurekit apply`` has not run for it."""
