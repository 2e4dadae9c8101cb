"""What the lineage widget shows, computed in Python: its synced state and the details panel.

No widget library is imported here: :func:`widget_state` and :func:`node_details` are plain
functions over :class:`~featurekit.lineage.graph.LineageGraph`, so the offline HTML export
and the tests use them without a kernel. :mod:`featurekit.notebook.widget` wraps them in an
anywidget (an ipywidgets widget).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from featurekit.lineage.graph import LineageGraph, Node

#: Traits the widget syncs with its JavaScript view, and their defaults.
HIGHLIGHTS = ("both", "upstream", "downstream", "none")
DEFAULT_HEIGHT = 440


def static_text(name: str) -> str:
    """Text of a file shipped in ``featurekit/notebook/static`` (the widget's JS and CSS)."""
    return resources.files("featurekit.notebook").joinpath("static", name).read_text("utf-8")


def widget_state(
    graph: LineageGraph,
    *,
    selected: str | None = None,
    expanded: bool = False,
    highlight: str = "both",
    height: int = DEFAULT_HEIGHT,
) -> dict[str, Any]:
    """The synced state of a lineage widget for ``graph`` (JSON-able).

    ``graph`` is ``graph.to_dict()``, the documented stable model; ``details`` is the panel
    shown for each node (see :func:`node_details`). ``selected`` defaults to the graph's
    focus; ``""`` selects nothing.

    Example:
        >>> state = widget_state(store.lineage("model:churn"), selected="model:churn@1")
    """
    return {
        "graph": graph.to_dict(),
        "details": {node_id: node_details(graph, node_id) for node_id in sorted(graph.nodes)},
        "selected": (graph.focus or "") if selected is None else selected,
        "expanded": expanded,
        "highlight": highlight,
        "height": height,
    }


def node_details(graph: LineageGraph, node_id: str) -> dict[str, Any]:
    """The details panel of one node: ``{"rows": [[label, value]], "lists": [[title, items]]}``.

    Rows hold version, fingerprint, when, row count, dtype; lists hold columns, inputs,
    outputs and the raw source columns that feed the node.
    """
    node = graph.node(node_id)
    a = node.attrs
    rows: list[list[str]] = []
    lists: list[list[Any]] = []

    def row(label: str, value: Any) -> None:
        if value is not None and value != "" and value != []:
            rows.append([label, str(value)])

    row("name", node.name)
    row("version", node.version)
    if node.column:
        row("column", node.column)
    row("dtype", a.get("dtype"))
    if node.kind == "source":
        row("kind", a.get("kind"))
        row("location", a.get("location"))
        row("fingerprint", a.get("fingerprint"))
        row("timestamp", a.get("timestamp"))
        row("read at", a.get("read_at"))
        lists.append(["columns", _schema(a.get("schema"))])
    elif node.kind == "view":
        row("fingerprint", a.get("fingerprint"))
        row("created", a.get("created_at"))
        row("why new", ", ".join(a.get("reason") or []))
        row("entity", a.get("entity"))
        row("keys", ", ".join(a.get("keys") or []))
        row("timestamp", a.get("timestamp"))
        row("Delta version", a.get("current_delta_version"))
        last = _last_run(graph, node_id)
        if last is not None:
            row("last run", f"{last.time} ({last.attrs.get('mode', '?')})")
            row("rows written", _count(last.attrs.get("rows_written")))
        features = [e.target for e in graph.outputs_of(node_id) if e.kind == "contains"]
        lists.append(["features", [_column_name(graph, f) for f in features]])
    elif node.kind == "training_set":
        row("rows", _count(a.get("rows")))
        row("point in time", a.get("point_in_time"))
        row("as of", a.get("as_of"))
        row("result hash", (a.get("result_hash") or "")[:16])
        labels = a.get("labels") or {}
        row("label time", labels.get("timestamp"))
        lists.append(["columns", [*labels.get("columns", []), *(a.get("columns") or [])]])
        pinned = a.get("pinned") or {}
        if isinstance(pinned, dict) and pinned:
            lists.append(
                ["pinned Delta versions", [f"{k} @ v{v}" for k, v in sorted(pinned.items())]]
            )
    elif node.kind == "model":
        row("created", a.get("created_at"))
        model = a.get("model") or {}
        row("model", model.get("uri") or model.get("type") or model.get("kind"))
        row("MLflow run", a.get("mlflow_run_id"))
        metrics = a.get("metrics") or {}
        lists.append(["metrics", [f"{k} = {v}" for k, v in sorted(metrics.items())]])
    inputs = sorted({e.source for e in graph.inputs_of(node_id)})
    outputs = sorted({e.target for e in graph.outputs_of(node_id)})
    if node.kind not in ("column", "source"):
        # a view's columns feed its features, not the view itself: ask through them
        parts = [node_id]
        if node.kind == "view":
            parts = [e.target for e in graph.outputs_of(node_id) if e.kind == "contains"]
        direct = {c for p in parts for c in graph.raw_columns(p, direct_only=True)}
        raw = sorted({c for p in parts for c in graph.raw_columns(p)})
        feeding = [f"{c} ({'direct' if c in direct else 'indirect'})" for c in raw]
        lists.append(["fed by raw columns", feeding])
    lists.append(["inputs", inputs])
    lists.append(["outputs", outputs])
    return {"rows": rows, "lists": lists}


def _schema(schema: Any) -> list[str]:
    if not isinstance(schema, dict):
        return []
    return [f"{name}: {dtype}" for name, dtype in schema.items()]


def _count(value: Any) -> str | None:
    return f"{value:,}" if isinstance(value, int) else None


def _column_name(graph: LineageGraph, node_id: str) -> str:
    node: Node | None = graph.nodes.get(node_id)
    if node is None or node.column is None:
        return node_id
    dtype = node.attrs.get("dtype")
    return f"{node.column}: {dtype}" if dtype else node.column


def _last_run(graph: LineageGraph, node_id: str) -> Any:
    runs = [r for r in graph.runs.values() if node_id in r.outputs]
    return runs[-1] if runs else None
