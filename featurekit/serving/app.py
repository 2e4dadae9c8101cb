"""The feature server: ``featurekit serve`` (FastAPI on uvicorn).

``POST /v1/features`` is ``store.get_online_features`` over JSON: the same plan, the same
lookup, the same values. Bad input gets a JSON error naming the field and, for unknown
names, the closest known one (404 unknown feature or view, 413 too many entities, 422
malformed request or wrong key type); an unreachable online store gets 503 and the server
stays up. Responses are encoded with orjson.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from featurekit.core.config import __version__
from featurekit.core.errors import FeatureKitError, NotFoundError, StorageError, did_you_mean
from featurekit.core.on_demand import OnDemandFeature
from featurekit.offline.services import FeatureService
from featurekit.online.errors import OnlineStoreError, TooManyEntitiesError
from featurekit.online.lookup import ServiceName
from featurekit.online.snapshot import SnapshotMeta
from featurekit.serving.metrics import Metrics
from featurekit.store import Store

__all__ = ["DEFAULT_MAX_ENTITIES", "create_app", "load_definitions"]

DEFAULT_MAX_ENTITIES = 10_000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Value = StrictInt | StrictStr | StrictFloat | StrictBool | None


class FeaturesRequest(BaseModel):
    """Body of ``POST /v1/features``: which features, for which entities."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "features": ["driver_stats:conv_rate", "driver_stats@2:avg_fare"],
                    "entities": {"driver_id": [1001, 1002]},
                    "with_metadata": True,
                }
            ]
        },
    )

    features: Annotated[
        list[StrictStr] | None,
        Field(description="'view:feature', 'view@2:feature', 'view:*' or 'on_demand:output'."),
    ] = None
    feature_service: Annotated[
        StrictStr | None, Field(description="Name of a registered feature service.")
    ] = None
    entities: Annotated[
        dict[StrictStr, list[Value]],
        Field(description="Key columns (and on-demand request columns) -> values, row-aligned."),
    ]
    with_metadata: Annotated[
        StrictBool, Field(description="Add <view>__event_ts and <view>__status columns.")
    ] = False


class FeaturesResponse(BaseModel):
    """Rows in request order, column by column."""

    lookup_ts: str = Field(description="The lookup instant (UTC, ISO 8601).")
    columns: dict[str, list[Any]] = Field(description="Column name -> values, in request order.")


class ErrorBody(BaseModel):
    """What went wrong and what to do about it."""

    type: str
    message: str
    field: str | None = None
    limit: int | None = None


class ErrorResponse(BaseModel):
    """Every error response has this shape."""

    error: ErrorBody


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (404, "Unknown feature, view, version or service (the message suggests the closest)."),
        (413, "Too many entities in one request (the message and 'limit' give the limit)."),
        (422, "Malformed request, missing key column or wrong key type (names the field)."),
        (503, "The online store is unavailable (e.g. Redis is down); retry later."),
    )
}


def create_app(
    store: Store,
    *,
    max_entities: int = DEFAULT_MAX_ENTITIES,
    definitions: Sequence[OnDemandFeature | FeatureService] = (),
) -> FastAPI:
    """The FastAPI app serving ``store`` (on-demand code and services from ``definitions``).

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app(fk.Store("./store")), host="127.0.0.1", port=8000)
    """
    store.add_definitions(definitions)
    service = store.online_service()
    metrics = Metrics()
    app = FastAPI(
        title="featurekit feature server",
        version=__version__,
        description=(
            "Online features from a featurekit store: exactly what a training set built "
            "with labels at the lookup instant would hold."
        ),
    )

    def respond(endpoint: str, began: float, status: int, body: Any) -> Response:
        metrics.request(endpoint, status, time.perf_counter() - began)
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    def failure(endpoint: str, began: float, err: Exception) -> Response:
        status, body = _error(err, max_entities)
        return respond(endpoint, began, status, body)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        field = ".".join(loc) or None
        message = f"{field or 'request'}: {first.get('msg', 'invalid request')}"
        if first.get("type") == "extra_forbidden":
            message += " (allowed: features, feature_service, entities, with_metadata)"
        body = {"error": {"type": "ValidationError", "message": message, "field": field}}
        metrics.request(request.url.path, 422, 0.0)
        return Response(orjson.dumps(body), status_code=422, media_type="application/json")

    @app.post(
        "/v1/features",
        response_model=FeaturesResponse,
        responses=_ERRORS,
        summary="Look up online features",
    )
    def get_features(body: FeaturesRequest) -> Response:
        """Same semantics as ``store.get_online_features``; rows come back in request order."""
        began = time.perf_counter()
        try:
            n = max((len(v) for v in body.entities.values()), default=0)
            if n > max_entities:
                raise TooManyEntitiesError(
                    f"{n} entities in one request; the limit is {max_entities}. Split the "
                    "request into batches.",
                    limit=max_entities,
                )
            features: Any
            if (body.features is None) == (body.feature_service is None):
                raise _Invalid("pass exactly one of 'features' and 'feature_service'.", "features")
            if body.feature_service is not None:
                features = ServiceName(body.feature_service)
            else:
                features = tuple(body.features or ())
            result = service.lookup(features, body.entities, with_metadata=body.with_metadata)
        except Exception as err:
            return failure("/v1/features", began, err)
        metrics.lookup(result.stats, time.perf_counter() - began)
        payload = {
            "lookup_ts": _iso(result.at_us),
            "columns": result.frame.to_dict(as_series=False),
        }
        return respond("/v1/features", began, 200, payload)

    @app.get("/v1/feature-views", summary="List feature views")
    def list_views() -> Response:
        """Every view with its latest version, keys, features, TTL and online snapshot."""
        began = time.perf_counter()
        try:
            snapshots = _snapshots(store)
            out = [
                _describe(store, name, store.registry.versions(name)[-1].version, snapshots)
                for name in store.views()
            ]
        except Exception as err:
            return failure("/v1/feature-views", began, err)
        return respond("/v1/feature-views", began, 200, {"feature_views": out})

    @app.get("/v1/feature-views/{name}", responses=_ERRORS, summary="Describe a feature view")
    def get_view(name: str) -> Response:
        """One view: every version, its features and dtypes, and its online snapshot."""
        began = time.perf_counter()
        try:
            if not _NAME.match(name) or not store.registry.versions(name):
                raise NotFoundError(
                    f"no view named {name!r} in this store.{did_you_mean(name, store.views())}"
                )
            snapshots = _snapshots(store)
            versions = [
                _describe(store, name, r.version, snapshots) for r in store.registry.versions(name)
            ]
            body = {"name": name, "latest": versions[-1]["version"], "versions": versions}
        except Exception as err:
            return failure("/v1/feature-views/{name}", began, err)
        return respond("/v1/feature-views/{name}", began, 200, body)

    @app.get("/health", summary="Liveness and online-store reachability")
    def health() -> Response:
        """200 when the online store answers, 503 (with the reason) when it does not."""
        began = time.perf_counter()
        try:
            service.online.ping()
        except FeatureKitError as err:
            body = {"status": "unavailable", "online_store": service.online.url, "error": str(err)}
            return respond("/health", began, 503, body)
        return respond("/health", began, 200, {"status": "ok", "online_store": service.online.url})

    @app.get("/metrics", summary="Prometheus metrics")
    def metrics_endpoint() -> Response:
        """Request counts and latency per endpoint and view, misses, expired, freshness."""
        try:
            snaps = [
                (m.view, m.version, m.taken_us, m.max_event_us)
                for m in (SnapshotMeta.from_bytes(raw) for raw in service.online.all_meta())
            ]
        except FeatureKitError:
            snaps = []  # freshness is unknown while the store is down; counters still render
        text = metrics.render(snaps)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


class _Invalid(FeatureKitError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _error(err: Exception, max_entities: int) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"type": type(err).__name__, "message": str(err)}
    if isinstance(err, TooManyEntitiesError):
        body["limit"] = err.limit
        return 413, {"error": body}
    if isinstance(err, NotFoundError):
        return 404, {"error": body}
    if isinstance(err, OnlineStoreError | StorageError):
        return 503, {"error": body}
    if isinstance(err, _Invalid):
        body["type"] = "ValidationError"
        body["field"] = err.field
        return 422, {"error": body}
    if isinstance(err, FeatureKitError):
        field = re.search(r"(?:column|key) '([^']+)'", str(err))
        body["field"] = field.group(1) if field else None
        return 422, {"error": body}
    body = {"type": "InternalError", "message": f"{type(err).__name__}: {err}"}
    return 500, {"error": body}


def _iso(us: int) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).isoformat()


def _snapshots(store: Store) -> dict[tuple[str, int], SnapshotMeta]:
    metas = (SnapshotMeta.from_bytes(raw) for raw in store.online.all_meta())
    return {(m.view, m.version): m for m in metas}


def _describe(
    store: Store, name: str, version: int, snapshots: dict[tuple[str, int], SnapshotMeta]
) -> dict[str, Any]:
    record = store.registry.version(name, version)
    snap = snapshots.get((name, version))
    return {
        "name": record.view,
        "version": record.version,
        "fingerprint": record.fingerprint,
        "entity": record.entity,
        "keys": record.keys,
        "timestamp": record.timestamp,
        "created_timestamp": record.created_timestamp,
        "features": record.features,
        "ttl_seconds": None if record.ttl_us is None else record.ttl_us / 1e6,
        "description": record.description,
        "tags": record.tags,
        "online": None
        if snap is None
        else {
            "delta_version": snap.delta_version,
            "materialized_at": _iso(snap.taken_us),
            "entities": snap.entities,
        },
    }


def load_definitions(targets: Sequence[str]) -> list[OnDemandFeature | FeatureService]:
    """On-demand features and services defined at module level in files or modules.

    The server needs their code (a registry records fingerprints, not functions).
    """
    found: list[OnDemandFeature | FeatureService] = []
    for target in targets:
        module = _import(target)
        for value in vars(module).values():
            if isinstance(value, OnDemandFeature | FeatureService) and value not in found:
                found.append(value)
    return found


def _import(target: str) -> Any:
    path = Path(target)
    if path.suffix == ".py":
        if not path.is_file():
            raise NotFoundError(f"definitions file {target!r} does not exist.")
        name = f"featurekit_definitions_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise NotFoundError(f"cannot import definitions file {target!r}.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        _run(lambda: spec.loader.exec_module(module), target)  # type: ignore[union-attr]
        return module
    return _run(lambda: importlib.import_module(target), target)


def _run(fn: Callable[[], Any], target: str) -> Any:
    from featurekit.core.errors import UserCodeError

    try:
        return fn()
    except FeatureKitError:
        raise
    except Exception as err:
        raise UserCodeError(
            f"importing definitions {target!r} failed: {type(err).__name__}: {err}"
        ) from err


def _print_openapi() -> None:  # pragma: no cover - a maintenance helper
    """Print the OpenAPI spec (``python -m featurekit.serving.app > docs/openapi.json``)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        spec = create_app(Store(Path(folder) / "store", progress=False, online="memory")).openapi()
    sys.stdout.write(orjson.dumps(spec, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":  # pragma: no cover
    _print_openapi()
