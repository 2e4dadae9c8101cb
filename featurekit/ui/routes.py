"""The catalog over HTTP: a read-only page at ``/ui/`` and the JSON API it reads.

Mounted two ways, with the same routes and answers:

- on the feature server (``featurekit serve``): :func:`catalog_router` is included in
  :func:`featurekit.serving.app.create_app`, so the server's boundary (limits, API keys,
  metrics, error mapping) wraps the catalog exactly as it wraps ``/v1``;
- alone (``featurekit ui``): :func:`create_ui_app`, which serves nothing else, so a
  catalog can be opened on a store without exposing online lookups.

Every name from a request passes :func:`featurekit.core.names.validate_name` (and the
server's name length limit) before it reaches the store. Errors come back in the server's
one shape ``{"error": {"type", "message", "field"?}}``, credentials masked and the store
root shown as ``<store>``. All endpoints are GET: the catalog never writes.

The page's assets are files of the package (``featurekit/ui/static``, and the lineage
widget's own ES module and CSS from ``featurekit/notebook/static``), read once and served
with a Content-Security-Policy that forbids every other origin: the page works offline.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response

from featurekit.core.config import __version__
from featurekit.core.errors import DefinitionError, FeatureKitError, NotFoundError
from featurekit.core.names import MAX_NAME_LENGTH, NameKind, shown, validate_name
from featurekit.core.redact import redact
from featurekit.notebook.lineage import static_text
from featurekit.serving.auth import ApiKey, PermissionDeniedError
from featurekit.ui.catalog import Catalog

if TYPE_CHECKING:
    from featurekit.store import Store

__all__ = [
    "PREFIX",
    "CatalogExtension",
    "catalog_router",
    "create_ui_app",
    "page_assets",
    "public_paths",
]

#: Where the catalog lives on any server that mounts it.
PREFIX = "/ui"
#: The page may load only what this server serves (no CDN, no fonts, no beacons).
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
#: Lineage node kinds a request may name (the prefix of a node id).
NODE_KINDS = ("source", "column", "view", "feature", "training_set", "model")
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}


class CatalogRequestError(DefinitionError):
    """A catalog request names something malformed; ``field`` names the parameter."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def page_assets() -> dict[str, bytes]:
    """Every file the page loads: the catalog's own, plus the lineage widget's JS and CSS."""
    files: dict[str, bytes] = {}
    folder = resources.files("featurekit.ui").joinpath("static")
    for item in folder.iterdir():
        if item.is_file() and Path(item.name).suffix in _TYPES:
            files[item.name] = item.read_bytes()
    for name in ("lineage.js", "lineage.css"):  # the notebook widget's drawing, reused as is
        files[name] = static_text(name).encode()
    return files


def public_paths() -> frozenset[str]:
    """The page's shell: its HTML and assets, which hold no store data.

    A browser cannot send an ``Authorization`` header when it navigates, so a server with
    API keys leaves these open; the page then asks for a key and sends it with every
    ``/ui/api/...`` request, which stays behind the keys.
    """
    files = {f"{PREFIX}/static/{name}" for name in page_assets()}
    return frozenset({PREFIX, f"{PREFIX}/", *files})


def catalog_router(
    store: Store,
    *,
    max_name_length: int = MAX_NAME_LENGTH,
    key_of: Callable[[Request], ApiKey | None] | None = None,
) -> APIRouter:
    """The catalog's routes under ``/ui`` (page, assets and ``/ui/api/...``) for ``store``.

    Args:
        store: the store the catalog reads (it never writes).
        max_name_length: longest name a request may carry (the server's limit).
        key_of: the API key a request was verified with (the server's boundary checks
            it); the catalog then shows only what the key is granted. None: no keys.

    Example:
        >>> app.include_router(catalog_router(store))
    """
    assets = page_assets()
    # documented in docs/catalog.md, not in the feature server's OpenAPI spec (its /v1 contract)
    router = APIRouter(prefix=PREFIX, tags=["catalog"], include_in_schema=False)

    def name(value: str, kind: NameKind, field: str) -> str:
        if len(value) > max_name_length:
            raise CatalogRequestError(
                f"{kind} name {shown(value)} is longer than {max_name_length} characters.",
                field=field,
            )
        try:
            return validate_name(value, kind)
        except DefinitionError as err:
            raise CatalogRequestError(str(err), field=field) from None

    def catalog(request: Request) -> Catalog:
        key = key_of(request) if key_of is not None else None
        return Catalog(store, allows=None if key is None else key.allows)  # type: ignore[arg-type]

    def answer(build: Any, *args: Any) -> Response:
        try:
            return _json(200, build(*args))
        except FeatureKitError as err:
            status = 404 if isinstance(err, NotFoundError) else 422
            status = 403 if isinstance(err, PermissionDeniedError) else status
            body: dict[str, Any] = {"type": type(err).__name__, "message": _public(err, store)}
            if isinstance(err, CatalogRequestError):
                body.update(type="ValidationError", field=err.field)
            return _json(status, {"error": body})

    @router.get("", include_in_schema=False)
    def to_page() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @router.get("/", include_in_schema=False)
    def page() -> Response:
        return _asset(assets, "index.html")

    @router.get("/static/{file}", include_in_schema=False)
    def asset(file: str) -> Response:
        if file not in assets:
            return _json(404, {"error": {"type": "NotFoundError", "message": "no such asset."}})
        return _asset(assets, file)

    @router.get("/api/index", summary="Catalog: every view, feature, training set and model")
    def index(request: Request) -> Response:
        """The search index: each view's latest version with features, dtypes, tags, owner."""
        return answer(catalog(request).index)

    @router.get("/api/views/{view}", summary="Catalog: one view version")
    def view(
        request: Request,
        view: str,
        version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    ) -> Response:
        """Versions and why each changed, features, runs, freshness, what uses it."""
        return answer(lambda: catalog(request).view(name(view, "view", "view"), version))

    @router.get("/api/views/{view}/diff", summary="Catalog: code diff between two versions")
    def diff(
        request: Request,
        view: str,
        old: Annotated[int, Query(alias="from", ge=1, le=1_000_000)],
        new: Annotated[int, Query(alias="to", ge=1, le=1_000_000)],
    ) -> Response:
        """Unified diff of the kept normalized sources of versions ``from`` and ``to``."""
        return answer(lambda: catalog(request).diff(name(view, "view", "view"), old, new))

    @router.get("/api/views/{view}/drift", summary="Catalog: drift against training sets")
    def drift(
        request: Request,
        view: str,
        version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    ) -> Response:
        """Drift of each feature against the training sets that read the version."""
        return answer(lambda: catalog(request).drift(name(view, "view", "view"), version))

    @router.get("/api/lineage", summary="Catalog: lineage around a node")
    def lineage(request: Request, node: Annotated[str | None, Query()] = None) -> Response:
        """The lineage widget's state centred on ``node``, with stale marks and reasons."""
        return answer(lambda: catalog(request).lineage(None if not node else _node(node)))

    @router.get("/api/training-sets/{ts}", summary="Catalog: one training set")
    def training_set(request: Request, ts: str) -> Response:
        """Manifest, pinned versions, whether it still rebuilds, staleness, models."""
        return answer(lambda: catalog(request).training_set(_ts(ts)))

    @router.get("/api/models/{model}", summary="Catalog: one model")
    def model(request: Request, model: str) -> Response:
        """Every version: metrics, training set, staleness, whether it still rebuilds."""
        return answer(lambda: catalog(request).model(name(model, "model", "model")))

    def _node(text: str) -> str:
        longest = 3 * max_name_length + 40  # kind:name@version:column
        if len(text) > longest:
            raise CatalogRequestError(
                f"node id {shown(text)} is longer than {longest} characters.", field="node"
            )
        kind, _, rest = text.partition(":")
        if kind not in NODE_KINDS or not rest:
            raise CatalogRequestError(
                f"node id {shown(text)} does not parse; use kind:name with kind one of "
                f"{', '.join(NODE_KINDS)} (e.g. 'view:driver_stats' or 'model:churn@2').",
                field="node",
            )
        return text

    def _ts(text: str) -> str:
        if len(text) > max_name_length:
            raise CatalogRequestError(
                f"training set {shown(text)} is longer than {max_name_length} characters.",
                field="ts",
            )
        for kind in ("training set id", "training set"):
            try:
                return validate_name(text, kind)  # type: ignore[arg-type]
            except DefinitionError:
                continue
        return name(text, "training set", "ts")  # raises, with the saved-name rule

    return router


def create_ui_app(store: Store, *, max_name_length: int = MAX_NAME_LENGTH) -> FastAPI:
    """A server of the catalog alone (``featurekit ui``): ``/`` redirects to ``/ui/``.

    Example:
        >>> uvicorn.run(create_ui_app(fk.Store("./store")), host="127.0.0.1", port=8001)
    """
    app = FastAPI(
        title="featurekit catalog",
        version=__version__,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(catalog_router(store, max_name_length=max_name_length))
    # a malformed query parameter (?from=abc) answers in the server's error shape too
    app.add_exception_handler(RequestValidationError, _invalid)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    return app


async def _invalid(request: Request, exc: Exception) -> Response:
    first = exc.errors()[0] if isinstance(exc, RequestValidationError) and exc.errors() else {}
    field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path")) or None
    message = f"{field or 'request'}: {first.get('msg', 'invalid request')}"
    body = {"type": "ValidationError", "message": message[:300], "field": field}
    return _json(422, {"error": body})


def _asset(assets: dict[str, bytes], file: str) -> Response:
    kind = _TYPES[Path(file).suffix]
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if kind == "text/html":
        headers["Content-Security-Policy"] = CSP
        headers["Referrer-Policy"] = "no-referrer"
    return Response(assets[file], media_type=f"{kind}; charset=utf-8", headers=headers)


def _public(err: BaseException, store: Store) -> str:
    """An error message fit for a response: credentials masked, the store root hidden."""
    out = redact(str(err))
    root = store.root
    for path in dict.fromkeys((str(root.resolve()), str(root), str(root.absolute()))):
        out = out.replace(path, "<store>")
    return out if len(out) <= 1_000 else f"{out[:980]}... (cut)"


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class CatalogExtension:
    """The catalog as a feature-server extension: mounted behind the server's boundary.

    Example:
        >>> create_app(store, extensions=[CatalogExtension(store)])
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def public_paths(self) -> frozenset[str]:
        """The page's shell, which a browser loads without a key."""
        return public_paths()

    def router(
        self, *, max_name_length: int, key_of: Callable[[Request], ApiKey | None]
    ) -> APIRouter:
        """The catalog's routes for this store, with the server's name limit and keys."""
        return catalog_router(self.store, max_name_length=max_name_length, key_of=key_of)
