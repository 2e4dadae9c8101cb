"""featurekit: a notebook-first feature store with point-in-time-correct, reproducible training sets.

Example:
    >>> import featurekit as fk
    >>> driver = fk.Entity("driver", keys=["driver_id"])
    >>> trips = fk.Source("trips", "data/trips.parquet", timestamp="event_ts")
    >>> @fk.feature_view(entity=driver, sources=[trips], ttl="7d")
    ... def driver_stats(trips): ...
    >>> store = fk.Store("./store"); store.materialize(driver_stats)
"""

# Imported for its effect: the notebook layer attaches the displays of the lower layers'
# classes (and TrainingSet.explain); it imports neither IPython nor ipywidgets until used.
from featurekit import notebook as notebook
from featurekit.core.authoring import FeatureView, feature_view
from featurekit.core.checks import Check
from featurekit.core.config import __version__
from featurekit.core.definitions import Aggregation, Entity, FeatureRef, Source
from featurekit.core.errors import (
    DefinitionError,
    FeatureKitError,
    FeatureKitWarning,
    NotFoundError,
    ReproducibilityError,
    SchemaError,
    SqlError,
    StorageError,
    UserCodeError,
    ValidationError,
    VersionError,
)
from featurekit.core.on_demand import OnDemandFeature, on_demand
from featurekit.kernels.drift import DriftReport, DriftThresholds
from featurekit.lineage.graph import LineageGraph
from featurekit.offline.materialize import MaterializeResult
from featurekit.offline.models import ModelRecord
from featurekit.offline.services import FeatureService
from featurekit.offline.training import TrainingSet
from featurekit.online import MemoryOnlineStore, OnlineStoreError
from featurekit.project.definitions import Definitions
from featurekit.storage.registry import VersionRecord
from featurekit.store import Store

__all__ = [
    "Aggregation",
    "Check",
    "DefinitionError",
    "Definitions",
    "DriftReport",
    "DriftThresholds",
    "Entity",
    "FeatureKitError",
    "FeatureKitWarning",
    "FeatureRef",
    "FeatureService",
    "FeatureView",
    "LineageGraph",
    "MaterializeResult",
    "MemoryOnlineStore",
    "ModelRecord",
    "NotFoundError",
    "OnDemandFeature",
    "OnlineStoreError",
    "ReproducibilityError",
    "SchemaError",
    "Source",
    "SqlError",
    "StorageError",
    "Store",
    "TrainingSet",
    "UserCodeError",
    "ValidationError",
    "VersionError",
    "VersionRecord",
    "__version__",
    "feature_view",
    "on_demand",
]


def __getattr__(name: str) -> object:
    """``fk.mlflow`` (optional extra ``featurekit[mlflow]``) is imported on first use."""
    if name == "mlflow":
        import importlib

        return importlib.import_module("featurekit.mlflow")
    raise AttributeError(f"module 'featurekit' has no attribute {name!r}")
