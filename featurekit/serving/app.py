"""The feature server: ``featurekit serve`` (FastAPI on uvicorn).

``POST /v1/features`` is ``store.get_online_features`` over JSON: the same plan, the same
lookup, the same values. Responses are encoded with orjson.

One boundary (:class:`_Boundary`, a plain ASGI middleware) wraps every request: it
enforces the body limit while the body streams in, turns every exception (ours,
FastAPI's validation errors, Starlette's 404/405) into the one error shape
``{"error": {"type", "message", "field"?, "limit"?}}``, and records the request's
latency and status in the metrics. The handlers only compute. The boundary also answers
well-formed ``POST /v1/features`` requests itself, without FastAPI's routing (the
lookup's latency is the product); what the request model refuses goes on to the route.

Input is bounded before any work is done (:class:`Limits`): body bytes (413), features per
request (413), entities per request (413) and name length (422). Every name from a
request passes :func:`featurekit.core.names.validate_name` before it is looked up, so
nothing from a request reaches a path unchecked. Error messages never echo unbounded
input, never show a server path (the store root becomes ``<store>``) and never show a
credential (:mod:`featurekit.core.redact`).

With API keys (:mod:`featurekit.serving.auth`) the boundary also authenticates: before
the body is read, a request to anything but ``/health``, ``/docs``, ``/openapi.json`` (and
``/metrics`` unless ``metrics_auth``) must carry a valid ``Authorization: Bearer`` key
(else 401); the handlers then check the key's grants against what is asked for (else
403). CORS is off unless origins are given; then exactly those origins may call.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import secrets
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Protocol

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match

from featurekit.core.config import __version__
from featurekit.core.definitions import FeatureRef
from featurekit.core.errors import (
    DefinitionError,
    FeatureKitError,
    NotFoundError,
    StorageError,
    did_you_mean,
)
from featurekit.core.names import MAX_NAME_LENGTH, NameKind, shown, validate_name
from featurekit.core.on_demand import OnDemandFeature
from featurekit.core.redact import redact
from featurekit.offline.planner import Planner
from featurekit.offline.services import FeatureService
from featurekit.online.errors import OnlineStoreError, TooManyEntitiesError
from featurekit.online.lookup import OnlineService, ServiceName
from featurekit.online.push import PushResult
from featurekit.online.snapshot import SnapshotMeta
from featurekit.online.stores import MemoryOnlineStore, OnlineStore, SQLiteOnlineStore
from featurekit.serving.auth import ApiKey, ApiKeys, AuthenticationError, PermissionDeniedError
from featurekit.serving.metrics import Metrics
from featurekit.storage.registry import Registry

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_COLUMNS",
    "DEFAULT_MAX_ENTITIES",
    "DEFAULT_MAX_FEATURES",
    "OPEN_PATHS",
    "Limits",
    "RequestTooLargeError",
    "create_app",
    "definitions_in",
    "import_definitions",
    "load_definitions",
]

DEFAULT_MAX_ENTITIES = 10_000
DEFAULT_MAX_FEATURES = 1_000
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_COLUMNS = 256
#: Longest error message a response carries; anything longer is cut (never echo megabytes).
MAX_MESSAGE = 1_000

_log = logging.getLogger("featurekit.serving")

#: Paths anyone may call, keys or not: liveness, and the API's description.
OPEN_PATHS = frozenset({"/health", "/docs", "/openapi.json"})
#: Where the boundary leaves the verified key entry for the handlers.
_KEY_SCOPE = "featurekit.api_key"
_BEARER = "bearerAuth"

Value = StrictInt | StrictStr | StrictFloat | StrictBool | None


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; larger requests are refused before any work is done.

    Attributes:
        max_body_bytes: request body size (HTTP 413); counted while the body streams in,
            so a huge body is never read whole.
        max_features: feature references in one ``features`` list (HTTP 413).
        max_entities: entity rows in one request (HTTP 413).
        max_columns: entity columns in one request: keys, request columns and columns
            passed through (HTTP 413).
        max_name_length: characters in any name from a request (HTTP 422); at most
            :data:`featurekit.core.names.MAX_NAME_LENGTH`, which no valid name exceeds.

    Example:
        >>> create_app(store, limits=Limits(max_entities=1_000))
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_features: int = DEFAULT_MAX_FEATURES
    max_entities: int = DEFAULT_MAX_ENTITIES
    max_columns: int = DEFAULT_MAX_COLUMNS
    max_name_length: int = MAX_NAME_LENGTH

    def __post_init__(self) -> None:
        limits = ("max_body_bytes", "max_features", "max_entities", "max_columns")
        for name in (*limits, "max_name_length"):
            if getattr(self, name) < 1:
                raise DefinitionError(f"server limit {name} must be at least 1.")
        if self.max_name_length > MAX_NAME_LENGTH:
            raise DefinitionError(
                f"server limit max_name_length={self.max_name_length} is above "
                f"{MAX_NAME_LENGTH}, the longest name featurekit accepts anywhere."
            )


class RequestTooLargeError(FeatureKitError):
    """A request is larger than a server limit (body, features or entities); see ``limit``."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class RequestFieldError(DefinitionError):
    """One field of a request is invalid; ``field`` names it (a dotted path)."""

    def __init__(self, message: str, *, field: str | None) -> None:
        super().__init__(message)
        self.field = field


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


class PushRequest(BaseModel):
    """Body of ``POST /v1/push``: rows for one feature view, in its output shape."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "view": "driver_stats",
                    "rows": [
                        {"driver_id": 1001, "event_ts": "2026-11-30T12:00:00Z", "conv_rate": 0.4}
                    ],
                }
            ]
        },
    )

    view: Annotated[StrictStr, Field(description="The feature view's name.")]
    version: Annotated[
        StrictInt | None, Field(description="A version of the view (default: the latest).")
    ] = None
    rows: Annotated[
        list[dict[StrictStr, Value]],
        Field(
            description="Keys, event time (ISO 8601) and features (aggregation views: the raw "
            "event columns); the created time is set to the ingestion time."
        ),
    ]


class PushResponse(BaseModel):
    """What a push wrote."""

    view: str
    version: int
    rows: int
    delta_version: int
    ingested_at: str = Field(description="The rows' created time (UTC, ISO 8601).")


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
        (401, "No API key, or an unknown one (only when the server runs with --api-keys)."),
        (403, "The API key is not granted a view or service the request reads."),
        (404, "Unknown feature, view, version or service (the message suggests the closest)."),
        (413, "Body, feature list or entities above the server's limits ('limit' says which)."),
        (422, "Malformed request or name, missing key column or wrong key type (names the field)."),
        (503, "The online store is unavailable (e.g. Redis is down); retry later."),
    )
}


class ServedStore(Protocol):
    """What the server needs of a store; ``fk.Store`` is one (the surface passes it in)."""

    @property
    def root(self) -> Path | str: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def planner(self) -> Planner: ...

    @property
    def online(self) -> OnlineStore: ...

    def online_service(self) -> OnlineService: ...

    def add_definitions(self, definitions: Iterable[OnDemandFeature | FeatureService]) -> None: ...

    def views(self) -> list[str]: ...

    def push(self, view: Any, rows: Any, *, version: int | None = None) -> PushResult: ...


class ServerExtension(Protocol):
    """Routes a higher layer mounts on the server (the catalog page), behind its boundary.

    The boundary applies limits, API keys and the error shape to them like to every route;
    ``public_paths`` are paths a browser must load without a key (a page's shell).
    """

    def public_paths(self) -> frozenset[str]: ...

    def router(
        self, *, max_name_length: int, key_of: Callable[[Request], ApiKey | None]
    ) -> APIRouter: ...


def create_app(
    store: ServedStore,
    *,
    limits: Limits | None = None,
    definitions: Sequence[OnDemandFeature | FeatureService] = (),
    api_keys: ApiKeys | None = None,
    metrics_auth: bool = False,
    cors_origins: Sequence[str] = (),
    extensions: Sequence[ServerExtension] = (),
) -> FastAPI:
    """The FastAPI app serving ``store`` (on-demand code and services from ``definitions``).

    ``/docs`` is a self-contained page (no CDN): it lists the endpoints and links the
    OpenAPI spec at ``/openapi.json``.

    Args:
        store: the store to serve.
        limits: what one request may ask for.
        definitions: on-demand features and services whose code the server runs.
        api_keys: when given, every request but ``/health``, ``/docs`` and
            ``/openapi.json`` needs one of these keys (401), within its grants (403).
        metrics_auth: ``/metrics`` needs a key too (any valid key); needs ``api_keys``.
        cors_origins: exact origins (``https://app.example.com``) browsers may call from;
            none (the default) sends no CORS headers at all.
        extensions: routes mounted behind the same boundary; ``featurekit serve`` mounts
            the catalog page this way (:func:`featurekit.server.create_server`).

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app(fk.Store("./store")), host="127.0.0.1", port=8000)
    """
    limits = limits or Limits()
    if metrics_auth and api_keys is None:
        raise DefinitionError(
            "metrics_auth needs API keys (featurekit serve --metrics-auth --api-keys FILE)."
        )
    origins = [_checked_origin(o) for o in cors_origins]
    store.add_definitions(definitions)
    service = store.online_service()
    metrics = Metrics(store.registry.layout)  # also exports the store's quality/drift logs
    app = _Server(
        direct=not origins,  # CORS headers come from the middleware: go through it
        title="featurekit feature server",
        version=__version__,
        description=(
            "Online features from a featurekit store: exactly what a training set built "
            "with labels at the lookup instant would hold."
        ),
        docs_url=None,
        redoc_url=None,
    )
    # FastAPI's own answers (404/405, validation, bad JSON) go to the one boundary too
    app.add_exception_handler(HTTPException, _reraise)
    app.add_exception_handler(RequestValidationError, _reraise)
    open_paths = OPEN_PATHS if metrics_auth else OPEN_PATHS | {"/metrics"}
    for extension in extensions:  # e.g. the catalog page's shell; its API stays behind keys
        open_paths |= extension.public_paths()
    embedded = isinstance(service.online, SQLiteOnlineStore | MemoryOnlineStore)

    def answer(body: FeaturesRequest, key: ApiKey | None) -> bytes:
        """``POST /v1/features``'s response body (the route and the boundary's fast path)."""
        began = time.perf_counter()
        features = _checked_features(body, limits)
        _authorize(key, features, store)
        columns, at_us, stats = service.lookup_columns(
            features, body.entities, with_metadata=body.with_metadata
        )
        metrics.lookup(stats, time.perf_counter() - began)
        return orjson.dumps({"lookup_ts": _iso(at_us), "columns": columns})

    def inline(body: FeaturesRequest) -> bool:
        """Answer on the event loop: a few rows from a local file or memory cost less than
        the hand-off to a worker thread; a network store (Redis) or a big request would
        hold up every other request meanwhile, so those go to the thread pool."""
        return embedded and all(len(v) <= _INLINE_ROWS for v in body.entities.values())

    app.add_middleware(
        _Boundary,
        metrics=metrics,
        limits=limits,
        root=store.root,
        api_keys=api_keys,
        open_paths=open_paths,
        lookup=_Lookup(answer, inline),
    )
    if origins:
        # outermost, so a preflight (which never carries a key) is answered before auth,
        # and a 401 still carries the CORS headers a browser needs to read it
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    secured: dict[str, Any] = {"security": [{_BEARER: []}]}

    @app.post(
        "/v1/features",
        response_model=FeaturesResponse,
        responses=_ERRORS,
        summary="Look up online features",
        openapi_extra=secured,
    )
    def get_features(body: FeaturesRequest, request: Request) -> Response:
        """Same semantics as ``store.get_online_features``; rows come back in request order."""
        # well-formed requests are answered by the boundary before they get here (see
        # _Boundary.lookup); this route serves the rest and describes the endpoint
        return Response(answer(body, _key_of(request)), media_type="application/json")

    @app.post(
        "/v1/push",
        response_model=PushResponse,
        responses=_ERRORS,
        summary="Push rows to a feature view",
        openapi_extra=secured,
    )
    def push(body: PushRequest, request: Request) -> Response:
        """Same semantics as ``store.push``: online at once, offline from the ingestion time.

        With API keys: a write, so the key needs ``push:VIEW`` (``view:VIEW`` only reads).
        """
        name = _checked_push(body, limits)
        key = _key_of(request)
        if key is not None and not key.allows("push", name):
            raise PermissionDeniedError(_denied(key, f"pushing to view {name!r}", f"push:{name}"))
        result = store.push(name, body.rows, version=body.version)
        return _json(
            200,
            {
                "view": result.view,
                "version": result.version,
                "rows": result.rows,
                "delta_version": result.delta_version,
                "ingested_at": result.ingested_at.isoformat(),
            },
        )

    @app.get(
        "/v1/feature-views",
        responses={c: _ERRORS[c] for c in (401,)},
        summary="List feature views",
        openapi_extra=secured,
    )
    def list_views(request: Request) -> Response:
        """Every view with its latest version, keys, features, TTL and online snapshot.

        With API keys: the views the key is granted.
        """
        key = _key_of(request)
        snapshots = _snapshots(store)
        out = [
            _describe(store, name, store.registry.versions(name)[-1].version, snapshots)
            for name in store.views()
            if key is None or key.allows("view", name)
        ]
        return _json(200, {"feature_views": out})

    @app.get(
        "/v1/feature-views/{name}",
        responses=_ERRORS,
        summary="Describe a feature view",
        openapi_extra=secured,
    )
    def get_view(name: str, request: Request) -> Response:
        """One view: every version, its features and dtypes, and its online snapshot."""
        _checked_name(name, "view", "name", limits)
        key = _key_of(request)
        if key is not None and not key.allows("view", name):
            raise PermissionDeniedError(_denied(key, f"view {name!r}", f"view:{name}"))
        if not store.registry.versions(name):
            raise NotFoundError(
                f"no view named {name!r} in this store.{did_you_mean(name, store.views())}"
            )
        snapshots = _snapshots(store)
        versions = [
            _describe(store, name, r.version, snapshots) for r in store.registry.versions(name)
        ]
        return _json(200, {"name": name, "latest": versions[-1]["version"], "versions": versions})

    @app.get(
        "/health",
        responses={503: _ERRORS[503]},
        summary="Liveness and online-store reachability",
    )
    def health() -> Response:
        """200 when the online store answers; 503 in the error shape, naming it, when not."""
        service.online.ping()  # OnlineStoreError -> 503 at the boundary
        return _json(200, {"status": "ok", "online_store": _public(service.online.url, store.root)})

    @app.get(
        "/metrics",
        responses={401: _ERRORS[401]},
        summary="Prometheus metrics",
        openapi_extra={"security": [{}, {_BEARER: []}]},
    )
    def metrics_endpoint() -> Response:
        """Request counts and latency per endpoint and view, misses, expired, freshness.

        Open, unless the server runs with ``--metrics-auth`` (then any valid API key).
        """
        try:
            snaps = [
                (m.view, m.version, m.taken_us, m.max_event_us)
                for m in (SnapshotMeta.from_bytes(raw) for raw in service.online.all_meta())
            ]
        except FeatureKitError:
            snaps = []  # freshness is unknown while the store is down; counters still render
        text = metrics.render(snaps)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """The endpoints, from the OpenAPI spec, on one page that loads nothing else."""
        return HTMLResponse(_docs_page(app.openapi()))

    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's spec plus the bearer scheme (the boundary, not a dependency, checks it)."""
        if app.openapi_schema is None:
            spec = plain_openapi()
            schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[_BEARER] = {
                "type": "http",
                "scheme": "bearer",
                "description": (
                    "An API key from `featurekit keys add`, as 'Authorization: Bearer <key>'. "
                    "Required on /v1/* (and on /metrics with --metrics-auth) when the server "
                    "runs with --api-keys or FEATUREKIT_API_KEYS; /health, /docs and "
                    "/openapi.json never need one."
                ),
            }
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]

    for extension in extensions:
        app.include_router(extension.router(max_name_length=limits.max_name_length, key_of=_key_of))
    return app


class _Server(FastAPI):
    """FastAPI, except that ``POST /v1/features`` goes straight to :class:`_Boundary`.

    FastAPI's own outer layers (its server-error, telemetry and body-size middleware) cost
    more per request than a 1-entity lookup; the boundary already maps every error and
    enforces the limits, so lookups skip them. Every other request, and lookups when CORS
    is on (its headers come from its middleware) or when FastAPI's OpenTelemetry
    instrumentation is configured, take the full stack.
    """

    def __init__(self, *, direct: bool, **options: Any) -> None:
        super().__init__(**options)
        self.direct = direct
        self.boundary: _Boundary | None = None

    def _traced(self) -> bool:
        """FastAPI's OpenTelemetry instrumentation is on (a tracer or meter provider is
        configured): then lookups take the full stack too, so they are traced like the rest.
        Read defensively: the attribute is FastAPI's own and absent from older versions."""
        telemetry = getattr(self, "_native_telemetry", None)
        enabled = getattr(telemetry, "enabled", None)
        return bool(enabled()) if callable(enabled) else False

    def build_middleware_stack(self) -> Any:
        stack = super().build_middleware_stack()
        layer: Any = stack
        while layer is not None and not isinstance(layer, _Boundary):
            layer = getattr(layer, "app", None)
        self.boundary = layer
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.direct
            and scope["type"] == "http"
            and scope.get("path") == "/v1/features"
            and scope.get("method") == "POST"
            and not self._traced()
        ):
            if self.middleware_stack is None:
                self.middleware_stack = self.build_middleware_stack()
            if self.boundary is not None:
                if self.root_path:
                    scope["root_path"] = self.root_path
                scope["app"] = self
                await self.boundary(scope, receive, send)
                return
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]


# ---- API keys ---------------------------------------------------------------------------------
def _key_of(request: Request) -> ApiKey | None:
    """The key the boundary verified for this request (None: the server has no keys)."""
    key = request.scope.get(_KEY_SCOPE)
    return key if isinstance(key, ApiKey) else None


def _authorize(key: ApiKey | None, features: Any, store: ServedStore) -> None:
    """PermissionDeniedError unless ``key`` is granted everything ``features`` reads."""
    if key is None:
        return
    if isinstance(features, ServiceName):
        if not key.allows("service", features.name):
            what = f"feature service {features.name!r}"
            raise PermissionDeniedError(_denied(key, what, f"service:{features.name}"))
        return
    for ref in features:
        name = FeatureRef.parse(ref).view
        if key.allows("view", name):
            continue
        # the planner's rule: a registered view wins over an on-demand feature of that name
        on_demand = None
        if not store.registry.versions(name):
            on_demand = store.planner.catalog.on_demand_feature(name)
        if on_demand is None:
            raise PermissionDeniedError(_denied(key, f"view {name!r}", f"view:{name}"))
        for view in dict.fromkeys(r.view for r in on_demand.input_refs):
            if not key.allows("view", view):
                what = f"on-demand feature {name!r}, which reads view {view!r}"
                raise PermissionDeniedError(_denied(key, what, f"view:{view}"))


def _denied(key: ApiKey, what: str, grant: str) -> str:
    return (
        f"API key {key.name!r} is not granted {what}; a key needs '{grant}' for it "
        f"(featurekit keys add NAME --grant {grant})."
    )


def _checked_origin(origin: str) -> str:
    """An exact ``scheme://host[:port]`` origin; ``*`` and paths are refused."""
    from urllib.parse import urlsplit

    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise DefinitionError(
            f"CORS origin {shown(origin)} is not an exact origin; give scheme and host "
            "(and port), e.g. --cors-origin https://app.example.com. '*' is not accepted: "
            "name each origin that may call the server."
        )
    return f"{parts.scheme}://{parts.netloc}"


# ---- request checks -------------------------------------------------------------------------
def _checked_features(body: FeaturesRequest, limits: Limits) -> Any:
    """The request's feature list with every name validated; limits checked first."""
    if (body.features is None) == (body.feature_service is None):
        raise RequestFieldError(
            "pass exactly one of 'features' and 'feature_service'.", field="features"
        )
    if len(body.entities) > limits.max_columns:
        raise RequestTooLargeError(
            f"{len(body.entities)} entity columns in one request; the limit is "
            f"{limits.max_columns}. Send only the key and request columns.",
            limit=limits.max_columns,
        )
    for column in body.entities:
        if len(column) > limits.max_name_length:
            raise RequestFieldError(
                f"entity column name {shown(column)} is longer than {limits.max_name_length} "
                "characters.",
                field="entities",
            )
    n = max((len(v) for v in body.entities.values()), default=0)
    if n > limits.max_entities:
        raise TooManyEntitiesError(
            f"{n} entities in one request; the limit is {limits.max_entities}. Split the "
            "request into batches.",
            limit=limits.max_entities,
        )
    if body.feature_service is not None:
        name = _checked_name(body.feature_service, "service", "feature_service", limits)
        return ServiceName(name)
    refs = body.features or []
    if len(refs) > limits.max_features:
        raise RequestTooLargeError(
            f"{len(refs)} feature references in one request; the limit is "
            f"{limits.max_features}. Ask for 'view:*' or split the request.",
            limit=limits.max_features,
        )
    lists = _CHECKED_LISTS
    whole = (tuple(refs), limits.max_name_length)
    known = lists.get(whole)
    if known is not None:
        return known
    longest = 2 * limits.max_name_length + 24  # view@version:feature
    checked = _CHECKED_REFS
    for i, ref in enumerate(refs):
        if (ref, limits.max_name_length) in checked:
            continue
        field = f"features.{i}"
        if len(ref) > longest:
            raise RequestFieldError(
                f"feature reference {shown(ref)} is longer than {longest} characters.",
                field=field,
            )
        try:
            parsed = FeatureRef.parse(ref)
        except DefinitionError as err:
            raise RequestFieldError(str(err), field=field) from None
        _checked_name(parsed.view, "view", field, limits)
        if parsed.feature != "*":
            _checked_name(parsed.feature, "feature", field, limits)
        if len(checked) >= _MAX_CHECKED_REFS:
            checked.clear()
        checked[(ref, limits.max_name_length)] = None
    # a repeated reference asks for the same column again: look each up once
    unique = tuple(dict.fromkeys(refs))
    if len(refs) <= _MAX_LISTED_REFS:
        if len(lists) >= _MAX_CHECKED_LISTS:
            lists.clear()
        lists[whole] = unique
    return unique


#: References that passed every check above, per name-length limit: a client asks for the
#: same few lists again and again, and the checks cost more than the lookup's read. Only
#: valid references are kept, and at most this many (a flood of new names clears it).
_CHECKED_REFS: dict[tuple[str, int], None] = {}
#: Whole lists that passed, with their references made unique: the same list again skips
#: the per-reference loop too. Only short lists, and at most this many (bounded memory).
_CHECKED_LISTS: dict[tuple[tuple[str, ...], int], tuple[str, ...]] = {}
_MAX_CHECKED_LISTS = 1024
_MAX_LISTED_REFS = 64
_MAX_CHECKED_REFS = 4096


def _checked_push(body: PushRequest, limits: Limits) -> str:
    """The view name of a push, validated; rows and columns within the limits."""
    name = _checked_name(body.view, "view", "view", limits)
    if len(body.rows) > limits.max_entities:
        raise TooManyEntitiesError(
            f"{len(body.rows)} rows in one push; the limit is {limits.max_entities}. Split "
            "the rows into batches.",
            limit=limits.max_entities,
        )
    for i, row in enumerate(body.rows):
        if len(row) > limits.max_columns:
            raise RequestTooLargeError(
                f"row {i} has {len(row)} columns; the limit is {limits.max_columns}.",
                limit=limits.max_columns,
            )
        for column in row:
            if len(column) > limits.max_name_length:
                raise RequestFieldError(
                    f"column name {shown(column)} is longer than {limits.max_name_length} "
                    "characters.",
                    field=f"rows.{i}",
                )
    return name


def _checked_name(name: str, kind: NameKind, field: str, limits: Limits) -> str:
    """``name`` if it is a valid ``kind`` name within the length limit, else a 422."""
    if len(name) > limits.max_name_length:
        raise RequestFieldError(
            f"{kind} name {shown(name)} is longer than {limits.max_name_length} characters.",
            field=field,
        )
    try:
        return validate_name(name, kind)
    except DefinitionError as err:
        raise RequestFieldError(str(err), field=field) from None


# ---- the boundary: body limit, error mapping, timing, metrics -------------------------------
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _BodyTooLarge(HTTPException):
    """Raised while streaming a body past the limit (an HTTPException, so FastAPI passes it on)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413)
        self.limit = limit


#: Entity rows a lookup may have to be answered on the event loop (see ``inline``).
_INLINE_ROWS = 32
_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class _Lookup:
    """``POST /v1/features`` as the boundary answers it: the response body, and where to
    compute it (on the event loop or in the thread pool)."""

    answer: Callable[[FeaturesRequest, ApiKey | None], bytes]
    inline: Callable[[FeaturesRequest], bool]


class _Boundary:
    """Wraps every HTTP request: API key, body limit, error mapping, latency and metrics.

    It also answers well-formed ``POST /v1/features`` requests itself (:meth:`lookup`):
    FastAPI's routing, body parsing, dependency solving and thread hand-off cost several
    times the lookup, and this is the one endpoint whose latency is the product. Everything
    the route does (limits, keys, name checks, the error shape, metrics) happens here too,
    in the same functions; a body that does not validate goes on to the route, which
    reports it exactly as before.
    """

    def __init__(
        self,
        app: Any,
        *,
        metrics: Metrics,
        limits: Limits,
        root: Path | str,
        api_keys: ApiKeys | None = None,
        open_paths: frozenset[str] = OPEN_PATHS,
        lookup: _Lookup | None = None,
    ) -> None:
        self.app = app
        self.lookup_route = lookup
        self.metrics = metrics
        self.limits = limits
        self.root = root
        self.api_keys = api_keys
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (
            self.lookup_route is not None
            and scope.get("path") == "/v1/features"
            and scope.get("method") == "POST"
        ):
            await self.lookup(scope, receive, send)
            return
        began = time.perf_counter()
        endpoint = _endpoint(scope)
        state = {"status": 500, "started": False, "received": 0, "too_large": False}
        limit = self.limits.max_body_bytes

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["too_large"] = True
                    raise _BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"], state["status"] = True, message["status"]
            await send(message)

        try:
            # the key first: a caller without one gets a 401 before any body is read
            if self.api_keys is not None and scope.get("path") not in self.open_paths:
                scope[_KEY_SCOPE] = self.api_keys.verify(_header(scope, b"authorization"))
            if _declared_length(scope) > limit:
                raise _BodyTooLarge(limit)
            await self.app(scope, counted_receive, watched_send)
        except Exception as err:
            if state["started"]:
                raise  # the response is on its way; nothing sane can be sent instead
            mapped = _BodyTooLarge(limit) if state["too_large"] else err
            status, body, headers = self._error(mapped, scope)
            response = _json(status, body)
            response.headers.update(headers)
            await response(scope, receive, watched_send)
        finally:
            self.metrics.request(endpoint, int(state["status"]), time.perf_counter() - began)

    async def lookup(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/features`` without FastAPI, and without the per-request wrappers
        :meth:`__call__` puts around ``receive`` and ``send``: the same steps in the same
        order (key, declared length, body within the limit, errors in the one shape,
        metrics), written out. The body is parsed and validated by
        :class:`FeaturesRequest` (:func:`_parsed_features`), the answer encoded with
        orjson. A body that is not JSON or does not validate is handed, as read, to the
        FastAPI route, whose errors are the documented ones."""
        began = time.perf_counter()
        route = self.lookup_route
        assert route is not None
        limit = self.limits.max_body_bytes
        status, started, too_large = 500, False, False
        try:
            headers = _lookup_headers(scope)
            # the key first: a caller without one gets a 401 before any body is read
            if self.api_keys is not None and "/v1/features" not in self.open_paths:
                scope[_KEY_SCOPE] = self.api_keys.verify(headers.authorization)
            if headers.length > limit:
                raise _BodyTooLarge(limit)
            received = 0
            chunks = []
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    return
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            parsed = _parsed_features(headers.json, body)
            if parsed is None:  # the route reports it; its status is watched as usual
                state = {"received": received}

                async def counted_receive() -> Message:
                    nonlocal too_large
                    message = await receive()
                    if message["type"] == "http.request":
                        state["received"] += len(message.get("body", b""))
                        if state["received"] > limit:
                            too_large = True
                            raise _BodyTooLarge(limit)
                    return message

                async def watched_send(message: Message) -> None:
                    nonlocal started, status
                    if message["type"] == "http.response.start":
                        started, status = True, message["status"]
                    await send(message)

                await self.app(scope, _replay(body, counted_receive), watched_send)
                return
            key = scope.get(_KEY_SCOPE)
            key = key if isinstance(key, ApiKey) else None
            if route.inline(parsed):
                payload = route.answer(parsed, key)
            else:
                payload = await run_in_threadpool(route.answer, parsed, key)
            started, status = True, 200
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*_JSON_HEADERS, (b"content-length", b"%d" % len(payload))],
                }
            )
            await send({"type": "http.response.body", "body": payload})
        except Exception as err:
            if started:
                raise  # the response is on its way; nothing sane can be sent instead
            mapped = _BodyTooLarge(limit) if too_large else err
            code, content, extra = self._error(mapped, scope)
            response = _json(code, content)
            response.headers.update(extra)

            async def sending(message: Message) -> None:
                nonlocal started, status
                if message["type"] == "http.response.start":
                    started, status = True, message["status"]
                await send(message)

            await response(scope, receive, sending)
        finally:
            self.metrics.request("/v1/features", status, time.perf_counter() - began)

    def _error(self, err: Exception, scope: Scope) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, body (the one error shape) and headers for ``err``."""
        status, kind, message = 422, type(err).__name__, str(err)
        field: str | None = getattr(err, "field", None)
        limit: int | None = getattr(err, "limit", None)
        headers: dict[str, str] = {}
        if isinstance(err, _BodyTooLarge):
            status, kind = 413, "RequestTooLargeError"
            message = (
                f"the request body is larger than {err.limit} bytes; split the request "
                "(featurekit serve --max-body-bytes raises the limit)."
            )
        elif isinstance(err, RequestValidationError):
            kind, message, field = "ValidationError", *_validation(err, scope.get("path", ""))
        elif isinstance(err, HTTPException):
            status, kind, message, headers = _http(err, scope)
        elif isinstance(err, AuthenticationError):
            status, headers = 401, {"WWW-Authenticate": "Bearer"}
        elif isinstance(err, PermissionDeniedError):
            status = 403
        elif isinstance(err, TooManyEntitiesError | RequestTooLargeError):
            status = 413
        elif isinstance(err, NotFoundError):
            status = 404
        elif isinstance(err, OnlineStoreError | StorageError):
            status = 503
        elif isinstance(err, RequestFieldError):
            kind = "ValidationError"
        elif not isinstance(err, FeatureKitError):
            ref = secrets.token_hex(4)
            trace = "".join(traceback.format_exception(err))
            _log.error(
                "internal error %s on %s %s:\n%s",
                ref,
                scope.get("method"),
                shown(scope.get("path", ""), 200),
                redact(trace),
            )
            status, kind = 500, "InternalError"
            message = f"internal error (reference {ref}); the server log has the details."
        error = ErrorBody(
            type=kind,
            message=_public(message, self.root),
            field=None if field is None else _public(field, self.root)[:200],
            limit=limit,
        )
        return status, {"error": error.model_dump(exclude_none=True)}, headers


def _parsed_features(json: bool, body: bytes) -> FeaturesRequest | None:
    """The body as a :class:`FeaturesRequest`, or None for the route to report.

    Accepted exactly when the route would accept it: a JSON content type (or none, like
    FastAPI; ``json`` says which) and a body the model validates. Pydantic's own JSON
    parser reads it (not orjson, which turns integers above 64 bits into floats: an
    out-of-range key must stay an integer to be reported as one).
    """
    if not json:
        return None
    try:
        return FeaturesRequest.model_validate_json(body)
    except ValidationError:
        return None


@dataclass(frozen=True, slots=True)
class _LookupHeaders:
    """The headers a lookup reads, from one pass over the request's headers."""

    authorization: str | None
    length: int  # the declared Content-Length (0: none or not a number)
    json: bool  # a JSON content type, or none (FastAPI reads a body without one as JSON)


def _lookup_headers(scope: Scope) -> _LookupHeaders:
    """The first Authorization, Content-Length and Content-Type, as :func:`_header`
    reads each of them."""
    authorization = length = kind = None
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            if authorization is None:
                authorization = bytes(value).decode("latin-1")
        elif key == b"content-length":
            if length is None:
                length = bytes(value).decode("latin-1")
        elif key == b"content-type" and kind is None:
            kind = bytes(value).decode("latin-1")
    try:
        declared = int(length or 0)
    except ValueError:
        declared = 0
    return _LookupHeaders(authorization, declared, kind is None or _is_json(kind))


def _is_json(kind: str) -> bool:
    """``application/json`` or ``application/*+json`` (parameters and case ignored)."""
    known = _JSON_KINDS.get(kind)
    if known is None:
        main = kind.split(";", 1)[0].strip().lower()
        known = main == "application/json" or (
            main.startswith("application/") and main.endswith("+json")
        )
        if len(_JSON_KINDS) >= 256:  # a flood of odd content types clears it
            _JSON_KINDS.clear()
        _JSON_KINDS[kind] = known
    return known


#: Content-Type values seen, and whether each is JSON: clients send the same one or two.
_JSON_KINDS: dict[str, bool] = {}


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once (already read), then waits on the client."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _reraise(request: Request, exc: Exception) -> Response:
    """Hand FastAPI's own errors to :class:`_Boundary`, the one place that maps errors."""
    raise exc


def _endpoint(scope: Scope) -> str:
    """The route template for metrics (bounded label values: never the raw path)."""
    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


def _declared_length(scope: Scope) -> int:
    try:
        return int(_header(scope, b"content-length") or 0)
    except ValueError:
        return 0


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), decoded as Latin-1 like HTTP/1.1."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


#: The fields each request body takes, for "unknown field" messages.
_BODY_FIELDS = {
    "/v1/features": "features, feature_service, entities, with_metadata",
    "/v1/push": "view, version, rows",
}


def _validation(err: RequestValidationError, path: str = "") -> tuple[str, str | None]:
    """Message and field of FastAPI's validation error, read from the error object."""
    first = err.errors()[0] if err.errors() else {}
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        pos = next((p for p in first.get("loc", ()) if isinstance(p, int)), None)
        where = f" at character {pos}" if pos is not None else ""
        return (
            f"the request body is not valid JSON ({ctx.get('error', 'decode error')}{where}).",
            None,
        )
    loc = [
        shown(p, 40) if isinstance(p, str) and len(p) > 40 else str(p)
        for p in first.get("loc", ())
        if p != "body"
    ]
    field = ".".join(loc) or None
    message = f"{field or 'request'}: {first.get('msg', 'invalid request')}"
    if first.get("type") == "extra_forbidden":
        message += f" (allowed: {_BODY_FIELDS.get(path, _BODY_FIELDS['/v1/features'])})"
    return message, field


def _http(err: HTTPException, scope: Scope) -> tuple[int, str, str, dict[str, str]]:
    """Starlette's own 404/405/400 in the error shape (the path cut, never echoed whole)."""
    method, path = scope.get("method", ""), shown(scope.get("path", ""))
    headers = dict(err.headers or {})
    if err.status_code == 404:
        return 404, "NotFoundError", f"no endpoint at {path}; see /docs for the API.", headers
    if err.status_code == 405:
        allowed = headers.get("Allow") or headers.get("allow") or ""
        message = f"{method} is not allowed on {path}; use {allowed or 'another method'}."
        return 405, "MethodNotAllowedError", message, headers
    if err.status_code == 413:
        return 413, "RequestTooLargeError", str(err.detail), headers
    return err.status_code, "BadRequestError", str(err.detail), headers


def _public(text: str, root: Path | str) -> str:
    """``text`` fit for a response: credentials masked, store paths hidden, length cut."""
    out = redact(text)
    paths = (
        (str(root.resolve()), str(root), str(root.absolute()))
        if isinstance(root, Path)
        else (root, redact(root))
    )
    for path in dict.fromkeys(paths):
        out = out.replace(path, "<store>")
    return out if len(out) <= MAX_MESSAGE else f"{out[: MAX_MESSAGE - 20]}... (cut)"


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _docs_page(spec: dict[str, Any]) -> str:
    """A self-contained HTML page of the endpoints (no script, no stylesheet, no CDN)."""
    rows = []
    for path, operations in spec.get("paths", {}).items():
        for method, op in operations.items():
            summary = escape(str(op.get("summary", "")))
            text = escape(str(op.get("description", "")))
            rows.append(
                f"<tr><td><code>{escape(method.upper())} {escape(path)}</code></td>"
                f"<td><b>{summary}</b><br>{text}</td></tr>"
            )
    title = escape(str(spec.get("info", {}).get("title", "")))
    version = escape(str(spec.get("info", {}).get("version", "")))
    schemes = spec.get("components", {}).get("securitySchemes", {}).values()
    auth = "".join(f"<p>{escape(str(s.get('description', '')))}</p>" for s in schemes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title></head><body style='font-family:sans-serif;max-width:60em'>"
        f"<h1>{title} <small>{version}</small></h1>"
        "<p>The full specification is <a href='openapi.json'>openapi.json</a>. Errors "
        'have the shape <code>{"error": {"type", "message", "field"?, '
        '"limit"?}}</code>.</p>'
        f"{auth}<table border='1' cellpadding='6' style='border-collapse:collapse'>{''.join(rows)}"
        "</table></body></html>"
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(us: int) -> str:
    return (_EPOCH + timedelta(microseconds=us)).isoformat()


def _snapshots(store: ServedStore) -> dict[tuple[str, int], SnapshotMeta]:
    metas = (SnapshotMeta.from_bytes(raw) for raw in store.online.all_meta())
    return {(m.view, m.version): m for m in metas}


def _describe(
    store: ServedStore, name: str, version: int, snapshots: dict[tuple[str, int], SnapshotMeta]
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
    return definitions_in(v for m in import_definitions(targets) for v in vars(m).values())


def import_definitions(targets: Sequence[str]) -> list[ModuleType]:
    """Import each target: a ``.py`` file (path) or a module name on ``sys.path``."""
    return [_import(target) for target in targets]


def definitions_in(values: Iterable[object]) -> list[OnDemandFeature | FeatureService]:
    """The on-demand features and services among ``values``, first seen first, once each."""
    found: list[OnDemandFeature | FeatureService] = []
    for value in values:
        if isinstance(value, OnDemandFeature | FeatureService) and value not in found:
            found.append(value)
    return found


def _import(target: str) -> ModuleType:
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
    imported: ModuleType = _run(lambda: importlib.import_module(target), target)
    return imported


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
