"""Time edge cases: 'end of time' values next to nanosecond labels."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from featurekit.kernels.pit import ViewFrame, pit_join


def test_far_future_rows_next_to_nanosecond_labels() -> None:
    rows = pl.DataFrame(
        {
            "k": [1, 1, 1],
            "e": [datetime(2020, 1, 1), datetime(9999, 12, 31), datetime(1500, 1, 1)],
            "c": [datetime(2020, 1, 1), datetime(9999, 12, 31), datetime(1500, 1, 1)],
            "v": [1.0, 2.0, 3.0],
        }
    )
    labels = pl.DataFrame({"k": [1, 2], "t": [datetime(2021, 1, 1)] * 2}).with_columns(
        pl.col("t").cast(pl.Datetime("ns"))
    )
    view = ViewFrame("v", rows, ("k",), "e", "c", ("v",), None)
    out = pit_join(labels, timestamp="t", views=[view])
    # 9999 stays in the future (no overflow error); the 2020 row is the latest known
    assert out["v"].to_list() == [1.0, None]
    only_old = rows.filter(pl.col("v") == 3.0)
    view = ViewFrame("v", only_old, ("k",), "e", "c", ("v",), None)
    # 1500, clamped to 1677, is still before the label
    assert pit_join(labels, timestamp="t", views=[view])["v"].to_list() == [3.0, None]
