"""Deletion on request and vacuum, on a local root and on an S3 root."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from conftest import StoreRoot, at, load_module
from views_trips import driver, fare_view

import featurekit as fk


def status_view(folder: Path) -> fk.FeatureView:
    """A view of another entity (trip status): it never holds driver keys."""
    module: Any = load_module(
        folder / "status_views.py",
        "status_views",
        f"""
        import polars as pl
        import featurekit as fk
        status = fk.Entity("status", keys=["status"])
        trips = fk.Source("trips", {str(folder / "trips.parquet")!r}, timestamp="event_ts",
                          created_timestamp="ingested_at")

        @fk.feature_view(entity=status, sources=[trips])
        def by_status(trips: pl.LazyFrame) -> pl.LazyFrame:
            return trips.select("status", "event_ts", "ingested_at", "fare")
        """,
    )
    return module.by_status  # type: ignore[no-any-return]


def driver_labels() -> pl.DataFrame:
    return pl.DataFrame({"driver_id": [1, 2, 1], "ts": [at(11), at(31), at(45)]})


def parquet_keys(store: fk.Store, view: str) -> list[str]:
    prefix = f"features/{view}/v1/"
    return [
        k
        for k in store.registry.objects.list(prefix)
        if k.endswith(".parquet") and "_delta_log" not in k
    ]


def read_file(store: fk.Store, key: str) -> pl.DataFrame:
    uri = store.registry.layout.uri(key)
    return pl.read_parquet(uri, storage_options=store.storage_options or None)


def test_delete_vacuum_and_rebuild(store_root: StoreRoot, data_dir: Path) -> None:
    store = store_root.open()
    fares, by_status = fare_view(data_dir, ttl=None), status_view(data_dir)
    store.materialize(fares)
    store.materialize(by_status)
    before = store.training_set(driver_labels(), ["fare_features:fare"], "ts").save("before")
    status_labels = pl.DataFrame({"status": ["ok", "cancelled"], "ts": [at(50), at(50)]})
    other = store.training_set(status_labels, ["by_status:fare"], "ts").save("other")
    store.materialize(by_status, full_refresh=True)  # "other" now pins an older version
    assert store.get_online_features(["fare_features:fare"], {"driver_id": [1]})["fare"][0]

    event = store.delete(driver, {"driver_id": [1]}, reason="erasure request 7")

    # the event: who, when, why, counts per table, the keys only as a salted hash
    [table] = event.tables
    assert (table.view, table.version, table.rows_deleted) == ("fare_features", 1, 3)
    assert table.affected_versions == [0]
    assert table.online_keys_removed == 1
    assert (event.entity, event.key_columns, event.key_count) == ("driver", ["driver_id"], 1)
    expected = hashlib.sha256(event.salt.encode() + orjson.dumps([1])).hexdigest()
    assert event.keys_hash == expected
    assert store.deletions() == [event]
    # offline and online: the key is gone from the latest version, driver 2 untouched
    assert sorted(set(store.read("fare_features")["driver_id"])) == [2]
    online = store.get_online_features(
        ["fare_features:fare"], {"driver_id": [1, 2]}, with_metadata=True
    )
    assert online["fare_features__status"].to_list() == ["not_found", "present"]

    # dry run: lists the files that held the rows, removes nothing
    files = parquet_keys(store, "fare_features")
    dry = store.vacuum(dry_run=True)
    held = [i for i in dry.items if i.key.startswith("features/fare_features/")]
    assert held and all(f"deletion {event.id}" in i.reason for i in held)
    assert parquet_keys(store, "fare_features") == files

    report = store.vacuum(retain="7d")
    assert {i.key for i in report.items} == {i.key for i in dry.items}
    # (a) no file left on storage holds the key, in any table version
    for key in parquet_keys(store, "fare_features"):
        assert 1 not in read_file(store, key)["driver_id"].to_list()
    assert parquet_keys(store, "by_status") != []  # the other entity's pinned files stay
    # (b) sets that never held the key rebuild, verified
    assert store.training_set_by_id("other").to_polars().equals(other.to_polars())
    after = store.training_set(driver_labels(), ["fare_features:fare"], "ts").save("after")
    assert after.to_polars()["fare"].to_list()[::2] == [None, None]
    assert store.training_set_by_id("after").to_polars().equals(after.to_polars())
    # (c) the set that held it cannot be rebuilt, and says why
    with pytest.raises(fk.ReproducibilityError) as info:
        store.training_set_by_id(before.id)
    message = str(info.value)
    assert f"deletion event {event.id!r}" in message
    assert "reason: 'erasure request 7'" in message
    assert event.created_at.isoformat() in message
    # (d) the lineage shows the event, linked to the view version
    graph = store.lineage()
    node = graph.nodes[f"deletion:{event.id}"]
    assert node.attrs["reason"] == "erasure request 7"
    assert node.attrs["rows_deleted"] == {"fare_features@1": 3}
    assert any(
        e.source == node.id and e.target == "view:fare_features@1" and e.kind == "deletes"
        for e in graph.edges
    )
    # the stored event never holds the key values
    raw = store.registry.objects.read(f"_featurekit/deletions/{event.id}.json")
    assert raw is not None and b'"driver_id": 1' not in raw and b"[1]" not in raw


def test_vacuum_keeps_pins_and_young_files(store_root: StoreRoot, data_dir: Path) -> None:
    store = store_root.open()
    fares = fare_view(data_dir)
    store.materialize(fares)
    saved = store.training_set(driver_labels(), ["fare_features:fare"], "ts").save("pinned")
    unsaved = store.training_set(driver_labels().head(1), ["fare_features:fare"], "ts")
    store.materialize(fares, full_refresh=True)
    store.materialize(fares, full_refresh=True)
    assert store.vacuum(retain="7d").items == []  # everything is younger than 7 days
    report = store.vacuum(retain="0s", dry_run=True)
    # the middle version's files go; the pinned first version's and the latest's stay
    assert len(report.items) == 1
    assert report.items[0].reason == "not referenced by the latest version or a kept training set"
    store.vacuum(retain="0s")
    assert store.training_set_by_id("pinned").to_polars().equals(saved.to_polars())
    assert unsaved.id  # unsaved sets pin nothing (their version here is the pinned one too)


def test_delete_refuses_bad_input(store_root: StoreRoot, data_dir: Path) -> None:
    store = store_root.open()
    store.materialize(fare_view(data_dir))
    with pytest.raises(fk.DefinitionError, match="needs a reason"):
        store.delete(driver, {"driver_id": [1]}, reason=" ")
    with pytest.raises(fk.DefinitionError, match=r"lack the key column\(s\) \['driver_id'\]"):
        store.delete(driver, {"rider_id": [1]}, reason="x")
    with pytest.raises(fk.NotFoundError, match="no view of entity 'rider'"):
        store.delete("rider", [1], reason="x")
    with pytest.raises(fk.DefinitionError, match="retain 'soon' does not parse"):
        store.vacuum(retain="soon")
    assert store.deletions() == []


def test_cli_delete_and_vacuum_dry_run(tmp_path: Path, data_dir: Path) -> None:
    from typer.testing import CliRunner

    from featurekit.cli import app

    root = tmp_path / "store"
    store = fk.Store(root, progress=False)
    store.materialize(fare_view(data_dir, ttl=None))
    runner = CliRunner()
    out = runner.invoke(
        app,
        ["delete", "driver", "--store", str(root), "--key", "driver_id=1", "--reason", "req 9"],
    )
    assert out.exit_code == 0, out.output
    [event] = fk.Store(root, progress=False).deletions()
    assert out.output.startswith(f"deletion {event.id}: 3 rows from 1 tables")
    assert event.reason == "req 9"

    dry = runner.invoke(app, ["vacuum", "--store", str(root), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    lines = dry.output.strip().splitlines()
    assert lines[0].startswith("would remove features/fare_features/v1/part-")
    assert lines[0].endswith(f"held rows deleted by deletion {event.id}")
    assert lines[-1].startswith("would remove 1 files")
    done = runner.invoke(app, ["vacuum", "--store", str(root)])
    assert done.output.strip().splitlines()[-1].startswith("removed 1 files")
    again = runner.invoke(app, ["vacuum", "--store", str(root), "--dry-run"])
    assert again.output.strip() == "would remove 0 files, 0 bytes"

    bad = runner.invoke(app, ["delete", "driver", "--store", str(root), "-k", "x", "--reason", "r"])
    assert bad.exit_code == 1
    assert "--key 'x': expected COLUMN=VALUE" in bad.output
