"""``store.optimize`` / ``featurekit optimize``: compact, globally sorted, no training set changes."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import featurekit as fk
from featurekit.cli import app
from featurekit.kernels.frames import in_order

BASE = datetime(2026, 3, 1)
ENTITY = fk.Entity("driver", keys=["driver_id"])


def batch(start: int, n: int, late: bool = False) -> pl.DataFrame:
    """Rows for minutes [start, start + n); ``late`` rows have old event times."""
    minutes = [start + i for i in range(n)]
    events = [m - 30 if late else m for m in minutes]
    return pl.DataFrame(
        {
            "driver_id": [i % 5 for i in range(n)],
            "event_ts": [BASE + timedelta(minutes=e) for e in events],
            "ingested_at": [BASE + timedelta(minutes=m) for m in minutes],
            "value": [float(start * 100 + i) for i in range(n)],
        }
    )


def fares(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", (pl.col("value") * 2).alias("x2"))


def events(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", "value")


def grown_store(tmp_path: Path) -> tuple[fk.Store, list[fk.FeatureView], Path]:
    """A store after five incremental runs, one with late rows (many files, no global order)."""
    path = tmp_path / "trips.parquet"
    src = fk.Source("trips", path, timestamp="event_ts", created_timestamp="ingested_at")
    plain = fk.feature_view(entity=ENTITY, sources=[src], ttl="20m")(fares)
    agg = fk.feature_view(
        entity=ENTITY,
        sources=[src],
        aggregations=[fk.Aggregation("value", "last", "15m"), fk.Aggregation("value", "sum", "1h")],
    )(events)
    store = fk.Store(tmp_path / "store", progress=False)
    frames = [batch(0, 40)]
    frames[0] = pl.concat([frames[0], frames[0].head(5)])  # exact duplicates within a run
    for i in range(5):
        if i:
            frames.append(batch(40 + 20 * i, 20, late=(i == 3)))
        pl.concat(frames).write_parquet(path)
        for view in (plain, agg):
            store.materialize(view)
    return store, [plain, agg], path


def labels() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "driver_id": [i % 6 for i in range(60)],
            "label_ts": [BASE + timedelta(minutes=3 * i) for i in range(60)],
        }
    )


def test_optimize_changes_no_training_set(tmp_path: Path) -> None:
    store, views, _ = grown_store(tmp_path)
    before = {}
    for view in views:
        assert len(store.runs(view.name)) >= 5
        for mode in ("knowledge", "event"):
            ts = store.training_set(labels(), [view], "label_ts", point_in_time=mode)  # type: ignore[arg-type]
            before[(view.name, mode)] = ts
    rows_before = {v.name: store.read(v.name) for v in views}
    for view in views:
        result = store.optimize(view)
        assert result.changed and result.files_after <= result.files_before
        assert result.files_after == 1
        stored = store.read(view.name)
        identity = ["driver_id", "event_ts", "ingested_at"]
        assert in_order(stored, identity, strict=False)
        # same rows, and exact ties keep the order the kernel gave them
        assert stored.equals(rows_before[view.name].sort(identity, maintain_order=True))
    for (name, mode), ts in before.items():
        rebuilt = store.training_set_by_id(ts.id)  # reads the pinned, pre-optimize version
        assert rebuilt.to_polars().equals(ts.to_polars())
        fresh = store.training_set(labels(), [f"{name}:*"], "label_ts", point_in_time=mode)  # type: ignore[arg-type]
        assert fresh.id != ts.id  # it pins the new Delta version...
        assert fresh.to_polars().equals(ts.to_polars())  # ...with the very same result
        assert store.training_set_by_id(fresh.id).to_polars().equals(ts.to_polars())
    # a second optimize has nothing to do; online lookups still agree with the table
    assert not store.optimize(views[0]).changed
    online = store.get_online_features([f"{views[0].name}:x2"], {"driver_id": [0, 1, 2]})
    assert online.height == 3


def test_incremental_runs_after_optimize(tmp_path: Path) -> None:
    """The optimize commit carries no watermarks: the next run plans from the last run's."""
    store, views, path = grown_store(tmp_path)
    store.optimize(views[0])
    assert store.materialize(views[0]).mode == "noop"
    frame = pl.concat([pl.read_parquet(path), batch(500, 10)])
    frame.write_parquet(path)
    result = store.materialize(views[0])
    assert result.mode == "incremental" and result.rows_written == 10
    fresh = fk.Store(tmp_path / "fresh", progress=False, online=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh.materialize(views[0])
    identity = ["driver_id", "event_ts", "ingested_at"]
    assert store.read(views[0].name).sort(identity).equals(fresh.read(views[0].name).sort(identity))


def test_cli_optimize(tmp_path: Path) -> None:
    store, _, _ = grown_store(tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["optimize", "--store", str(store.root)])
    assert out.exit_code == 0, out.output
    assert "fares v1:" in out.output and "-> 1 files" in out.output
    again = runner.invoke(app, ["optimize", "fares", "--store", str(store.root)])
    assert again.exit_code == 0 and "already compact" in again.output
    missing = runner.invoke(app, ["optimize", "nope", "--store", str(store.root)])
    assert missing.exit_code == 1 and "nope" in missing.output


def test_optimize_unknown_view(tmp_path: Path) -> None:
    store = fk.Store(tmp_path / "store", progress=False)
    with pytest.raises(fk.FeatureKitError):
        store.optimize("nope")
