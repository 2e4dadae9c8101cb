"""Small lookups build their frame without a schema when every value has its column's
type; these pin that the frame is exactly the one the schema would give (dtypes, nulls,
order), on both sides of every switch: a null, an integral float, 8 and 9 rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import featurekit as fk

thing = fk.Entity("thing", keys=["thing_id"])
SCHEMA = {
    "thing_id": pl.Int64(),
    "count": pl.Int64(),
    "score": pl.Float64(),
    "name": pl.String(),
    "ok": pl.Boolean(),
}
ROWS = {  # thing_id -> (count, score, name, ok)
    1: (7, 0.25, "a", True),
    2: (-3, 2.0, "b", False),  # an integral float stays Float64
    3: (None, 1.5, None, None),  # nulls: the schema decides the dtypes
    4: (2**62, -0.0, "", False),
}


def plain(things: pl.LazyFrame) -> pl.LazyFrame:
    """Features of the four dtypes polars infers from Python values."""
    return things.select("thing_id", "event_ts", "count", "score", "name", "ok")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> fk.Store:
    root = tmp_path_factory.mktemp("frame")
    now = datetime.now(UTC).replace(tzinfo=None)
    pl.DataFrame(
        {
            "thing_id": list(ROWS),
            "event_ts": [now - timedelta(minutes=5)] * len(ROWS),
            "count": [r[0] for r in ROWS.values()],
            "score": [r[1] for r in ROWS.values()],
            "name": [r[2] for r in ROWS.values()],
            "ok": [r[3] for r in ROWS.values()],
        },
        schema={"event_ts": pl.Datetime("us"), **SCHEMA},
    ).write_parquet(root / "things.parquet")
    source = fk.Source("things", root / "things.parquet", timestamp="event_ts")
    view = fk.feature_view(entity=thing, sources=[source], ttl="1d")(plain)
    store = fk.Store(root / "store", progress=False)
    store.materialize(view)
    return store


def expected(ids: list[int]) -> pl.DataFrame:
    missing = (None, None, None, None)
    values = [ROWS.get(i, missing) for i in ids]
    return pl.DataFrame(
        {
            "thing_id": ids,
            **{c: [v[k] for v in values] for k, c in enumerate(["count", "score", "name", "ok"])},
        },
        schema=SCHEMA,
    )


@pytest.mark.parametrize(
    "ids",
    [
        [1],
        [2],
        [3],
        [4],
        [99],
        [1, 2, 4],
        [1, 3],
        [4, 4, 1, 2, 1, 2, 4, 1],
        [4, 4, 1, 2, 1, 2, 4, 1, 2],
    ],
)
def test_small_frames_have_the_documented_dtypes(store: fk.Store, ids: list[int]) -> None:
    frame = store.get_online_features(["plain:*"], {"thing_id": ids})
    assert_frame_equal(frame, expected(ids), check_dtypes=True, check_exact=True)
    assert frame.schema == pl.Schema(SCHEMA)


def test_the_order_of_the_request_is_kept(store: fk.Store) -> None:
    frame = store.get_online_features(["plain:ok", "plain:count"], {"thing_id": [2]})
    assert frame.columns == ["thing_id", "ok", "count"]
    assert frame.row(0) == (2, False, -3)
    assert frame.schema == pl.Schema({"thing_id": pl.Int64, "ok": pl.Boolean, "count": pl.Int64})


def test_metadata_and_a_frame_of_keys_keep_their_dtypes(store: fk.Store) -> None:
    frame = store.get_online_features(
        ["plain:score"], pl.DataFrame({"thing_id": [1]}), with_metadata=True
    )
    assert frame.schema == pl.Schema(
        {
            "thing_id": pl.Int64,
            "score": pl.Float64,
            "plain__event_ts": pl.Datetime("us", "UTC"),
            "plain__status": pl.String,
        }
    )
    assert frame.row(0)[1:2] == (0.25,)
    assert frame.item(0, "plain__status") == "present"
