"""Output column names are unambiguous: two versions of one view in one request, and label
or entity columns that collide with generated or internal names, offline, online and over
HTTP (docs/pit.md "Output columns").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import polars as pl
import pytest
from test_online_support import entities, http_server, labels_at, now_floor, views, write_data

import featurekit as fk
from featurekit.core.hashing import frame_hash

BOTH = ["driver_stats@1:avg_fare", "driver_stats@2:avg_fare", "driver_stats@2:rating"]
BOTH_COLUMNS = ["driver_stats@1__avg_fare", "driver_stats@2__avg_fare", "rating"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> fk.Store:
    """driver_stats v1 (TTL 2h) and v2 (TTL 6h: rows 5h old are fresh in v2 only)."""
    root = tmp_path_factory.mktemp("names")
    (root / "data").mkdir()
    write_data(root / "data", now_floor())
    store = fk.Store(root / "store", progress=False)
    store.materialize(views(root / "data")[0])
    store.materialize(views(root / "data", ttl="6h")[0])
    return store


@pytest.fixture(scope="module")
def client(store: fk.Store) -> Iterator[httpx.Client]:
    from featurekit.serving.app import create_app

    with (
        http_server(create_app(store)) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        yield http


def alone(store: fk.Store, feature: str, when: datetime) -> pl.Series:
    """One feature requested on its own (no clash, so named ``feature``)."""
    ts = store.training_set(labels_at(entities(), when), features=[feature], timestamp="label_ts")
    return ts.to_polars().get_column(feature.split(":")[1])


def test_two_versions_of_one_view_in_a_training_set(store: fk.Store) -> None:
    when = datetime.now(UTC)
    ts = store.training_set(labels_at(entities(), when), features=BOTH, timestamp="label_ts")
    out = ts.to_polars()
    assert out.columns == ["driver_id", "zone", "amount", "label_ts", *BOTH_COLUMNS]
    v1 = alone(store, "driver_stats@1:avg_fare", when)
    v2 = alone(store, "driver_stats@2:avg_fare", when)
    assert out["driver_stats@1__avg_fare"].to_list() == pytest.approx(v1.to_list(), nan_ok=True)
    assert out["driver_stats@2__avg_fare"].to_list() == pytest.approx(v2.to_list(), nan_ok=True)
    assert v1.null_count() > v2.null_count()  # the versions really differ (TTL 2h vs 6h)
    again = store.training_set_by_id(ts.id)
    assert frame_hash(again.to_polars()) == frame_hash(out)


def test_two_versions_of_one_view_online(store: fk.Store) -> None:
    when = datetime.now(UTC)
    online = store.get_online_features(BOTH, entities(), at=when, with_metadata=True)
    assert online.columns == [
        "driver_id",
        "zone",
        "amount",
        *BOTH_COLUMNS,
        "driver_stats@1__event_ts",
        "driver_stats@1__status",
        "driver_stats@2__event_ts",
        "driver_stats@2__status",
    ]
    offline = store.training_set(labels_at(entities(), when), features=BOTH, timestamp="label_ts")
    expected = offline.to_polars().select(BOTH_COLUMNS)
    assert frame_hash(online.select(BOTH_COLUMNS)) == frame_hash(expected)
    statuses = online["driver_stats@1__status"].to_list()
    assert "expired" in statuses
    assert (
        online.filter(pl.col("driver_stats@1__status") == "expired")["driver_stats@2__status"]
        .to_list()
        .count("present")
    )


def test_two_versions_of_one_view_over_http(store: fk.Store, client: httpx.Client) -> None:
    ids = entities()["driver_id"][:30]
    reply = client.post("/v1/features", json={"features": BOTH, "entities": {"driver_id": ids}})
    assert reply.status_code == 200, reply.text
    columns = reply.json()["columns"]
    assert list(columns) == ["driver_id", *BOTH_COLUMNS]
    direct = store.get_online_features(BOTH, {"driver_id": ids})
    for name in BOTH_COLUMNS:  # JSON has no NaN or infinity: they arrive as null
        finite = [v if v is None or math.isfinite(v) else None for v in direct[name].to_list()]
        assert columns[name] == finite


def test_label_column_with_a_generated_name_is_a_clear_error(store: fk.Store) -> None:
    when = datetime.now(UTC)
    labels = labels_at(entities(), when).with_columns(
        pl.lit(1.0).alias("avg_fare"), pl.lit(2.0).alias("driver_stats__avg_fare")
    )
    message = (
        "column 'driver_stats__avg_fare' is both a label (entity) column and the name of "
        "feature 'avg_fare' of view 'driver_stats'"
    )
    with pytest.raises(fk.SchemaError, match=message.replace("(", "\\(").replace(")", "\\)")):
        store.training_set(labels, features=["driver_stats:avg_fare"], timestamp="label_ts")
    ents = {"driver_id": [1], "avg_fare": [1.0], "driver_stats__avg_fare": [2.0]}
    with pytest.raises(fk.SchemaError, match="rename the column 'driver_stats__avg_fare'"):
        store.get_online_features(["driver_stats:avg_fare"], ents)
    # without the clash, the same label column is simply kept
    fine = labels_at(entities(), when).with_columns(pl.lit(2.0).alias("driver_stats__avg_fare"))
    ts = store.training_set(fine, features=["driver_stats:avg_fare"], timestamp="label_ts")
    assert ts.to_polars().columns[-2:] == ["driver_stats__avg_fare", "avg_fare"]


@pytest.mark.parametrize("column", ["__fk_row", "__fk_label_idx", "__fk_t"])
def test_label_column_with_an_internal_name_is_a_clear_error(store: fk.Store, column: str) -> None:
    labels = labels_at(entities(), datetime.now(UTC)).with_columns(pl.lit(1).alias(column))
    with pytest.raises(fk.SchemaError, match=f"column '{column}' uses the prefix '__fk_'"):
        store.training_set(labels, features=["driver_stats:avg_fare"], timestamp="label_ts")


def test_entity_collision_over_http_is_422(client: httpx.Client) -> None:
    body: dict[str, Any] = {
        "features": ["driver_stats:avg_fare"],
        "entities": {"driver_id": [1], "avg_fare": [1.0], "driver_stats__avg_fare": [2.0]},
    }
    reply = client.post("/v1/features", json=body)
    assert reply.status_code == 422
    assert reply.json()["error"]["type"] == "SchemaError"
    assert "rename the column 'driver_stats__avg_fare'" in reply.json()["error"]["message"]
