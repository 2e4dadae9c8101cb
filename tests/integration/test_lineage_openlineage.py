"""OpenLineage: events validate against openlineage-python's models and round-trip; the store
emits them through the HTTP transport (to a local receiver) and the file transport."""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pytest
from conftest import at
from test_lineage_store import events_frame, events_source, views

import featurekit as fk
from featurekit.lineage.openlineage import (
    _normalized,
    dataset_naming,
    run_uuid,
    to_client_event,
    validate_event,
)


def need(module: str) -> None:
    """Skip when an optional extra is missing, except in CI, which installs it."""
    try:
        importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(
            f"{module} is not installed (pip install 'featurekit[openlineage]'); CI runs it"
        )


def build(store: fk.Store, folder: Path) -> fk.TrainingSet:
    clean, rich, day = views(folder)
    for view in (clean, rich, day):
        store.materialize(view)
    labels = pl.DataFrame({"driver_id": [1, 2], "ts": [at(48), at(48)]})
    ts = store.training_set(labels, features=["daily:total_sum", "clean:tip"], timestamp="ts")
    store.log_model("churn", training_set=ts, model="s3://m/churn")
    return ts


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    events_frame().write_parquet(data / "events.parquet")
    return data


def test_events_follow_the_spec_and_round_trip(store: fk.Store, folder: Path) -> None:
    need("openlineage.client")
    from openlineage.client.serde import Serde

    ts = build(store, folder)
    events = store.lineage().to_openlineage()
    assert [e["job"]["name"] for e in events] == [
        "featurekit.materialize.clean",
        "featurekit.materialize.enriched",
        "featurekit.materialize.daily",
        "featurekit.training_set",
        "featurekit.log_model.churn",
    ]
    for event in events:
        validate_event(event)
        obj = to_client_event(event)
        assert json.loads(Serde.to_json(obj))["run"]["runId"] == event["run"]["runId"]
        assert (
            event["schemaURL"]
            == "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
        )
        assert event["eventType"] == "COMPLETE"
    daily = events[2]
    (source,) = daily["inputs"]
    assert source["namespace"] == "file"
    assert source["name"] == str(folder / "events.parquet")
    assert len(source["facets"]["version"]["datasetVersion"]) == 12
    (output,) = daily["outputs"]
    assert output["name"] == str(store.root / "features" / "daily" / "v1")
    assert output["facets"]["version"]["datasetVersion"] == "0"
    assert [f["name"] for f in output["facets"]["schema"]["fields"]] == [
        "driver_id",
        "event_ts",
        "ingested_at",
        "total_sum",
        "trips",
    ]
    # chained views resolve to the raw columns the run read
    fields = output["facets"]["columnLineage"]["fields"]
    total = {
        (f["field"], f["transformations"][0]["type"]) for f in fields["total_sum"]["inputFields"]
    }
    assert total == {
        ("fare", "DIRECT"),
        ("status", "INDIRECT"),
        ("driver_id", "INDIRECT"),
        ("event_ts", "INDIRECT"),
    }
    training = events[3]
    assert {(d["name"], d["facets"]["version"]["datasetVersion"]) for d in training["inputs"]} == {
        (str(store.root / "features" / "daily" / "v1"), "0"),
        (str(store.root / "features" / "clean" / "v1"), "0"),
    }
    (out,) = training["outputs"]
    assert out["name"] == str(store.root / "training_sets" / ts.id)
    assert out["facets"]["columnLineage"]["fields"]["tip"]["inputFields"][0]["field"] == "tip"
    assert events[4]["inputs"][0]["name"] == out["name"]
    assert run_uuid("abc") == run_uuid("abc") != run_uuid("abd")


def test_naming_follows_the_openlineage_naming_spec(tmp_path: Path) -> None:
    assert dataset_naming("s3://bucket/a/b.parquet", "x") == {
        "namespace": "s3://bucket",
        "name": "a/b.parquet",
    }
    assert dataset_naming(str(tmp_path / "t"), "x") == {
        "namespace": "file",
        "name": str(tmp_path / "t"),
    }
    assert dataset_naming(None, "featurekit/trips") == {
        "namespace": "memory",
        "name": "featurekit/trips",
    }


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, json.loads(body)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    received: list[tuple[str, dict[str, Any]]] = []
    handler = type("Handler", (_Receiver,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_transport_emits_as_it_happens(
    tmp_path: Path, folder: Path, receiver: tuple[str, list[tuple[str, dict[str, Any]]]]
) -> None:
    need("openlineage.client")
    url, received = receiver
    store = fk.Store(tmp_path / "store", progress=False, lineage_emitter=url)
    clean, _, _ = views(folder)
    store.materialize(clean)
    assert [p for p, _ in received] == ["/api/v1/lineage"]
    event = received[0][1]
    assert event["job"]["name"] == "featurekit.materialize.clean"
    ours = fk.Store(tmp_path / "store").lineage().to_openlineage()[0]
    assert event["run"]["runId"] == ours["run"]["runId"]
    for key in ("inputs", "outputs"):  # the client drops empty facets and may add its own
        assert _normalized(event[key]) == _normalized(ours[key])
    store.materialize(clean)  # a no-op run reads nothing and emits nothing
    assert len(received) == 1
    labels = pl.DataFrame({"driver_id": [1], "ts": [at(48)]})
    ts = store.training_set(labels, features=["clean:tip"], timestamp="ts")
    store.training_set(labels, features=["clean:tip"], timestamp="ts")  # same id: once
    store.log_model("m", training_set=ts)
    assert [e["job"]["name"] for _, e in received] == [
        "featurekit.materialize.clean",
        "featurekit.training_set",
        "featurekit.log_model.m",
    ]


def test_file_transport_and_callables(tmp_path: Path, folder: Path) -> None:
    need("openlineage.client")
    log = tmp_path / "events.jsonl"
    store = fk.Store(tmp_path / "store", progress=False, lineage_emitter=log)
    clean, _, _ = views(folder)
    store.materialize(clean)
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    assert [e["job"]["name"] for e in lines] == ["featurekit.materialize.clean"]
    got: list[dict[str, Any]] = []
    other = fk.Store(tmp_path / "other", progress=False, lineage_emitter=got.append)
    other.materialize(clean)
    assert got[0]["outputs"][0]["name"] == str(tmp_path / "other" / "features" / "clean" / "v1")


def test_emitter_failure_warns_and_never_breaks_materialize(tmp_path: Path, folder: Path) -> None:
    def broken(event: dict[str, Any]) -> None:
        raise ConnectionError("marquez is down")

    store = fk.Store(tmp_path / "store", progress=False, lineage_emitter=broken)
    clean, _, _ = views(folder)
    with pytest.warns(fk.FeatureKitWarning, match="not emitted: ConnectionError: marquez is down"):
        result = store.materialize(clean)
    assert result.rows_written == 4
    assert "view:clean@1" in store.lineage()


def test_bad_emitter_setting_is_a_definition_error(tmp_path: Path) -> None:
    with pytest.raises(fk.DefinitionError, match="lineage_emitter=42 is not understood"):
        fk.Store(tmp_path / "s", lineage_emitter=42)


def test_emitter_from_environment(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("openlineage.client")
    log = tmp_path / "env-events.jsonl"
    monkeypatch.setenv("FEATUREKIT_LINEAGE_EMITTER", f"file://{log}")
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(views(folder)[0])
    assert log.exists() and "featurekit.materialize.clean" in log.read_text()


def test_in_memory_source_node(tmp_path: Path) -> None:
    source = fk.Source("events", events_frame(), timestamp="event_ts")

    def fares(events: pl.LazyFrame) -> pl.LazyFrame:
        return events.select("driver_id", "event_ts", "fare")

    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(
        fk.feature_view(entity=events_source.__globals__["driver"], sources=[source])(fares)
    )
    (node,) = store.lineage().of_kind("source")
    assert node.attrs["fingerprint_of"] == "values"
    assert node.attrs["dataset"] == {"namespace": "memory", "name": "featurekit/events"}
    events = store.lineage().to_openlineage()
    assert events[0]["inputs"][0]["namespace"] == "memory"
