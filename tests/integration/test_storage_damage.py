"""A store damaged outside featurekit gives errors that name the table and the file.

Never a Rust panic (``PanicException`` derives from BaseException and escapes
``except Exception``) and never a bare DeltaError or polars error.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

import featurekit as fk
from featurekit.storage import delta

ENTITY = fk.Entity("driver", keys=["driver_id"])
DAMAGED = (
    "The table was changed outside featurekit (a truncated, edited or deleted file, or a "
    "damaged _delta_log): restore its folder from a backup."
)


def passthrough(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips


@pytest.fixture
def built(tmp_path: Path) -> tuple[fk.Store, fk.FeatureView, pl.DataFrame, str]:
    rows = pl.DataFrame(
        {
            "driver_id": list(range(200)),
            "event_ts": [datetime(2026, 3, 1)] * 200,
            "value": [float(i) for i in range(200)],
        }
    )
    src = fk.Source("trips", rows, timestamp="event_ts")
    fv = fk.feature_view(entity=ENTITY, sources=[src], name="v")(passthrough)
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(fv)
    labels = pl.DataFrame({"driver_id": [1], "ts": [datetime(2026, 3, 5)]})
    ts = store.training_set(labels, features=["v:value"], timestamp="ts")
    return store, fv, labels, ts.id


def table(store: fk.Store) -> Path:
    return store.root / "features" / "v" / "v1"


def data_file(folder: Path) -> Path:
    (path,) = folder.glob("*.parquet")
    return path


def test_truncated_file_is_a_storage_error_naming_table_and_file(built) -> None:  # type: ignore[no-untyped-def]
    store, _, labels, _ = built
    path = data_file(table(store))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(fk.StorageError) as info:
        store.training_set(labels, features=["v:value"], timestamp="ts")
    assert str(info.value) == (
        f"reading Delta table {str(table(store))!r} at version 0 failed: data file "
        f"{path.name!r} is {len(data) // 2} bytes, but the log recorded {len(data)}. {DAMAGED}"
    )
    with pytest.raises(fk.StorageError, match=f"data file {path.name!r} is"):
        delta.scan_rows(str(table(store)), version=0)  # lazy: checked before the scan
    with pytest.raises(fk.StorageError, match=f"data file {path.name!r} is"):
        store.read("v")


@pytest.mark.parametrize("change", ["grow", "shrink", "delete"])
def test_rebuild_from_an_edited_file_is_a_reproducibility_error(built, change: str) -> None:  # type: ignore[no-untyped-def]
    store, _, _, ts_id = built
    path = data_file(table(store))
    size = path.stat().st_size
    if change == "grow":  # a size-changing edit: other rows written over the file
        pl.DataFrame({"driver_id": [1, 2, 3], "value": [9.0] * 3}).write_parquet(path)
        problem = f"is {path.stat().st_size} bytes, but the log recorded {size}"
    elif change == "shrink":
        path.write_bytes(path.read_bytes()[:100])
        problem = f"is 100 bytes, but the log recorded {size}"
    else:
        path.unlink()
        problem = "is missing"
    with pytest.raises(fk.ReproducibilityError) as info:
        store.training_set_by_id(ts_id)
    assert str(info.value) == (
        f"training set {ts_id!r} cannot be rebuilt from the data it was built from: reading "
        f"Delta table {str(table(store))!r} at version 0 failed: data file {path.name!r} "
        f"{problem}. {DAMAGED}"
    )
    assert isinstance(info.value.__cause__, fk.StorageError)


def test_damaged_stored_labels_name_the_labels_table(built) -> None:  # type: ignore[no-untyped-def]
    store, _, _, ts_id = built
    labels_table = store.root / "training_sets" / ts_id / "labels"
    path = data_file(labels_table)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(
        fk.ReproducibilityError,
        match=f"{str(labels_table)!r} at version 0 failed: data file {path.name!r} is 200 bytes",
    ):
        store.training_set_by_id(ts_id)


def test_same_size_garbage_names_the_file(built) -> None:  # type: ignore[no-untyped-def]
    store, _, labels, _ = built
    path = data_file(table(store))
    data = bytearray(path.read_bytes())
    for i in range(8, len(data) - 8):  # keep the magic bytes and the size
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(fk.StorageError) as info:
        store.training_set(labels, features=["v:value"], timestamp="ts")
    message = str(info.value)
    assert message.startswith(
        f"reading Delta table {str(table(store))!r} at version 0 failed: data file "
        f"{path.name!r} is not valid parquet ("
    )
    assert message.endswith(DAMAGED)


def test_garbled_delta_log_is_a_storage_error(built) -> None:  # type: ignore[no-untyped-def]
    store, fv, labels, ts_id = built
    (log,) = (table(store) / "_delta_log").glob("*.json")
    log.write_text("{garbage")
    prefix = f"Delta table {str(table(store))!r}: its transaction log (_delta_log) cannot be read"
    with pytest.raises(
        fk.StorageError, match="^" + prefix.replace("(", r"\(").replace(")", r"\)")
    ) as info:
        store.training_set(labels, features=["v:value"], timestamp="ts")
    assert str(info.value).endswith(DAMAGED)
    assert "\n" not in str(info.value)  # no Rust backtrace lines
    with pytest.raises(fk.StorageError, match="cannot be read"):
        store.materialize(fv, full_refresh=True)
    with pytest.raises(fk.ReproducibilityError, match="cannot be read at version 0"):
        store.training_set_by_id(ts_id)
    with pytest.raises(fk.StorageError, match="cannot be read"):
        delta.history(str(table(store)))


def test_damaged_delta_source_names_the_source_and_file(tmp_path: Path) -> None:
    location = tmp_path / "trips_delta"
    rows = pl.DataFrame(
        {"driver_id": list(range(100)), "event_ts": [datetime(2026, 3, 1)] * 100}
    ).with_columns(value=pl.col("driver_id").cast(pl.Float64))
    rows.write_delta(location)
    path = data_file(location)
    path.write_bytes(path.read_bytes()[:300])
    src = fk.Source("trips", location, timestamp="event_ts")
    fv = fk.feature_view(entity=ENTITY, sources=[src], name="v")(passthrough)
    store = fk.Store(tmp_path / "store", progress=False)
    with pytest.raises(fk.StorageError) as info:
        store.materialize(fv)
    message = str(info.value)
    assert message.startswith("source 'trips': cannot ")
    assert f"data file {path.name!r} is 300 bytes, but the log recorded" in message
    assert store.views() == [] or not any(store.runs(name) for name in store.views())
