"""What a plan says about a change, through the Python API on real stores: reasons, diffs
(also for versions born in a notebook), breaking vs additive, what goes stale, who uses a
removed column, reverts, and services.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from conftest import load_module

import featurekit as fk
from featurekit.project.apply import apply_plan
from featurekit.project.plan import Change, Plan, make_plan

VIEWS = """
import polars as pl
import featurekit as fk

RATE = {rate}
driver = fk.Entity("driver", keys=["driver_id"])
trips = fk.Source("trips", {data!r}, timestamp="event_ts", created_timestamp="ingested_at")


def scaled(col):
    return col * RATE


@fk.feature_view(entity=driver, sources=[trips])
def base(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", {columns})


@fk.feature_view(entity=driver, sources=[base])
def top(base: pl.LazyFrame) -> pl.LazyFrame:
    return base.select("driver_id", "event_ts", "ingested_at", (pl.col("fare") + 1).alias("fare1"))


svc = fk.FeatureService("svc", features={service})
defs = fk.Definitions(views=[top], services=[svc])
"""
FARE = 'scaled(pl.col("fare")).alias("fare"), pl.col("status")'


class Project:
    def __init__(self, tmp_path: Path, data_dir: Path) -> None:
        self.tmp, self.data, self.n = tmp_path, data_dir / "trips.parquet", 0
        self.store = fk.Store(tmp_path / "store", progress=False)

    def module(
        self, *, rate: float = 2.0, columns: str = FARE, service: str = '["base:fare"]'
    ) -> ModuleType:
        self.n += 1
        source = VIEWS.format(rate=rate, data=str(self.data), columns=columns, service=service)
        return load_module(self.tmp / f"proj_views_{self.n}.py", f"proj_views_{self.n}", source)

    def plan(self, module: ModuleType) -> Plan:
        return make_plan(self.store.registry, module.defs)

    def apply(self, module: ModuleType) -> Plan:
        return apply_plan(self.store, module.defs, self.plan(module).digest)


def by_name(plan: Plan) -> dict[str, Change]:
    return {c.name: c for c in plan.changes}


@pytest.fixture
def project(tmp_path: Path, data_dir: Path) -> Project:
    return Project(tmp_path, data_dir)


def test_upstream_change_reasons_diff_and_stale(project: Project) -> None:
    first = project.module()
    plan = project.plan(first)
    assert [(c.kind, c.name, c.status, c.version) for c in plan.changes] == [
        ("view", "base", "new", 1),
        ("view", "top", "new", 1),
        ("service", "svc", "new", 1),
    ]
    project.apply(first)
    assert not project.plan(first).has_changes
    changes = by_name(project.plan(project.module(rate=3.0)))
    base, top = changes["base"], changes["top"]
    assert (base.status, base.version, base.previous, base.reason) == (
        "new_version",
        2,
        1,
        ["code"],
    )
    assert "-RATE = 2.0\n+RATE = 3.0\n" in base.diff
    assert base.impact == "additive" and base.removed == [] and base.used_by == []
    assert base.stale == ["view:top", "service:svc"]
    assert (top.status, top.reason, top.diff) == ("new_version", ["upstream"], "")
    assert changes["svc"].status == "unchanged"


def test_a_notebook_born_version_diffs_and_an_old_store_says_why_not(project: Project) -> None:
    first = project.module()
    project.store.materialize(first.base)  # no apply: the store keeps the source anyway
    changed = by_name(project.plan(project.module(rate=5.0)))["base"]
    assert "-RATE = 2.0\n+RATE = 5.0\n" in changed.diff
    shutil.rmtree(
        project.store.root / "_featurekit" / "code"
    )  # a store from before sources were kept
    old = by_name(project.plan(project.module(rate=5.0)))["base"]
    assert old.diff.startswith(
        "(the source of base version 1 was not recorded: it was registered before "
        "featurekit kept sources, so only the new source can be shown)\n+def base(trips"
    )


def test_removed_and_retyped_columns_are_breaking_for_models_and_services(
    project: Project,
) -> None:
    first = project.module(service='["base:status"]')
    project.apply(first)
    project.store.materialize(first.base)
    labels = pl.select(driver_id=pl.lit(1), label_ts=pl.datetime(2026, 1, 3))
    ts = project.store.training_set(labels, features=["base:fare"], timestamp="label_ts")
    project.store.log_model("churn", training_set=ts, model="uri://m")

    retyped = by_name(
        project.plan(
            project.module(
                columns='pl.col("fare").cast(pl.Int64), pl.col("status")', service='["base:status"]'
            )
        )
    )["base"]
    assert (retyped.impact, retyped.retyped) == ("breaking", ["fare: Float64 -> Int64"])
    assert retyped.used_by == ["model:churn@1"] and retyped.blocks_check
    assert "model:churn@1" in retyped.stale

    dropped = by_name(
        project.plan(project.module(columns=FARE.split(", ")[0], service='["base:fare"]'))
    )
    assert dropped["base"].removed == ["status: String"]
    # the definitions' service stops reading status: the service change is the breaking one
    assert dropped["base"].used_by == []
    svc = dropped["svc"]
    assert (svc.status, svc.reason, svc.impact) == ("new_version", ["features"], "breaking")
    assert (svc.added, svc.removed) == (["base:fare"], ["base:status"])
    assert svc.blocks_check

    additive = by_name(
        project.plan(
            project.module(columns=FARE + ', pl.col("fare").alias("f2")', service='["base:status"]')
        )
    )["base"]
    assert (additive.impact, additive.added, additive.blocks_check) == (
        "additive",
        ["f2: Float64"],
        False,
    )


def test_a_revert_is_unchanged_with_a_note(project: Project) -> None:
    project.apply(project.module(rate=2.0))
    project.apply(project.module(rate=3.0))
    reverted = by_name(project.plan(project.module(rate=2.0)))["base"]
    assert (reverted.status, reverted.version, reverted.previous) == ("unchanged", 1, 2)
    assert reverted.note == (
        "matches version 1; the latest is version 2, which unpinned references "
        "('base:feature') keep reading"
    )


def test_apply_refuses_a_digest_that_no_longer_matches(project: Project) -> None:
    first = project.module()
    planned = project.plan(first)
    project.store.register(first.base)
    with pytest.raises(Exception, match="changed since the plan was made") as err:
        apply_plan(project.store, first.defs, planned.digest)
    assert isinstance(err.value, fk.FeatureKitError)
    assert project.store.views() == ["base"]  # nothing else was registered
