"""The HTTP server: bad input gets clear 4xx errors (fuzzed with schemathesis), metrics,
OpenAPI checked into docs/, Redis going down gives 503 while the server stays up, and the
`featurekit serve` command itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_online_support import (
    fare_ratio,
    http_server,
    now_floor,
    pricing,
    redis_server,
    served,
    views,
    write_data,
)

import featurekit as fk

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> fk.Store:
    root = tmp_path_factory.mktemp("http")
    (root / "data").mkdir()
    write_data(root / "data", now_floor())
    store = fk.Store(root / "store", progress=False)
    for view in views(root / "data"):
        store.materialize(view)
    return store


@pytest.fixture(scope="module")
def client(filled: fk.Store) -> Iterator[httpx.Client]:
    from featurekit.serving.app import Limits, create_app

    limits = Limits(max_entities=10_000)
    app = create_app(filled, definitions=[fare_ratio, pricing], limits=limits)
    with http_server(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        yield http


def post(client: httpx.Client, body: Any) -> tuple[int, dict[str, Any]]:
    reply = client.post("/v1/features", json=body)
    return reply.status_code, reply.json()


def test_unknown_names_are_404_with_a_suggestion(client: httpx.Client) -> None:
    code, body = post(
        client, {"features": ["driver_stats:avg_fair"], "entities": {"driver_id": [1]}}
    )
    assert code == 404
    assert body["error"]["type"] == "NotFoundError"
    assert "no feature 'avg_fair'. Did you mean 'avg_fare'?" in body["error"]["message"]
    code, body = post(
        client, {"features": ["driver_stat:avg_fare"], "entities": {"driver_id": [1]}}
    )
    assert (code, "Did you mean 'driver_stats'?" in body["error"]["message"]) == (404, True)
    code, body = post(client, {"feature_service": "pricng", "entities": {"driver_id": [1]}})
    assert (code, "Did you mean 'pricing'?" in body["error"]["message"]) == (404, True)
    reply = client.get("/v1/feature-views/zone_stat")
    assert reply.status_code == 404 and "Did you mean 'zone_stats'?" in reply.text


@pytest.mark.parametrize(
    ("entities", "field", "words"),
    [
        ({"zone": ["a"]}, "driver_id", "missing key column 'driver_id'"),
        ({"driver_id": ["1"]}, "driver_id", "must be integers"),
        ({"driver_id": [1.5]}, "driver_id", "must be integers"),
        ({"driver_id": [True]}, "driver_id", "must be integers"),
        ({"driver_id": [2**70]}, "driver_id", "out of range for Int64"),
        ({"driver_id": [1, 2], "zone": ["a"]}, None, "same length"),
    ],
)
def test_bad_keys_are_422_naming_the_field(
    client: httpx.Client, entities: dict[str, Any], field: str | None, words: str
) -> None:
    code, body = post(client, {"features": ["driver_stats:avg_fare"], "entities": entities})
    assert code == 422, body
    assert words in body["error"]["message"]
    if field:
        assert body["error"]["field"] == field


def test_malformed_bodies_are_422(client: httpx.Client) -> None:
    code, body = post(client, {"features": ["driver_stats:avg_fare"]})
    assert (code, body["error"]["field"]) == (422, "entities")
    code, body = post(client, {"features": ["x:y"], "entities": {}, "extra": 1})
    assert code == 422 and "extra" in body["error"]["message"]
    code, body = post(client, {"entities": {"driver_id": [1]}})
    assert code == 422 and "exactly one of 'features' and 'feature_service'" in str(body)
    code, body = post(client, {"features": ["not a ref"], "entities": {"driver_id": [1]}})
    assert code == 422 and "does not parse" in body["error"]["message"]
    reply = client.post(
        "/v1/features", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422


def test_oversized_requests_are_413_with_the_limit(client: httpx.Client) -> None:
    code, body = post(
        client,
        {"features": ["driver_stats:avg_fare"], "entities": {"driver_id": list(range(10_001))}},
    )
    assert code == 413
    assert body["error"]["limit"] == 10_000
    assert "the limit is 10000" in body["error"]["message"]


def test_listing_health_and_metrics(client: httpx.Client) -> None:
    views_ = client.get("/v1/feature-views").json()["feature_views"]
    assert [v["name"] for v in views_] == ["driver_stats", "zone_stats"]
    assert views_[0]["online"]["entities"] > 0 and views_[0]["ttl_seconds"] == 7200
    one = client.get("/v1/feature-views/zone_stats").json()
    assert one["versions"][0]["keys"] == ["driver_id", "zone"]
    assert client.get("/health").json()["status"] == "ok"
    ok = post(
        client,
        {"features": ["driver_stats:avg_fare"], "entities": {"driver_id": [0, 1, 2, 10**6]}},
    )
    assert ok[0] == 200
    text = client.get("/metrics").text
    for needle in (
        'featurekit_http_requests_total{endpoint="/v1/features",code="200"}',
        'featurekit_view_requests_total{view="driver_stats",version="1"}',
        'featurekit_view_request_duration_seconds_bucket{view="driver_stats",version="1",le="+Inf"}',
        'featurekit_view_lookup_misses_total{view="driver_stats",version="1"}',
        'featurekit_view_lookup_expired_total{view="driver_stats",version="1"}',
        'featurekit_view_freshness_seconds{view="zone_stats",version="1"}',
        "# TYPE featurekit_http_request_duration_seconds histogram",
    ):
        assert needle in text, needle


def test_openapi_spec_is_served_and_checked_in(client: httpx.Client) -> None:
    served = client.get("/openapi.json").json()
    assert "/v1/features" in served["paths"]
    assert served == json.loads(DOCS.read_text()), (
        "docs/openapi.json is stale; regenerate: python -m featurekit.server > docs/openapi.json"
    )


def test_fuzzing_the_api_never_gets_a_5xx(client: httpx.Client) -> None:
    import schemathesis

    base = str(client.base_url)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    failures: list[str] = []
    counter = [0]
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for result in schema.get_all_operations():
        operation = result.ok()
        examples = 60 if operation.method.upper() == "POST" else 15
        for mode in modes if operation.method.upper() == "POST" else modes[:1]:
            _fuzz(operation, mode, examples, base, failures, counter)
    assert counter[0] > 100
    assert not failures, failures[:5]


def _fuzz(
    operation: Any, mode: Any, examples: int, base: str, failures: list[str], counter: list[int]
) -> None:
    from hypothesis import HealthCheck, given, settings

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=base, timeout=10)
        counter[0] += 1
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.path} {case.body!r} -> {response.text}")

    run()


def test_redis_down_is_503_and_the_server_stays_up(filled: fk.Store) -> None:
    from featurekit.serving.app import create_app

    body = {"features": ["driver_stats:avg_fare"], "entities": {"driver_id": [1, 2]}}
    redis = redis_server()
    url = redis.__enter__()
    try:
        store = fk.Store(filled.root, progress=False, online=url)
        for view in views(filled.root.parent / "data"):
            store.materialize(view)  # offline no-ops that fill Redis
        with (
            http_server(create_app(store)) as base,
            httpx.Client(base_url=base, timeout=30) as http,
        ):
            assert http.post("/v1/features", json=body).status_code == 200
            redis.__exit__(None, None, None)  # redis-server stops under the running server
            reply = http.post("/v1/features", json=body)
            assert reply.status_code == 503
            error = reply.json()["error"]
            assert error["type"] == "OnlineStoreError"
            assert f"Redis online store {url} is unavailable" in error["message"]
            assert http.get("/health").status_code == 503
            assert http.get("/metrics").status_code == 200  # still up and answering
            assert http.post("/v1/features", json=body).status_code == 503
    finally:
        redis.__exit__(None, None, None)


def test_featurekit_serve_command(filled: fk.Store) -> None:
    support = Path(__file__).with_name("test_online_support.py")
    definitions = ("--definitions", str(support))
    with served(filled.root, *definitions, env={"PYTHONPATH": str(support.parent)}) as base:
        reply = httpx.post(
            f"{base}/v1/features",
            json={
                "feature_service": "pricing",
                "entities": {"driver_id": [1, 3], "zone": ["a", "b"], "amount": [10.0, 2.0]},
            },
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        assert list(reply.json()["columns"]) == [
            "driver_id",
            "zone",
            "amount",
            "surge",
            "fare_ratio",
            "no_fare",
        ]
