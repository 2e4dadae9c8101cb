"""Rich displays, PIT-explain reasons and progress bars, without disk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

import featurekit as fk
from featurekit.notebook import Progress, progress, reprs, view_card
from featurekit.notebook.explain import _C, _E, _ROW, _reason

T = datetime(2024, 3, 10, 12, tzinfo=UTC)
E, C, R = _E, _C, _ROW


def reason(e: datetime | None, c: datetime | None = None, **kw: object) -> tuple[str, str]:
    best = kw.pop("best", {R: 0, E: T - timedelta(hours=1), C: T - timedelta(hours=1)})
    row = kw.pop("row", 1)
    args = {"ttl": timedelta(days=1), "knowledge": True, "aggregation": False, **kw}
    return _reason({R: row, E: e, C: c or e}, T, best=best, **args)  # type: ignore[arg-type]


def test_reasons_follow_the_pit_rules_in_order() -> None:
    hour = timedelta(hours=1)
    assert reason(T + hour)[0] == "future"
    status, why = reason(T - hour, T + hour)
    assert status == "not yet known" and "became known" in why
    assert reason(T - hour, T + hour, knowledge=False)[0] == "lost tie"
    assert reason(T - timedelta(days=2))[0] == "outside ttl"
    assert reason(T - 2 * hour)[0] == "older"
    assert reason(T - hour, T - 2 * hour)[0] == "lost tie"  # same event time, known earlier
    assert reason(T - hour, row=0)[0] == "chosen"
    assert reason(None)[0] == "null time"
    assert reason(T - 2 * hour, aggregation=True)[0] == "in window"
    assert reason(T - timedelta(days=2), aggregation=True)[0] == "before window"


def test_histogram_and_null_bar() -> None:
    assert "<svg" in reprs._histogram(pl.Series([1.0, 2.0, 3.0, None, 10.0]))
    assert reprs._histogram(pl.Series([None, None], dtype=pl.Float64)) == (
        "<span class='fkr-muted'>all null</span>"
    )
    assert "constant" in reprs._histogram(pl.Series([2, 2, 2]))
    assert reprs._histogram(pl.Series([True, False, True, True])) == "75.0% true"
    assert "distinct" in reprs._histogram(pl.Series(["a", "b"]))
    assert "width='30'" in reprs._null_bar(0.5)


def test_view_card_without_a_store() -> None:
    driver = fk.Entity("driver", keys=["driver_id"])
    frame = pl.DataFrame({"driver_id": [1], "event_ts": [datetime(2024, 1, 1)], "fare": [3.5]})
    trips = fk.Source("trips", frame, timestamp="event_ts")

    @fk.feature_view(entity=driver, sources=[trips], ttl="7d", tags={"team": "pricing"})
    def fares(trips: pl.LazyFrame) -> pl.LazyFrame:
        """Fares per trip."""
        return trips.select("driver_id", "event_ts", (pl.col("fare") * 2).alias("fare2"))

    card = view_card(fares)
    html = card._repr_html_()
    assert "FeatureView" in html and "fare2" in html and "Float64" in html
    assert "ttl 7d" in html and "pricing" in html and "Fares per trip." in html
    assert repr(card).startswith("FeatureView('fares'")


def test_progress_is_off_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not Progress("x", 3, show=False).shown
    monkeypatch.setenv(progress.ENV, "0")
    assert not Progress("x", 3, show=None).shown
    monkeypatch.setenv(progress.ENV, "1")
    with Progress("x", 2, show=None) as bar:
        assert bar.shown
        bar.step("one")
    assert not bar.shown
