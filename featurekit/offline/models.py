"""Model entries: a trained model (object or URI, optionally an MLflow run) linked to the
training set it was trained on, versioned per name (``churn@1``, ``churn@2``, …).

featurekit keeps the *entry* (what, trained on which training set, metrics, params), not
the model's bytes: pass a URI (or an MLflow model) to keep the artifact somewhere durable.
For an in-memory object it records the type and, when it pickles, a content digest.
MLflow is never imported here: MLflow references are recognized by shape
(``runs:/<run id>/...``, ``models:/...``, or an object with ``model_uri`` and ``run_id``).
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections.abc import Mapping
from typing import Any

import orjson

from featurekit.core.errors import DefinitionError, NotFoundError, did_you_mean
from featurekit.core.names import validate_name
from featurekit.core.timeutil import utcnow
from featurekit.storage.registry import ModelRecord, Registry

__all__ = ["ModelRecord", "describe_model", "log_model", "model", "models"]


def describe_model(model: Any, mlflow_run_id: str | None) -> tuple[dict[str, Any], str | None]:
    """What to record about ``model``, and the MLflow run id it names (if any)."""
    if model is None:
        return {"kind": "none"}, mlflow_run_id
    if isinstance(model, str):
        run = mlflow_run_id
        if model.startswith("runs:/"):
            run = run or model.removeprefix("runs:/").split("/", 1)[0] or None
            return {"kind": "mlflow", "uri": model}, run
        if model.startswith("models:/"):
            return {"kind": "mlflow", "uri": model}, run
        return {"kind": "uri", "uri": model}, run
    uri = getattr(model, "model_uri", None)
    run_attr = getattr(model, "run_id", None)
    if isinstance(uri, str) and isinstance(run_attr, str):  # e.g. mlflow's ModelInfo
        return {"kind": "mlflow", "uri": uri}, mlflow_run_id or run_attr
    kind = type(model)
    info: dict[str, Any] = {"kind": "object", "type": f"{kind.__module__}.{kind.__qualname__}"}
    try:
        info["digest"] = hashlib.sha256(pickle.dumps(model, protocol=5)).hexdigest()[:16]
    except Exception:
        info["digest"] = None  # not picklable: the type is all we can say
    return info, mlflow_run_id


def log_model(
    registry: Registry,
    name: str,
    *,
    training_set: str,
    model: Any,
    metrics: Mapping[str, float] | None,
    params: Mapping[str, Any] | None,
    mlflow_run_id: str | None,
    description: str,
    tags: Mapping[str, str] | None,
) -> ModelRecord:
    """Record the next version of model ``name`` (under a lock; never overwrites)."""
    validate_name(name, "model")
    info, run_id = describe_model(model, mlflow_run_id)
    clean_metrics = _metrics(name, metrics or {})
    clean_params = _jsonable(dict(params or {}))
    return registry.append_version(
        "model",
        name,
        lambda number: ModelRecord(
            name=name,
            version=number,
            training_set=training_set,
            created_at=utcnow(),
            metrics=clean_metrics,
            params=clean_params,
            model=info,
            mlflow_run_id=run_id,
            description=description,
            tags={str(k): str(v) for k, v in (tags or {}).items()},
        ),
    )


def models(registry: Registry, name: str | None = None) -> list[ModelRecord]:
    """Entries of one model (or all models), by name then version."""
    names = [name] if name is not None else registry.model_names()
    out = [record for n in names for record in registry.model_versions(n)]
    return sorted(out, key=lambda r: (r.name, r.version))


def model(registry: Registry, name: str, version: int | None = None) -> ModelRecord:
    """One entry (latest when ``version`` is None), or NotFoundError with suggestions."""
    entries = models(registry, name)
    if not entries:
        raise NotFoundError(
            f"no model named {name!r} in this store.{did_you_mean(name, registry.model_names())}"
        )
    if version is None:
        return entries[-1]
    for entry in entries:
        if entry.version == version:
            return entry
    raise NotFoundError(
        f"model {name!r} has no version {version}; it has {[e.version for e in entries]}."
    )


def _metrics(name: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DefinitionError(
                f"model {name!r}: metric {key!r} must be a number, got {value!r}."
            ) from None
        if math.isnan(number):
            raise DefinitionError(f"model {name!r}: metric {key!r} is NaN.")
        out[str(key)] = number
    return out


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Params as JSON: plain values kept, anything else as its repr (never an error)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        try:
            orjson.dumps(value)
            out[str(key)] = value
        except TypeError:
            out[str(key)] = repr(value)
    return out
