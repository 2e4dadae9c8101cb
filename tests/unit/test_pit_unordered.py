"""The kernel's values in its own order: the same values as pit_join once put in place."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from featurekit.kernels.pit import PointInTime, ViewFrame, pit_join, pit_join_unordered

BASE = datetime(2026, 1, 1)

ROWS = pl.DataFrame(
    {
        "driver_id": [1, 1, 2, 2, 3],
        "event_ts": [BASE + timedelta(hours=h) for h in (0, 2, 1, 3, 0)],
        "created_ts": [BASE + timedelta(hours=h) for h in (5, 2, 1, 3, 0)],
        "value": [10.0, 12.0, 21.0, 23.0, 30.0],
    }
)
# labels out of (key, time) order, with a null key, a null time and an unknown entity
LABELS = pl.DataFrame(
    {
        "driver_id": [2, 1, None, 3, 1, 9, 2],
        "ts": [
            BASE + timedelta(hours=h) if h is not None else None for h in (4, 6, 4, None, 1, 4, 2)
        ],
    }
)


def _view() -> ViewFrame:
    return ViewFrame(
        name="stats",
        frame=ROWS,
        keys=("driver_id",),
        timestamp="event_ts",
        created_timestamp="created_ts",
        features=("value",),
        ttl=None,
    )


@pytest.mark.parametrize("mode", ["knowledge", "event"])
def test_unordered_values_put_in_place_are_pit_joins_values(mode: PointInTime) -> None:
    expected = pit_join(LABELS, timestamp="ts", views=[_view()], point_in_time=mode)
    values, where = pit_join_unordered(LABELS, timestamp="ts", view=_view(), point_in_time=mode)
    assert where is not None
    # every label exactly once, the ones without a key or time among them
    assert sorted(where.to_list()) == list(range(LABELS.height))
    assert values.columns == expected.columns[LABELS.width :]
    placed = values.with_columns(where.alias("at")).sort("at").drop("at")
    assert placed.equals(expected.select(expected.columns[LABELS.width :]))
    by_label = dict(zip(where.to_list(), values.to_series(0).to_list(), strict=True))
    expected_values = (
        [23.0, 12.0, None, None, None, None, 21.0]
        if mode == "knowledge"
        else [23.0, 12.0, None, None, 10.0, None, 21.0]
    )
    assert [by_label[i] for i in range(LABELS.height)] == expected_values
