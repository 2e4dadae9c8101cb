"""The leakage lint runs at register and materialize, can be opted out of, shows in explain."""

from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl
import pytest
from conftest import at, load_module

import featurekit as fk
from featurekit.core.errors import LeakageWarning

VIEWS = """
import polars as pl
import featurekit as fk
from featurekit.core.errors import LeakageWarning

driver = fk.Entity("driver", keys=["driver_id"])


def daily(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.group_by("driver_id", pl.col("event_ts").dt.truncate("1d")).agg(
        pl.col("fare").sum().alias("fares")
    )


def daily_end(trips: pl.LazyFrame) -> pl.LazyFrame:
    stamp = pl.col("event_ts").dt.truncate("1d").dt.offset_by("1d")
    return trips.group_by("driver_id", stamp).agg(pl.col("fare").sum().alias("fares"))


def views(trips, **options):
    make = lambda fn: fk.feature_view(entity=driver, sources=[trips], **options)(fn)
    return make(daily), make(daily_end)
"""


@pytest.fixture
def module(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_module(tmp_path / "leaky_views.py", "leaky_views", VIEWS)


def trips(data_dir: Path) -> fk.Source:
    return fk.Source("trips", data_dir / "trips.parquet", timestamp="event_ts")


def test_truncated_stamp_warns_with_the_fix_and_shows_in_explain(
    store: fk.Store, data_dir: Path, module
) -> None:  # type: ignore[no-untyped-def]
    leaky, _ = module.views(trips(data_dir))
    with pytest.warns(LeakageWarning, match=r"dt\.offset_by\('1d'\)") as caught:
        store.register(leaky)
    assert "event time 'event_ts' is computed as" in str(caught[0].message)
    with pytest.warns(LeakageWarning):
        store.materialize(leaky)
    assert store.versions("daily")[0].leakage[0].startswith("view 'daily': event time")
    labels = pl.DataFrame({"driver_id": [1], "ts": [at(5)]})
    ts = store.training_set(labels, features=["daily:fares"], timestamp="ts")
    text = repr(ts.explain(0))
    assert "leakage warning: view 'daily': event time 'event_ts'" in text
    assert "leakage warning" in ts.explain(0)._repr_html_()


def test_end_of_period_stamp_does_not_warn(store: fk.Store, data_dir: Path, module) -> None:  # type: ignore[no-untyped-def]
    _, correct = module.views(trips(data_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeakageWarning)
        store.materialize(correct)
    assert store.versions("daily_end")[0].leakage == []


def test_opt_out_silences_the_lint_and_keeps_the_version(
    store: fk.Store, data_dir: Path, module
) -> None:  # type: ignore[no-untyped-def]
    leaky, _ = module.views(trips(data_dir))
    quiet, _ = module.views(trips(data_dir), leakage="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeakageWarning)
        record = store.register(quiet)
    assert record.leakage == []
    with pytest.warns(LeakageWarning):
        assert store.register(leaky).fingerprint == record.fingerprint  # not in the version
    with pytest.raises(
        fk.DefinitionError, match="leakage must be 'warn' \\(default\\) or 'ignore'"
    ):
        module.views(trips(data_dir), leakage="off")
