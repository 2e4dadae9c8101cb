"""Snapshots (no disk): for any rows and any lookup instant t >= T, the stored entry valid at
t plus the TTL rule equals the point-in-time kernel with a label at t. Also on-demand
definitions and the metrics text.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import featurekit as fk
from featurekit.kernels.pit import ViewFrame, pit_join
from featurekit.online.snapshot import (
    encode_key,
    pick_entry,
    restore_values,
    snapshot_entries,
    snapshot_meta,
    to_us,
)
from featurekit.serving.metrics import Metrics
from featurekit.storage.registry import VersionRecord

T = datetime(2026, 3, 1, 12, tzinfo=UTC)
UTC_US = pl.Datetime("us", "UTC")


def record(ttl_us: int | None) -> VersionRecord:
    return VersionRecord(
        view="v",
        version=1,
        fingerprint="f" * 16,
        created_at=T,
        reason=["new"],
        entity="e",
        keys=["k"],
        timestamp="event_ts",
        created_timestamp="created_ts",
        features={"x": "Float64"},
        ttl_us=ttl_us,
        parts={},
    )


rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),  # key
        st.integers(-300, 300),  # event minute offset from T
        st.one_of(st.none(), st.integers(0, 200)),  # created delay in minutes (None: unknown)
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(
    rows=rows_strategy,
    offsets=st.lists(st.integers(0, 600), min_size=1, max_size=5),
    ttl=st.one_of(st.none(), st.integers(1, 240)),
)
def test_snapshot_lookup_equals_kernel_at_any_later_instant(
    rows: list[tuple[int, int, int | None, float | None]], offsets: list[int], ttl: int | None
) -> None:
    frame = pl.DataFrame(
        {
            "k": [r[0] for r in rows],
            "event_ts": [T + timedelta(minutes=r[1]) for r in rows],
            "created_ts": [
                None if r[2] is None else T + timedelta(minutes=r[1] + r[2]) for r in rows
            ],
            "x": [r[3] for r in rows],
        },
        schema={"k": pl.Int64, "event_ts": UTC_US, "created_ts": UTC_US, "x": pl.Float64},
    )
    ttl_us = None if ttl is None else ttl * 60_000_000
    meta = snapshot_meta(record(ttl_us), frame.lazy(), delta_version=0, taken=T)
    stored = dict(snapshot_entries(record(ttl_us), frame, taken=T))
    view = ViewFrame(
        "v",
        frame,
        ("k",),
        "event_ts",
        "created_ts",
        ("x",),
        None if ttl is None else timedelta(minutes=ttl),
    )
    for offset in offsets:
        t = T + timedelta(minutes=offset, microseconds=offset % 3)
        labels = pl.DataFrame(
            {"k": [0, 1, 2, 3], "t": [t] * 4}, schema={"k": pl.Int64, "t": UTC_US}
        )
        want = pit_join(labels, timestamp="t", views=[view])["x"].to_list()
        got = []
        for k in range(4):
            raw = stored.get(encode_key((k,)))
            if raw is None:
                got.append(None)
                continue
            entry = pick_entry(orjson.loads(raw), to_us(t))
            expired = ttl_us is not None and entry[1] is not None and to_us(t) - entry[1] > ttl_us
            got.append(None if entry[1] is None or expired else restore_values(entry)[0])
        assert [repr(v) for v in got] == [repr(v) for v in want]
    assert meta.taken_us == to_us(T)


def test_on_demand_definitions_fail_clearly() -> None:
    with pytest.raises(fk.DefinitionError, match="needs inputs=\\[...\\]"):
        fk.on_demand(inputs=[], name="f")(lambda df: df)
    with pytest.raises(fk.DefinitionError, match="must name one feature, not '\\*'"):
        fk.on_demand(inputs=["v:*"], name="f")(lambda df: df)
    with pytest.raises(fk.DefinitionError, match="same name as an input feature"):
        fk.on_demand(inputs=["v:x"], request=["x"], version="1", name="f")(lambda df: df)
    with pytest.raises(fk.DefinitionError, match="does not parse"):
        fk.on_demand(inputs=["not a ref"], name="f")(lambda df: df)
    with pytest.raises(fk.DefinitionError, match="feature service 'svc' needs features"):
        fk.FeatureService("svc", features=[])


def test_on_demand_is_a_plain_function() -> None:
    @fk.on_demand(inputs=["v:x"], request={"amount": pl.Float64}, version="1")
    def ratio(df: pl.DataFrame) -> pl.DataFrame:
        return df.select((pl.col("amount") / pl.col("x")).alias("r"))

    out = ratio(pl.DataFrame({"x": [2.0], "amount": [4.0]}))
    assert isinstance(out, pl.DataFrame) and out["r"].to_list() == [2.0]
    assert ratio.request_columns == ("amount",)


def test_metrics_render_prometheus_text() -> None:
    from featurekit.online.lookup import ViewStats

    metrics = Metrics()
    metrics.request("/v1/features", 200, 0.002)
    metrics.lookup([ViewStats("v", 1, present=3, expired=1, not_found=2, taken_us=0)], 0.002)
    text = metrics.render([("v", 1, to_us(T), to_us(T))])
    assert 'featurekit_view_lookup_misses_total{view="v",version="1"} 2' in text
    assert 'featurekit_view_lookup_expired_total{view="v",version="1"} 1' in text
    assert (
        'featurekit_http_request_duration_seconds_bucket{endpoint="/v1/features",le="0.0025"} 1'
        in text
    )
    assert "# TYPE featurekit_view_freshness_seconds gauge" in text
