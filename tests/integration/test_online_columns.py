"""The HTTP path's columns (built without a frame when it can) equal the frame's values."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import orjson
import polars as pl
import pytest

import featurekit as fk

item = fk.Entity("item", keys=["item_id"])


def typed(items: pl.LazyFrame) -> pl.LazyFrame:
    """Features of many dtypes."""
    return items.select(
        "item_id", "event_ts", "small", "big", "ratio", "label", "kind", "flag", "day", "seen"
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> fk.Store:
    root = tmp_path_factory.mktemp("columns")
    now = datetime.now(UTC).replace(tzinfo=None)
    pl.DataFrame(
        {
            "item_id": [1, 2, 3],
            "event_ts": [now - timedelta(minutes=m) for m in (5, 10, 15)],
            "small": pl.Series([1, -2, None], dtype=pl.Int8),
            "big": pl.Series([2**64 - 1, 0, 7], dtype=pl.UInt64),
            "ratio": pl.Series([0.1, math.nan, math.inf], dtype=pl.Float32),
            "label": ["a", None, "c"],
            "kind": pl.Series(["x", "y", "x"], dtype=pl.Categorical),
            "flag": [True, False, None],
            "day": [date(2026, 1, 1), None, date(2026, 3, 1)],
            "seen": [now, None, now - timedelta(days=1)],
        }
    ).write_parquet(root / "items.parquet")
    source = fk.Source("items", root / "items.parquet", timestamp="event_ts")
    view = fk.feature_view(entity=item, sources=[source])(typed)
    store = fk.Store(root / "store", progress=False)
    store.materialize(view)
    return store


@pytest.mark.parametrize(
    ("features", "metadata"),
    [
        (
            ["typed:small", "typed:big", "typed:ratio", "typed:label", "typed:kind", "typed:flag"],
            False,
        ),
        (["typed:*"], False),
        (["typed:small", "typed:ratio"], True),
    ],
)
def test_columns_equal_the_frame(store: fk.Store, features: list[str], metadata: bool) -> None:
    service = store.online_service()
    entities = {"item_id": [3, 1, 99, None, 2]}
    columns, at_us, _ = service.lookup_columns(features, entities, with_metadata=metadata)
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at_us)  # the same instant
    frame = service.lookup(features, entities, with_metadata=metadata, at=at).frame
    expected = frame.to_dict(as_series=False)
    assert list(columns) == list(expected)
    assert orjson.dumps(columns) == orjson.dumps(expected)
