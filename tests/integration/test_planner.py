"""One planner for training sets, online lookups and the server; typed manifests and runs;
code the registry cannot hold comes from one catalog (``definitions``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from test_online_support import (
    entities,
    fare_ratio,
    labels_at,
    now_floor,
    pricing,
    views,
    write_data,
)

import featurekit as fk
from featurekit.core.hashing import frame_hash
from featurekit.offline.planner import Catalog, ServiceName
from featurekit.storage.manifest import Manifest
from featurekit.storage.runs import RunRecord, RunWindow

PACKAGE = Path(fk.__file__).resolve().parent


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("planner")
    (root / "data").mkdir()
    write_data(root / "data", now_floor())
    store = fk.Store(root / "store", progress=False)
    a, b = views(root / "data")
    store.materialize(a)
    store.materialize(b)
    return {"store": store, "root": root}


# ---- the planner ---------------------------------------------------------------------------
def test_plan_names_versions_pins_and_on_demand_steps(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    plan = store.planner.plan(
        ["zone_stats:surge", "driver_stats:rating", fare_ratio],
        columns=["driver_id", "zone", "amount", "label_ts"],
        pin=True,
    )
    got = [(v.record.view, v.record.version, v.features, v.delta_version) for v in plan.views]
    # fare_ratio's input avg_fare is read from driver_stats, after what was asked from it
    assert got == [
        ("zone_stats", 1, ("surge",), 0),
        ("driver_stats", 1, ("rating", "avg_fare"), 0),
    ]
    assert [plan.names(v) for v in plan.views] == [("surge",), ("rating", "avg_fare")]
    assert plan.key_columns == ("driver_id", "zone")
    assert plan.request_columns == ("amount",)
    assert [(s.feature.name, s.inputs, s.outputs) for s in plan.steps] == [
        ("fare_ratio", (("avg_fare", "avg_fare"),), ("fare_ratio", "no_fare"))
    ]
    assert plan.drop == ("avg_fare",)
    assert ("view", "zone_stats") in plan.watch and ("on_demand", "fare_ratio") in plan.watch
    online = store.planner.plan(["zone_stats:surge"], columns=["driver_id", "zone"])
    assert online.views[0].delta_version is None  # online plans read snapshots, pin nothing


def test_service_by_name_plans_like_the_service_object(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    store.add_definitions([pricing])
    columns = ["driver_id", "zone", "amount"]
    by_name = store.planner.plan(ServiceName("pricing"), columns=columns)
    by_object = store.planner.plan(pricing, columns=columns)
    assert by_name.columns == by_object.columns
    assert ("service", "pricing") in by_name.watch
    with pytest.raises(fk.NotFoundError, match="no feature service named 'pricng'"):
        store.planner.plan(ServiceName("pricng"), columns=columns)


def test_nothing_outside_store_py_reaches_into_store_or_training_set_privates() -> None:
    pattern = re.compile(r"\b(store|ts|self\._store)\._[a-z]\w*")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "store.py" and path.parent == PACKAGE:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "_repr_html_" not in line:
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert offenders == []


# ---- typed manifests -----------------------------------------------------------------------
def test_manifest_is_typed_and_written_once(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    ts = store.training_set(
        labels_at(entities(), datetime.now(UTC)),
        features=["driver_stats:avg_fare", "zone_stats:surge"],
        timestamp="label_ts",
    )
    m = ts.manifest
    assert isinstance(m, Manifest) and m.format_version == 3
    assert m.result_hash_algorithm == "xxh3-128"
    assert [(v.ref, v.columns) for v in m.views] == [
        ("driver_stats@1", ["avg_fare"]),
        ("zone_stats@1", ["surge"]),
    ]
    with pytest.raises(ValueError, match="frozen"):
        m.result_hash = "x"  # type: ignore[misc]
    assert store.registry.manifest(ts.id) == m
    on_disk = json.loads((store.root / "training_sets" / ts.id / "manifest.json").read_text())
    assert on_disk["labels"]["schema"] == m.labels.arrow_schema
    assert "on_demand" not in on_disk


def test_format_1_manifests_on_disk_still_read_and_rebuild(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    labels = labels_at(entities(), datetime.now(UTC)).with_columns(pl.lit(1.0).alias("rating"))
    ts = store.training_set(
        labels, features=["driver_stats:rating", "driver_stats:avg_fare"], timestamp="label_ts"
    )
    path = store.root / "training_sets" / ts.id / "manifest.json"
    old = json.loads(path.read_text())
    old["format_version"] = 1  # as written before views recorded their output columns
    for view in old["views"]:
        del view["columns"]
    path.write_text(json.dumps(old))
    read = store.registry.manifest(ts.id)
    assert read.views[0].columns == ["driver_stats__rating", "avg_fare"]  # the rule of then
    again = store.training_set_by_id(ts.id)
    assert frame_hash(again.to_polars()) == frame_hash(ts.to_polars())
    assert again.explain(0).views[0].values["rating"] == ts.to_polars()["driver_stats__rating"][0]
    old["format_version"] = 9
    path.write_text(json.dumps(old))
    with pytest.raises(fk.StorageError, match="written by a newer featurekit \\(format 9"):
        store.registry.manifest(ts.id)
    path.write_text(json.dumps({**old, "format_version": 2, "views": "nope"}))
    with pytest.raises(fk.StorageError, match="is damaged: .*views"):
        store.registry.manifest(ts.id)


# ---- typed runs ----------------------------------------------------------------------------
def test_runs_are_typed_records(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    store.optimize("zone_stats")
    runs = store.runs("zone_stats")
    assert all(isinstance(r, RunRecord) for r in runs)
    first = runs[0]
    assert (first.delta_version, first.mode, first.view, first.version) == (
        0,
        "full",
        "zone_stats",
        1,
    )
    assert first.window == RunWindow(start=None, end=None)
    assert first.rows_written == store.read("zone_stats", 1).height
    assert set(first.watermarks) == {"zones"}
    assert first.committed_at.tzinfo is not None
    assert [r.mode for r in runs[1:]] in ([], ["optimize"])


# ---- one seam for code the registry cannot hold --------------------------------------------
def test_definitions_give_a_fresh_store_the_code_to_rebuild(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    ts = store.training_set(
        labels_at(entities(), datetime.now(UTC)), features=[pricing], timestamp="label_ts"
    )
    fresh = fk.Store(store.root, progress=False, definitions=[fare_ratio])
    assert frame_hash(fresh.training_set_by_id(ts.id).to_polars()) == frame_hash(ts.to_polars())
    catalog = Catalog([pricing])
    assert catalog.on_demand_feature("fare_ratio") is fare_ratio
    shared = fk.Store(store.root, progress=False, definitions=catalog)
    assert shared.planner.catalog is catalog
    assert frame_hash(shared.training_set_by_id(ts.id).to_polars()) == frame_hash(ts.to_polars())
    with pytest.raises(fk.ReproducibilityError, match="whose code is not loaded"):
        fk.Store(store.root, progress=False).training_set_by_id(ts.id)
    with pytest.raises(fk.DefinitionError, match="definitions must be on-demand features"):
        fk.Store(store.root, progress=False, definitions=["driver_stats:*"])  # type: ignore[list-item]


def test_explain_reads_each_views_values_by_its_recorded_columns(world: dict[str, Any]) -> None:
    store: fk.Store = world["store"]
    ts = store.training_set(
        labels_at(entities(), datetime.now(UTC)), features=[pricing], timestamp="label_ts"
    )
    out = ts.to_polars()
    row = next(i for i, r in enumerate(out.iter_rows(named=True)) if r["fare_ratio"] is not None)
    explained = ts.explain(row)
    assert explained.view("zone_stats").values == {"surge": out["surge"][row]}
    # avg_fare fed fare_ratio and was dropped: it is not a column of the set, so no value
    assert explained.view("driver_stats").values == {"avg_fare": None}
