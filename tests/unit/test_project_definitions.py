"""``fk.Definitions``: typed, frozen, validated when made; no disk."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

import featurekit as fk
from featurekit.project.config import load_definitions

driver = fk.Entity("driver", keys=["driver_id"])
trips = fk.Source(
    "trips", pl.DataFrame({"driver_id": [1], "ts": [datetime(2026, 1, 1)]}), timestamp="ts"
)


def base(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips


def top(base: pl.LazyFrame) -> pl.LazyFrame:
    return base


def ratio(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(pl.col("x").alias("r"))


base_view = fk.feature_view(entity=driver, sources=[trips])(base)
top_view = fk.feature_view(entity=driver, sources=[base_view])(top)
ratio_feature = fk.on_demand(inputs=["base:x"])(ratio)
service = fk.FeatureService("svc", features=["base:x", ratio_feature])


def test_upstream_views_are_included_first_and_services_bring_their_on_demand() -> None:
    defs = fk.Definitions(views=[top_view], services=[service])
    assert [v.name for v in defs.views] == ["top"]
    assert [v.name for v in defs.all_views] == ["base", "top"]
    assert [f.name for f in defs.on_demand] == ["ratio"]
    assert defs.view("base") is base_view and defs.service("svc") is service
    assert defs.catalog().on_demand_feature("ratio") is ratio_feature
    assert repr(defs) == "Definitions(views=['top'], services=['svc'], on_demand=['ratio'])"
    with pytest.raises(dataclasses.FrozenInstanceError):
        defs.views = ()  # type: ignore[misc]


def test_duplicates_and_wrong_types_are_refused() -> None:
    other = fk.feature_view(entity=driver, sources=[trips], name="base", ttl="1d")(base)
    with pytest.raises(
        fk.DefinitionError, match="declares the name 'base' twice \\(a view and a view\\)"
    ):
        fk.Definitions(views=[base_view, other])
    clash = fk.on_demand(inputs=["top:x"], name="base")(ratio)
    with pytest.raises(fk.DefinitionError, match="twice \\(a view and a on-demand feature\\)"):
        fk.Definitions(views=[base_view], on_demand=[clash])
    with pytest.raises(fk.DefinitionError, match="takes a list of feature views .* wrap it"):
        fk.Definitions(views=base_view)  # type: ignore[arg-type]
    with pytest.raises(fk.DefinitionError, match="takes fk.FeatureService objects, got str 'svc'"):
        fk.Definitions(services=["svc"])  # type: ignore[list-item]
    # the same object listed twice is one definition
    assert len(fk.Definitions(views=[base_view, base_view]).views) == 1


def test_store_takes_definitions(tmp_path: Path) -> None:
    defs = fk.Definitions(views=[base_view], on_demand=[ratio_feature])
    store = fk.Store(tmp_path / "s", definitions=defs, progress=False)
    assert store.definitions is defs
    assert store.planner.catalog.on_demand_feature("ratio") is ratio_feature


def test_load_definitions_by_file_module_and_attr(tmp_path: Path) -> None:
    (tmp_path / "proj_defs_a.py").write_text(
        "import featurekit as fk\none = fk.Definitions()\ntwo = fk.Definitions()\n"
    )
    with pytest.raises(fk.DefinitionError, match="holds 2 \\(one, two\\) fk.Definitions objects"):
        load_definitions("proj_defs_a.py", base=tmp_path)
    assert isinstance(load_definitions("proj_defs_a:two", base=tmp_path), fk.Definitions)
    with pytest.raises(fk.DefinitionError, match="'three' in 'proj_defs_a' is nothing"):
        load_definitions("proj_defs_a:three", base=tmp_path)
    with pytest.raises(fk.NotFoundError, match="definitions module 'no_such_mod' cannot be found"):
        load_definitions("no_such_mod", base=tmp_path)
    (tmp_path / "proj_defs_b.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(fk.UserCodeError, match="importing definitions 'proj_defs_b.py' failed"):
        load_definitions("proj_defs_b.py", base=tmp_path)
