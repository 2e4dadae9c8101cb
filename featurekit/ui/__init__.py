"""The catalog: a read-only web page over a store (``featurekit ui``, ``/ui`` on the server).

:class:`~featurekit.ui.catalog.Catalog` answers the page's questions from the store's own
records; :mod:`featurekit.ui.routes` serves those answers as JSON and the page itself
(plain ES modules and CSS in ``featurekit/ui/static``, nothing from the network).
"""

from __future__ import annotations

from featurekit.ui.catalog import Catalog

__all__ = ["Catalog"]
