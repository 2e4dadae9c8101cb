"""Views, versions and models display richly in Jupyter without any opt-in."""

from __future__ import annotations

from pathlib import Path

from views_trips import fare_view

import featurekit as fk


def test_definitions_render_html(store: fk.Store, data_dir: Path) -> None:
    view = fare_view(data_dir)
    assert "fare_features" in view._repr_html_()
    store.materialize(view)
    record = store.versions("fare_features")[0]
    assert record.fingerprint in record._repr_html_()
    import polars as pl
    from conftest import at

    labels = pl.DataFrame({"driver_id": [1], "label_ts": [at(12)]})
    ts = store.training_set(labels, ["fare_features:fare"], "label_ts")
    model = store.log_model("churn", training_set=ts, model="s3://bucket/model.pkl")
    assert "churn" in model._repr_html_()
