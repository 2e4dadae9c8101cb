"""Online lookups are logged to a Delta table in the background, in process and by the server."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest
from conftest import at
from test_online_support import served
from views_trips import fare_view

import featurekit as fk
from featurekit.online import serving_log
from featurekit.online.serving_log import LoggedView, ServingLog


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


def test_skew_is_zero_when_online_and_offline_agree(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "store"
    with fk.Store(root, progress=False, log_serving=True) as store:
        store.materialize(fare_view(data_dir, ttl=None))
        store.get_online_features(
            ["fare_features:fare", "fare_features:fare_x2"], {"driver_id": [1, 2, 9]}
        )
        report = store.skew()
    assert (report.values, report.count) == (6, 0)
    assert len(report.training_sets) == 1


def test_skew_names_a_stale_online_snapshot(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "store"
    view = fare_view(data_dir, ttl=None)
    fk.Store(root, progress=False).materialize(view)  # offline and online in sync
    newer = pl.DataFrame(
        {
            "driver_id": [1],
            "event_ts": [at(60)],
            "ingested_at": [at(60.5)],
            "fare": [99.0],
            "status": ["ok"],
        }
    )
    trips = pl.read_parquet(data_dir / "trips.parquet")
    pl.concat([trips, newer]).write_parquet(data_dir / "trips.parquet")
    fk.Store(root, progress=False, online=False).materialize(view)  # offline only: stale online
    with fk.Store(root, progress=False, log_serving=True) as store:
        served_rows = store.get_online_features(["fare_features:fare"], {"driver_id": [1, 2]})
        assert served_rows["fare"].to_list() == [50.0, 60.0]  # the stale snapshot
        report = store.skew()
    assert report.count == 1
    [diff] = report.to_polars().to_dicts()
    assert (diff["feature"], diff["served"], diff["offline"]) == ("fare", "50.0", "99.0")
    assert diff["reason"].startswith(
        "stale online snapshot: it served the row at 2026-01-02T16:00:00+00:00, the offline "
        "store has a row at 2026-01-03T12:00:00+00:00"
    )


@pytest.mark.parametrize("slices", ["default", "one value"])
def test_logged_rows_encode_values_as_orjson_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slices: str
) -> None:
    # the writer encodes plain values column-wise in polars and the rest one row at a time;
    # both must write what orjson writes (the readers parse it back with orjson), wherever
    # its slices fall (one value per slice: slices of nulls only, of ints then of floats)
    if slices == "one value":
        monkeypatch.setattr(serving_log, "SLICE_VALUES", 1)
        monkeypatch.setattr(serving_log, "SLICE_LOOKUPS", 1)
    t0 = 1_767_225_600_123_457
    fare = LoggedView(
        "fare_features",
        2,
        ("fare", "city", "ok"),
        {"fare": [1.0, None, float("nan")], "city": ['"q"', "ü", None], "ok": [True, None, False]},
        ["present", "not_found", "present"],
        [t0 - 7, None, t0 - 1],
    )
    rating = LoggedView(
        "ratings", 1, ("rating",), {"rating": [4, 5, None]}, ["present"] * 3, [t0] * 3
    )
    one = LoggedView("ratings", 1, ("rating",), {"rating": [4]}, ["present"], [t0])
    log = ServingLog(str(tmp_path / "log"))
    log.record(t0, {"driver_id": [1, 2, 9]}, ("driver_id",), [fare, rating])
    log.record(t0 + 1, {"driver_id": [3, 4, 5]}, ("driver_id",), [rating])
    log.close()
    # a date key and mixed key types in one batch: not plain polars columns
    odd = ServingLog(str(tmp_path / "odd"))
    odd.record(t0, {"day": [date(2026, 1, 1)]}, ("day",), [one])
    odd.record(t0, {"day": ["2026-01-02"]}, ("day",), [one])
    odd.close()
    # ints in one lookup, floats in the next: one column of mixed types, encoded row by row
    mixed = ServingLog(str(tmp_path / "mixed"))
    half = LoggedView("ratings", 1, ("rating",), {"rating": [4.5]}, ["present"], [t0])
    for view in (one, half):
        mixed.record(t0, {"driver_id": [1]}, ("driver_id",), [view])
    mixed.close()

    rows = pl.read_delta(str(tmp_path / "log"))
    assert rows["request_id"].unique_counts().to_list() == [6, 3]  # in the order recorded
    assert rows["view"].to_list() == ["fare_features"] * 3 + ["ratings"] * 6
    assert rows["entity"].to_list() == [f'{{"driver_id":{i}}}' for i in (1, 2, 9, 1, 2, 9, 3, 4, 5)]
    expected = [
        orjson.dumps({f: view.values[f][i] for f in view.features}).decode()
        for view in (fare, rating, rating)
        for i in range(3)
    ]
    assert rows["features"].to_list() == expected
    assert expected[0] == '{"fare":1.0,"city":"\\"q\\"","ok":true}'
    assert expected[2] == '{"fare":null,"city":null,"ok":false}'
    assert (
        rows["lookup_at"].to_list()
        == [datetime(2026, 1, 1, 0, 0, 0, 123457, UTC)] * 6
        + [datetime(2026, 1, 1, 0, 0, 0, 123458, UTC)] * 3
    )
    assert rows["event_ts"][:3].to_list() == [
        datetime(2026, 1, 1, 0, 0, 0, 123450, UTC),
        None,
        datetime(2026, 1, 1, 0, 0, 0, 123456, UTC),
    ]
    assert rows["status"][:3].to_list() == ["present", "not_found", "present"]
    days = pl.read_delta(str(tmp_path / "odd"))["entity"].to_list()
    assert days == ['{"day":"2026-01-01"}', '{"day":"2026-01-02"}']
    ratings = pl.read_delta(str(tmp_path / "mixed"))["features"].to_list()
    assert ratings == ['{"rating":4}', '{"rating":4.5}']


def test_the_writer_yields_the_gil_between_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    # the property that keeps a lookup from waiting on the writer's Python work: it gathers
    # at most SLICE_LOOKUPS lookups, and converts at most SLICE_VALUES values, between yields
    monkeypatch.setattr(serving_log, "SLICE_VALUES", 10)
    monkeypatch.setattr(serving_log, "SLICE_LOOKUPS", 4)
    converted: list[int] = []  # values per conversion to polars, then 0 per yield
    series = serving_log._series

    def counted(values: list[Any], dtype: pl.DataType | None) -> pl.Series:
        converted.append(len(values))
        return series(values, dtype)

    monkeypatch.setattr(serving_log, "_series", counted)
    view = LoggedView(
        "ratings", 1, ("a", "b"), {"a": [1.5] * 3, "b": ["x"] * 3}, ["present"] * 3, [None] * 3
    )
    entries = [(i, ("driver_id",), {"driver_id": [i, i + 1, i + 2]}, [view]) for i in range(9)]
    frame = serving_log._rows(entries, lambda: converted.append(0))
    assert frame.height == 27
    # 9 lookups: a yield after the 4th and the 8th; then 8 columns of 27 values, 10 at a time
    gathered, conversions = converted[:2], converted[2:]
    assert gathered == [0, 0]
    assert conversions == [10, 0, 10, 0, 7, 0] * 8


def test_a_full_log_drops_lookups_and_counts_them(tmp_path: Path) -> None:
    # memory stays bounded: past queue_size waiting lookups, record() drops instead of growing
    one = LoggedView("ratings", 1, ("rating",), {"rating": [4]}, ["present"], [None])
    log = ServingLog(str(tmp_path / "log"), queue_size=3, batch_lookups=100, flush_seconds=600)
    for i in range(5):
        log.record(1_767_225_600_000_000, {"driver_id": [i]}, ("driver_id",), [one])
    assert log.dropped == 2
    log.close()  # writes what was kept
    assert log.written == 3
    entities = pl.read_delta(str(tmp_path / "log"))["entity"].to_list()
    assert entities == ['{"driver_id":0}', '{"driver_id":1}', '{"driver_id":2}']
