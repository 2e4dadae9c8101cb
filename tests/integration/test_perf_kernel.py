"""The kernel's packed fast paths (one integer key) answer exactly like its general path.

Integer keys take the packed paths (labels sorted by a packed key; candidates' "known
from" instants computed without a re-sort); the same data with string keys takes the
general multi-column sorts. Both must agree with each other and with the oracle.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurekit.kernels import pit
from featurekit.kernels.bucketing import BUCKET, bucket_ids
from featurekit.kernels.frames import in_order, last_of_runs, packed_order, sort_rows
from featurekit.kernels.pit import ViewFrame, pit_join

BASE = datetime(2026, 3, 1)

rows_st = st.lists(
    st.tuples(
        st.integers(-2, 3),  # key (negative too: offsets from the minimum)
        st.integers(0, 12),  # event minute: ties are common
        st.integers(-2, 8),  # created = event + this (known late, or even early)
    ),
    min_size=1,
    max_size=40,
)
labels_st = st.lists(st.tuples(st.integers(-2, 4), st.integers(-3, 25)), min_size=1, max_size=30)


def at(minutes: list[int]) -> pl.Series:
    return pl.Series([BASE + timedelta(minutes=m) for m in minutes], dtype=pl.Datetime("us"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_st,
    labels=labels_st,
    ttl=st.sampled_from([None, 3, 10]),
    mode=st.sampled_from(["knowledge", "event"]),
    key_dtype=st.sampled_from([pl.Int64, pl.Int8, pl.UInt8, pl.UInt64, pl.Int32]),
)
def test_packed_paths_match_general_path(
    rows: list[tuple[int, int, int]],
    labels: list[tuple[int, int]],
    ttl: int | None,
    mode: str,
    key_dtype: type[pl.DataType],
) -> None:
    shift = 2 if key_dtype in (pl.UInt8, pl.UInt64) else 0  # unsigned: no negative keys
    frame = pl.DataFrame(
        {
            "k": pl.Series([k + shift for k, _, _ in rows], dtype=key_dtype),
            "e": at([e for _, e, _ in rows]),
            "c": at([e + c for _, e, c in rows]),
            "v": pl.Series([float(i) for i in range(len(rows))]),
        }
    )
    label_frame = pl.DataFrame(
        {
            "k": pl.Series([k + shift for k, _ in labels], dtype=key_dtype),
            "t": at([t for _, t in labels]),
        }
    )
    answers = []
    for stringy in (False, True):
        f, lab = frame, label_frame
        if stringy:  # zero-padded, so string order is integer order
            f = f.with_columns(pl.col("k").add(10).cast(pl.String).str.zfill(3))
            lab = lab.with_columns(pl.col("k").add(10).cast(pl.String).str.zfill(3))
        view = ViewFrame(
            "v",
            f,
            ("k",),
            "e",
            "c",
            ("v",),
            None if ttl is None else timedelta(minutes=ttl),
        )
        out = pit_join(lab, timestamp="t", views=[view], point_in_time=mode)  # type: ignore[arg-type]
        answers.append(out.get_column("v"))
    assert answers[0].equals(answers[1])


@settings(max_examples=100, deadline=None)
@given(rows=rows_st)
def test_frame_helpers(rows: list[tuple[int, int, int]]) -> None:
    frame = pl.DataFrame(
        {
            "k": pl.Series([k for k, _, _ in rows], dtype=pl.Int64),
            "e": at([e for _, e, _ in rows]),
            "c": at([e + c for _, e, c in rows]),
            "r": pl.Series(list(range(len(rows))), dtype=pl.UInt32).reverse(),
        }
    )
    # sort_rows is a stable sort by (k, e, c)
    expected = frame.with_row_index("p").sort(["k", "e", "c", "p"]).drop("p")
    assert sort_rows(frame, ["k"], "e", "c").equals(expected)
    unique = expected.filter(last_of_runs(["k", "e", "c"]))
    assert sort_rows(frame, ["k"], "e", "c", unique=True).equals(unique)
    order = packed_order(frame, ["k"], "e", [("r", True)])
    if order is not None:
        assert frame[order].equals(frame.sort(["k", "e", "r"], descending=[False, False, True]))


@settings(max_examples=60, deadline=None)
@given(rows=rows_st, nulls=st.lists(st.booleans(), min_size=40, max_size=40))
def test_sort_rows_null_created_and_no_created(
    rows: list[tuple[int, int, int]], nulls: list[bool]
) -> None:
    created = [
        None if nulls[i] else BASE + timedelta(minutes=e + c) for i, (_, e, c) in enumerate(rows)
    ]
    frame = pl.DataFrame(
        {
            "k": pl.Series([k for k, _, _ in rows], dtype=pl.Int64),
            "e": at([e for _, e, _ in rows]),
            "c": pl.Series(created, dtype=pl.Datetime("us")),
            "i": pl.Series(list(range(len(rows)))),
        }
    )
    ranked = frame.with_row_index("p")
    expected = ranked.sort(["k", "e", "c", "p"], nulls_last=False).drop("p")
    assert sort_rows(frame, ["k"], "e", "c").equals(expected)
    unique = expected.filter(last_of_runs(["k", "e", "c"]))
    assert sort_rows(frame, ["k"], "e", "c", unique=True).equals(unique)
    by_event = ranked.sort(["k", "e", "p"]).drop("p")
    assert sort_rows(frame, ["k"], "e", None).equals(by_event)
    unique = by_event.filter(last_of_runs(["k", "e"]))
    assert sort_rows(frame, ["k"], "e", None, unique=True).equals(unique)
    # the general (unpacked) path answers the same
    stringy = frame.with_columns(pl.col("k").add(10).cast(pl.String).str.zfill(3))
    assert sort_rows(stringy, ["k"], "e", "c", unique=True)["i"].equals(
        sort_rows(frame, ["k"], "e", "c", unique=True)["i"]
    )


@pytest.mark.parametrize("threaded", [False, True])
def test_sort_rows_large_chunked_frame_with_many_ties(
    threaded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big enough for the streaming sort to split into morsels; stability must survive
    (and the ties' columns written from two threads, as on frames of a million rows)."""
    from featurekit.kernels import frames

    monkeypatch.setattr(frames, "_THREADED_SCATTER", 1 if threaded else 1 << 40)
    n, parts = 400_000, 4
    size = n // parts
    chunks = []
    for i in range(parts):
        row = pl.int_range(0, size, eager=True)
        chunks.append(
            pl.DataFrame(
                {
                    "k": (row * (7919 + i)) % 997,
                    "e": ((row % 13) * 60_000_000).cast(pl.Datetime("us")),
                    "c": ((row % (5 + i)) * 1_000_000).cast(pl.Datetime("us")),
                    "i": pl.int_range(i * size, (i + 1) * size, eager=True),
                }
            )
        )
    frame = pl.concat(chunks, rechunk=False)
    assert frame.n_chunks() == parts
    expected = frame.with_row_index("p").sort(["k", "e", "c", "p"]).drop("p")
    assert sort_rows(frame, ["k"], "e", "c").equals(expected)
    unique = expected.filter(last_of_runs(["k", "e", "c"]))
    assert unique.height < expected.height  # the data has exact duplicates
    assert sort_rows(frame, ["k"], "e", "c", unique=True).equals(unique)
    unique = expected.filter(last_of_runs(["k", "e", "c"]))
    assert unique.height < expected.height  # the data has exact duplicates
    assert sort_rows(frame, ["k"], "e", "c", unique=True).equals(unique)


def _in_order_by_loop(frame: pl.DataFrame, columns: list[str], strict: bool) -> bool:
    """Plain Python: every row compared with the one before it (nulls make it False)."""
    rows = frame.select(columns).rows()
    if any(v is None for row in rows for v in row):
        return len(rows) < 2
    return all(a < b if strict else a <= b for a, b in pairwise(rows))


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(-2, 3),
            st.integers(0, 4),
            st.integers(0, 3),
            st.integers(0, 2),
        ),
        min_size=0,
        max_size=30,
    ),
    sort_by=st.sampled_from([0, 2, 4]),
    null_at=st.one_of(st.none(), st.integers(0, 29)),
    strict=st.booleans(),
    width=st.sampled_from([1, 2, 3, 4]),
)
def test_in_order_matches_a_loop(
    rows: list[tuple[int, int, int, int]],
    sort_by: int,
    null_at: int | None,
    strict: bool,
    width: int,
) -> None:
    frame = pl.DataFrame(
        {
            "k": pl.Series([r[0] for r in rows], dtype=pl.Int64),
            "e": at([r[1] for r in rows]),
            "c": pl.Series(
                [
                    None if i == null_at else BASE + timedelta(minutes=r[2])
                    for i, r in enumerate(rows)
                ],
                dtype=pl.Datetime("us"),
            ),
            "x": pl.Series([r[3] for r in rows], dtype=pl.Int64),
        }
    )
    columns = ["k", "e", "c", "x"][:width]
    if sort_by:  # by the first two columns only, or by all of them
        frame = frame.sort(columns[:sort_by], nulls_last=False, maintain_order=True)
    assert in_order(frame, columns, strict=strict) == _in_order_by_loop(frame, columns, strict)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_st,
    labels=labels_st,
    ttl=st.sampled_from([None, 0, 3, 10, 10**9]),
    mode=st.sampled_from(["knowledge", "event"]),
    key_dtype=st.sampled_from([pl.Int64, pl.Int8, pl.UInt8, pl.UInt64, pl.UInt32]),
    unit=st.sampled_from(["us", "ns"]),
    null_created=st.one_of(st.none(), st.integers(0, 39)),
    null_label=st.one_of(st.none(), st.integers(0, 59)),
    presorted=st.booleans(),
    chunks=st.lists(st.integers(1, 39), max_size=3),
)
def test_numpy_path_matches_polars_path(
    rows: list[tuple[int, int, int]],
    labels: list[tuple[int, int]],
    ttl: int | None,
    mode: str,
    key_dtype: type[pl.DataType],
    unit: str,
    null_created: int | None,
    null_label: int | None,
    presorted: bool,
    chunks: list[int],
) -> None:
    """One integer key: the numpy path (``_packed_join``) gives exactly the polars path's
    values, on stored-like (sorted) and unsorted rows in one or several chunks (a bucket
    of several files), ties, TTLs, both time units, and labels without a key or a time."""
    shift = 2 if key_dtype in (pl.UInt8, pl.UInt64, pl.UInt32) else 0
    created = [
        None if i == null_created else BASE + timedelta(minutes=e + c)
        for i, (_, e, c) in enumerate(rows)
    ]
    frame = pl.DataFrame(
        {
            "k": pl.Series([k + shift for k, _, _ in rows], dtype=key_dtype),
            "e": at([e for _, e, _ in rows]).cast(pl.Datetime(unit)),  # type: ignore[arg-type]
            "c": pl.Series(created, dtype=pl.Datetime(unit)),  # type: ignore[arg-type]
            "v": pl.Series([float(i) for i in range(len(rows))]),
            "s": pl.Series([f"r{i}" for i in range(len(rows))]),
        }
    )
    if presorted:
        frame = frame.sort(["k", "e", "c"], nulls_last=False, maintain_order=True)
    cuts = sorted({0, *(c for c in chunks if c < frame.height), frame.height})
    frame = pl.concat([frame[a:b] for a, b in pairwise(cuts)], rechunk=False)
    label_frame = pl.DataFrame(
        {
            "k": pl.Series([k + shift for k, _ in labels], dtype=key_dtype),
            "t": at([t for _, t in labels]),
        }
    )
    if null_label is not None and null_label // 2 < label_frame.height:  # a key or a time
        column = "kt"[null_label % 2]
        label_frame = label_frame.with_columns(
            label_frame.get_column(column).scatter(null_label // 2, None)
        )
    view = ViewFrame(
        "v",
        frame,
        ("k",),
        "e",
        "c",
        ("v", "s", "k"),
        None if ttl is None else timedelta(minutes=ttl),
    )
    used = []
    numpy_path = pit._packed_join

    def counted(*args: object) -> object:
        out = numpy_path(*args)  # type: ignore[arg-type]
        used.append(out is not None)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pit, "_packed_join", counted)
        fast = pit_join(label_frame, timestamp="t", views=[view], point_in_time=mode)  # type: ignore[arg-type]
        patch.setattr(pit, "_packed_join", lambda *args: None)
        slow = pit_join(label_frame, timestamp="t", views=[view], point_in_time=mode)  # type: ignore[arg-type]
    assert fast.equals(slow)
    assert fast.schema == slow.schema
    if frame.drop_nulls(["c"] if mode == "knowledge" else []).height >= 2:
        assert used == [True]  # the numpy path answered


def test_numpy_path_answers_a_stored_like_view() -> None:
    """Sorted rows with one Int64 key (what a stored table gives): exact values and nulls
    for a label before any row, a late-known row, an expired row and an unknown entity."""
    frame = pl.DataFrame(
        {
            "k": pl.Series([1, 1, 1, 2], dtype=pl.Int64),
            "e": at([0, 5, 10, 0]),
            "c": at([0, 20, 10, 0]),  # the row at 5 is known only at 20
            "v": [1.0, 2.0, 3.0, 4.0],
        }
    )
    labels = pl.DataFrame({"k": [1, 1, 1, 2, 3, 1], "t": at([-1, 6, 12, 30, 5, 19])})
    view = ViewFrame("v", frame, ("k",), "e", "c", ("v",), timedelta(minutes=10))
    left = pit_join(labels, timestamp="t", views=[view], point_in_time="knowledge")
    assert left.get_column("v").to_list() == [None, 1.0, 3.0, None, None, 3.0]
    event = pit_join(labels, timestamp="t", views=[view], point_in_time="event")
    assert event.get_column("v").to_list() == [None, 2.0, 3.0, None, None, 3.0]


@settings(max_examples=80, deadline=None)
@given(
    rows=rows_st,
    buckets=st.sampled_from([2, 4, 16]),
    wide=st.booleans(),
)
def test_sort_rows_with_the_bucket_leading(
    rows: list[tuple[int, int, int]], buckets: int, wide: bool
) -> None:
    """Rows sorted by (bucket, keys, event, created), stably: packed into the high bits when
    they are free, grouped after the sort when they are not (``wide``: a key span that
    leaves no bits), and by the general sort for string keys: the same rows every way."""
    spread = 1 << 31 if wide else 1  # keys 34 bits apart, minutes 30: no bit left
    frame = pl.DataFrame(
        {
            "k": pl.Series([k * spread for k, _, _ in rows], dtype=pl.Int64),
            "e": at([e for _, e, _ in rows]),
            "c": at([e + c for _, e, c in rows]),
            "i": pl.Series(list(range(len(rows)))),
        }
    )
    frame = frame.with_columns(bucket_ids(frame, ["k"], buckets))
    expected = frame.with_row_index("p").sort([BUCKET, "k", "e", "c", "p"]).drop("p")
    assert sort_rows(frame, ["k"], "e", "c", lead=BUCKET).equals(expected)
    unique = expected.filter(last_of_runs(["k", "e", "c"]))
    assert sort_rows(frame, ["k"], "e", "c", unique=True, lead=BUCKET).equals(unique)
    stringy = frame.with_columns(pl.col("k").cast(pl.String))
    by_string = stringy.with_row_index("p").sort([BUCKET, "k", "e", "c", "p"]).drop("p")
    assert sort_rows(stringy, ["k"], "e", "c", lead=BUCKET).equals(by_string)


def test_a_bucket_with_no_bits_left_is_grouped_after_the_sort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from featurekit.kernels import frames

    grouped: list[int] = []
    real = frames.grouped_by
    monkeypatch.setattr(frames, "grouped_by", lambda f, c: grouped.append(f.height) or real(f, c))
    frame = pl.DataFrame(
        {
            "k": pl.Series([5 << 31, 0, 5 << 31, 0, 1 << 31], dtype=pl.Int64),
            "e": at([12, 0, 3, 3, 7]),
            "c": at([12, 1, 3, 4, 7]),
        }
    )
    frame = frame.with_columns(bucket_ids(frame, ["k"], 4))
    expected = frame.with_row_index("p").sort([BUCKET, "k", "e", "c", "p"]).drop("p")
    assert sort_rows(frame, ["k"], "e", "c", lead=BUCKET).equals(expected)
    assert grouped == [5]


def test_tidy_rows_leads_with_the_bucket_only_when_it_sorts() -> None:
    """Rows that need a sort come out bucket first; rows already in key order stay in it
    (the writer gathers each bucket: cheaper than sorting them again)."""
    from featurekit.offline.compute import Layout, tidy_rows

    layout = Layout(("k",), "e", "c", ("v",), ())
    frame = pl.DataFrame(
        {
            "k": pl.Series(list(range(20)), dtype=pl.Int64),
            "e": at(list(range(20))),
            "c": at(list(range(20))),
            "v": pl.Series([float(i) for i in range(20)]),
        }
    )
    frame = frame.with_columns(bucket_ids(frame, ["k"], 4))
    assert tidy_rows(frame, layout, "test", lead=BUCKET).equals(frame)
    shuffled = frame.reverse()
    by_bucket = frame.with_row_index("p").sort([BUCKET, "k", "p"]).drop("p")
    assert tidy_rows(shuffled, layout, "test", lead=BUCKET).equals(by_bucket)
    assert not by_bucket.equals(frame)  # the two answers differ: both paths were taken
