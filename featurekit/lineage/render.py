"""Render a lineage graph (:class:`~featurekit.lineage.model.GraphModel`): text, DOT, SVG.

No third-party imports: these work in a terminal, in CI logs and in any notebook.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from featurekit.lineage.model import Edge, GraphModel

_ORDER = {"source": 0, "column": 1, "view": 2, "feature": 3, "training_set": 4, "model": 5}
_COLORS = {
    "source": "#dbeafe",
    "column": "#eff6ff",
    "view": "#dcfce7",
    "feature": "#f0fdf4",
    "training_set": "#fef9c3",
    "model": "#fce7f3",
}


def _label(edge: Edge) -> str:
    if edge.kind != "derives":
        return edge.kind
    parts = [(edge.transformation or "").lower(), (edge.subtype or "").lower()]
    return " ".join(p for p in parts if p)


def to_text(graph: GraphModel) -> str:
    """Upstream tree then downstream tree of the focus (or a forest from the sources)."""
    lines: list[str] = []
    if graph.focus is not None and graph.focus in graph.nodes:
        lines.append(graph.focus)
        up = _tree(graph, graph.focus, up=True)
        down = _tree(graph, graph.focus, up=False)
        if up:
            lines.append("upstream (what it was built from):")
            lines.extend(up)
        if down:
            lines.append("downstream (what uses it):")
            lines.extend(down)
        return "\n".join(lines)
    roots = [
        n.id
        for n in sorted(graph.nodes.values(), key=lambda n: (_ORDER.get(n.kind, 9), n.id))
        if not graph.inputs_of(n.id)
    ]
    for root in roots:
        lines.append(root)
        lines.extend(_tree(graph, root, up=False))
    return "\n".join(lines) if lines else "(empty lineage graph)"


def _tree(graph: GraphModel, start: str, *, up: bool) -> list[str]:
    lines: list[str] = []
    shown: set[str] = {start}

    def walk(node: str, prefix: str, path: set[str]) -> None:
        edges = graph.inputs_of(node) if up else graph.outputs_of(node)
        edges = sorted(edges, key=lambda e: (e.source if up else e.target, e.kind))
        for i, edge in enumerate(edges):
            other = edge.source if up else edge.target
            last = i == len(edges) - 1
            branch = "└── " if last else "├── "
            repeat = other in shown
            note = " (see above)" if repeat and other not in path else ""
            lines.append(f"{prefix}{branch}{other}  [{_label(edge)}]{note}")
            if other in path or repeat:
                continue
            shown.add(other)
            walk(other, prefix + ("    " if last else "│   "), path | {other})

    walk(start, "", {start})
    return lines


def to_dot(graph: GraphModel) -> str:
    """Graphviz DOT: boxes colored by kind; INDIRECT derivations dashed."""
    out = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled"];']
    for node_id, node in sorted(graph.nodes.items()):
        pen = ", penwidth=2" if node_id == graph.focus else ""
        out.append(f'  "{_dot(node_id)}" [fillcolor="{_COLORS.get(node.kind, "#ffffff")}"{pen}];')
    for edge in graph.edges:
        style = ', style="dashed"' if edge.transformation in ("INDIRECT", "UNKNOWN") else ""
        out.append(
            f'  "{_dot(edge.source)}" -> "{_dot(edge.target)}" [label="{_dot(_label(edge))}"{style}];'
        )
    out.append("}")
    return "\n".join(out)


def _dot(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_svg(graph: GraphModel) -> str:
    """A static SVG: one column per node kind (sources left, models right)."""
    columns: dict[int, list[str]] = {}
    for node_id, node in sorted(graph.nodes.items()):
        columns.setdefault(_ORDER.get(node.kind, 6), []).append(node_id)
    width, height, gap_x, gap_y = 230, 24, 60, 10
    pos: dict[str, tuple[int, int]] = {}
    for col, ids in enumerate(sorted(columns)):
        for row, node_id in enumerate(columns[ids]):
            pos[node_id] = (10 + col * (width + gap_x), 10 + row * (height + gap_y))
    total_w = 20 + max(1, len(columns)) * (width + gap_x)
    total_h = 20 + max((len(v) for v in columns.values()), default=1) * (height + gap_y)
    parts = [
        # viewBox + max-width: wide graphs scale down to their container instead of
        # running off its right edge; small ones keep their natural size
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
        f'viewBox="0 0 {total_w} {total_h}" style="max-width:100%;height:auto" '
        'font-family="monospace" font-size="11">'
    ]
    for edge in graph.edges:
        if edge.source not in pos or edge.target not in pos:
            continue
        x1, y1 = pos[edge.source]
        x2, y2 = pos[edge.target]
        dash = ' stroke-dasharray="4 3"' if edge.transformation in ("INDIRECT", "UNKNOWN") else ""
        parts.append(
            f'<line x1="{x1 + width}" y1="{y1 + height // 2}" x2="{x2}" y2="{y2 + height // 2}" '
            f'stroke="#94a3b8"{dash}><title>{html.escape(_label(edge))}</title></line>'
        )
    for node_id, (x, y) in sorted(pos.items()):
        node = graph.nodes[node_id]
        stroke = "#0f172a" if node_id == graph.focus else "#64748b"
        text = node_id if len(node_id) <= 34 else node_id[:33] + "…"
        parts.append(
            f'<g><title>{html.escape(node_id)}</title><rect x="{x}" y="{y}" width="{width}" '
            f'height="{height}" rx="5" fill="{_COLORS.get(node.kind, "#fff")}" stroke="{stroke}"/>'
            f'<text x="{x + 6}" y="{y + 16}">{html.escape(text)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def to_html(graph: GraphModel) -> str:
    """Notebook rendering: a one-line summary above the static SVG."""
    return f"<div><b>{html.escape(repr(graph))}</b><br/>{to_svg(graph)}</div>"
