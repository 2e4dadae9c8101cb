"""featurekit: a notebook-first feature store with point-in-time-correct, reproducible training sets.

Example:
    >>> import featurekit as fk
    >>> driver = fk.Entity("driver", keys=["driver_id"])
    >>> trips = fk.Source("trips", "data/trips.parquet", timestamp="event_ts")
    >>> @fk.feature_view(entity=driver, sources=[trips], ttl="7d")
    ... def driver_stats(trips): ...
    >>> store = fk.Store("./store"); store.materialize(driver_stats)
"""

from featurekit.authoring import FeatureView, feature_view
from featurekit.definitions import Entity, FeatureRef, Source
from featurekit.errors import (
    DefinitionError,
    FeatureKitError,
    FeatureKitWarning,
    NotFoundError,
    ReproducibilityError,
    SchemaError,
    SqlError,
    StorageError,
    UserCodeError,
    VersionError,
)
from featurekit.materialize import MaterializeResult
from featurekit.storage.registry import VersionRecord
from featurekit.store import Store
from featurekit.training import TrainingSet

__version__ = "0.1.0"

__all__ = [
    "DefinitionError",
    "Entity",
    "FeatureKitError",
    "FeatureKitWarning",
    "FeatureRef",
    "FeatureView",
    "MaterializeResult",
    "NotFoundError",
    "ReproducibilityError",
    "SchemaError",
    "Source",
    "SqlError",
    "StorageError",
    "Store",
    "TrainingSet",
    "UserCodeError",
    "VersionError",
    "VersionRecord",
    "__version__",
    "feature_view",
]
