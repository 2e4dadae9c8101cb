"""The interactive lineage widget (an anywidget, so an ipywidgets widget).

Importing this module imports ``anywidget`` and ``ipywidgets``: featurekit only does so
when a graph is displayed in a Jupyter kernel. Install them with
``pip install 'featurekit[notebook]'``. The JavaScript ships inside the package
(``featurekit/notebook/static/lineage.js``); nothing is loaded from the network.
"""

from __future__ import annotations

from typing import Any

from featurekit.core.errors import FeatureKitError
from featurekit.lineage.graph import LineageGraph
from featurekit.notebook.lineage import (
    DEFAULT_HEIGHT,
    HIGHLIGHTS,
    node_details,
    static_text,
    widget_state,
)

try:
    import anywidget
    import traitlets
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise FeatureKitError(
        "the lineage widget needs anywidget and ipywidgets: pip install 'featurekit[notebook]'."
    ) from err


class LineageWidget(anywidget.AnyWidget):  # type: ignore[misc]
    """An interactive lineage graph: click a node for its details; its path lights up.

    Traits synced with the browser: ``graph`` (``LineageGraph.to_dict()``), ``details``
    (the panel per node), ``selected`` (node id or ``""``), ``expanded`` (show columns and
    features), ``highlight`` (``"both"``, ``"upstream"``, ``"downstream"`` or ``"none"``)
    and ``height`` (pixels).

    Example:
        >>> w = LineageWidget(store.lineage("model:churn"))
        >>> w.select("view:driver_stats@3"); w.expanded = True
        >>> w  # displays in Jupyter
    """

    _esm = static_text("lineage.js")
    _css = static_text("lineage.css")

    graph = traitlets.Dict().tag(sync=True)
    details = traitlets.Dict().tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    expanded = traitlets.Bool(False).tag(sync=True)
    highlight = traitlets.Enum(list(HIGHLIGHTS), default_value="both").tag(sync=True)
    height = traitlets.Int(DEFAULT_HEIGHT).tag(sync=True)

    def __init__(self, graph: LineageGraph, **kwargs: Any) -> None:
        state = widget_state(graph, **kwargs)
        self._graph = graph
        super().__init__(**state)

    @property
    def lineage(self) -> LineageGraph:
        """The graph this widget shows."""
        return self._graph

    def select(self, node_id: str) -> None:
        """Select a node by id (``""`` clears); unknown ids raise ``NotFoundError``."""
        if node_id:
            self._graph.node(node_id)
        self.selected = node_id

    def selected_details(self) -> dict[str, Any] | None:
        """The details panel of the selected node, or None."""
        if not self.selected or self.selected not in self._graph:
            return None
        return node_details(self._graph, self.selected)
