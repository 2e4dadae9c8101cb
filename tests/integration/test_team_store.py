"""A store on object storage (a real S3 server on loopback), shared by racing processes."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import polars as pl
import pytest
from conftest import S3_BUCKET, StoreRoot, fares_view, trips_frame
from s3_emulator import SECRET_KEY, storage_options
from team_worker import run, write_views

import featurekit as fk
from featurekit.storage.remote import RemoteObjectStore


@pytest.fixture
def s3(s3_endpoint: str, tmp_path: Path) -> StoreRoot:
    return StoreRoot("s3", tmp_path, storage_options(s3_endpoint), s3_endpoint)


def test_four_processes_race_on_one_s3_root(s3: StoreRoot, tmp_path: Path) -> None:
    """Four machines register, materialize, save and log at once: nothing lost or doubled."""
    data = tmp_path / "trips.parquet"
    trips_frame().write_parquet(data)
    root = s3.uri("race")
    fk.Store(root, storage_options=s3.options, progress=False)  # created once, then raced
    ctx = multiprocessing.get_context("spawn")  # delta-rs must not be forked
    barrier, out = ctx.Barrier(4), ctx.Queue()
    workers = [
        ctx.Process(
            target=run,
            args=(root, s3.options, str(write_views(tmp_path, i, data)), i, barrier, out),
        )
        for i in range(4)
    ]
    for worker in workers:
        worker.start()
    results = sorted((out.get(timeout=240) for _ in workers), key=lambda r: r["index"])
    for worker in workers:
        worker.join(30)
    assert [r.get("error") for r in results] == [None] * 4

    store = s3.open(root, online=False)
    # one view defined four ways: versions 1..4, one per definition, each its own rows
    versions = store.versions("shared")
    assert [v.version for v in versions] == [1, 2, 3, 4]
    by_fingerprint = {v.fingerprint: v.version for v in versions}
    assert len(by_fingerprint) == 4
    for r in results:
        assert by_fingerprint[r["fingerprint"]] == r["version"] == r["again"]
        rows = store.read("shared", r["version"]).sort("event_ts")
        expected = trips_frame().sort("event_ts")["fare"] * (r["index"] + 2)
        assert rows["fare_k"].to_list() == expected.to_list()
    # registered (not computed) four ways at once: versions 1..4, one per worker
    assert sorted(r["registered"] for r in results) == [1, 2, 3, 4]
    assert [v.version for v in store.versions("registered")] == [1, 2, 3, 4]
    # one view defined one way: one version, its rows once
    assert [v.version for v in store.versions("common")] == [1]
    assert store.read("common").height == trips_frame().height
    # every training set and name recorded, models numbered densely
    assert {f"set_{i}" for i in range(4)} <= set(store.registry.training_set_names())
    assert sorted(r["model"] for r in results) == [1, 2, 3, 4]
    assert [m.version for m in store.models("churn")] == [1, 2, 3, 4]
    assert {m.training_set for m in store.models("churn")} == {r["ts"] for r in results}


def test_backend_that_ignores_conditional_writes_is_refused(
    s3: StoreRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = s3.uri("noconditional")
    existing = s3.open(root)
    existing.register(fares_view(s3.tmp))

    # a server that silently overwrites: every "create" succeeds
    def always(self: RemoteObjectStore, key: str, data: bytes) -> bool:
        import obstore

        obstore.put(self._store, key, data)
        return True

    monkeypatch.setattr(RemoteObjectStore, "write_if_absent", always)
    with pytest.raises(fk.StorageError, match="ignores conditional writes") as info:
        s3.open(s3.uri("fresh"))  # a new store cannot even be created
    assert "is read-only here" in str(info.value)
    assert SECRET_KEY not in str(info.value)

    store = s3.open(root)  # an existing store still reads...
    assert store.views() == ["fares"]
    with pytest.raises(fk.StorageError, match="read-only here: its backend ignores"):
        store.register(fares_view(s3.tmp, factor=3))  # ...but refuses to write
    with pytest.raises(fk.StorageError, match="read-only here"):
        store.materialize(fares_view(s3.tmp))
    assert [v.version for v in store.versions("fares")] == [1]


def test_remote_roots_have_no_online_store_unless_one_is_given(s3: StoreRoot) -> None:
    store = fk.Store(s3.uri(), storage_options=s3.options, progress=False)
    with pytest.raises(fk.StorageError, match="has no online store"):
        store.get_online_features(["fares:fare"], {"driver_id": [1]})
    from featurekit.online.errors import OnlineStoreError

    sqlite = fk.Store(s3.uri(), storage_options=s3.options, online="sqlite")
    with pytest.raises(OnlineStoreError, match="embedded SQLite online store cannot live"):
        sqlite.online  # noqa: B018
    local = fk.Store(s3.uri(), storage_options=s3.options, online=str(s3.tmp / "o.sqlite"))
    assert local.online.url.endswith("o.sqlite")


def test_credentials_never_shown(s3: StoreRoot) -> None:
    store = s3.open()
    store.materialize(fares_view(s3.tmp))
    labels = pl.DataFrame({"driver_id": [1], "ts": [trips_frame()["event_ts"].max()]})
    ts = store.training_set(labels, ["fares:fare"], "ts").save("creds")
    store.log_model("m", training_set=ts, model="uri://m")
    # nothing stored under the root (registry, lineage, manifests, Delta logs) holds one
    for key in store.registry.objects.list(""):
        if key.endswith((".json", ".crc")):
            assert SECRET_KEY.encode() not in (store.registry.objects.read(key) or b""), key
    graph = store.lineage()
    shown = [repr(store), repr(store.registry.objects), str(store.registry.layout.shown_root)]
    shown += [graph.to_text(), graph.to_dot(), repr(graph)]
    wrong = dict(s3.options, aws_secret_access_key="wrong-secret-value-123")
    bad = f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/x"
    with pytest.raises(fk.StorageError) as info:
        fk.Store(bad, storage_options=wrong, progress=False)
    shown.append(str(info.value))
    assert "no-such-bucket" in str(info.value)
    for text in shown:
        assert SECRET_KEY not in text and "wrong-secret-value-123" not in text


def test_unsupported_scheme_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(fk.StorageError, match="scheme 'ftp' is not supported; use a local"):
        fk.Store("ftp://host/x")


def test_local_and_s3_roots_share_one_layout(s3: StoreRoot) -> None:
    store = s3.open()
    store.register(fares_view(s3.tmp))
    keys = store.registry.objects.list("")
    assert "_featurekit/store.json" in keys
    assert "_featurekit/views/fares/v1.json" in keys
    assert not [k for k in keys if k.startswith("_featurekit/probes/")]  # probe cleaned up
    assert str(store.root).startswith(f"s3://{S3_BUCKET}/")


_ = pl  # polars is used by the worker module's views


def test_table_left_by_a_crashed_run_is_taken_over(
    store_root: StoreRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that died between its first commit and its registry record leaves a table
    without a record; after a grace period the next run of another definition replaces it."""
    from featurekit.offline import materialize as materialization
    from featurekit.storage import delta

    store = store_root.open()
    view = fares_view(store_root.tmp)
    uri = store.registry.layout.table_uri("fares", 1)
    leftover = pl.DataFrame({"driver_id": [9], "fare": [1.0]})
    delta.write_rows(
        uri,
        leftover,
        metadata={"fingerprint": "crashed"},
        storage_options=store.storage_options or None,
    )
    monkeypatch.setattr(materialization, "ORPHAN_GRACE_SECONDS", 0.3)
    result = store.materialize(view)
    assert (result.version, result.mode) == (1, "full")
    assert [v.version for v in store.versions("fares")] == [1]
    rows = store.read("fares")
    assert 9 not in rows["driver_id"].to_list()
    assert rows.height == trips_frame().height


def test_marker_written_between_check_and_listing_is_not_foreign_data(
    s3: StoreRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featurekit.storage.registry import Registry

    root = s3.uri("between")
    other = RemoteObjectStore(root, s3.options)
    real_exists = RemoteObjectStore.exists

    def late(self: RemoteObjectStore, key: str) -> bool:
        found = real_exists(self, key)
        if key.endswith("store.json") and not found:  # another machine creates it now
            other.write_if_absent(key, b'{"format_version": 1, "kind": "featurekit-store"}')
        return found

    monkeypatch.setattr(RemoteObjectStore, "exists", late)
    Registry(root, storage_options=s3.options)  # no "is not empty" error
    assert other.list("") == ["_featurekit/store.json"]
