"""Lineage from raw data to features, training sets and models.

- :mod:`~featurekit.lineage.model`: nodes, edges, runs, column dependencies and the queries;
- :mod:`~featurekit.lineage.graph`: ``LineageGraph``, the model with rendering and export;
- :mod:`~featurekit.lineage.columns` and :mod:`~featurekit.lineage.sql`: column lineage of a view;
- :mod:`~featurekit.lineage.record`: recording runs under ``<root>/_featurekit/lineage/``;
- :mod:`~featurekit.lineage.openlineage`: OpenLineage events and emitters;
- :mod:`~featurekit.lineage.render`: text, DOT and SVG renderings.

Importing this package imports neither sqlglot nor openlineage.
"""

from featurekit.lineage.graph import Edge, LineageGraph, Node, Run

__all__ = ["Edge", "LineageGraph", "Node", "Run"]
