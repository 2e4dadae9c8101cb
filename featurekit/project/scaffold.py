"""``featurekit init DIR``: a small, working project to start from.

The scaffold is what a team needs on day one: definitions in ``features.py`` (one view
with a helper, one on-demand feature, one service), example data, a test that builds a
training set, ``featurekit.toml``, a CI workflow that runs ``featurekit plan --check``
and the tests, and a README. The example data is generated for the last
:data:`DAYS` days up to the current hour, so the view has fresh rows to serve online on
the day the project is made. It is deterministic given that hour (no random numbers).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from featurekit.core.errors import StorageError

__all__ = ["DAYS", "FILES", "scaffold"]

#: Days of example data, ending at the hour ``featurekit init`` ran.
DAYS = 14
#: Drivers in the example data.
DRIVERS = 8

FEATURES_PY = '''\
"""The features of this project, declared in one place: ``defs`` at the bottom.

`featurekit plan` compares ``defs`` with the store, `featurekit apply` registers it and
`featurekit materialize` computes it. Paths are relative to this folder (the featurekit
commands run from here).
"""

import polars as pl

import featurekit as fk

driver = fk.Entity("driver", keys=["driver_id"])

trips = fk.Source(
    "trips",
    "data/trips.parquet",
    timestamp="event_ts",
    created_timestamp="ingested_at",
)


def per_km(amount: pl.Expr, km: pl.Expr) -> pl.Expr:
    """A helper: editing it makes a new version of every view that calls it."""
    return amount / km


@fk.feature_view(entity=driver, sources=[trips], ttl="2d", tags={"owner": "pricing-team"})
def driver_stats(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Per-trip driver features: fare per km and the rider's rating."""
    return trips.select(
        "driver_id",
        "event_ts",
        "ingested_at",
        per_km(pl.col("fare"), pl.col("km")).alias("fare_per_km"),
        pl.col("rating"),
    )


@fk.on_demand(inputs=["driver_stats:fare_per_km"], request={"trip_km": pl.Float64})
def quoted_fare(df: pl.DataFrame) -> pl.DataFrame:
    """The fare quoted for a requested trip, from the driver's fare per km."""
    return df.select((pl.col("fare_per_km") * pl.col("trip_km")).alias("quoted_fare"))


pricing = fk.FeatureService(
    "pricing",
    features=["driver_stats:fare_per_km", "driver_stats:rating", quoted_fare],
    description="What the pricing model reads.",
)

defs = fk.Definitions(views=[driver_stats], services=[pricing], on_demand=[quoted_fare])
'''

TEST_PY = '''\
"""Build a training set from the project's definitions in a throwaway store."""

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

import featurekit as fk

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def in_project(monkeypatch: pytest.MonkeyPatch) -> None:
    # the sources' paths are relative to the project folder, as for the featurekit commands
    monkeypatch.chdir(PROJECT)
    monkeypatch.syspath_prepend(str(PROJECT))


def test_pricing_training_set(tmp_path: Path) -> None:
    from features import defs, driver_stats, pricing

    store = fk.Store(tmp_path / "store", definitions=defs, progress=False)
    store.materialize(driver_stats)
    # an hour after the last example trip: every driver has a row inside the 2-day TTL
    when = pl.read_parquet("data/trips.parquet")["event_ts"].max() + timedelta(hours=1)
    labels = pl.DataFrame(
        {"driver_id": [0, 1, 2], "trip_km": [3.0, 5.0, 8.0], "label_ts": [when] * 3}
    )
    ts = store.training_set(labels, features=[pricing], timestamp="label_ts")
    frame = ts.to_polars()
    assert frame.columns == [
        "driver_id", "trip_km", "label_ts", "fare_per_km", "rating", "quoted_fare"
    ]
    assert frame["fare_per_km"].null_count() == 0
    expected = (frame["fare_per_km"] * frame["trip_km"]).to_list()
    assert frame["quoted_fare"].to_list() == pytest.approx(expected)
    # the id rebuilds the same rows, in a store that knows the definitions
    assert store.training_set_by_id(ts.id).to_polars().equals(frame)


def test_helper_is_plain_polars() -> None:
    from features import per_km

    out = pl.DataFrame({"f": [10.0], "k": [4.0]}).select(per_km(pl.col("f"), pl.col("k")))
    assert out.item() == 2.5
'''

TOML = """\
# featurekit project: where the store is and which module declares the definitions.
# Paths are relative to this file. Override with --store / --definitions.
store = "store"
definitions = "features.py"
"""

WORKFLOW = """\
name: features

on:
  pull_request:
  push:
    branches: [main]

jobs:
  features:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - name: Install
        run: pip install featurekit pytest
      # Fails when a change removes or retypes a column that a feature service or a
      # logged model reads. Point --store at the team's store (a mounted volume) to
      # compare with what is deployed; the default is the project's local store.
      - name: Plan
        run: featurekit plan --check
      - name: Tests
        run: pytest -q
"""

README = """\
# {name}

A featurekit project: features as code, reviewed in pull requests.

```bash
featurekit plan         # what would change in the store (exit 2 when something would)
featurekit apply        # register exactly what the plan showed
featurekit materialize  # compute the views (incremental; safe to run from cron)
pytest -q               # build a training set from the definitions
```

- `features.py` declares everything the project serves in `defs = fk.Definitions(...)`.
- `data/trips.parquet` is example data ({days} days up to when the project was made).
- `featurekit.toml` says where the store is and which module holds the definitions.
- `.github/workflows/features.yml` runs `featurekit plan --check` and the tests on every
  pull request; the check fails when a change breaks a column a service or model reads.

Edit `per_km` in `features.py` and run `featurekit plan`: it shows a new version of
`driver_stats` with reason `code` and the diff of the code.
"""

GITIGNORE = """\
store/
.featurekit/
__pycache__/
"""

#: Files the scaffold writes, relative to the project folder.
FILES = (
    "features.py",
    "data/trips.parquet",
    "tests/test_features.py",
    "featurekit.toml",
    ".github/workflows/features.yml",
    "README.md",
    ".gitignore",
)


def scaffold(folder: Path, *, now: datetime | None = None) -> list[Path]:
    """Write a new project into ``folder`` (created; must be empty); return the files.

    Raises:
        StorageError: ``folder`` is a file or a non-empty folder.
    """
    folder = folder.expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise StorageError(
            f"{str(folder)!r} exists and is not an empty folder; `featurekit init` writes a "
            "new project only into a new or empty folder."
        )
    name = folder.resolve().name
    texts = {
        "features.py": FEATURES_PY,
        "tests/test_features.py": TEST_PY,
        "featurekit.toml": TOML,
        ".github/workflows/features.yml": WORKFLOW,
        "README.md": README.format(name=name, days=DAYS),
        ".gitignore": GITIGNORE,
    }
    written = []
    for relative, text in texts.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    data = folder / "data" / "trips.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    example_trips(now).write_parquet(data)
    written.insert(1, data)
    return written


def example_trips(now: datetime | None = None) -> pl.DataFrame:
    """Trips of :data:`DRIVERS` drivers, every 6 hours for :data:`DAYS` days before ``now``.

    Values follow fixed formulas, so the same hour gives the same data. The last trips
    are an hour old, so every row is already known (ingested) when the project is made.
    """
    hour = (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = hour - timedelta(hours=1)
    rows: dict[str, list[object]] = {
        "driver_id": [],
        "event_ts": [],
        "ingested_at": [],
        "fare": [],
        "km": [],
        "rating": [],
    }
    steps = DAYS * 4
    for step in range(steps):
        when = end - timedelta(hours=6 * (steps - 1 - step))
        for driver in range(DRIVERS):
            km = 2.0 + (driver * 7 + step * 3) % 11
            rows["driver_id"].append(driver)
            rows["event_ts"].append(when)
            rows["ingested_at"].append(when + timedelta(minutes=5 + driver))
            rows["fare"].append(round(3.0 + km * (1.2 + driver * 0.1), 2))
            rows["km"].append(km)
            rows["rating"].append(round(3.5 + ((driver + step) % 4) * 0.5, 1))
    return pl.DataFrame(
        rows,
        schema={
            "driver_id": pl.Int64,
            "event_ts": pl.Datetime("us", "UTC"),
            "ingested_at": pl.Datetime("us", "UTC"),
            "fare": pl.Float64,
            "km": pl.Float64,
            "rating": pl.Float64,
        },
    )
