"""A small, realistic, deterministic rideshare dataset for the demo, examples and tests.

:func:`generate_rideshare` writes three parquet files. All timestamps are naive
``Datetime("us")`` values meaning UTC (featurekit reads naive timestamps as UTC). The data
starts at midnight UTC of ``start`` (default 2024-03-04, so tests and docs see fixed dates)
and covers ``days`` days. ``featurekit demo`` passes ``start`` = today minus ``days``, so its
data ends at today's midnight and an online lookup *now* finds fresh values.

``trips.parquet`` (about ``riders * days * 2/3`` rows, sorted by ``event_ts``)
    ``trip_id`` (Int64, 1, 2, … in event order), ``driver_id`` (Int64, 1..drivers),
    ``rider_id`` (Int64, 1..riders), ``event_ts`` (when the trip ended),
    ``ingested_at`` (when the row reached the warehouse: ``event_ts`` plus a delay of
    seconds to minutes, but about 2% of rows arrive 1–3 days late), ``fare`` (Float64,
    currency units; a cancelled trip has a 0 or 5.00 cancellation fee), ``distance_km``
    (Float64; 0 for a cancelled trip), ``status`` (String: ``"completed"`` or
    ``"cancelled"``, about 6% cancelled, depending on the driver).

``driver_ratings.parquet`` (one rating for a bit over half of the completed trips)
    ``driver_id`` (Int64), ``event_ts`` (when the rider rated, minutes to hours after the
    trip), ``ingested_at`` (same delay model as trips), ``rating`` (Float64 stars, 1.0–5.0;
    each driver has an underlying quality, a few drivers are clearly worse).

``labels.parquet`` (about ``trips / 4`` rows, sorted by ``label_ts``)
    ``rider_id`` (Int64), ``driver_id`` (Int64, the driver of the rider's trip that the
    label follows; a few are null), ``label_ts`` (an hour to a day after that trip; labels
    cover the last two thirds of the period, so features have history to draw on),
    ``churned`` (Boolean: the rider stopped using the service; more likely after a
    cancellation or a poor driver). A few rows are exact duplicates, as real label tables
    often have.

Generation uses one ``numpy.random.Generator`` seeded with ``seed``: the same arguments
(``start`` included) always write byte-identical files; ``start`` only shifts every
timestamp.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from featurekit.core.errors import DefinitionError

__all__ = ["DEFAULT_START", "generate_rideshare"]

#: First day of the data unless ``start=`` says otherwise.
DEFAULT_START = date(2024, 3, 4)
_US_PER_SECOND = 1_000_000
_US_PER_MINUTE = 60 * _US_PER_SECOND
_US_PER_HOUR = 60 * _US_PER_MINUTE
_US_PER_DAY = 24 * _US_PER_HOUR
#: Relative trip demand per hour of the day (0h..23h): quiet nights, two rush hours.
_HOURLY_DEMAND = np.array(
    [3, 2, 1, 1, 1, 2, 4, 8, 10, 7, 5, 5, 6, 5, 5, 6, 8, 10, 10, 8, 7, 6, 5, 4], dtype=float
)


def generate_rideshare(
    folder: Path,
    *,
    seed: int = 7,
    drivers: int = 200,
    riders: int = 1000,
    days: int = 30,
    start: date = DEFAULT_START,
) -> dict[str, Path]:
    """Write ``trips``, ``driver_ratings`` and ``labels`` parquet files into ``folder``.

    See the module docstring for the columns. With the defaults: about 20,000 trips,
    10,000 ratings and 5,000 labels, written in well under a second.

    Args:
        folder: where the three files go (created if missing).
        seed: the random generator's seed.
        drivers: how many drivers.
        riders: how many riders.
        days: how many days the data covers (at least 3).
        start: the first day; the data runs from its midnight UTC for ``days`` days.

    Returns:
        ``{"trips": path, "driver_ratings": path, "labels": path}``.

    Example:
        >>> paths = generate_rideshare(Path("data"))
        >>> pl.read_parquet(paths["trips"]).height
        20000
    """
    for value, what in ((drivers, "drivers"), (riders, "riders"), (days, "days")):
        if not isinstance(value, int) or value < 1:
            raise DefinitionError(
                f"generate_rideshare: {what} must be a positive int, got {value!r}."
            )
    if days < 3:
        raise DefinitionError(f"generate_rideshare: days must be at least 3, got {days}.")
    if not isinstance(start, date):
        raise DefinitionError(
            f"generate_rideshare: start must be a datetime.date, got {type(start).__name__}."
        )
    origin = np.datetime64(date(start.year, start.month, start.day), "D").astype("datetime64[us]")
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    trips, quality = _trips(rng, origin, drivers=drivers, riders=riders, days=days)
    ratings = _ratings(rng, origin, trips, quality)
    labels = _labels(rng, origin, trips, quality, days=days)

    paths = {
        "trips": folder / "trips.parquet",
        "driver_ratings": folder / "driver_ratings.parquet",
        "labels": folder / "labels.parquet",
    }
    for name, frame in (("trips", trips), ("driver_ratings", ratings), ("labels", labels)):
        frame.write_parquet(paths[name], compression="zstd", statistics=True)
    return paths


def _trips(
    rng: np.random.Generator, origin: np.datetime64, *, drivers: int, riders: int, days: int
) -> tuple[pl.DataFrame, np.ndarray]:
    n = max(1, round(riders * days * 2 / 3))
    # Some drivers work (and some riders ride) much more than others.
    driver_weight = rng.gamma(2.0, 1.0, drivers)
    rider_weight = rng.gamma(1.2, 1.0, riders)
    # Underlying driver quality in stars: most are good, a long tail is not.
    quality = np.clip(4.75 - rng.gamma(1.3, 0.3, drivers), 1.5, 5.0)
    cancel_rate = rng.beta(2.0, 30.0, drivers)

    driver_idx = rng.choice(drivers, size=n, p=driver_weight / driver_weight.sum())
    rider_idx = rng.choice(riders, size=n, p=rider_weight / rider_weight.sum())
    day = rng.integers(0, days, n)
    hour = rng.choice(24, size=n, p=_HOURLY_DEMAND / _HOURLY_DEMAND.sum())
    offset_us = (day * _US_PER_DAY + hour * _US_PER_HOUR + rng.integers(0, _US_PER_HOUR, n)).astype(
        np.int64
    )

    cancelled = rng.random(n) < cancel_rate[driver_idx]
    distance = np.clip(rng.lognormal(np.log(5.0), 0.6, n), 0.5, 60.0)
    minutes = distance * rng.uniform(1.6, 3.2, n)
    rush = np.isin(hour, [7, 8, 9, 16, 17, 18, 19])
    surge = np.where(rush & (rng.random(n) < 0.35), rng.uniform(1.2, 1.8, n), 1.0)
    fare = (2.5 + 1.35 * distance + 0.30 * minutes) * surge
    fee = np.where(rng.random(n) < 0.5, 5.0, 0.0)
    fare_paid = np.where(cancelled, fee, fare).round(2)
    distance_km = np.where(cancelled, 0.0, distance).round(2)

    order = np.argsort(offset_us, kind="stable")
    offset_us = offset_us[order]
    ingest_us = offset_us + _ingestion_delay_us(rng, n)
    frame = pl.DataFrame(
        {
            "trip_id": np.arange(1, n + 1, dtype=np.int64),
            "driver_id": (driver_idx[order] + 1).astype(np.int64),
            "rider_id": (rider_idx[order] + 1).astype(np.int64),
            "event_ts": _timestamps(origin, offset_us),
            "ingested_at": _timestamps(origin, ingest_us),
            "fare": fare_paid[order],
            "distance_km": distance_km[order],
            "status": np.where(cancelled[order], "cancelled", "completed"),
        }
    )
    return frame, quality


def _ratings(
    rng: np.random.Generator, origin: np.datetime64, trips: pl.DataFrame, quality: np.ndarray
) -> pl.DataFrame:
    completed = trips.filter(pl.col("status") == "completed")
    rated = completed.filter(pl.Series(rng.random(completed.height) < 0.55))
    n = rated.height
    driver = rated["driver_id"].to_numpy()
    trip_end = _offsets(origin, rated["event_ts"])
    # Riders rate a few minutes to a few hours after the trip.
    event_us = (
        trip_end
        + (rng.exponential(40.0, n) * _US_PER_MINUTE).astype(np.int64)
        + 30 * _US_PER_SECOND
    )
    stars = np.clip(np.round(rng.normal(quality[driver - 1], 0.7)), 1.0, 5.0)
    order = np.argsort(event_us, kind="stable")
    event_us = event_us[order]
    return pl.DataFrame(
        {
            "driver_id": driver[order].astype(np.int64),
            "event_ts": _timestamps(origin, event_us),
            "ingested_at": _timestamps(origin, event_us + _ingestion_delay_us(rng, n)),
            "rating": stars[order].astype(np.float64),
        }
    )


def _labels(
    rng: np.random.Generator,
    origin: np.datetime64,
    trips: pl.DataFrame,
    quality: np.ndarray,
    *,
    days: int,
) -> pl.DataFrame:
    trip_end = _offsets(origin, trips["event_ts"])
    first = days * _US_PER_DAY // 3
    last = days * _US_PER_DAY - _US_PER_DAY
    eligible = np.flatnonzero((trip_end >= first) & (trip_end < last))
    if eligible.size == 0:
        eligible = np.arange(trips.height)
    n = min(eligible.size, max(1, round(trips.height / 4)))
    duplicates = max(1, n // 500)
    nulls = max(1, n // 400)
    picked = np.sort(rng.choice(eligible, size=n - duplicates, replace=False))

    driver = trips["driver_id"].to_numpy()[picked]
    rider = trips["rider_id"].to_numpy()[picked]
    cancelled = trips["status"].to_numpy()[picked] == "cancelled"
    label_us = trip_end[picked] + rng.integers(_US_PER_HOUR, _US_PER_DAY, picked.size)
    # Churn is likelier after a cancellation or a poor driver, and varies by rider.
    rider_mood = rng.normal(0.0, 0.5, int(rider.max()) + 1)
    logit = -2.0 + 1.6 * (4.5 - quality[driver - 1]) + 1.4 * cancelled + rider_mood[rider]
    churned = rng.random(picked.size) < 1.0 / (1.0 + np.exp(-logit))

    frame = pl.DataFrame(
        {
            "rider_id": rider.astype(np.int64),
            "driver_id": driver.astype(np.int64),
            "label_ts": _timestamps(origin, label_us),
            "churned": churned,
        }
    )
    # Real label tables are messy: a few unknown drivers and a few repeated rows.
    missing = rng.choice(frame.height, size=min(nulls, frame.height), replace=False)
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()).is_in(pl.Series(missing).implode()))
        .then(None)
        .otherwise(pl.col("driver_id"))
        .alias("driver_id")
    )
    repeated = frame[np.sort(rng.choice(frame.height, size=duplicates, replace=False)).tolist()]
    labels: pl.DataFrame = pl.concat([frame, repeated])
    return labels.sort("label_ts", "rider_id", maintain_order=True)


def _ingestion_delay_us(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds to minutes for most rows; about 2% arrive 1–3 days late (a backfilled batch)."""
    normal = 5 * _US_PER_SECOND + rng.exponential(120.0, n) * _US_PER_SECOND
    late = rng.uniform(1.0, 3.0, n) * _US_PER_DAY
    return np.where(rng.random(n) < 0.02, late, normal).astype(np.int64)


def _timestamps(origin: np.datetime64, offset_us: np.ndarray) -> pl.Series:
    return pl.Series(origin + offset_us.astype("timedelta64[us]")).cast(pl.Datetime("us"))


def _offsets(origin: np.datetime64, column: pl.Series) -> np.ndarray:
    """Microseconds since the start of the period."""
    values: np.ndarray = column.dt.epoch("us").to_numpy()
    return values - origin.astype(np.int64)
