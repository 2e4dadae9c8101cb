"""Versions as the store sees them: what makes a new one, and why it is recorded."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from conftest import StoreRoot, load_module, trips_frame

import featurekit as fk

MODULE = """
import polars as pl
import featurekit as fk
from pathlib import Path

FOLDER = Path({folder!r})
RATE = {rate}
driver = fk.Entity("driver", keys=["driver_id"])
trips = fk.Source("trips", FOLDER / "trips.parquet", timestamp="event_ts",
                  created_timestamp="ingested_at")


def scale(col):
    {helper_body}


@fk.feature_view(entity=driver, sources=[trips], ttl={ttl!r}, tags={tags!r})
def fares(trips: pl.LazyFrame) -> pl.LazyFrame:
    {doc}
    return trips.select("driver_id", "event_ts", "ingested_at",
                        scale(pl.col("fare")).alias("fare_scaled"))  {comment}
"""


def make(tmp_path: Path, name: str, **changes: object) -> fk.FeatureView:
    values: dict[str, object] = {
        "folder": str(tmp_path / "data"),
        "rate": 2,
        "helper_body": "return col * RATE",
        "ttl": "1d",
        "tags": {"team": "a"},
        "doc": '"""Fares."""',
        "comment": "",
    }
    values.update(changes)
    module = load_module(tmp_path / f"{name}.py", name, MODULE.format(**values))
    view: fk.FeatureView = module.fares
    return view


@pytest.fixture
def store(store_root: StoreRoot) -> fk.Store:
    """Every store-level test here runs on a local root and on an S3 root."""
    return store_root.open()


@pytest.fixture
def base(tmp_path: Path, data_dir: Path) -> fk.FeatureView:
    return make(tmp_path, "m_base")


def test_cosmetic_edits_and_tags_keep_the_version(
    store: fk.Store, tmp_path: Path, base: fk.FeatureView
) -> None:
    first = store.register(base)
    cosmetic = make(
        tmp_path, "m_cosmetic", doc='"""Other words."""', comment="# a comment", tags={"team": "b"}
    )
    assert store.register(cosmetic).version == first.version == 1
    assert len(store.versions("fares")) == 1


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"helper_body": "return col * RATE + 0"}, ["code"]),
        ({"rate": 3}, ["code"]),
        ({"ttl": "2d"}, ["options"]),
    ],
)
def test_real_changes_make_a_new_version_with_the_reason(
    store: fk.Store,
    tmp_path: Path,
    base: fk.FeatureView,
    changes: dict[str, object],
    reason: list[str],
) -> None:
    store.register(base)
    changed = make(tmp_path, "m_changed", **changes)
    record = store.register(changed)
    assert record.version == 2
    assert record.reason == reason
    assert [r.version for r in store.versions("fares")] == [1, 2]
    assert store.register(base).version == 1  # the old definition keeps its number


def test_new_unused_source_column_keeps_version_retyped_used_column_does_not(
    store: fk.Store, tmp_path: Path, data_dir: Path, base: fk.FeatureView
) -> None:
    store.materialize(base)
    trips_frame().with_columns(pl.lit("x").alias("new_col")).write_parquet(
        data_dir / "trips.parquet"
    )
    assert store.register(base).version == 1
    assert store.materialize(base).version == 1
    trips_frame().with_columns(pl.col("fare").cast(pl.Int64)).write_parquet(
        data_dir / "trips.parquet"
    )
    record = store.register(base)
    assert record.version == 2
    assert record.reason == ["source_schema"]
    assert store.read("fares", 1)["fare_scaled"].dtype == pl.Float64  # old data untouched


def test_removed_used_column_is_a_clear_error_and_changes_nothing(
    store: fk.Store, data_dir: Path, base: fk.FeatureView
) -> None:
    store.materialize(base)
    before = store.read("fares")
    trips_frame().drop("fare").write_parquet(data_dir / "trips.parquet")
    with pytest.raises(fk.UserCodeError, match="view 'fares' does not fit its inputs' schemas"):
        store.materialize(base)
    assert store.read("fares").equals(before)
    assert [r.version for r in store.versions("fares")] == [1]


def test_versions_of_unknown_view_suggests(store: fk.Store, base: fk.FeatureView) -> None:
    store.register(base)
    with pytest.raises(fk.NotFoundError, match="Did you mean 'fares'"):
        store.versions("fare")


LATER_HELPER = """
import polars as pl
import featurekit as fk
from pathlib import Path

driver = fk.Entity("driver", keys=["driver_id"])
trips = fk.Source("trips", Path({folder!r}) / "trips.parquet", timestamp="event_ts")


@fk.feature_view(entity=driver, sources=[trips])
def later(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", _helper(pl.col("fare")).alias("x"))


def _helper(col):
    return col * {factor}
"""


def test_helper_defined_below_the_view_is_versioned(
    store: fk.Store, tmp_path: Path, data_dir: Path
) -> None:
    def make_later(name: str, factor: int) -> fk.FeatureView:
        source = LATER_HELPER.format(folder=str(data_dir), factor=factor)
        view: fk.FeatureView = load_module(tmp_path / f"{name}.py", name, source).later
        return view

    assert store.register(make_later("later_a", 2)).version == 1
    assert store.register(make_later("later_b", 2)).version == 1
    changed = store.register(make_later("later_c", 3))
    assert (changed.version, changed.reason) == (2, ["code"])


# ---- records written by format 1 --------------------------------------------------------------
STORE_V1 = Path(__file__).parent / "store_v1"


def test_registry_records_written_by_format_1_still_read(tmp_path: Path) -> None:
    """Registry files exactly as an earlier featurekit wrote them (no Delta tables needed)."""
    import json
    import shutil
    from datetime import timedelta

    root = tmp_path / "store"
    shutil.copytree(STORE_V1, root)
    store = fk.Store(root, progress=False, online=False, create=False)
    assert store.views() == ["fare_events", "fares"]
    fares = store.versions("fares")[0]
    assert (fares.version, fares.ttl_us, fares.aggregations) == (1, 172_800_000_000, [])
    assert fares.output == {
        "driver_id": "Int64",
        "event_ts": "Datetime(time_unit='us', time_zone='UTC')",
        "fare": "Float64",
    }
    events = store.versions("fare_events")[0]
    assert events.aggregations == [
        fk.Aggregation("fare", "sum", "7d"),
        fk.Aggregation("fare", "count"),
    ]
    assert events.aggregations[0].window == timedelta(days=7)
    assert events.aggregations[1].window is None
    assert events.event_columns == ["fare"]
    on_disk = json.loads((root / "_featurekit/views/fare_events/v1.json").read_text())
    assert events.model_dump(mode="json")["aggregations"] == on_disk["aggregations"]

    [service] = store.registry.service_versions("pricing")
    assert (service.version, service.features, service.format_version) == (
        1,
        ["fares:fare", "ratio:*"],
        1,
    )
    [ratio] = store.registry.on_demand_versions("ratio")
    assert (ratio.inputs, ratio.outputs, ratio.code) == (["fares@1:fare"], ["ratio"], "version:1")
    [churn] = store.models("churn")
    assert (churn.id, churn.training_set, churn.metrics) == (
        "model:churn@1",
        "2f1f64b93b8130eb",
        {"auc": 0.9},
    )
    # the next version of each name follows the old ones
    assert [
        store.registry.next_version(k, n) for k, n in [("view", "fares"), ("model", "churn")]
    ] == [2, 2]
