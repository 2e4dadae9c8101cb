"""A small store for the catalog tests: two versions of a view (a code change), a tagged
second view, a training set on the first version, a model on it (so it is stale), and a
feature service. Built from parquet files, so lineage has raw columns."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

import featurekit as fk

BASE = datetime(2026, 1, 1)
DRIVER = fk.Entity("driver", keys=["driver_id"])


def _trips(folder: Path) -> fk.Source:
    frame = pl.DataFrame(
        {
            "driver_id": [1, 1, 2, 2, 3],
            "event_ts": [BASE + timedelta(hours=h) for h in (0, 5, 1, 7, 2)],
            "fare": [10.0, 20.0, 30.0, 40.0, 15.0],
            "distance_km": [2.0, 4.0, 5.0, 8.0, 3.0],
        }
    )
    frame.write_parquet(folder / "trips.parquet")
    return fk.Source("trips", str(folder / "trips.parquet"), timestamp="event_ts")


def _view(trips: fk.Source, factor: float) -> fk.FeatureView:
    def driver_stats(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select(
            "driver_id",
            "event_ts",
            (pl.col("fare") * factor).alias("fare_scaled"),
            (pl.col("fare") / pl.col("distance_km")).alias("fare_per_km"),
        )

    return fk.feature_view(
        driver_stats,
        entity=DRIVER,
        sources=[trips],
        ttl="7d",
        tags={"team": "pricing", "owner": "ana"},
        description="Fares per driver trip, scaled for the pricing model.",
    )


def build_catalog_store(root: Path) -> dict[str, Any]:
    """Build the store under ``root``; return its parts (store, training set id, ...)."""
    data = root / "data"
    data.mkdir(parents=True)
    trips = _trips(data)
    store = fk.Store(root / "store", progress=False, online=False)
    v1 = _view(trips, 1.0)
    store.materialize(v1)

    def rider_loyalty(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select("driver_id", "event_ts", pl.col("distance_km").alias("loyalty_km"))

    loyalty = fk.feature_view(
        rider_loyalty,
        entity=DRIVER,
        sources=[trips],
        tags={"team": "growth", "tier": "gold-standard"},
        description="Kilometres driven, a loyalty signal.",
    )
    store.materialize(loyalty)
    labels = pl.DataFrame(
        {"driver_id": [1, 2, 3], "label_ts": [BASE + timedelta(hours=10)] * 3, "y": [0, 1, 0]}
    )
    ts = store.training_set(
        labels,
        features=["driver_stats:fare_scaled", "rider_loyalty:loyalty_km"],
        timestamp="label_ts",
    )
    ts.save("pricing_train")
    store.log_model("fare_model", training_set=ts, model="models:/fare/1", metrics={"auc": 0.8})
    v2 = _view(trips, 2.0)  # a code change: version 2, so the model above is stale
    store.materialize(v2)
    return {"store": store, "training_set": ts.id, "v1": v1, "v2": v2}
