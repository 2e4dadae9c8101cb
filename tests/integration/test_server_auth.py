"""The feature server with API keys, on a real HTTP server on 127.0.0.1: 401 without or with
a wrong key, 403 outside a key's grants, 200 within them; keys compared in constant time
and never shown in logs or error bodies; CORS only for a named origin; a non-loopback bind
refused without keys; the key file and ``featurekit keys``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from test_online_support import (
    fare_ratio,
    filled_store,
    free_port,
    http_server,
    pricing,
    serve_logged,
    served,
)
from typer.testing import CliRunner

import featurekit as fk
from featurekit.core.errors import DefinitionError, NotFoundError
from featurekit.serving import auth
from featurekit.serving.auth import ApiKeys, add_key, is_loopback

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
ORIGIN = "https://app.example.com"
SERVE = (sys.executable, "-m", "featurekit.cli", "serve")
DRIVER_BODY = {"features": ["driver_stats:avg_fare"], "entities": {"driver_id": [1, 3, 999]}}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> fk.Store:
    return filled_store(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="module")
def keys(filled: fk.Store) -> dict[str, Any]:
    """A key file with four keys; the keys themselves, by name."""
    path = filled.root.parent / "api-keys.json"
    made = {
        "drivers": add_key(path, "drivers", ["view:driver_stats"]),
        "zones": add_key(path, "zones", ["view:zone_stats"]),
        "pricing": add_key(path, "pricing", ["service:pricing"]),
        "all": add_key(path, "all", ["view:*", "service:*"]),
    }
    return {"path": path, **made}


@pytest.fixture(scope="module")
def base(filled: fk.Store, keys: dict[str, Any]) -> Iterator[str]:
    from featurekit.serving.app import Limits, create_app

    app = create_app(
        filled,
        definitions=[fare_ratio, pricing],
        api_keys=ApiKeys.load(keys["path"]),
        limits=Limits(max_body_bytes=100_000),
    )
    with http_server(app) as url:
        yield url


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(reply: httpx.Response, status: int, keys: dict[str, Any]) -> dict[str, Any]:
    """The error object of a reply with ``status``, checking no key appears in it."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert list(body) == ["error"], body
    for name in ("drivers", "zones", "pricing", "all"):
        assert keys[name] not in reply.text
    return dict(body["error"])


# ---- 401: no key, a wrong key -----------------------------------------------------------------
def test_no_key_is_401_on_every_protected_path(base: str, keys: dict[str, Any]) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        for method, path, body in (
            ("POST", "/v1/features", DRIVER_BODY),
            ("GET", "/v1/feature-views", None),
            ("GET", "/v1/feature-views/driver_stats", None),
            ("GET", "/no/such/endpoint", None),  # no route is revealed without a key
        ):
            reply = http.request(method, path, json=body)
            error = error_of(reply, 401, keys)
            assert error == {
                "type": "AuthenticationError",
                "message": "this server needs an API key; send the header "
                "'Authorization: Bearer <key>'.",
            }
            assert reply.headers["www-authenticate"] == "Bearer"
        for header in ("Basic " + keys["all"], "Bearer", "bearer-" + keys["all"], keys["all"]):
            reply = http.post("/v1/features", json=DRIVER_BODY, headers={"Authorization": header})
            assert error_of(reply, 401, keys)["type"] == "AuthenticationError"


def test_a_wrong_key_is_401_and_never_echoed(base: str, keys: dict[str, Any]) -> None:
    wrong = keys["all"][:-1] + ("A" if keys["all"][-1] != "A" else "B")
    for key in (wrong, "fk_" + "x" * 43, keys["all"] + "x"):
        reply = httpx.post(f"{base}/v1/features", json=DRIVER_BODY, headers=bearer(key))
        error = error_of(reply, 401, keys)
        assert error == {
            "type": "AuthenticationError",
            "message": "the API key is not valid (unknown, revoked or mistyped); the key is "
            "not shown.",
        }
        assert key not in reply.text
    # a header that is not ASCII is just another wrong key
    odd = {"Authorization": b"Bearer fk_\xc3\xa9\xff"}
    reply = httpx.post(f"{base}/v1/features", json=DRIVER_BODY, headers=odd)
    assert error_of(reply, 401, keys)["type"] == "AuthenticationError"


def test_no_key_is_refused_before_the_body_is_read(base: str, keys: dict[str, Any]) -> None:
    # a body over the 100 kB limit: without a key the answer is 401, not 413
    big = {"features": ["driver_stats:avg_fare"], "entities": {"driver_id": [1] * 60_000}}
    reply = httpx.post(f"{base}/v1/features", json=big)
    assert error_of(reply, 401, keys)["type"] == "AuthenticationError"
    reply = httpx.post(f"{base}/v1/features", json=big, headers=bearer(keys["all"]))
    assert error_of(reply, 413, keys)["type"] == "RequestTooLargeError"


# ---- 403: outside the key's grants --------------------------------------------------------------
def test_a_key_without_the_grant_is_403(base: str, keys: dict[str, Any]) -> None:
    with httpx.Client(base_url=base, timeout=30, headers=bearer(keys["zones"])) as http:
        reply = http.post("/v1/features", json=DRIVER_BODY)
        assert error_of(reply, 403, keys) == {
            "type": "PermissionDeniedError",
            "message": "API key 'zones' is not granted view 'driver_stats'; a key needs "
            "'view:driver_stats' for it (featurekit keys add NAME --grant view:driver_stats).",
        }
        # one granted and one not: the whole request is refused
        mixed = {"features": ["zone_stats:surge", "driver_stats:rating"], "entities": {}}
        mixed["entities"] = {"driver_id": [1], "zone": ["a"]}
        assert error_of(http.post("/v1/features", json=mixed), 403, keys)["message"].startswith(
            "API key 'zones' is not granted view 'driver_stats';"
        )
        service = {"feature_service": "pricing", "entities": {"driver_id": [1]}}
        assert error_of(http.post("/v1/features", json=service), 403, keys)["message"] == (
            "API key 'zones' is not granted feature service 'pricing'; a key needs "
            "'service:pricing' for it (featurekit keys add NAME --grant service:pricing)."
        )
        on_demand = {
            "features": ["fare_ratio:fare_ratio"],
            "entities": {"driver_id": [1], "amount": [2.0]},
        }
        assert error_of(http.post("/v1/features", json=on_demand), 403, keys)["message"] == (
            "API key 'zones' is not granted on-demand feature 'fare_ratio', which reads view "
            "'driver_stats'; a key needs 'view:driver_stats' for it (featurekit keys add NAME "
            "--grant view:driver_stats)."
        )
        # an unknown view is a 403 too: a key learns nothing about views it may not read
        unknown = {"features": ["secret_view:x"], "entities": {"driver_id": [1]}}
        assert error_of(http.post("/v1/features", json=unknown), 403, keys)["message"].startswith(
            "API key 'zones' is not granted view 'secret_view';"
        )
        reply = http.get("/v1/feature-views/driver_stats")
        assert error_of(reply, 403, keys)["type"] == "PermissionDeniedError"
        listed = http.get("/v1/feature-views").json()["feature_views"]
        assert [v["name"] for v in listed] == ["zone_stats"]
    # a service grant is not a grant of the views inside the service
    reply = httpx.post(
        f"{base}/v1/features",
        json={"features": ["zone_stats:surge"], "entities": {"driver_id": [1], "zone": ["a"]}},
        headers=bearer(keys["pricing"]),
    )
    assert error_of(reply, 403, keys)["message"].startswith(
        "API key 'pricing' is not granted view 'zone_stats';"
    )


def test_a_granted_key_gets_the_same_values_as_the_store(
    base: str, keys: dict[str, Any], filled: fk.Store
) -> None:
    expected = filled.get_online_features(["driver_stats:avg_fare"], {"driver_id": [1, 3, 999]})
    for name in ("drivers", "all"):
        reply = httpx.post(f"{base}/v1/features", json=DRIVER_BODY, headers=bearer(keys[name]))
        assert reply.status_code == 200, reply.text
        columns = reply.json()["columns"]
        assert columns["driver_id"] == [1, 3, 999]
        want = [None if v != v else v for v in expected["avg_fare"].to_list()]  # NaN -> null
        assert columns["avg_fare"] == want
    # on-demand: allowed by the grant of the view it reads
    on_demand = {
        "features": ["fare_ratio:fare_ratio"],
        "entities": {"driver_id": [1], "amount": [2.0]},
    }
    reply = httpx.post(f"{base}/v1/features", json=on_demand, headers=bearer(keys["drivers"]))
    assert reply.status_code == 200, reply.text
    assert list(reply.json()["columns"]) == ["driver_id", "amount", "fare_ratio"]
    service = {
        "feature_service": "pricing",
        "entities": {"driver_id": [1, 3], "zone": ["a", "b"], "amount": [10.0, 2.0]},
    }
    reply = httpx.post(f"{base}/v1/features", json=service, headers=bearer(keys["pricing"]))
    assert reply.status_code == 200, reply.text
    assert "surge" in reply.json()["columns"]
    reply = httpx.get(f"{base}/v1/feature-views/driver_stats", headers=bearer(keys["drivers"]))
    assert reply.status_code == 200 and reply.json()["name"] == "driver_stats"
    listed = httpx.get(f"{base}/v1/feature-views", headers=bearer(keys["all"])).json()
    assert [v["name"] for v in listed["feature_views"]] == ["driver_stats", "zone_stats"]


def test_health_docs_spec_and_metrics_stay_open(base: str, keys: dict[str, Any]) -> None:
    assert httpx.get(f"{base}/health").json()["status"] == "ok"
    page = httpx.get(f"{base}/docs")
    assert page.status_code == 200
    assert "Authorization: Bearer &lt;key&gt;" in page.text  # the page says how to call
    spec = httpx.get(f"{base}/openapi.json").json()
    assert httpx.get(f"{base}/metrics").status_code == 200
    # the spec a keyed server serves is the checked-in one, and it declares the scheme
    assert spec == json.loads(DOCS.read_text())
    assert spec["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/features"]["post"]["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/v1/feature-views"]["get"]["security"] == [{"bearerAuth": []}]
    assert {"401", "403"} <= set(spec["paths"]["/v1/features"]["post"]["responses"])
    assert "security" not in spec["paths"]["/health"]["get"]
    # 401s are counted like any other status, by route
    httpx.get(f"{base}/v1/feature-views")
    text = httpx.get(f"{base}/metrics").text
    assert 'featurekit_http_requests_total{endpoint="/v1/feature-views",code="401"}' in text


def test_metrics_auth_protects_metrics(filled: fk.Store, keys: dict[str, Any]) -> None:
    from featurekit.serving.app import create_app

    app = create_app(filled, api_keys=ApiKeys.load(keys["path"]), metrics_auth=True)
    with http_server(app) as url:
        assert error_of(httpx.get(f"{url}/metrics"), 401, keys)["type"] == "AuthenticationError"
        reply = httpx.get(f"{url}/metrics", headers=bearer(keys["zones"]))  # any valid key
        assert reply.status_code == 200 and "featurekit_http_requests_total" in reply.text
        assert httpx.get(f"{url}/health").status_code == 200
    with pytest.raises(DefinitionError, match="metrics_auth needs API keys"):
        create_app(filled, metrics_auth=True)


# ---- constant-time comparison ------------------------------------------------------------------
def test_keys_are_compared_with_hmac_compare_digest_against_every_entry(
    keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = ApiKeys.load(keys["path"])
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert loaded.verify(f"Bearer {keys['drivers']}").name == "drivers"  # the first entry
    # no early exit: every entry is compared, as 32-byte digests (never the raw key)
    assert len(calls) == 4
    assert all(len(a) == len(b) == 32 for a, b in calls)
    assert [b for _, b in calls] == [k.digest for k in loaded.keys]
    calls.clear()
    with pytest.raises(auth.AuthenticationError):
        loaded.verify("Bearer fk_wrong")
    assert len(calls) == 4


def test_a_key_is_never_compared_with_plain_equality() -> None:
    # inspection backs the spy above: the verifier has no == / startswith on key material
    import inspect

    source = inspect.getsource(auth.ApiKeys.verify)
    assert "hmac.compare_digest(" in source
    assert "digest ==" not in source and "== entry" not in source and ".startswith(" not in source


# ---- rotation: a changed key file applies without a restart ------------------------------------
def test_a_changed_key_file_applies_without_a_restart(
    filled: fk.Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from featurekit.serving.app import create_app

    path = tmp_path / "keys.json"
    old = add_key(path, "old", ["view:driver_stats"])
    keys = ApiKeys.load(path, reload_every=0.0)
    with http_server(create_app(filled, api_keys=keys)) as url:

        def status(key: str) -> int:
            return httpx.post(
                f"{url}/v1/features", json=DRIVER_BODY, headers=bearer(key)
            ).status_code

        assert status(old) == 200
        new = add_key(path, "new", ["view:driver_stats"])
        auth.remove_key(path, "old")
        assert (status(old), status(new)) == (401, 200)  # revoked at once, no restart
        # a broken rewrite keeps the keys that were loaded, and says why (no key in the log)
        text = path.read_text()
        with caplog.at_level(logging.WARNING, logger="featurekit.serving"):
            path.write_text(text[: len(text) // 2])
            assert status(new) == 200
        assert "is not readable JSON" in caplog.text and "Keeping the 1 key(s)" in caplog.text
        assert new not in caplog.text
        path.write_text(text)
        assert status(new) == 200


def test_the_key_file_is_read_again_at_most_every_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server's clock is driven by hand, so the test says the same on a slow machine
    clock = SimpleNamespace(monotonic=lambda: 1000.0)
    monkeypatch.setattr(auth, "time", clock)
    path = tmp_path / "keys.json"
    first = add_key(path, "first", ["view:x"])
    assert ApiKeys.load(path).reload_every == auth.RELOAD_SECONDS == 2.0
    keys = ApiKeys.load(path, reload_every=0.5)
    auth.remove_key(path, "first")
    second = add_key(path, "second", ["view:x"])
    assert keys.verify(f"Bearer {first}").name == "first"  # within the interval: not read
    clock.monotonic = lambda: 1000.49
    assert keys.verify(f"Bearer {first}").name == "first"
    clock.monotonic = lambda: 1000.5
    with pytest.raises(auth.AuthenticationError):
        keys.verify(f"Bearer {first}")
    assert keys.verify(f"Bearer {second}").name == "second"


# ---- keys absent from logs and errors ------------------------------------------------------------
def test_keys_never_reach_the_logs_in_process(
    filled: fk.Store, keys: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from featurekit.serving.app import create_app

    store = fk.Store(filled.root, progress=False, online="memory")

    def broken(requests: Any) -> Any:
        raise RuntimeError("online read failed")

    store.online.read = broken  # type: ignore[method-assign]
    app = create_app(store, api_keys=ApiKeys.load(keys["path"]))
    with caplog.at_level(logging.DEBUG), http_server(app) as url:
        reply = httpx.post(f"{url}/v1/features", json=DRIVER_BODY, headers=bearer(keys["all"]))
        assert error_of(reply, 500, keys)["type"] == "InternalError"
        httpx.post(f"{url}/v1/features", json=DRIVER_BODY, headers=bearer(keys["all"] + "!"))
    assert "RuntimeError" in caplog.text  # the 500 was logged, with its traceback
    assert keys["all"] not in caplog.text and "Bearer fk_" not in caplog.text


def test_keys_never_reach_the_server_output(filled: fk.Store, keys: dict[str, Any]) -> None:
    # a real `featurekit serve` at debug level; every kind of answer; then read all it wrote
    env = {"FEATUREKIT_API_KEYS": str(keys["path"])}
    flags = ("--log-level", "debug", "--metrics-auth", "--cors-origin", ORIGIN)
    with serve_logged(filled.root, *flags, env=env, logs=filled.root.parent) as (url, output):
        # the flags reach the app: /metrics needs a key, the named origin gets CORS
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers=bearer(keys["zones"])).status_code == 200
        preflight = httpx.options(f"{url}/v1/features", headers={"Origin": ORIGIN, **PREFLIGHT})
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        sent = [keys["all"], keys["zones"], keys["drivers"] + "x"]
        for key in sent:
            for body in (DRIVER_BODY, {"features": ["nope:x"], "entities": {"driver_id": [1]}}):
                reply = httpx.post(f"{url}/v1/features", json=body, headers=bearer(key))
                assert reply.status_code in (200, 401, 403, 404), reply.text
                assert key not in reply.text
        assert httpx.post(f"{url}/v1/features", json=DRIVER_BODY).status_code == 401
        assert (
            httpx.get(f"{url}/v1/feature-views", headers=bearer(keys["zones"])).status_code == 200
        )
    text = output.read_text()
    assert "featurekit: serving" in text and "with 4 API key(s)" in text
    for key in sent:
        assert key not in text
    assert "Bearer fk_" not in text


# ---- CORS -------------------------------------------------------------------------------------------
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


def test_no_cors_headers_without_an_origin(base: str, keys: dict[str, Any]) -> None:
    reply = httpx.options(f"{base}/v1/features", headers={"Origin": ORIGIN, **PREFLIGHT})
    assert reply.status_code == 401  # no preflight handling: just a request without a key
    assert "access-control-allow-origin" not in reply.headers
    reply = httpx.get(f"{base}/health", headers={"Origin": ORIGIN})
    assert reply.status_code == 200
    assert not [h for h in reply.headers if h.startswith("access-control-")]


def test_cors_preflight_only_for_the_named_origin(filled: fk.Store, keys: dict[str, Any]) -> None:
    from featurekit.serving.app import create_app

    app = create_app(filled, api_keys=ApiKeys.load(keys["path"]), cors_origins=[ORIGIN])
    with http_server(app) as url:
        reply = httpx.options(f"{url}/v1/features", headers={"Origin": ORIGIN, **PREFLIGHT})
        assert reply.status_code == 200  # preflights carry no key, and need none
        assert reply.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in reply.headers["access-control-allow-headers"].lower()
        assert "POST" in reply.headers["access-control-allow-methods"]
        other = {"Origin": "https://evil.example.net", **PREFLIGHT}
        reply = httpx.options(f"{url}/v1/features", headers=other)
        assert reply.status_code == 400
        assert "access-control-allow-origin" not in reply.headers
        # a real call from the origin: the 401 is readable by the page, the 200 too
        reply = httpx.post(f"{url}/v1/features", json=DRIVER_BODY, headers={"Origin": ORIGIN})
        assert reply.status_code == 401
        assert reply.headers["access-control-allow-origin"] == ORIGIN
        headers = {"Origin": ORIGIN, **bearer(keys["drivers"])}
        reply = httpx.post(f"{url}/v1/features", json=DRIVER_BODY, headers=headers)
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == ORIGIN
        reply = httpx.get(f"{url}/health", headers={"Origin": "https://evil.example.net"})
        assert "access-control-allow-origin" not in reply.headers


@pytest.mark.parametrize("origin", ["*", "app.example.com", "https://app.example.com/path"])
def test_a_cors_origin_must_be_exact(filled: fk.Store, origin: str) -> None:
    from featurekit.serving.app import create_app

    with pytest.raises(DefinitionError, match="is not an exact origin; give scheme and host"):
        create_app(filled, cors_origins=[origin])


# ---- exposure: non-loopback binds need keys -----------------------------------------------------
def test_a_non_loopback_bind_without_keys_is_refused(filled: fk.Store) -> None:
    port = str(free_port())
    serve = [*SERVE, "--store", str(filled.root)]
    env = {k: v for k, v in os.environ.items() if k != "FEATUREKIT_API_KEYS"}
    done = subprocess.run(
        [*serve, "--host", "0.0.0.0", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert message == (
        "error: refusing to serve on '0.0.0.0' without API keys: anyone who can reach it "
        "could read every feature. Pass --api-keys FILE (or set FEATUREKIT_API_KEYS; make "
        "keys with `featurekit keys add`), bind --host 127.0.0.1, or pass --insecure if "
        "something in front of the server already authenticates."
    )
    done = subprocess.run(
        [*serve, "--metrics-auth", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1 and "--metrics-auth needs --api-keys FILE" in done.stderr


def test_insecure_serves_without_keys_but_says_so(filled: fk.Store) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails right after the
    # warning, so nothing listens beyond loopback and no traffic is sent anywhere
    done = subprocess.run(
        [*SERVE, "--store", str(filled.root), "--host", "192.0.2.1", "--insecure",
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert (
        "warning: serving on 192.0.2.1 without API keys (--insecure): every feature is "
        "readable by anyone who can reach it." in " ".join(done.stderr.split())
    )
    assert "refusing to serve" not in done.stderr


def test_trace_logging_is_refused_with_keys(filled: fk.Store, keys: dict[str, Any]) -> None:
    serve = [*SERVE, "--store", str(filled.root)]
    done = subprocess.run(
        [*serve, "--api-keys", str(keys["path"]), "--log-level", "trace"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "--log-level trace logs every request header, API keys included" in done.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("feature-server.internal", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_env_var_names_the_key_file(filled: fk.Store, keys: dict[str, Any]) -> None:
    with served(filled.root, env={"FEATUREKIT_API_KEYS": str(keys["path"])}) as url:
        assert httpx.post(f"{url}/v1/features", json=DRIVER_BODY).status_code == 401
        reply = httpx.post(f"{url}/v1/features", json=DRIVER_BODY, headers=bearer(keys["drivers"]))
        assert reply.status_code == 200


# ---- the key file and `featurekit keys` ------------------------------------------------------------
def test_keys_add_list_remove(tmp_path: Path) -> None:
    from featurekit.cli import app

    runner = CliRunner()
    path = tmp_path / "secrets" / "keys.json"
    made = runner.invoke(
        app,
        [
            "keys",
            "add",
            "ranker",
            "--grant",
            "service:pricing",
            "-g",
            "view:driver_stats",
            "--file",
            str(path),
        ],
    )
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("fk_") and len(key) == 46  # 32 random bytes, base64url
    text = path.read_text()
    assert key not in text  # only its salted hash is stored
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = json.loads(text)["keys"][0]
    assert entry["name"] == "ranker" and entry["grants"] == ["service:pricing", "view:driver_stats"]
    assert ApiKeys.load(path).verify(f"Bearer {key}").name == "ranker"
    listed = runner.invoke(app, ["keys", "list", "--file", str(path)])
    assert listed.stdout == "ranker\tservice:pricing, view:driver_stats\n"
    again = runner.invoke(app, ["keys", "add", "ranker", "-g", "view:x", "--file", str(path)])
    assert again.exit_code == 1
    assert "already has a key named 'ranker'; remove it first" in again.output
    gone = runner.invoke(app, ["keys", "remove", "ranker", "--file", str(path)])
    assert gone.exit_code == 0
    assert json.loads(path.read_text())["keys"] == []
    with pytest.raises(DefinitionError, match="holds no keys, so every request would be refused"):
        ApiKeys.load(path)


def test_key_file_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist; create it with `featurekit keys add"):
        ApiKeys.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": []}')
    with pytest.raises(DefinitionError, match="is not a featurekit key file"):
        ApiKeys.load(bad)
    bad.write_text(json.dumps({"format": auth.FORMAT, "keys": [{"name": "x", "salt": "zz"}]}))
    with pytest.raises(DefinitionError, match="key 'x' is malformed; each key needs 'name'"):
        ApiKeys.load(bad)
    with pytest.raises(DefinitionError, match="has no grants, so it could read nothing"):
        auth.new_key("x", [])
    with pytest.raises(DefinitionError, match="grant 'table:x' is not understood"):
        auth.new_key("x", ["table:x"])
    with pytest.raises(DefinitionError, match="view name '../x' is not valid"):
        auth.new_key("x", ["view:../x"])
