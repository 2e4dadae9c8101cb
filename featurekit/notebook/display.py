"""How featurekit objects display: the lineage mime bundle and the offline HTML export."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path
from typing import Any

from featurekit.lineage.graph import LineageGraph
from featurekit.notebook.lineage import static_text, widget_state

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def in_kernel() -> bool:
    """Whether code runs in a Jupyter kernel (where widgets can have a front end)."""
    if "IPython" not in sys.modules:  # never import IPython just to find out
        return False
    shell = _shell()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _shell() -> Any:
    """The running IPython shell, or None (IPython must already be imported)."""
    import importlib

    return importlib.import_module("IPython").get_ipython()


#: Hides a static drawing once the live widget shown after it has rendered. Live front ends
#: render the widget (``.fk-lineage``) in a later output of the same cell; static exports never
#: do, so there the drawing stays. GitHub strips ``<style>``; it shows the drawing anyway.
_STATIC_CSS = (
    "<style>"
    ".jp-OutputArea-child:has(~ .jp-OutputArea-child .fk-lineage) .fk-lineage-static,"
    ".output_area:has(~ .output_area .fk-lineage) .fk-lineage-static{display:none}"
    "</style>"
)


def static_html(graph: LineageGraph) -> str:
    """The drawing static viewers show: the SVG, scaled down to fit its container."""
    from featurekit.lineage.render import to_html

    return f'<div class="fk-lineage-static">{_STATIC_CSS}{to_html(graph)}</div>'


def graph_mimebundle(graph: LineageGraph) -> dict[str, Any]:
    """How a lineage graph displays: the static SVG, and in a live kernel the widget too.

    Outside a kernel (or without ``featurekit[notebook]``) the bundle is the static SVG as
    ``text/html``. In a kernel the widget is added, but not to the same bundle: nbconvert
    and other exporters prefer a widget view over ``text/html`` whenever the notebook saved
    widget state (nbclient does by default), and the view then needs a widget manager from
    a CDN, so the export shows nothing. So the SVG is published as an output of its own,
    just before the widget's; live front ends hide it once the widget renders (see
    :data:`_STATIC_CSS`), and static exports keep it.
    """
    bundle: dict[str, Any] = {"text/plain": repr(graph), "text/html": static_html(graph)}
    if not in_kernel():
        return bundle
    try:
        from featurekit.notebook.widget import LineageWidget
    except Exception:  # the extra is not installed: the static drawing is still right
        return bundle
    widget: Any = LineageWidget(graph)
    data, _ = widget._repr_mimebundle_()
    if WIDGET_MIME not in data:
        return bundle
    _shell().display_pub.publish(data=bundle, metadata={})
    # An empty text/html: viewers without widget state pick it (rather than draw the graph a
    # second time), and its presence keeps IPython from adding the graph's _repr_html_.
    return {"text/plain": repr(graph), "text/html": "", WIDGET_MIME: data[WIDGET_MIME]}


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>body {{ margin: 16px; font-family: system-ui, sans-serif; }}</style>
<style>{css}</style>
</head>
<body>
<div id="featurekit-lineage"></div>
<script type="application/json" id="featurekit-state">{state}</script>
<script type="application/json" id="featurekit-esm">{esm}</script>
<script type="module">
// A minimal stand-in for the anywidget model: the same state, the same ES module.
class Model {{
  constructor(state) {{ this.state = state; this.handlers = {{}}; }}
  get(name) {{ return this.state[name]; }}
  set(name, value) {{
    const old = this.state[name];
    this.state[name] = value;
    for (const cb of this.handlers["change:" + name] || []) cb({{ name, old, new: value }});
  }}
  on(event, cb) {{ (this.handlers[event] ||= []).push(cb); }}
  off(event, cb) {{ this.handlers[event] = (this.handlers[event] || []).filter((h) => h !== cb); }}
  save_changes() {{}}
  send() {{}}
}}
const state = JSON.parse(document.getElementById("featurekit-state").textContent);
const source = JSON.parse(document.getElementById("featurekit-esm").textContent);
const url = URL.createObjectURL(new Blob([source], {{ type: "text/javascript" }}));
const widget = (await import(url)).default;
const model = new Model(state);
window.featurekitModel = model;
widget.render({{ model, el: document.getElementById("featurekit-lineage") }});
document.body.dataset.ready = "true";
</script>
</body>
</html>
"""


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>`` can close it early)."""
    return json.dumps(value, default=str).replace("<", "\\u003c").replace(">", "\\u003e")


def export_html(
    graph: LineageGraph,
    path: str | Path | None = None,
    *,
    title: str | None = None,
    **state: Any,
) -> str:
    """A standalone, offline HTML page of the interactive lineage widget.

    The page inlines the widget's own ES module and CSS and its state; it loads nothing
    from the network (its Content-Security-Policy forbids it), so it opens from a file,
    an email attachment or a CI artifact.

    Args:
        graph: the lineage graph to show.
        path: where to write the page (the text is returned either way).
        title: the page title (default: the graph's repr).
        **state: initial widget state: ``selected``, ``expanded``, ``highlight``, ``height``.

    Example:
        >>> export_html(store.lineage("model:churn"), "lineage.html", expanded=True)
    """
    page = _PAGE.format(
        title=html.escape(title or repr(graph)),
        css=static_text("lineage.css"),
        state=_script_json(widget_state(graph, **state)),
        esm=_script_json(static_text("lineage.js")),
    )
    if path is not None:
        Path(path).write_text(page, encoding="utf-8")
    return page
