"""Credentials never leave featurekit: a real password-protected redis-server behind a real
HTTP server and a real `featurekit serve`, and the password appears in no HTTP body, log
line, startup line, repr or error; source URLs with tokens are masked in reprs, registry
identities and lineage.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import polars as pl
import pytest
from test_online_support import (
    free_port,
    http_server,
    now_floor,
    redis_process,
    views,
    write_data,
)

import featurekit as fk
from featurekit.core.redact import redact, redact_options, redact_url

PASSWORD = "Sup3r-s3cret-pw"
HEADER = {"content-type": "application/json"}


# ---- the helper ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw1@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://me:pw1@h:6379/0?prefix=fk", "redis://me:***@h:6379/0?prefix=fk"),
        ("rediss://tok3n@h:6380", "rediss://***@h:6380"),
        ("unix:///tmp/r.sock?password=pw1&db=2", "unix:///tmp/r.sock?password=***&db=2"),
        (
            "https://acct.blob.core.windows.net/c/t.parquet?sv=2024&sig=AbC%2F&se=1",
            "https://acct.blob.core.windows.net/c/t.parquet?sv=2024&sig=***&se=1",
        ),
        (
            "s3://bucket/t?X-Amz-Signature=ff&region=eu",
            "s3://bucket/t?X-Amz-Signature=***&region=eu",
        ),
        ("/data/trips.parquet", "/data/trips.parquet"),
        ("s3://bucket/trips/", "s3://bucket/trips/"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_and_options() -> None:
    text = (
        "Error connecting to redis://u:pw1@h:1/0; api_key=abc token: xyz keys: a, b "
        f"and {PASSWORD} again"
    )
    assert redact(text, known=[PASSWORD, "ab"]) == (
        "Error connecting to redis://u:***@h:1/0; api_key=*** token: *** keys: a, b and *** again"
    )
    assert redact_options(
        {"aws_secret_access_key": "s", "AWS_ACCESS_KEY_ID": "k", "region": "eu-west-1"}
    ) == {"aws_secret_access_key": "***", "AWS_ACCESS_KEY_ID": "***", "region": "eu-west-1"}


# ---- a real password-protected Redis ---------------------------------------------------------------
@contextlib.contextmanager
def protected_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """redis-server with --requirepass on a free loopback port; yields (url, process)."""
    with redis_process("--requirepass", PASSWORD) as (port, proc):
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0", proc


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("redaction")
    (root / "data").mkdir()
    write_data(root / "data", now_floor())
    return root


def assert_clean(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, text[:500]


def test_the_password_reaches_redis_but_no_repr_or_error(data: Path) -> None:
    with protected_redis() as (url, _):
        port = url.rsplit(":", 1)[1].split("/")[0]
        shown = f"redis://:***@127.0.0.1:{port}/0"
        store = fk.Store(data / "store", progress=False, online=url)
        for view in views(data / "data"):
            store.materialize(view)  # the password works: the snapshot is written
        got = store.get_online_features(["driver_stats:avg_fare"], {"driver_id": [1]})
        assert got.columns == ["driver_id", "avg_fare"]
        assert store.online.url == shown
        assert repr(store.online) == f"RedisOnlineStore({shown!r})"
        assert_clean(repr(store), str(store), repr(store.online), store._repr_html_())

        wrong = url.replace(PASSWORD, "Wr0ng-pass-word")
        other = fk.Store(data / "store", progress=False, online=wrong)
        with pytest.raises(fk.OnlineStoreError) as caught:
            other.online.ping()
        message = str(caught.value)
        assert message.startswith(f"the Redis online store redis://:***@127.0.0.1:{port}/0 ")
        assert "Wr0ng-pass-word" not in message and PASSWORD not in message
        with pytest.raises(fk.OnlineStoreError) as caught:
            other.materialize(views(data / "data")[0])  # post-commit sync fails: still masked
        assert "Wr0ng-pass-word" not in str(caught.value)
        assert "redis://:***@" in str(caught.value)

        with pytest.raises(fk.OnlineStoreError) as caught:
            fk.Store(data / "store", online=f"redis://:{PASSWORD}@h:notaport/0").online.ping()
        assert_clean(str(caught.value))


def test_http_bodies_and_logs_never_show_the_password(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from featurekit.serving.app import create_app

    body = {"features": ["driver_stats:avg_fare"], "entities": {"driver_id": [1, 2]}}
    caplog.set_level(logging.DEBUG)
    with protected_redis() as (url, proc):
        store = fk.Store(data / "store", progress=False, online=url)
        for view in views(data / "data"):
            store.materialize(view)
        with (
            http_server(create_app(store)) as base,
            httpx.Client(base_url=base, timeout=30) as http,
        ):
            ok = http.get("/health")
            assert ok.status_code == 200
            assert ok.json()["online_store"].startswith("redis://:***@127.0.0.1:")
            assert http.post("/v1/features", json=body).status_code == 200
            proc.terminate()  # Redis goes away under the running server
            proc.wait(10)
            replies = [http.get("/health"), http.post("/v1/features", json=body)]
            replies += [http.get("/v1/feature-views"), http.get("/metrics")]
    assert [r.status_code for r in replies] == [503, 503, 503, 200]
    for reply in replies[:3]:
        assert reply.json()["error"]["type"] == "OnlineStoreError"
        assert "redis://:***@127.0.0.1:" in reply.json()["error"]["message"]
    assert_clean(*(r.text for r in replies), caplog.text)


def test_the_serve_startup_line_and_its_logs_hide_the_password(data: Path) -> None:
    with protected_redis() as (url, _):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "featurekit.cli", "serve", "--store", str(data / "store"),
             "--port", str(port), "--online", url, "--log-level", "debug"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.TransportError):
                    reply = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            assert reply.status_code == 200
            bad = httpx.post(
                f"http://127.0.0.1:{port}/v1/features",
                content=b'{"feature_service": "nope", "entities": {"driver_id": [1]}}',
                headers=HEADER,
                timeout=5,
            )
            assert bad.status_code == 404
        finally:
            proc.send_signal(signal.SIGINT)
            output = proc.communicate(timeout=15)[0].decode()
    assert f"(redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]})" in output
    assert_clean(output, reply.text, bad.text)


# ---- sources with tokens: reprs, registry identity, lineage, OpenLineage ---------------------
def test_source_urls_with_tokens_are_masked_wherever_shown(tmp_path: Path) -> None:
    from featurekit.lineage.record import source_node

    url = f"https://me:{PASSWORD}@example.invalid/trips.parquet?sv=1&sig={PASSWORD}x"
    src = fk.Source("trips", url, timestamp="ts", storage_options={"bearer_token": PASSWORD})
    shown = "https://me:***@example.invalid/trips.parquet?sv=1&sig=***"
    assert repr(src) == f"Source('trips', {shown!r}, timestamp='ts')"
    assert str(src) == repr(src)
    assert src.identity()["location"] == shown
    node = source_node(src, read_at="2024-01-01T00:00:00+00:00")
    assert node.attrs["location"] == shown
    assert node.attrs["dataset"] == {
        "namespace": "https://example.invalid",  # who reads it is no part of the name
        "name": "trips.parquet",
    }
    assert_clean(orjson.dumps(node.attrs, default=str).decode())


def test_a_view_that_cannot_resolve_shows_its_error_masked_in_notebooks() -> None:
    # a notebook keeps its HTML outputs in the .ipynb, which is shared and committed
    from featurekit.notebook.reprs import view_html

    url = f"https://example.invalid/trips.parquet?sv=1&sig={PASSWORD}x"
    src = fk.Source("trips", url, timestamp="ts")
    view = fk.feature_view(
        entity=fk.Entity("driver", keys=["driver_id"]), sources=[src], timestamp="ts"
    )(_passthrough)
    html = view_html(view)
    assert "cannot resolve yet: source &#x27;trips&#x27;" in html
    assert "example.invalid/trips.parquet?sv=1&amp;sig=***" in html
    assert_clean(html)


def _passthrough(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips


def test_openlineage_namespaces_leave_out_the_user() -> None:
    from featurekit.lineage.openlineage import dataset_naming

    assert dataset_naming("s3://AKIAEXAMPLE:s3cr3t@bucket/trips/t.parquet", "x") == {
        "namespace": "s3://bucket",
        "name": "trips/t.parquet",
    }
    assert dataset_naming("redis://:***@cache:6379/0", "x")["namespace"] == "redis://cache:6379"
    assert dataset_naming("abfss://c@acct.dfs.core.windows.net/p", "x")["namespace"] == (
        "abfss://acct.dfs.core.windows.net"
    )
    assert dataset_naming("s3://bucket/k", "x") == {"namespace": "s3://bucket", "name": "k"}


# ---- backstops: CLI errors and lineage warnings ------------------------------------------------
def test_cli_errors_mask_credentials_from_user_code(data: Path, tmp_path: Path) -> None:
    # user code's own error text quotes a DSN with a password; the CLI prints it masked
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(views(data / "data")[0])
    bad = tmp_path / "bad_defs.py"
    bad.write_text(
        f'raise RuntimeError("cannot reach postgres://etl:{PASSWORD}@db:5432/features")\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "featurekit.cli", "serve", "--store", str(store.root),
         "--definitions", str(bad)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "RuntimeError: cannot reach postgres://etl:***@db:5432/features" in done.stderr
    assert_clean(done.stderr, done.stdout)


@pytest.mark.parametrize("command", ["plan", "materialize"])
def test_project_command_errors_mask_credentials_from_user_code(
    tmp_path: Path, command: str
) -> None:
    # the project commands have their own error boundary (materialize's also prints errors
    # that are not featurekit's, for cron logs); it masks like the rest of the CLI
    (tmp_path / "bad_defs.py").write_text(
        f'raise RuntimeError("cannot reach postgres://etl:{PASSWORD}@db:5432/features")\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "featurekit.cli", command, "--store", str(tmp_path / "store"),
         "--definitions", "bad_defs.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "RuntimeError: cannot reach postgres://etl:***@db:5432/features" in done.stderr
    assert_clean(done.stderr, done.stdout)


def test_lineage_warnings_mask_credentials(data: Path, tmp_path: Path) -> None:
    def broken(event: object) -> None:
        raise ConnectionError(f"POST https://ol:{PASSWORD}@marquez.internal/api failed")

    store = fk.Store(tmp_path / "store", progress=False, lineage_emitter=broken)
    with pytest.warns(fk.FeatureKitWarning) as caught:
        store.materialize(views(data / "data")[0])
    messages = [str(w.message) for w in caught]
    assert any("https://ol:***@marquez.internal/api failed" in m for m in messages), messages
    assert_clean(*messages)
