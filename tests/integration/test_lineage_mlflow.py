"""MLflow: a training set logged as a dataset input of a run, the run linked to a model entry.

Runs against a local file tracking store in tmp_path (CI installs the `mlflow` extra)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import at
from test_lineage_store import events_frame, views

import featurekit as fk


@pytest.fixture
def mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    try:
        module = importlib.import_module("mlflow")
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("mlflow is not installed (pip install 'featurekit[mlflow]'); CI runs it")
    # the file store is MLflow's dependency-free local backend (the sqlite one needs SQLAlchemy)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    module.set_tracking_uri((tmp_path / "mlruns").as_uri())
    yield module
    if module.active_run() is not None:  # pragma: no cover - only when a test failed inside
        module.end_run()
    module.set_tracking_uri("")


@pytest.fixture
def ts(store: fk.Store, tmp_path: Path) -> fk.TrainingSet:
    data = tmp_path / "data"
    data.mkdir()
    events_frame().write_parquet(data / "events.parquet")
    clean, rich, day = views(data)
    for view in (clean, rich, day):
        store.materialize(view)
    labels = pl.DataFrame({"driver_id": [1, 2], "ts": [at(48), at(48)], "y": [1.0, 0.0]})
    return store.training_set(labels, features=["daily:total_sum", "clean:tip"], timestamp="ts")


def test_training_set_is_logged_as_a_dataset_input_and_linked_to_the_model(
    mlflow: Any, store: fk.Store, ts: fk.TrainingSet
) -> None:
    ts.save("churn-train")
    with mlflow.start_run() as run:
        fk.mlflow.log_training_set(ts)
        mlflow.log_metric("auc", 0.91)
    logged = mlflow.get_run(run.info.run_id)
    assert logged.data.tags["featurekit.training_set_id"] == ts.id
    assert logged.data.tags["featurekit.training_set_hash"] == ts.manifest.result_hash
    inputs = {d.dataset.name: d for d in logged.inputs.dataset_inputs}
    main = inputs["churn-train"]
    assert main.dataset.digest == ts.manifest.result_hash[:32]
    assert main.dataset.source_type == "delta_table"
    assert str(store.root / "training_sets" / ts.id / "labels") in main.dataset.source
    assert {t.key: t.value for t in main.tags}["mlflow.data.context"] == "training"
    assert "total_sum" in main.dataset.schema
    pinned = inputs["daily@1"]
    assert str(store.root / "features" / "daily" / "v1") in pinned.dataset.source
    assert {t.key: t.value for t in pinned.tags}["mlflow.data.context"] == (
        "featurekit.feature_table"
    )
    entry = store.log_model(
        "churn", training_set=ts, model=f"runs:/{run.info.run_id}/model", metrics={"auc": 0.91}
    )
    assert entry.mlflow_run_id == run.info.run_id
    assert entry.model == {"kind": "mlflow", "uri": f"runs:/{run.info.run_id}/model"}
    node = store.lineage("model:churn").node("model:churn@1")
    assert node.attrs["mlflow_run_id"] == run.info.run_id


def test_model_info_objects_are_recognized(store: fk.Store, ts: fk.TrainingSet) -> None:
    class ModelInfo:  # the shape of mlflow.models.model.ModelInfo
        model_uri = "models:/m-123"
        run_id = "r0"

    entry = store.log_model("churn", training_set=ts, model=ModelInfo())
    assert (entry.mlflow_run_id, entry.model["uri"]) == ("r0", "models:/m-123")


def test_log_training_set_needs_an_active_run(mlflow: Any, ts: fk.TrainingSet) -> None:
    with pytest.raises(fk.FeatureKitError, match="needs an active MLflow run"):
        fk.mlflow.log_training_set(ts)


def test_core_never_imports_mlflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys, featurekit\n"
        "from featurekit.lineage import record, service, openlineage\n"
        "print(sorted({'mlflow', 'openlineage', 'sqlglot'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
