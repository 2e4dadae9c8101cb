"""The HTTP server against hostile input: names that try to leave the registry, oversized
bodies (refused while they stream in), floods of feature references, huge names, and every
error (FastAPI's own included) in the one documented shape, with no server path in it.
Also: /docs works offline, and metrics label requests by route, not by raw path.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from test_online_support import (
    fare_ratio,
    http_server,
    now_floor,
    pricing,
    served,
    views,
    write_data,
)

import featurekit as fk

ERROR_KEYS = {"type", "message", "field", "limit"}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> fk.Store:
    root = tmp_path_factory.mktemp("hardening")
    (root / "data").mkdir()
    write_data(root / "data", now_floor())
    store = fk.Store(root / "store", progress=False)
    for view in views(root / "data"):
        store.materialize(view)
    return store


@pytest.fixture(scope="module")
def base(filled: fk.Store) -> Iterator[str]:
    from featurekit.serving.app import Limits, create_app

    limits = Limits(max_body_bytes=1_000_000, max_features=50, max_entities=100)
    app = create_app(filled, definitions=[fare_ratio, pricing], limits=limits)
    with http_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=30) as http:
        yield http


def error_of(reply: httpx.Response, filled: fk.Store) -> dict[str, Any]:
    """The error object, after checking the one shape and that no server path leaks."""
    body = reply.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert set(error) <= ERROR_KEYS and {"type", "message"} <= set(error), error
    for path in {str(filled.root), str(filled.root.resolve()), str(Path.cwd())}:
        assert path not in reply.text
    assert len(reply.content) < 2_000, len(reply.content)
    return dict(error)


# ---- names from requests are validated before they reach a path -----------------------------
def test_a_service_name_cannot_leave_the_services_folder(
    client: httpx.Client, filled: fk.Store
) -> None:
    # without validation this read registry/services/../views/driver_stats/v*.json and
    # echoed the view record back as a feature list
    for name in ("../views/driver_stats", "..", "a/b", "driver_stats\x00", ""):
        reply = client.post(
            "/v1/features", json={"feature_service": name, "entities": {"driver_id": [1]}}
        )
        assert reply.status_code == 422, (name, reply.text)
        error = error_of(reply, filled)
        assert error["type"] == "ValidationError"
        assert error["field"] == "feature_service"
        assert error["message"].startswith("service name ")
        assert "is not valid: use letters, digits and underscores" in error["message"]
        assert filled.registry.version("driver_stats", 1).fingerprint not in reply.text


@pytest.mark.parametrize(
    ("ref", "kind"),
    [("driver_stats:..", "feature"), ("driver_stats:a/b", "feature"), ("__fk_x:y", "view")],
)
def test_view_and_feature_names_in_references_are_validated(
    client: httpx.Client, filled: fk.Store, ref: str, kind: str
) -> None:
    reply = client.post(
        "/v1/features",
        json={"features": ["driver_stats:avg_fare", ref], "entities": {"driver_id": [1]}},
    )
    assert reply.status_code == 422, reply.text
    error = error_of(reply, filled)
    assert error["field"] == "features.1"
    assert error["message"].startswith(f"{kind} name ")


def test_a_view_name_in_the_path_is_validated(client: httpx.Client, filled: fk.Store) -> None:
    reply = client.get("/v1/feature-views/a.b")
    assert reply.status_code == 422
    assert error_of(reply, filled)["field"] == "name"
    reply = client.get("/v1/feature-views/..%2F..%2Fetc")  # never matches the route
    assert reply.status_code == 404
    assert error_of(reply, filled)["type"] == "NotFoundError"


def test_a_256_character_name_is_a_short_422_without_a_path(
    client: httpx.Client, filled: fk.Store
) -> None:
    # this used to be a 500 whose message held the absolute path of the registry
    name = "s" * 256
    reply = client.post(
        "/v1/features", json={"feature_service": name, "entities": {"driver_id": [1]}}
    )
    assert reply.status_code == 422
    error = error_of(reply, filled)
    assert error["message"] == (
        "service name '" + "s" * 56 + "...' (258 characters) is longer than 128 characters."
    )
    reply = client.get(f"/v1/feature-views/{'v' * 300}")
    assert reply.status_code == 422
    assert "(302 characters) is longer than 128 characters" in error_of(reply, filled)["message"]


def test_a_megabyte_name_is_never_echoed(client: httpx.Client, filled: fk.Store) -> None:
    huge = "x" * 900_000
    for body in (
        {"feature_service": huge, "entities": {"driver_id": [1]}},
        {"features": [f"{huge}:f"], "entities": {"driver_id": [1]}},
        {"features": ["driver_stats:avg_fare"], "entities": {huge: [1]}},
        {"features": ["driver_stats:avg_fare"], "entities": {"driver_id": [huge]}},
    ):
        reply = client.post("/v1/features", json=body)
        assert reply.status_code == 422, reply.text[:300]
        error_of(reply, filled)  # < 2,000 bytes


# ---- limits -------------------------------------------------------------------------------------
def test_too_many_features_is_413_before_any_work(client: httpx.Client, filled: fk.Store) -> None:
    refs = ["driver_stats:avg_fare"] * 40_000  # ~1 MB of duplicates: once 40 s of CPU
    content = orjson.dumps({"features": refs, "entities": {"driver_id": [1]}})
    assert 900_000 < len(content) < 1_000_000  # under the body limit: the count refuses it
    reply = client.post(
        "/v1/features", content=content, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413
    error = error_of(reply, filled)
    assert (error["type"], error["limit"]) == ("RequestTooLargeError", 50)
    assert error["message"] == (
        "40000 feature references in one request; the limit is 50. Ask for 'view:*' or split "
        "the request."
    )
    # duplicates within the limit are looked up once (a refused request does no lookup)
    reply = client.post(
        "/v1/features", json={"features": refs[:50], "entities": {"driver_id": [1, 2]}}
    )
    assert reply.status_code == 200, reply.text
    assert list(reply.json()["columns"]) == ["driver_id", "avg_fare"]


def test_too_many_entity_columns_is_413(client: httpx.Client, filled: fk.Store) -> None:
    # 40,000 pass-through columns took 2 s of CPU and came back whole
    entities = {"driver_id": [1]} | {f"c{i}": [1] for i in range(40_000)}
    reply = client.post(
        "/v1/features", json={"features": ["driver_stats:avg_fare"], "entities": entities}
    )
    assert reply.status_code == 413
    error = error_of(reply, filled)
    assert (error["type"], error["limit"]) == ("RequestTooLargeError", 256)
    assert error["message"] == (
        "40001 entity columns in one request; the limit is 256. Send only the key and "
        "request columns."
    )


def test_too_many_entities_is_413(client: httpx.Client, filled: fk.Store) -> None:
    reply = client.post(
        "/v1/features",
        json={"features": ["driver_stats:avg_fare"], "entities": {"driver_id": list(range(101))}},
    )
    assert reply.status_code == 413
    error = error_of(reply, filled)
    assert (error["type"], error["limit"]) == ("TooManyEntitiesError", 100)


def test_a_declared_oversized_body_is_refused_unread(base: str, filled: fk.Store) -> None:
    # Content-Length says 200 MB; the server answers 413 after 64 KB without waiting
    status, body = _raw_post(base, b"Content-Length: 200000000\r\n", [b"{" + b" " * 65_536])
    assert status == 413
    assert body["error"] == {
        "type": "RequestTooLargeError",
        "limit": 1_000_000,
        "message": "the request body is larger than 1000000 bytes; split the request "
        "(featurekit serve --max-body-bytes raises the limit).",
    }


def test_a_streamed_oversized_body_is_cut_off_at_the_limit(base: str) -> None:
    # chunked, no length: the server counts while reading and stops past 1 MB, long before
    # the 200 MB the client would send
    chunk = b" " * 262_144
    framed = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)]
    status, body = _raw_post(base, b"Transfer-Encoding: chunked\r\n", [b"1\r\n{\r\n", *framed])
    assert status == 413
    assert body["error"]["type"] == "RequestTooLargeError"


def _raw_post(base: str, header: bytes, parts: list[bytes]) -> tuple[int, dict[str, Any]]:
    """POST by hand: send ``parts`` of a body that never completes, then read the answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + header
            + b"\r\n"
        )
        for part in parts:
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            got = sock.recv(65_536)
            if not got:
                break
            data += got
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(payload[: _length(data)])


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


# ---- one error shape everywhere ------------------------------------------------------------------
def test_framework_errors_use_the_one_shape(client: httpx.Client, filled: fk.Store) -> None:
    reply = client.get("/no/such/endpoint")
    assert reply.status_code == 404
    assert error_of(reply, filled) == {
        "type": "NotFoundError",
        "message": "no endpoint at '/no/such/endpoint'; see /docs for the API.",
    }
    reply = client.delete("/v1/features")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"
    assert error_of(reply, filled) == {
        "type": "MethodNotAllowedError",
        "message": "DELETE is not allowed on '/v1/features'; use POST.",
    }
    reply = client.post(
        "/v1/features", content=b'{"features": [', headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422
    error = error_of(reply, filled)
    assert error["type"] == "ValidationError"
    assert error["message"].startswith("the request body is not valid JSON (")
    reply = client.post("/v1/features", json={"features": "driver_stats:avg_fare"})
    assert reply.status_code == 422
    assert error_of(reply, filled)["field"] in ("features", "entities")


def test_entity_errors_name_the_field_from_the_error(
    client: httpx.Client, filled: fk.Store
) -> None:
    reply = client.post(
        "/v1/features", json={"features": ["zone_stats:surge"], "entities": {"driver_id": [1]}}
    )
    assert reply.status_code == 422
    error = error_of(reply, filled)
    assert (error["type"], error["field"]) == ("EntityError", "zone")


def test_unexpected_errors_are_500_with_a_reference_and_no_detail(
    filled: fk.Store, caplog: pytest.LogCaptureFixture
) -> None:
    from featurekit.serving.app import create_app

    store = fk.Store(filled.root, progress=False, online="memory")
    secret = f"{filled.root}/boom redis://:hunter22@10.0.0.1:6379/0"

    def broken(requests: Any) -> Any:
        raise RuntimeError(secret)

    store.online.read = broken  # type: ignore[method-assign]
    with (
        http_server(create_app(store)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
        caplog.at_level("ERROR", logger="featurekit.serving"),
    ):
        reply = http.post(
            "/v1/features",
            json={"features": ["driver_stats:avg_fare"], "entities": {"driver_id": [1]}},
        )
    assert reply.status_code == 500
    error = error_of(reply, filled)
    assert error["type"] == "InternalError"
    assert error["message"].startswith("internal error (reference ")
    assert "hunter22" not in reply.text and "boom" not in reply.text
    logged = caplog.text
    assert "RuntimeError" in logged and "redis://:***@10.0.0.1:6379/0" in logged
    assert "hunter22" not in logged


# ---- docs and metrics ------------------------------------------------------------------------------
def test_docs_load_nothing_from_outside(client: httpx.Client) -> None:
    reply = client.get("/docs")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    page = reply.text
    assert "POST /v1/features" in page and "openapi.json" in page
    import re

    outside = [u for u in re.findall(r"https?://[^\s'\"<>]+", page) if "127.0.0.1" not in u]
    assert outside == []
    assert "<script" not in page and "<link" not in page
    assert client.get("/redoc").status_code == 404


def test_metrics_label_requests_by_route(client: httpx.Client) -> None:
    for name in ("nope_a", "nope_b", "nope_c"):
        assert client.get(f"/v1/feature-views/{name}").status_code == 404
    client.get("/really/not/here")
    text = client.get("/metrics").text
    assert 'featurekit_http_requests_total{endpoint="/v1/feature-views/{name}",code="404"}' in text
    assert 'featurekit_http_requests_total{endpoint="unmatched",code="404"}' in text
    assert "nope_a" not in text and "/really/not/here" not in text
    assert 'featurekit_http_requests_total{endpoint="/v1/features",code="413"}' in text


def test_health_shows_no_server_path(client: httpx.Client, filled: fk.Store) -> None:
    reply = client.get("/health")
    assert reply.json() == {
        "status": "ok",
        "online_store": "sqlite:///<store>/online/online.sqlite",
    }


def test_serve_flags_set_the_limits(filled: fk.Store) -> None:
    flags = ("--max-features", "1", "--max-columns", "1", "--max-body-bytes", "300")
    with served(filled.root, *flags) as url:
        refs = ["driver_stats:avg_fare", "driver_stats:rating"]
        reply = httpx.post(
            f"{url}/v1/features", json={"features": refs, "entities": {"driver_id": [1]}}
        )
        assert (reply.status_code, reply.json()["error"]["limit"]) == (413, 1)
        entities = {"driver_id": [1], "extra": [2]}
        reply = httpx.post(f"{url}/v1/features", json={"features": refs[:1], "entities": entities})
        assert (reply.status_code, reply.json()["error"]["limit"]) == (413, 1)
        reply = httpx.post(
            f"{url}/v1/features", json={"features": refs[:1], "entities": {"driver_id": [1] * 400}}
        )
        assert (reply.status_code, reply.json()["error"]["limit"]) == (413, 300)
