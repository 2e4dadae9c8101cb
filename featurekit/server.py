"""The feature server as ``featurekit serve`` runs it: the HTTP API plus the catalog page.

:func:`featurekit.serving.app.create_app` is the HTTP API over any store; this surface
module adds what only the surface may know about, the catalog (:mod:`featurekit.ui`),
mounted behind the same boundary (limits, API keys, the one error shape).

Regenerate the checked-in spec with ``python -m featurekit.server > docs/openapi.json``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI

from featurekit.serving.app import create_app
from featurekit.store import Store
from featurekit.ui.routes import CatalogExtension

__all__ = ["create_server", "openapi_spec"]


def create_server(store: Store, **options: Any) -> FastAPI:
    """The feature server for ``store`` with the catalog at ``/ui``.

    ``options`` are :func:`~featurekit.serving.app.create_app`'s (limits, definitions,
    api_keys, metrics_auth, cors_origins).

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_server(fk.Store("./store")), host="127.0.0.1", port=8000)
    """
    return create_app(store, extensions=[CatalogExtension(store)], **options)


def openapi_spec() -> dict[str, Any]:
    """The server's OpenAPI spec, as built for an empty store."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "store", progress=False, online="memory")
        return create_server(store).openapi()


if __name__ == "__main__":  # pragma: no cover - a maintenance helper
    sys.stdout.write(orjson.dumps(openapi_spec(), option=orjson.OPT_INDENT_2).decode() + "\n")
