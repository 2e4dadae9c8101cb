"""``featurekit demo``: build a small rideshare feature store end to end in a fresh folder.

:func:`run_demo` generates the dataset of :mod:`featurekit.demo_data` into ``<root>/data``,
defines a polars view and a SQL view over it, materializes both into ``<root>/store``,
builds a point-in-time-correct training set from the churn labels, rebuilds it from its
id alone and checks that the rebuild is identical, logs a small churn model trained on it
(so ``featurekit lineage model:churn`` has a model to start from), then prints a short
summary.

The data covers the 30 days that end at today's midnight UTC, so ``featurekit serve`` on
the demo store answers with fresh values, not values long past their TTL. The data is
deterministic given the date: two demos on the same UTC day build the same training set.

``<root>`` is wiped first only when an earlier demo left its marker file
(``<root>/.featurekit-demo``) there; any other non-empty folder is refused, so the demo can
never delete a user's files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import featurekit as fk
from featurekit.core.errors import ReproducibilityError, StorageError
from featurekit.demo_data import generate_rideshare

__all__ = [
    "DAYS",
    "MARKER",
    "MODEL_NAME",
    "TRAINING_SET_NAME",
    "ChurnBaseline",
    "driver_trip_stats",
    "run_demo",
]

#: File that marks a folder as made by the demo (and so safe to wipe on the next run).
MARKER = ".featurekit-demo"
#: Name the demo saves its training set under.
TRAINING_SET_NAME = "rideshare_churn"
#: Name the demo logs its model under.
MODEL_NAME = "churn"
#: Days of data the demo generates, ending at today's midnight UTC.
DAYS = 30

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


@dataclass(frozen=True)
class ChurnBaseline:
    """A least-squares churn score over the demo's features: a stand-in for a real model.

    The demo needs *a* model to log, and must not depend on a machine-learning library.

    Example:
        >>> model = ChurnBaseline.fit(frame, ["fare", "rating"], "churned")
        >>> model.predict(frame)  # churn probability-like scores
    """

    features: tuple[str, ...]
    coefficients: tuple[float, ...]
    intercept: float

    @classmethod
    def fit(cls, frame: pl.DataFrame, features: list[str], target: str) -> ChurnBaseline:
        """Fit by least squares (nulls count as 0)."""
        x = _matrix(frame, features)
        y = frame[target].cast(pl.Float64).to_numpy()
        solution, *_ = np.linalg.lstsq(np.column_stack([x, np.ones(len(y))]), y, rcond=None)
        return cls(
            features=tuple(features),
            coefficients=tuple(round(float(c), 12) for c in solution[:-1]),
            intercept=round(float(solution[-1]), 12),
        )

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """One score per row of ``frame``; above 0.5 means "will churn"."""
        scores: np.ndarray = _matrix(frame, list(self.features)) @ np.array(self.coefficients)
        return scores + self.intercept


def _matrix(frame: pl.DataFrame, features: list[str]) -> np.ndarray:
    columns = [pl.col(f).cast(pl.Float64).fill_nan(None).fill_null(0.0) for f in features]
    matrix: np.ndarray = frame.select(columns).to_numpy()
    return matrix


def run_demo(
    root: Path, *, progress: bool = True, echo: Echo = print, today: date | None = None
) -> dict[str, Any]:
    """Build the demo store under ``root`` and return what happened.

    Args:
        root: demo folder; must be new, empty, or a previous demo's folder (then wiped).
        progress: show progress bars while materializing.
        echo: where the summary lines go (``print`` by default).
        today: the UTC date the data ends at (at its midnight); default: today.

    Returns:
        A dict with ``root``, ``store``, ``data`` (paths), ``period`` (first and last day),
        ``views`` (per view: version, fingerprint, mode, rows_written),
        ``training_set_id``, ``training_set_name``, ``rows``, ``columns``, ``null_rates``
        (per feature), ``rebuilt_identical``, ``model`` (its lineage id) and
        ``model_accuracy``.

    Raises:
        StorageError: ``root`` exists, is not empty and was not made by the demo.
    """
    root = _prepare(Path(root))
    end = today or datetime.now(UTC).date()
    start = end - timedelta(days=DAYS)
    data = generate_rideshare(root / "data", days=DAYS, start=start)

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
    model = ChurnBaseline.fit(frame, features, "churned")
    accuracy = float(np.mean((model.predict(frame) > 0.5) == frame["churned"].to_numpy()))
    entry = store.log_model(
        MODEL_NAME,
        training_set=ts,
        model=model,
        metrics={"accuracy": round(accuracy, 4)},
        description="Least-squares churn baseline over the demo's driver features.",
    )
    null_rates = {
        name: (frame[name].null_count() / frame.height if frame.height else 0.0)
        for name in features
    }
    facts: dict[str, Any] = {
        "root": str(root),
        "store": str(store.root),
        "data": {name: str(path) for name, path in data.items()},
        "period": (start.isoformat(), (end - timedelta(days=1)).isoformat()),
        "views": views,
        "training_set_id": ts.id,
        "training_set_name": TRAINING_SET_NAME,
        "rows": frame.height,
        "columns": frame.columns,
        "null_rates": null_rates,
        "rebuilt_identical": identical,
        "model": entry.id,
        "model_accuracy": accuracy,
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
    first, last = facts["period"]
    echo(f"  data:  {facts['root']}/data (trips, driver_ratings, labels; {first} to {last} UTC)")
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
    echo(f"model {facts['model']} logged (training accuracy {facts['model_accuracy']:.1%})")
    echo("next:")
    echo(f"  featurekit views --store {facts['store']}")
    echo(f"  featurekit lineage model:{MODEL_NAME} --store {facts['store']}")
    echo(f"  featurekit serve --store {facts['store']}")
