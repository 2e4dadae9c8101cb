"""MLflow integration (optional extra: ``pip install 'featurekit[mlflow]'``).

mlflow is imported on first use, never by ``import featurekit``.

Example:
    >>> import mlflow, featurekit as fk
    >>> with mlflow.start_run() as run:
    ...     fk.mlflow.log_training_set(ts)       # dataset input + tags on the run
    ...     info = mlflow.sklearn.log_model(clf, name="model")
    >>> store.log_model("churn", training_set=ts, model=info)   # links the MLflow run
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from featurekit.core.errors import FeatureKitError
from featurekit.storage.registry import Registry

if TYPE_CHECKING:
    from featurekit.offline.training import TrainingSet

#: Run tags set by :func:`log_training_set`.
TAG_TRAINING_SET = "featurekit.training_set_id"
TAG_STORE = "featurekit.store"
TAG_RESULT_HASH = "featurekit.training_set_hash"
#: MLflow's SQL stores keep dataset digests of at most 36 characters.
DIGEST_LENGTH = 32


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as err:
        raise FeatureKitError(
            "fk.mlflow needs MLflow: pip install 'featurekit[mlflow]' (or mlflow)."
        ) from err
    return mlflow


def log_training_set(
    ts: TrainingSet, *, context: str = "training", name: str | None = None
) -> None:
    """Log ``ts`` as a dataset input of the active MLflow run and tag the run with its id.

    The dataset's source is the training set's folder as a Delta source; its digest is the
    training set's content hash (first 32 hex chars, MLflow's limit); each feature table is
    logged too, as a Delta source pinned at the version the training set read
    (context ``featurekit.feature_table``).

    Raises:
        FeatureKitError: MLflow is not installed, or no MLflow run is active.
    """
    mlflow = _mlflow()
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, DataType, Schema

    run = mlflow.active_run()
    if run is None:
        raise FeatureKitError(
            f"fk.mlflow.log_training_set({ts.id!r}) needs an active MLflow run: call it inside "
            "`with mlflow.start_run():`."
        )
    registry: Registry = ts.registry
    manifest = ts.manifest
    frame = ts.to_polars()
    specs: list[Any] = [ColSpec(_mlflow_type(DataType, frame.schema[c]), c) for c in frame.columns]
    saved = [n for n, i in registry.training_set_names().items() if i == ts.id]
    dataset = MetaDataset(  # type: ignore[abstract]  # profile is optional at runtime
        DeltaDatasetSource(
            path=registry.layout.training_set_uri(ts.id, "labels"), delta_table_version=0
        ),
        name=name or (saved[0] if saved else f"training_set-{ts.id}"),
        digest=manifest.result_hash[:DIGEST_LENGTH],
        schema=Schema(specs),
    )
    mlflow.log_input(dataset, context=context, tags={TAG_TRAINING_SET: ts.id})
    for view in manifest.views:
        if view.delta_version is None:
            continue
        table = MetaDataset(  # type: ignore[abstract]
            DeltaDatasetSource(
                path=registry.layout.uri(view.table),
                delta_table_version=view.delta_version,
            ),
            name=view.ref,
            digest=view.fingerprint[:DIGEST_LENGTH],
        )
        mlflow.log_input(table, context="featurekit.feature_table", tags={TAG_TRAINING_SET: ts.id})
    mlflow.set_tags(
        {
            TAG_TRAINING_SET: ts.id,
            TAG_STORE: str(registry.root),
            TAG_RESULT_HASH: manifest.result_hash,
        }
    )


def _mlflow_type(data_type: Any, dtype: Any) -> Any:
    import polars as pl

    if dtype == pl.Boolean:
        return data_type.boolean
    if dtype.is_integer():
        return data_type.long
    if dtype == pl.Float32:
        return data_type.float
    if dtype.is_float():
        return data_type.double
    if isinstance(dtype, pl.Datetime | pl.Date):
        return data_type.datetime
    if dtype == pl.Binary:
        return data_type.binary
    return data_type.string
