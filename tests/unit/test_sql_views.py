"""SQL views are parsed at definition time; errors carry a position."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest

import featurekit as fk

FRAME = pl.DataFrame({"driver_id": [1], "event_ts": [datetime(2026, 1, 1)], "fare": [1.0]})
SRC = fk.Source("trips", FRAME, timestamp="event_ts")
DRIVER = fk.Entity("driver", keys=["driver_id"])


def sql_view(sql: str, sources: list[fk.Source] | None = None) -> fk.FeatureView:
    return fk.feature_view(name="v", entity=DRIVER, sources=sources or [SRC], sql=sql)


def test_syntax_error_has_position() -> None:
    with pytest.raises(fk.SqlError, match="does not parse at line 2, column") as info:
        sql_view("SELECT driver_id,\nFROM trips WHERE")
    assert info.value.line == 2


def test_unknown_table_is_named_with_suggestion() -> None:
    with pytest.raises(fk.SqlError, match="reads table 'trip' at line 1.*Did you mean 'trips'"):
        sql_view("SELECT driver_id FROM trip")


def test_unknown_column_with_known_schema() -> None:
    with pytest.raises(
        fk.SqlError, match="Column 'faree' could not be resolved.*Did you mean 'fare'"
    ) as info:
        sql_view("SELECT driver_id, event_ts,\n  faree FROM trips")
    assert (info.value.line, info.value.col) == (2, 3)


def test_unknown_column_in_file_source_is_caught_when_the_store_sees_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    FRAME.write_parquet(tmp_path / "trips.parquet")
    src = fk.Source("trips", tmp_path / "trips.parquet", timestamp="event_ts")
    view = sql_view("SELECT driver_id, event_ts, faree FROM trips", [src])  # no disk at definition
    with pytest.raises(fk.SqlError, match="faree"):
        fk.Store(tmp_path / "store").register(view)


def test_not_a_query() -> None:
    with pytest.raises(fk.SqlError, match="must be a SELECT query"):
        sql_view("DELETE FROM trips")


def test_comments_and_whitespace_do_not_change_the_normalized_sql() -> None:
    a = sql_view("SELECT driver_id, event_ts, fare FROM trips")
    b = sql_view("-- note\nselect  driver_id,\n   event_ts, fare\nfrom trips")
    assert a.sql_normalized == b.sql_normalized
    c = sql_view("SELECT driver_id, event_ts, fare * 2 AS fare FROM trips")
    assert c.sql_normalized != a.sql_normalized
