"""Online lookups are logged to a Delta table in the background, in process and by the server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import polars as pl
import pytest
from conftest import at
from test_online_support import served
from views_trips import fare_view

import featurekit as fk
from featurekit.online.serving_log import ServingLog


def test_store_logs_every_lookup_once_with_values_and_statuses(
    tmp_path: Path, data_dir: Path
) -> None:
    root = tmp_path / "store"
    with fk.Store(root, progress=False, log_serving=True) as store:
        store.materialize(fare_view(data_dir, ttl=None))
        served_frames = [
            store.get_online_features(["fare_features:fare"], {"driver_id": [1, 2, 9]})
            for _ in range(3)
        ]
    log = fk.Store(root, progress=False).serving_log()
    assert log.height == 9
    assert log.group_by("request_id").len()["len"].to_list() == [3, 3, 3]
    first = log.filter(pl.col("request_id") == log["request_id"][0])
    assert [json.loads(e)["driver_id"] for e in first["entity"]] == [1, 2, 9]
    assert first["status"].to_list() == ["present", "present", "not_found"]
    fares = [json.loads(v)["fare"] for v in first["features"]]
    assert fares == served_frames[0]["fare"].to_list()
    assert set(log["view"]) == {"fare_features"} and set(log["version"]) == {1}


def test_serving_values_feed_drift(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "store"
    with fk.Store(root, progress=False, log_serving=True) as store:
        store.materialize(fare_view(data_dir, ttl=None))
        for _ in range(4):
            store.get_online_features(["fare_features:fare"], {"driver_id": [1, 2]})
        report = store.drift("fare_features", reference=(at(0), at(50)), current="serving")
    assert report.current_rows == 8
    assert report.current_label == "serving log"
    # lookups served only fare (not fare_x2): the features served are compared
    assert [(r.feature, r.metric) for r in report.results] == [
        ("fare", "psi"),
        ("fare", "ks_pvalue"),
    ]


def test_sample_rate_is_validated(tmp_path: Path) -> None:
    with pytest.raises(fk.DefinitionError, match=r"sample rate must be in \(0, 1\], got 1.5"):
        ServingLog(str(tmp_path / "log"), sample=1.5)


def test_serve_log_features_logs_each_request_exactly_once(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "store"
    store = fk.Store(root, progress=False)
    store.materialize(fare_view(data_dir, ttl=None))
    body = {"features": ["fare_features:fare"], "entities": {"driver_id": [1, 2]}}
    with served(root, "--log-features") as base:
        for _ in range(20):
            assert httpx.post(f"{base}/v1/features", json=body, timeout=10).status_code == 200
    log = fk.Store(root, progress=False).serving_log()  # flushed on shutdown
    assert log["request_id"].n_unique() == 20
    assert log.height == 40
