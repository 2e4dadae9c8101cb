"""``featurekit demo``: build a small rideshare feature store end to end in a fresh folder.

:func:`run_demo` generates the dataset of :mod:`featurekit.demo_data` into ``<root>/data``,
defines a polars view and a SQL view over it, materializes both into ``<root>/store``,
builds a point-in-time-correct training set from the churn labels, rebuilds it from its
id alone and checks that the rebuild is identical, then prints a short summary.

``<root>`` is wiped first only when an earlier demo left its marker file
(``<root>/.featurekit-demo``) there; any other non-empty folder is refused, so the demo can
never delete a user's files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

import featurekit as fk
from featurekit.core.errors import ReproducibilityError, StorageError
from featurekit.demo_data import generate_rideshare

__all__ = ["MARKER", "TRAINING_SET_NAME", "driver_trip_stats", "run_demo"]

#: File that marks a folder as made by the demo (and so safe to wipe on the next run).
MARKER = ".featurekit-demo"
#: Name the demo saves its training set under.
TRAINING_SET_NAME = "rideshare_churn"

Echo = Callable[[str], None]


def driver_trip_stats(trips: pl.LazyFrame) -> pl.LazyFrame:
    """One row per trip: what the driver's trip looked like, known once the row arrived."""
    return trips.select(
        "driver_id",
        "event_ts",
        "ingested_at",  # kept, so a label only sees trips that had arrived by its time
        "fare",
        "distance_km",
        pl.when(pl.col("distance_km") > 0)
        .then(pl.col("fare") / pl.col("distance_km"))
        .otherwise(None)
        .alias("fare_per_km"),
        (pl.col("status") == "completed").alias("is_completed"),
    )


def run_demo(root: Path, *, progress: bool = True, echo: Echo = print) -> dict[str, Any]:
    """Build the demo store under ``root`` and return what happened.

    Args:
        root: demo folder; must be new, empty, or a previous demo's folder (then wiped).
        progress: show progress bars while materializing.
        echo: where the summary lines go (``print`` by default).

    Returns:
        A dict with ``root``, ``store``, ``data`` (paths), ``views`` (per view: version,
        fingerprint, mode, rows_written), ``training_set_id``, ``training_set_name``,
        ``rows``, ``columns``, ``null_rates`` (per feature) and ``rebuilt_identical``.

    Raises:
        StorageError: ``root`` exists, is not empty and was not made by the demo.
    """
    root = _prepare(Path(root))
    data = generate_rideshare(root / "data")

    # Entities and sources: sources hold absolute paths, so the store works from any cwd.
    driver = fk.Entity("driver", keys=["driver_id"])
    fk.Entity("rider", keys=["rider_id"])  # what the labels are about; no view uses it yet
    trips = fk.Source(
        "trips",
        data["trips"],
        timestamp="event_ts",
        created_timestamp="ingested_at",
        description="Completed and cancelled trips; event_ts is the trip's end.",
    )
    ratings = fk.Source(
        "ratings",
        data["driver_ratings"],
        timestamp="event_ts",
        created_timestamp="ingested_at",
        description="Star ratings riders gave drivers.",
    )

    # Views: a polars function defined at module level, and a SQL view.
    trip_view = fk.feature_view(entity=driver, sources=[trips], ttl="7d")(driver_trip_stats)
    rating_view = fk.feature_view(
        name="driver_rating",
        entity=driver,
        sources=[ratings],
        sql="SELECT driver_id, event_ts, ingested_at, rating FROM ratings",
        ttl="30d",
    )

    store = fk.Store(root / "store", progress=progress)
    views: dict[str, dict[str, Any]] = {}
    for view in (trip_view, rating_view):
        result = store.materialize(view)
        views[view.name] = {
            "version": result.version,
            "fingerprint": result.fingerprint,
            "mode": result.mode,
            "rows_written": result.rows_written,
        }

    labels = pl.read_parquet(data["labels"])
    ts = store.training_set(
        labels,
        features=[trip_view, "driver_rating:rating"],
        timestamp="label_ts",
    )
    frame = ts.to_polars()
    rebuilt = store.training_set_by_id(ts.id)
    identical = rebuilt.id == ts.id and rebuilt.to_polars().equals(frame)
    if not identical:
        raise ReproducibilityError(
            f"demo: training set {ts.id!r} rebuilt by id differs from the original."
        )
    ts.save(TRAINING_SET_NAME)

    features = [c for c in frame.columns if c not in labels.columns]
    null_rates = {
        name: (frame[name].null_count() / frame.height if frame.height else 0.0)
        for name in features
    }
    facts: dict[str, Any] = {
        "root": str(root),
        "store": str(store.root),
        "data": {name: str(path) for name, path in data.items()},
        "views": views,
        "training_set_id": ts.id,
        "training_set_name": TRAINING_SET_NAME,
        "rows": frame.height,
        "columns": frame.columns,
        "null_rates": null_rates,
        "rebuilt_identical": identical,
    }
    _summary(facts, echo=echo)
    return facts


def _prepare(root: Path) -> Path:
    """Resolve ``root``; wipe it if a previous demo made it, refuse any other non-empty folder."""
    root = root.expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise StorageError(f"demo root {str(root)!r} is a file; pass a folder with --root.")
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise StorageError(
                f"demo root {str(root)!r} is not empty and was not made by the demo (no {MARKER} "
                "file); refusing to touch it. Pass a new or empty folder with --root."
            )
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(
        "Made by `featurekit demo`. The demo wipes this folder when it runs here again.\n"
    )
    return root


def _summary(facts: dict[str, Any], *, echo: Echo) -> None:
    echo(f"featurekit demo in {facts['root']}")
    echo(f"  data:  {facts['root']}/data (trips, driver_ratings, labels)")
    echo(f"  store: {facts['store']}")
    echo("views:")
    width = max(len(name) for name in facts["views"])
    for name, info in facts["views"].items():
        echo(
            f"  {name:<{width}}  v{info['version']}  fingerprint {info['fingerprint'][:12]}  "
            f"{info['rows_written']:,} rows written ({info['mode']})"
        )
    echo(
        f"training set {facts['training_set_id']} saved as {facts['training_set_name']!r}: "
        f"{facts['rows']:,} rows x {len(facts['columns'])} columns"
    )
    echo("null rate per feature:")
    width = max((len(name) for name in facts["null_rates"]), default=0)
    for name, rate in facts["null_rates"].items():
        echo(f"  {name:<{width}}  {rate:6.1%}")
    echo("rebuilt by id: identical" if facts["rebuilt_identical"] else "rebuilt by id: DIFFERENT")
    echo(f"next: featurekit views --store {facts['store']}")
