"""The command line and ``featurekit serve`` on a store in object storage (a real S3 server).

Credentials reach the commands through ``FEATUREKIT_STORAGE_OPTIONS`` only, never argv,
and never appear in anything the commands print.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import StoreRoot, fares_view
from s3_emulator import SECRET_KEY, storage_options
from test_online_support import serve_logged

import featurekit as fk
from featurekit.storage.remote import RemoteObjectStore

CLI = (sys.executable, "-m", "featurekit.cli")


@pytest.fixture
def s3(s3_endpoint: str, tmp_path: Path) -> StoreRoot:
    return StoreRoot("s3", tmp_path, storage_options(s3_endpoint), s3_endpoint)


@pytest.fixture
def filled(s3: StoreRoot) -> tuple[str, fk.Store]:
    """An S3 store with one materialized view, synced to a local SQLite online store."""
    root = s3.uri("cli")
    store = s3.open(root, online=str(s3.tmp / "online.sqlite"))
    store.materialize(fares_view(s3.tmp))
    return root, store


def _env(s3: StoreRoot, **extra: str) -> dict[str, str]:
    options = json.dumps(s3.options)
    return {**os.environ, "FEATUREKIT_STORAGE_OPTIONS": options, **extra}


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_views_and_doctor_open_an_s3_root(s3: StoreRoot, filled: tuple[str, fk.Store]) -> None:
    root, store = filled
    listed = _run("views", "--store", root, env=_env(s3))
    assert listed.returncode == 0, listed.stderr
    assert store.views()[0] in listed.stdout
    checked = _run("doctor", "--store", root, env=_env(s3))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "healthy" in checked.stdout
    assert f"featurekit doctor: {root}" in checked.stdout
    for out in (listed, checked):
        assert SECRET_KEY not in out.stdout + out.stderr


def test_a_prefix_without_a_store_is_refused_not_created(
    s3: StoreRoot, filled: tuple[str, fk.Store]
) -> None:
    root, _ = filled
    missing = f"{root}-nothing-{uuid.uuid4().hex[:6]}"
    out = _run("views", "--store", missing, env=_env(s3))
    assert out.returncode != 0
    assert f"{missing!r} is not a featurekit store" in out.stderr
    assert RemoteObjectStore(missing, s3.options).list("") == []  # nothing was written
    with pytest.raises(fk.FeatureKitError):
        fk.Store(missing, storage_options=s3.options, create=False)


def test_malformed_storage_options_are_named_without_their_value(
    s3: StoreRoot, filled: tuple[str, fk.Store]
) -> None:
    root, _ = filled
    secret = "not-json-" + SECRET_KEY
    out = _run("views", "--store", root, env=_env(s3, FEATUREKIT_STORAGE_OPTIONS=secret))
    assert out.returncode != 0
    assert "FEATUREKIT_STORAGE_OPTIONS must be a JSON object" in out.stderr
    assert SECRET_KEY not in out.stdout + out.stderr


def test_an_unknown_scheme_is_refused(s3: StoreRoot) -> None:
    out = _run("views", "--store", "ftp://host/features", env=_env(s3))
    assert out.returncode != 0
    assert "scheme 'ftp' is not supported" in out.stderr


def test_serve_reads_an_s3_root(s3: StoreRoot, filled: tuple[str, fk.Store]) -> None:
    root, store = filled
    view = store.views()[0]
    online = str(s3.tmp / "online.sqlite")
    with serve_logged(root, "--online", online, env=_env(s3), logs=s3.tmp) as (url, output):
        body = {"features": [f"{view}:fare"], "entities": {"driver_id": [1, 2, 3]}}
        reply = httpx.post(f"{url}/v1/features", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        served = reply.json()
    expected = store.get_online_features([f"{view}:fare"], {"driver_id": [1, 2, 3]})
    assert served["columns"]["fare"] == expected["fare"].to_list()
    assert SECRET_KEY not in output.read_text()


def test_python_opens_a_remote_root_with_the_environments_options(
    s3: StoreRoot, filled: tuple[str, fk.Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, store = filled
    monkeypatch.setenv("FEATUREKIT_STORAGE_OPTIONS", json.dumps(s3.options))
    assert fk.Store(root, progress=False, create=False).views() == store.views()
