"""Incremental runs push their time bounds into the source scan; the rows stay exact."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import featurekit as fk
from featurekit.storage.sources import scan_source

BASE = datetime(2026, 3, 1)
ENTITY = fk.Entity("driver", keys=["driver_id"])


def part(start: int, n: int, dtype: pl.DataType, late: bool = False) -> pl.DataFrame:
    minutes = [start + i for i in range(n)]
    frame = pl.DataFrame(
        {
            "driver_id": [i % 4 for i in range(n)],
            "event_ts": [
                BASE + timedelta(minutes=m - (20 if late else 0), microseconds=7) for m in minutes
            ],
            "ingested_at": [BASE + timedelta(minutes=m, microseconds=3) for m in minutes],
            "value": [float(m) for m in minutes],
        }
    )
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        cast = (
            pl.col("event_ts", "ingested_at")
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(dtype.time_zone)
        )
        return frame.with_columns(cast.dt.cast_time_unit(dtype.time_unit or "us"))
    return frame.with_columns(pl.col("event_ts", "ingested_at").cast(dtype))


def values(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select("driver_id", "event_ts", "ingested_at", "value")


@pytest.mark.parametrize(
    "dtype",
    [
        pl.Datetime("us"),
        pl.Datetime("ns"),
        pl.Datetime("ms"),
        pl.Datetime("us", "America/New_York"),
        pl.Datetime("ns", "Asia/Kolkata"),
        pl.Datetime("us", "UTC"),
    ],
    ids=str,
)
def test_incremental_equals_full_refresh(tmp_path: Path, dtype: pl.DataType) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    src = fk.Source(
        "trips", str(folder / "*.parquet"), timestamp="event_ts", created_timestamp="ingested_at"
    )
    view = fk.feature_view(entity=ENTITY, sources=[src])(values)
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    part(0, 30, dtype).write_parquet(folder / "a.parquet")
    store.materialize(view)
    part(30, 10, dtype).write_parquet(folder / "b.parquet")
    part(40, 5, dtype, late=True).write_parquet(folder / "c.parquet")  # late rows, old events
    result = store.materialize(view)
    assert result.mode == "incremental"
    assert result.rows_written == 10 + 10 + 5  # rows at or after the earliest late event (20)
    fresh = fk.Store(tmp_path / "fresh", progress=False, online=False)
    fresh.materialize(view)
    identity = ["driver_id", "event_ts", "ingested_at"]
    assert store.read("values").sort(identity).equals(fresh.read("values").sort(identity))


def test_bounds_are_exact_at_the_edges(tmp_path: Path) -> None:
    edge = BASE + timedelta(minutes=5, microseconds=7)
    frame = part(0, 10, pl.Datetime("ns"))
    frame.write_parquet(tmp_path / "a.parquet")
    src = fk.Source("trips", tmp_path / "a.parquet", timestamp="event_ts")
    got = scan_source(src, bounds=[("event_ts", ">=", edge)]).collect()
    assert got["value"].to_list() == [float(m) for m in range(5, 10)]
    got = scan_source(
        src, bounds=[("event_ts", ">", edge), ("event_ts", "<", edge + timedelta(minutes=2))]
    ).collect()
    assert got["value"].to_list() == [6.0]
