"""Views over the trips fixture, defined in a real module so they can be fingerprinted."""

from __future__ import annotations

from pathlib import Path

import polars as pl

import featurekit as fk

driver = fk.Entity("driver", keys=["driver_id"])


def trips_source(folder: Path) -> fk.Source:
    return fk.Source(
        "trips", folder / "trips.parquet", timestamp="event_ts", created_timestamp="ingested_at"
    )


def fare_features(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Per-trip fare features; keeps ingested_at so knowledge time applies."""
    return trips.filter(pl.col("status") == "ok").select(
        "driver_id", "event_ts", "ingested_at", "fare", (pl.col("fare") * 2).alias("fare_x2")
    )


def fare_view(folder: Path, ttl: str | None = "2d") -> fk.FeatureView:
    return fk.feature_view(entity=driver, sources=[trips_source(folder)], ttl=ttl)(fare_features)
