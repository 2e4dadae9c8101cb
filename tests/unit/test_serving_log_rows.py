"""The serving log writer builds the same rows from a flat one-entity lookup as from the
general form, whichever builder (by column, by row) runs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from featurekit.online.serving_log import Entry, One, as_entry
from featurekit.online.serving_log_writer import rows

T0 = 1_767_225_600_000_000
FEATURES = ("fare", "city")


def test_flat_lookups_make_the_rows_of_the_general_form_in_arrival_order() -> None:
    present: One = (T0, ("driver_id",), (1,), "fares", 2, FEATURES, (9.5, "q"), "present", T0 - 5)
    missing: One = (
        T0 + 1,
        ("driver_id",),
        (2,),
        "fares",
        2,
        FEATURES,
        (None, None),
        "not_found",
        None,
    )
    general: Entry = (
        T0 + 2,
        ("driver_id",),
        {"driver_id": [3, 4]},
        [
            (
                "fares",
                2,
                FEATURES,
                {"fare": [1.0, 2.0], "city": ["a", None]},
                ["present"] * 2,
                [T0] * 2,
            ),
            ("ratings", 1, ("rating",), {"rating": [4, 5]}, ["present", "expired"], [T0, T0 - 1]),
        ],
        None,
    )
    mixed: list[Entry | One] = [present, general, missing]
    got = rows(mixed)
    want = rows([as_entry(e) for e in mixed])
    assert got.drop("request_id").equals(want.drop("request_id"))
    assert got["request_id"].unique_counts().to_list() == [1, 4, 1]
    assert got["entity"].to_list() == [f'{{"driver_id":{i}}}' for i in (1, 3, 4, 3, 4, 2)]
    assert got["features"].to_list() == [
        '{"fare":9.5,"city":"q"}',
        '{"fare":1.0,"city":"a"}',
        '{"fare":2.0,"city":null}',
        '{"rating":4}',
        '{"rating":5}',
        '{"fare":null,"city":null}',
    ]
    assert got["status"].to_list()[-1] == "not_found"
    assert got["event_ts"].to_list() == [
        datetime(2025, 12, 31, 23, 59, 59, 999995, UTC),
        *[datetime(2026, 1, 1, tzinfo=UTC)] * 3,
        datetime(2025, 12, 31, 23, 59, 59, 999999, UTC),
        None,
    ]


def test_a_flat_lookup_with_a_date_key_is_built_row_by_row_alike() -> None:
    day: One = (T0, ("day",), (date(2026, 1, 1),), "ratings", 1, ("rating",), (4,), "present", None)
    got = rows([day])
    assert got.drop("request_id").equals(rows([as_entry(day)]).drop("request_id"))
    assert got["entity"].to_list() == ['{"day":"2026-01-01"}']
    assert got["features"].to_list() == ['{"rating":4}']


@pytest.mark.parametrize("lookups", [3, 40])  # 90 rows, and 1,200: repeated in Python, by polars
def test_what_a_lookup_shares_is_repeated_on_each_of_its_rows(lookups: int) -> None:
    entries: list[Entry | One] = [
        (
            T0 + i,
            ("driver_id",),
            {"driver_id": list(range(30))},
            [
                (
                    "fares",
                    2,
                    ("fare",),
                    {"fare": [i + j / 2 for j in range(30)]},
                    ["present"] * 30,
                    [T0] * 30,
                )
            ],
            f"request-{i}",
        )
        for i in range(lookups)
    ]
    got = rows(entries)
    pairs = [(i, j) for i in range(lookups) for j in range(30)]
    assert got["request_id"].to_list() == [f"request-{i}" for i, _ in pairs]
    assert got["lookup_at"].to_list() == [
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=i) for i, _ in pairs
    ]
    assert got["entity"].to_list() == [f'{{"driver_id":{j}}}' for _, j in pairs]
    assert got["features"].to_list() == [f'{{"fare":{i + j / 2}}}' for i, j in pairs]
    assert got["view"].unique().to_list() == ["fares"]
