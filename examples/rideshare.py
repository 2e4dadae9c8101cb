"""Rideshare tutorial: from raw parquet files to a reproducible, leak-free training set.

Run it with ``python examples/rideshare.py [root]`` (default root: ``./rideshare-example``).
It writes the example data to ``<root>/data`` and the feature store to ``<root>/store``.
Running it again is safe: the data is regenerated identically, materialization finds
nothing new, and the training set comes back with the same id.

These are the steps ``featurekit demo`` takes, one commented step at a time, on data with
fixed dates (the demo's data ends today, so that its store serves fresh values, and it
also logs a model).
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

import featurekit as fk
from featurekit.demo_data import generate_rideshare

# ---- 0. Example data -----------------------------------------------------------------------
# Three deterministic parquet files: trips, driver ratings and churn labels. Every row has an
# event time (`event_ts`) and the time it reached the warehouse (`ingested_at`); about 2% of
# rows arrive 1-3 days late, which is exactly what point-in-time joins must get right.
ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "rideshare-example").resolve()
DATA = generate_rideshare(ROOT / "data")
print(f"data in {ROOT / 'data'}: {', '.join(p.name for p in DATA.values())}")

# ---- 1. Entities: what features describe, and how to join on them --------------------------
driver = fk.Entity("driver", keys=["driver_id"])
rider = fk.Entity("rider", keys=["rider_id"])

# ---- 2. Sources: raw data with an event-time column ----------------------------------------
# `created_timestamp` says when a row became known. With it, a label at time t only ever
# sees rows that had arrived by t: late data can never leak into the past.
trips = fk.Source("trips", DATA["trips"], timestamp="event_ts", created_timestamp="ingested_at")
ratings = fk.Source(
    "ratings", DATA["driver_ratings"], timestamp="event_ts", created_timestamp="ingested_at"
)


# ---- 3. Feature views: decorated transformations -------------------------------------------
# The parameter name `trips` binds the function to the `trips` source. The output keeps the
# entity key, the event time and `ingested_at` (the knowledge time); every other column is a
# feature. Defining a view touches no disk: it is a plain object until a store sees it.
@fk.feature_view(entity=driver, sources=[trips], ttl="7d", tags={"team": "marketplace"})
def driver_trip_stats(trips: pl.LazyFrame) -> pl.LazyFrame:
    """What the driver's most recent trip looked like."""
    return trips.select(
        "driver_id",
        "event_ts",
        "ingested_at",
        "fare",
        "distance_km",
        pl.when(pl.col("distance_km") > 0)
        .then(pl.col("fare") / pl.col("distance_km"))
        .alias("fare_per_km"),
        (pl.col("status") == "completed").alias("is_completed"),
    )


# The same thing in SQL: the table name in FROM is the source's name.
driver_rating = fk.feature_view(
    name="driver_rating",
    entity=driver,
    sources=[ratings],
    sql="SELECT driver_id, event_ts, ingested_at, rating FROM ratings",
    ttl="30d",
)

# ---- 4. Store and materialization ----------------------------------------------------------
# A store is a plain folder. `materialize` versions the view (v1, v2, ... by fingerprint of
# its code, options and source schema) and writes it to a Delta table. It is incremental:
# a second run finds no new source rows and writes nothing (mode 'noop').
store = fk.Store(ROOT / "store", progress=False)
for view in (driver_trip_stats, driver_rating):
    result = store.materialize(view)
    print(
        f"materialized {result.view} v{result.version}: {result.mode}, {result.rows_written:,} rows"
    )

# ---- 5. A point-in-time-correct training set -------------------------------------------------
# For each label (rider, driver, label_ts, churned) take the driver's latest feature row with
# event_ts <= label_ts, known by label_ts, within the view's TTL. Labels come back in the same
# order, duplicates and null keys included (null keys get null features).
labels = pl.read_parquet(DATA["labels"])
features = [
    "driver_trip_stats:fare_per_km",
    "driver_trip_stats:is_completed",
    "driver_rating:rating",
]
ts = store.training_set(labels, features=features, timestamp="label_ts")
frame = ts.to_polars()
print(ts)
print(frame.head(5))

# ---- 6. Why knowledge time matters ------------------------------------------------------------
# `point_in_time="event"` ignores when rows arrived. Rows that arrived late would then leak
# into labels that were made before the data existed.
naive = store.training_set(labels, features=features, timestamp="label_ts", point_in_time="event")
leaked = frame.with_columns(naive.to_polars().select(pl.all().name.suffix("_naive"))).filter(
    pl.any_horizontal(pl.col(f).ne_missing(pl.col(f"{f}_naive")) for f in ("fare_per_km", "rating"))
)
print(
    f"{leaked.height} of {frame.height:,} labels would see not-yet-arrived data without knowledge time"
)

# ---- 7. Reproducibility: rebuild from the id alone --------------------------------------------
# The id hashes the labels, every view version and fingerprint and the Delta table versions
# read. Rebuilding verifies the content hash; a difference raises ReproducibilityError.
again = store.training_set_by_id(ts.id)
assert again.to_polars().equals(frame)
ts.save("rideshare_churn")  # a permanent name; store.training_set_by_id("rideshare_churn")
print(f"training set {ts.id} rebuilt by id: identical; saved as 'rideshare_churn'")

# ---- 8. What the store holds ----------------------------------------------------------------
for name in store.views():
    for record in store.versions(name):
        print(f"{name} v{record.version} {record.fingerprint[:12]} why: {', '.join(record.reason)}")
print(f"inspect it from a shell: featurekit views --store {store.root}")
