"""Training sets rebuild bit for bit from their id, in any process, after anything changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import StoreRoot, at, trips_frame
from deltalake import write_deltalake
from views_trips import driver, fare_view, trips_source

import featurekit as fk
from featurekit.core.hashing import frame_hash


@pytest.fixture
def store(store_root: StoreRoot) -> fk.Store:
    """Every test here runs on a local root and on an S3 root."""
    return store_root.open()


def labels() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "driver_id": [2, 1, 1, None, 2],
            "label_ts": pl.Series([at(31), at(12), at(45), at(3), at(31)])
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone("America/New_York")
            .cast(pl.Datetime("ns", "America/New_York")),
            "city": pl.Series(["a", "b", "a", "c", "a"], dtype=pl.Categorical),
            "weight": [0.5, 1.0, None, 2.0, 0.5],
        }
    )


def test_rebuild_in_a_fresh_process_after_new_data_and_new_code(
    store: fk.Store, data_dir: Path
) -> None:
    view = fare_view(data_dir)
    store.materialize(view)
    ts = store.training_set(labels(), features=["fare_features:*"], timestamp="label_ts")
    expected = ts.to_polars()
    assert expected.schema["label_ts"] == pl.Datetime("ns", "America/New_York")

    # new data lands in the same version, and the view's code changes (version 2)
    more = trips_frame().with_columns(
        pl.col("fare") + 100, pl.col("ingested_at") + pl.duration(hours=1)
    )
    pl.concat([trips_frame(), more]).write_parquet(data_dir / "trips.parquet")
    store.materialize(view)

    def doubled(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select(
            "driver_id", "event_ts", "ingested_at", (pl.col("fare") * 3).alias("fare")
        )

    new_view = fk.feature_view(
        name="fare_features", entity=driver, sources=[trips_source(data_dir)]
    )(doubled)
    assert store.materialize(new_view).version == 2
    fresh = store.training_set(labels(), features=["fare_features:*"], timestamp="label_ts")
    assert fresh.id != ts.id

    rebuilt = store.training_set_by_id(ts.id).to_polars()
    assert rebuilt.equals(expected)
    assert rebuilt.schema == expected.schema

    script = (
        "import sys, featurekit as fk\n"
        "from featurekit.core.hashing import frame_hash\n"
        "import json\n"
        "s = fk.Store(sys.argv[1], json.loads(sys.argv[3]), progress=False, online=False)\n"
        "t = s.training_set_by_id(sys.argv[2])\n"
        "print(frame_hash(t.to_polars(), t.manifest.result_hash_algorithm))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(store.root), ts.id, json.dumps(store.storage_options)],
        capture_output=True,
        text=True,
        check=True,
        env={"TZ": "Asia/Kolkata", "PATH": "", "AWS_EC2_METADATA_DISABLED": "true"},
    )
    assert ts.manifest.result_hash_algorithm == "xxh3-128"
    assert out.stdout.strip() == frame_hash(expected, "xxh3-128") == ts.manifest.result_hash


def test_same_inputs_give_the_same_id(store: fk.Store, data_dir: Path) -> None:
    store.materialize(fare_view(data_dir))
    a = store.training_set(labels(), features=["fare_features:fare"], timestamp="label_ts")
    b = store.training_set(labels(), features=["fare_features:fare"], timestamp="label_ts")
    assert a.id == b.id
    c = store.training_set(labels().head(4), features=["fare_features:fare"], timestamp="label_ts")
    assert c.id != a.id
    assert {t["id"] for t in store.training_sets()} == {a.id, c.id}


def test_manifest_records_what_defines_the_set(store: fk.Store, data_dir: Path) -> None:
    result = store.materialize(fare_view(data_dir))
    ts = store.training_set(labels(), features=["fare_features:fare"], timestamp="label_ts")
    m = ts.manifest
    assert m.views[0].fingerprint == result.fingerprint
    assert m.views[0].delta_version == result.delta_version
    assert m.labels.hash == frame_hash(labels())
    assert m.result_hash == frame_hash(ts.to_polars(), "xxh3-128")
    assert set(m.library_versions) == {"featurekit", "polars", "deltalake", "pyarrow"}
    stored = store.registry.objects.read(f"training_sets/{ts.id}/manifest.json")
    assert stored is not None
    on_disk = json.loads(stored)
    assert on_disk["result_hash"] == m.result_hash


def test_a_set_recorded_with_sha256_rebuilds_and_is_verified_with_it(
    store: fk.Store, data_dir: Path, store_root: StoreRoot
) -> None:
    """Manifests before format 3 hashed their result with SHA-256 and do not say so: a
    rebuild verifies them with SHA-256 (a changed row still fails), newer ones with the
    digest they name."""
    store.materialize(fare_view(data_dir))
    ts = store.training_set(labels(), features=["fare_features:fare"], timestamp="label_ts")
    key = f"training_sets/{ts.id}/manifest.json"

    def record_as_format_2(result_hash: str) -> None:
        stored = store.registry.objects.read(key)
        assert stored is not None
        old = json.loads(stored)
        old.pop("result_hash_algorithm", None)
        old.update(format_version=2, result_hash=result_hash)
        store.registry.objects.delete(key)
        assert store.registry.objects.write_if_absent(key, json.dumps(old).encode())

    written = store.registry.objects.read(key)
    assert written is not None
    assert json.loads(written)["result_hash_algorithm"] == "xxh3-128"
    sha256 = frame_hash(ts.to_polars())
    assert len(sha256) == 64 and sha256 != ts.manifest.result_hash
    record_as_format_2(sha256)
    again = store_root.open(str(store.root)).training_set_by_id(ts.id)
    assert again.manifest.result_hash_algorithm == "sha256"
    assert again.manifest.result_hash == sha256
    assert again.to_polars().equals(ts.to_polars())
    record_as_format_2(frame_hash(ts.to_polars().with_columns(pl.col("fare") + 1)))
    with pytest.raises(fk.ReproducibilityError, match="rebuilt to different rows"):
        store_root.open(str(store.root)).training_set_by_id(ts.id)


def test_saved_name_and_tampering_is_detected(store: fk.Store, data_dir: Path) -> None:
    store.materialize(fare_view(data_dir))
    ts = store.training_set(labels(), features=["fare_features:fare"], timestamp="label_ts")
    ts.save("churn-2026-01".replace("-", "_"))
    assert store.training_set_by_id("churn_2026_01").to_polars().equals(ts.to_polars())
    with pytest.raises(fk.StorageError, match="already names"):
        store.training_set(
            labels().head(2), features=["fare_features:fare"], timestamp="label_ts"
        ).save("churn_2026_01")
    # someone rewrites the pinned table version behind featurekit's back
    table = store.registry.layout.table_uri("fare_features", 1)
    options = store.storage_options or None
    log = [
        k
        for k in store.registry.objects.list("features/fare_features/v1/_delta_log/")
        if k.endswith(".json")
    ]
    rows = pl.read_delta(table, storage_options=options).with_columns(pl.col("fare") + 1)
    store.registry.objects.delete(log[-1])
    write_deltalake(table, rows.to_arrow(), mode="overwrite", storage_options=options)
    with pytest.raises(fk.ReproducibilityError, match="rebuilt to different rows"):
        store.training_set_by_id(ts.id)


def test_unknown_training_set_id_suggests(store: fk.Store, data_dir: Path) -> None:
    store.materialize(fare_view(data_dir))
    ts = store.training_set(labels(), features=["fare_features:fare"], timestamp="label_ts")
    with pytest.raises(fk.NotFoundError, match=f"Did you mean '{ts.id}'"):
        store.training_set_by_id(ts.id[:-1] + "x")


def test_names_like_the_design_example_work(store: fk.Store, data_dir: Path) -> None:
    store.materialize(fare_view(data_dir))
    ts = store.training_set(labels(), features=["fare_features:fare"], timestamp="label_ts")
    ts.save("churn-2026-11")
    assert store.training_set_by_id("churn-2026-11").id == ts.id
    assert store.training_sets()[0]["names"] == ["churn-2026-11"]
    with pytest.raises(fk.DefinitionError, match="training set name '../x' is not valid"):
        ts.save("../x")
