"""``POST /v1/features`` is answered by the server's boundary, not FastAPI's router (the
lookup is the latency the server exists for). What it answers must be what the route
answered: the same values, the same errors, counted once in the metrics, whichever way
the body arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from test_online_support import fare_ratio, filled_store, from_json, http_server, pricing

import featurekit as fk

FEATURES = ["driver_stats:avg_fare", "driver_stats:trips_today", "driver_stats:rating"]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> fk.Store:
    return filled_store(tmp_path_factory.mktemp("path"))


@pytest.fixture()
def base(filled: fk.Store) -> Iterator[str]:
    """A fresh server per test, so its metrics count only that test's requests."""
    from featurekit.serving.app import create_app

    with http_server(create_app(filled, definitions=[fare_ratio, pricing])) as url:
        yield url


def as_json(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` as JSON can carry it: non-finite floats become null."""
    floats = pl.col(pl.Float64)
    return frame.with_columns(pl.when(floats.is_finite()).then(floats))


def count(text: str, code: int) -> float:
    line = f'featurekit_http_requests_total{{endpoint="/v1/features",code="{code}"}}'
    found = [row.split()[-1] for row in text.splitlines() if row.startswith(line)]
    return float(found[0]) if found else 0.0


@pytest.mark.parametrize("n", [1, 32, 33, 250])  # on the event loop up to 32, then a thread
def test_lookups_equal_the_in_process_frame(filled: fk.Store, base: str, n: int) -> None:
    ids = [(7 * i) % 300 for i in range(n)]
    reply = httpx.post(
        f"{base}/v1/features",
        json={"features": FEATURES, "entities": {"driver_id": ids}, "with_metadata": True},
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"lookup_ts", "columns"}
    frame = filled.get_online_features(FEATURES, {"driver_id": ids}, with_metadata=True)
    got = from_json(body["columns"], frame)
    # NaN and infinities travel as null in JSON; statuses and event times match exactly
    assert_frame_equal(got, as_json(frame))


def test_services_and_on_demand_features_take_the_same_path(filled: fk.Store, base: str) -> None:
    entities = {"driver_id": [1, 2, 5], "zone": ["a", "a", "b"], "amount": [10.0, 20.0, 5.5]}
    reply = httpx.post(
        f"{base}/v1/features", json={"feature_service": "pricing", "entities": entities}
    )
    assert reply.status_code == 200, reply.text
    frame = filled.get_online_features(pricing, entities)
    got = from_json(reply.json()["columns"], frame)
    assert_frame_equal(got, as_json(frame))


def test_a_body_sent_in_pieces_is_read_whole(base: str) -> None:
    text = b'{"features": ["driver_stats:trips_today"], "entities": {"driver_id": [1, 2]}}'

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(text), 7):
            yield text[start : start + 7]

    reply = httpx.post(
        f"{base}/v1/features", content=pieces(), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 200, reply.text
    assert list(reply.json()["columns"]) == ["driver_id", "trips_today"]


@pytest.mark.parametrize(
    ("content", "kind", "message"),
    [
        (b'{"features": ["driver_stats:rating"]', "application/json", "not valid JSON"),
        (
            b'{"features": ["driver_stats:rating"], "entities": {"driver_id": [1]}, "x": 1}',
            "application/json",
            "x: Extra inputs are not permitted",
        ),
        (
            b'{"features": ["driver_stats:rating"], "entities": {"driver_id": [1]}}',
            "text/plain",
            "Input should be a valid dictionary",
        ),
        (b"[1, 2]", "application/json", "Input should be a valid dictionary"),
    ],
)
def test_bodies_the_model_refuses_get_the_routes_errors_counted_once(
    base: str, content: bytes, kind: str, message: str
) -> None:
    ok = {"features": ["driver_stats:rating"], "entities": {"driver_id": [1]}}
    for _ in range(3):
        assert httpx.post(f"{base}/v1/features", json=ok).status_code == 200
    reply = httpx.post(f"{base}/v1/features", content=content, headers={"content-type": kind})
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["type"] == "ValidationError"
    assert message in reply.json()["error"]["message"]
    metrics = httpx.get(f"{base}/metrics").text
    assert (count(metrics, 200), count(metrics, 422)) == (3.0, 1.0)
    assert 'featurekit_view_requests_total{view="driver_stats",version="1"} 3' in metrics


def test_errors_after_validation_keep_the_one_shape(base: str) -> None:
    reply = httpx.post(
        f"{base}/v1/features",
        json={"features": ["driver_stats:rating"], "entities": {"driver_id": ["one"]}},
    )
    assert reply.status_code == 422
    assert reply.json() == {
        "error": {
            "type": "EntityError",
            "message": "entity key 'driver_id' must be integers (view 'driver_stats' stores "
            "Int64); got 'one' (str) at position 0.",
            "field": "driver_id",
        }
    }
    reply = httpx.post(
        f"{base}/v1/features",
        json={"features": ["driver_stats:ratings"], "entities": {"driver_id": [1]}},
    )
    assert reply.status_code == 404 and reply.json()["error"]["type"] == "NotFoundError"
    metrics = httpx.get(f"{base}/metrics").text
    assert (count(metrics, 422), count(metrics, 404)) == (1.0, 1.0)


def test_a_name_checked_once_is_still_checked_against_each_servers_limit(
    filled: fk.Store, base: str
) -> None:
    from featurekit.serving.app import Limits, create_app

    ref = "driver_stats:trips_today"
    assert (
        httpx.post(
            f"{base}/v1/features", json={"features": [ref], "entities": {"driver_id": [1]}}
        ).status_code
        == 200
    )
    with http_server(create_app(filled, limits=Limits(max_name_length=10))) as strict:
        reply = httpx.post(
            f"{strict}/v1/features", json={"features": [ref], "entities": {"driver_id": [1]}}
        )
    assert reply.status_code == 422
    assert reply.json()["error"]["field"] == "features.0"
    assert "longer than" in reply.json()["error"]["message"]


def test_the_route_is_still_in_the_openapi_spec(base: str) -> None:
    spec: dict[str, Any] = httpx.get(f"{base}/openapi.json").json()
    operation = spec["paths"]["/v1/features"]["post"]
    assert operation["summary"] == "Look up online features"
    assert "FeaturesRequest" in str(operation["requestBody"])


def test_lookups_are_traced_when_fastapi_telemetry_is_on(filled: fk.Store) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from featurekit.serving.app import create_app

    app = create_app(filled)
    config = getattr(app, "_telemetry", None)  # FastAPI's own switch (newer versions)
    if not isinstance(config, dict):
        pytest.skip("this FastAPI has no native OpenTelemetry instrumentation")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config["tracer_provider"] = provider
    body = {"features": ["driver_stats:trips_today"], "entities": {"driver_id": [1]}}
    with http_server(app) as url:
        reply = httpx.post(f"{url}/v1/features", json=body)
    assert reply.status_code == 200, reply.text
    spans = [(s.name, dict(s.attributes or {})) for s in exporter.get_finished_spans()]
    # one server span for the lookup, with its status (the route template is not set: the
    # lookup is answered before FastAPI's router)
    assert [(a.get("url.path"), a.get("http.response.status_code")) for _, a in spans] == [
        ("/v1/features", 200)
    ], spans
