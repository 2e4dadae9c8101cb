"""The public surface is small and pinned; importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import featurekit as fk

EXPECTED = {
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
}


def test_all_is_pinned() -> None:
    assert set(fk.__all__) == EXPECTED
    for name in fk.__all__:
        assert hasattr(fk, name)


def test_every_error_derives_from_featurekit_error() -> None:
    for name in fk.__all__:
        obj = getattr(fk, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, fk.FeatureKitError)


def test_import_does_not_pull_heavy_optional_modules() -> None:
    code = (
        "import sys, featurekit\n"
        "heavy = {'ipywidgets', 'IPython', 'sqlglot', 'fastapi', 'redis', 'deltalake', 'scipy', 'pandera'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_drift_thresholds_are_public_as_store_drift_takes_them() -> None:
    from featurekit.kernels.drift import DriftThresholds

    assert fk.DriftThresholds is DriftThresholds
    assert fk.DriftThresholds(ks_statistic=0.1).ks_statistic == 0.1
