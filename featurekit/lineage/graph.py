"""The lineage graph users get from ``store.lineage(...)``: the model plus rendering and export.

The data and the questions live in :mod:`featurekit.lineage.model` (node ids, edge kinds and
the serialized form are documented there); this class adds text, DOT, SVG, OpenLineage and the
notebook displays, which need the modules that import the model.
"""

from __future__ import annotations

from typing import Any

from featurekit.core import display
from featurekit.lineage import openlineage, render
from featurekit.lineage.model import Edge, GraphModel, Node, Run

__all__ = ["Edge", "LineageGraph", "Node", "Run"]


class LineageGraph(GraphModel):
    """Lineage from raw sources to features, training sets and models.

    Build one with ``store.lineage(node)``; it is a plain value you can query, render and
    export. ``focus`` is the node it was asked about (None for a whole-store graph).

    Example:
        >>> graph = store.lineage("model:churn")
        >>> graph.raw_columns("model:churn")          # which raw columns feed the model
        ['column:trips@v3:driver_id', 'column:trips@v3:fare', ...]
        >>> graph.impact("column:trips@v3:fare")      # what uses this source column
        {'feature': [...], 'training_set': [...], 'model': [...]}
        >>> print(graph.to_text())
    """

    def to_openlineage(self) -> list[dict[str, Any]]:
        """OpenLineage RunEvents (spec 2-0-2), one per recorded run in this graph, oldest first.

        Each is a plain dict; ``featurekit.lineage.openlineage.to_client_event`` turns one into
        openlineage-python's ``RunEvent`` (and validates it) when that package is installed.
        """
        return openlineage.graph_events(self)

    def to_text(self) -> str:
        """A plain-text tree for terminals (upstream and downstream of the focus)."""
        return render.to_text(self)

    def to_dot(self) -> str:
        """Graphviz DOT source (indirect column edges dashed)."""
        return render.to_dot(self)

    def to_svg(self) -> str:
        """A static SVG drawing: one column per node kind, edges as lines."""
        return render.to_svg(self)

    def _repr_html_(self) -> str:
        """Static rendering for notebooks (an interactive widget may build on ``to_dict``)."""
        return render.to_html(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any] | None:
        """In Jupyter: the interactive widget, with the static SVG as ``text/html`` fallback
        for viewers without a kernel (registered by :mod:`featurekit.notebook`; without it,
        None lets IPython use :meth:`_repr_html_`)."""
        return display.mimebundle_for(self)
