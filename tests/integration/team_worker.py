"""What one machine does in the team-store race (run in spawned processes by the tests)."""

from __future__ import annotations

import importlib.util
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

MODULE = """
import polars as pl
import featurekit as fk

driver = fk.Entity("driver", keys=["driver_id"])
trips = fk.Source("trips", {path!r}, timestamp="event_ts", created_timestamp="ingested_at")


@fk.feature_view(entity=driver, sources=[trips])
def common(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", "fare")


@fk.feature_view(entity=driver, sources=[trips])
def registered(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", (pl.col("fare") + {factor}).alias("fare_p"))


@fk.feature_view(entity=driver, sources=[trips])
def shared(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", (pl.col("fare") * {factor}).alias("fare_k"))
"""


def write_views(folder: Path, index: int, data: Path) -> Path:
    """A module of two views: ``common`` (the same everywhere) and ``shared`` (one per worker)."""
    path = folder / f"team_views_{index}.py"
    path.write_text(MODULE.format(path=str(data), factor=index + 2))
    return path


def work(root: str, options: dict[str, str], module: str, index: int, barrier: Any) -> dict:
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    import polars as pl

    import featurekit as fk

    spec = importlib.util.spec_from_file_location(f"team_views_{index}", module)
    assert spec and spec.loader
    views = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = views
    spec.loader.exec_module(views)
    store = fk.Store(root, storage_options=options, progress=False)
    barrier.wait(60)  # everyone starts writing at once
    registered = store.register(views.registered)
    mine = store.materialize(views.shared)
    store.materialize(views.common)
    again = store.materialize(views.shared)
    labels = pl.DataFrame({"driver_id": [1, 2, index], "ts": [datetime(2026, 1, 3)] * 3})
    ts = store.training_set(labels, features=["common:fare"], timestamp="ts")
    ts.save(f"set_{index}")
    model = store.log_model("churn", training_set=ts, model=f"uri://model/{index}")
    return {
        "index": index,
        "version": mine.version,
        "again": again.version,
        "fingerprint": mine.fingerprint,
        "ts": ts.id,
        "model": model.version,
        "registered": registered.version,
    }


def run(
    root: str, options: dict[str, str], module: str, index: int, barrier: Any, out: Any
) -> None:
    try:
        out.put(work(root, options, module, index, barrier))
    except BaseException as err:  # reported to the parent, which fails the test
        out.put({"index": index, "error": f"{type(err).__name__}: {err}"})
