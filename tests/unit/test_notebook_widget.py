"""The lineage widget's model: state built from the graph, and Python <-> JS trait round trips."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import featurekit as fk
from featurekit.lineage.graph import Edge, LineageGraph, Node, Run
from featurekit.notebook import display, node_details, widget_state
from featurekit.notebook.lineage import static_text

WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(autouse=True)
def _close_widgets() -> Iterator[None]:
    """Close the widgets a test made, so none is torn down at interpreter exit."""
    yield
    ipywidgets = sys.modules.get("ipywidgets")
    if ipywidgets is not None:
        ipywidgets.Widget.close_all()


def small_graph() -> LineageGraph:
    nodes = [
        Node("source:trips@v1", "source", "trips", "v1", attrs={"schema": {"fare": "Float64"}}),
        Node("column:trips@v1:fare", "column", "trips", "v1", "fare", {"dtype": "Float64"}),
        Node(
            "view:stats@2",
            "view",
            "stats",
            "2",
            attrs={"fingerprint": "abc123", "reason": ["code"]},
        ),
        Node("feature:stats@2:fare", "feature", "stats", "2", "fare", {"dtype": "Float64"}),
        Node("training_set:ts1", "training_set", "ts1", attrs={"rows": 1234}),
        Node("model:churn@1", "model", "churn", "1", attrs={"metrics": {"auc": 0.9}}),
    ]
    edges = [
        Edge("source:trips@v1", "column:trips@v1:fare", "contains"),
        Edge("source:trips@v1", "view:stats@2", "reads", run_id="r1"),
        Edge("view:stats@2", "feature:stats@2:fare", "contains", run_id="r1"),
        Edge("column:trips@v1:fare", "feature:stats@2:fare", "derives", "DIRECT", run_id="r1"),
        Edge("view:stats@2", "training_set:ts1", "reads"),
        Edge("feature:stats@2:fare", "training_set:ts1", "selects"),
        Edge("training_set:ts1", "model:churn@1", "reads"),
    ]
    runs = [
        Run(
            "r1",
            "materialize",
            "2024-01-01T00:00:00Z",
            "job",
            ("source:trips@v1",),
            ("view:stats@2",),
            {"mode": "full", "rows_written": 5000},
        ),
    ]
    return LineageGraph(nodes, edges, runs, focus="model:churn@1")


def test_state_carries_the_stable_graph_model_and_details() -> None:
    graph = small_graph()
    state = widget_state(graph)
    assert state["graph"] == graph.to_dict()
    assert state["selected"] == "model:churn@1"  # the focus
    assert set(state["details"]) == set(graph.nodes)
    assert json.loads(json.dumps(state)) == state  # JSON-able: it crosses to the browser
    assert widget_state(graph, selected="")["selected"] == ""


def test_details_of_a_view() -> None:
    details = node_details(small_graph(), "view:stats@2")
    rows = dict(details["rows"])
    assert rows["fingerprint"] == "abc123" and rows["version"] == "2"
    assert rows["rows written"] == "5,000" and rows["why new"] == "code"
    lists = dict((title, items) for title, items in details["lists"])
    assert lists["features"] == ["fare: Float64"]
    assert lists["fed by raw columns"] == ["column:trips@v1:fare (direct)"]
    assert lists["outputs"] == ["feature:stats@2:fare", "training_set:ts1"]


def test_details_of_a_model_and_training_set() -> None:
    graph = small_graph()
    model = dict((t, i) for t, i in node_details(graph, "model:churn@1")["lists"])
    assert model["metrics"] == ["auc = 0.9"]
    assert model["fed by raw columns"] == ["column:trips@v1:fare (direct)"]
    assert dict(node_details(graph, "training_set:ts1")["rows"])["rows"] == "1,234"
    with pytest.raises(fk.NotFoundError, match="no lineage node"):
        node_details(graph, "view:nope@1")


def test_static_assets_ship_in_the_package() -> None:
    js = static_text("lineage.js")
    assert "export default { render }" in js
    assert "http://" not in js.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in js and "import " not in js.split("\n", 3)[-1].split("export")[0]
    assert ".fk-lineage" in static_text("lineage.css")


class RecordingComm:
    """Stands in for the kernel's comm: records what Python sends to the browser."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.comm_id = "test"
        self.kernel = object()  # ipywidgets only sends through a comm that has a kernel

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.sent.append(data)

    def on_msg(self, callback: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_widget_traits_round_trip() -> None:
    from featurekit.notebook import LineageWidget

    graph = small_graph()
    widget = LineageWidget(graph, expanded=True)
    state = widget.get_state()
    assert state["graph"] == graph.to_dict() and state["expanded"] is True
    assert "export default" in state["_esm"]
    # through JSON and back into a new widget, as a saved notebook would
    restored = LineageWidget(graph)
    restored.set_state(
        json.loads(
            json.dumps({k: state[k] for k in ("selected", "expanded", "highlight", "height")})
        )
    )
    for key in ("graph", "details", "selected", "expanded", "highlight", "height"):
        assert restored.get_state()[key] == state[key]


def test_python_to_js_and_js_to_python_messages() -> None:
    from featurekit.notebook import LineageWidget

    widget = LineageWidget(small_graph(), selected="")
    comm = RecordingComm()
    widget.comm = comm
    widget.select("view:stats@2")  # Python -> JS: an update message with the new value
    updates = [m for m in comm.sent if m.get("method") == "update"]
    assert updates[-1]["state"] == {"selected": "view:stats@2"}
    assert widget.selected_details() == node_details(small_graph(), "view:stats@2")

    seen: list[str] = []
    widget.observe(lambda change: seen.append(change["new"]), names="selected")
    # JS -> Python: the message the front end sends when a node is clicked
    widget._handle_msg(
        {"content": {"data": {"method": "update", "state": {"selected": "training_set:ts1"}}}}
    )
    widget._handle_msg(
        {
            "content": {
                "data": {"method": "update", "state": {"expanded": True, "highlight": "upstream"}}
            }
        }
    )
    assert widget.selected == "training_set:ts1" and seen == ["training_set:ts1"]
    assert widget.expanded is True and widget.highlight == "upstream"
    with pytest.raises(fk.NotFoundError):
        widget.select("model:nope@9")


def test_mimebundle_outside_and_inside_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = small_graph()
    outside = graph._repr_mimebundle_()
    assert set(outside) == {"text/plain", "text/html"} and "<svg" in outside["text/html"]

    published: list[dict[str, object]] = []

    class Publisher:
        def publish(self, data: dict[str, object], metadata: dict[str, object]) -> None:
            published.append(data)

    class Shell:
        kernel = object()
        display_pub = Publisher()

    monkeypatch.setitem(sys.modules, "IPython", sys.modules.get("IPython") or type(sys)("IPython"))
    monkeypatch.setattr(display, "_shell", lambda: Shell())
    inside = graph._repr_mimebundle_()
    assert WIDGET in inside and "model_id" in inside[WIDGET]
    # Exporters pick a widget view over text/html in the same bundle (and then need a CDN),
    # so the SVG goes out as its own output, just before the widget's.
    assert inside["text/html"] == "" and inside["text/plain"] == repr(graph)
    assert published == [outside]


def test_export_html_is_standalone() -> None:
    from featurekit.notebook import export_html

    page = export_html(small_graph(), expanded=True)
    assert "default-src 'none'" in page  # nothing may load from the network
    assert "<script src" not in page and "https://" not in page
    assert "</script>" not in page.split('id="featurekit-state">', 1)[1].split("</script>", 1)[0]
    assert '"expanded": true' in page
