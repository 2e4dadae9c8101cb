"""A lineage graph in a static export: an executed notebook converted by nbconvert, in chromium.

The notebook runs in a real kernel (nbclient saves the widget state, as it does by default),
nbconvert turns it into HTML, and Debian's chromium opens the page with every network request
blocked, as a reader offline (or a CI artifact viewer) would. The static SVG must be visible
and fit the viewport: no node may run off its right edge.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, chromium_context

import featurekit as fk
from featurekit.demo import run_demo
from featurekit.notebook.display import static_html

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
nbconvert = pytest.importorskip("nbconvert")
pytest.importorskip("ipykernel")
pytest.importorskip("anywidget")

sync_api = pytest.importorskip("playwright.sync_api")

REPO_ROOT = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1024, "height": 900}
WIDGET = "application/vnd.jupyter.widget-view+json"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    facts = run_demo(tmp_path_factory.mktemp("static") / "demo", progress=False, echo=print)
    return Path(facts["store"])


@pytest.fixture(scope="module")
def exported(store_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The executed notebook and its nbconvert HTML page."""
    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_code_cell(
            f"import featurekit as fk\nstore = fk.Store({str(store_root)!r}, progress=False)"
        ),
        nbformat.v4.new_code_cell('graph = store.lineage("model:churn")\ngraph'),
    ]
    workdir = tmp_path_factory.mktemp("notebook")
    client = nbclient.NotebookClient(
        book,
        kernel_name="python3",
        timeout=180,
        startup_timeout=60,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "FEATUREKIT_PROGRESS": "0"})
    body, _ = nbconvert.HTMLExporter().from_notebook_node(book)
    page = workdir / "lineage.html"
    page.write_text(body, encoding="utf-8")
    return page, book


@pytest.fixture()
def browser() -> Iterator[tuple[Any, list[str]]]:
    blocked: list[str] = []
    with sync_api.sync_playwright() as p:
        context, profile = chromium_context(p, viewport=VIEWPORT)

        def route(r: Any) -> None:
            url = r.request.url
            if url.startswith(("file://", "data:", "blob:")):
                r.continue_()
            else:
                blocked.append(url)
                r.abort()

        context.route("**/*", route)
        try:
            yield context.new_page(), blocked
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def _node_boxes(page: Any, selector: str) -> list[dict[str, float]]:
    boxes: list[dict[str, float]] = page.eval_on_selector_all(
        selector,
        "els => els.map(e => { const r = e.getBoundingClientRect();"
        " return {left: r.left, right: r.right, width: r.width}; })",
    )
    return boxes


def test_the_notebook_saved_widget_state_and_both_renderings(exported: tuple[Path, Any]) -> None:
    """The case that used to export blank: widget state saved, widget view in the outputs."""
    _, book = exported
    assert book.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    outputs = book.cells[-1].outputs
    static = [o for o in outputs if o.get("data", {}).get("text/html")]
    widget = [o for o in outputs if WIDGET in o.get("data", {})]
    assert len(static) == 1 and len(widget) == 1
    assert outputs.index(static[0]) < outputs.index(widget[0])  # the drawing comes first
    assert widget[0]["data"]["text/html"] == ""  # else exporters without state draw it twice
    assert "<svg" in static[0]["data"]["text/html"]


def test_nbconvert_page_shows_the_svg_within_the_viewport(
    exported: tuple[Path, Any], store_root: Path, browser: tuple[Any, list[str]]
) -> None:
    path, _ = exported
    page, blocked = browser
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    drawing = page.locator(".fk-lineage-static svg")
    assert drawing.count() == 1
    assert drawing.is_visible()
    box = drawing.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 50

    graph = fk.Store(store_root, progress=False).lineage("model:churn")
    nodes = _node_boxes(page, ".fk-lineage-static svg g rect")
    assert len(nodes) == len(graph.nodes) > 6  # columns and features too: six columns wide
    assert all(n["width"] > 20 for n in nodes)  # scaled to fit, still drawn
    width = page.evaluate("document.documentElement.clientWidth")
    assert max(n["right"] for n in nodes) <= width, (max(n["right"] for n in nodes), width)
    assert min(n["left"] for n in nodes) >= 0
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scroll
    # the widget's manager would come from a CDN: offline it is blocked, the SVG stays
    assert any("unpkg.com" in url for url in blocked)


def test_live_front_end_hides_the_drawing_once_the_widget_renders(
    store_root: Path, tmp_path: Path, browser: tuple[Any, list[str]]
) -> None:
    """JupyterLab's output DOM: the drawing hides when the widget after it has rendered."""
    graph = fk.Store(store_root, progress=False).lineage("model:churn")
    drawing = static_html(graph)
    page_html = f"""<!DOCTYPE html><html><body>
<div class="jp-OutputArea" id="live">
  <div class="jp-OutputArea-child"><div class="jp-OutputArea-output">{drawing}</div></div>
  <div class="jp-OutputArea-child"><div class="jp-OutputArea-output">
    <div class="fk-lineage">the widget</div></div></div>
</div>
<div class="jp-OutputArea" id="static">
  <div class="jp-OutputArea-child"><div class="jp-OutputArea-output">{drawing}</div></div>
  <div class="jp-OutputArea-child"><div class="jp-OutputArea-output">
    <script type="{WIDGET}">{{}}</script></div></div>
</div>
<div class="output_area" id="classic">{drawing}</div>
<div class="output_area"><div class="fk-lineage">the widget</div></div>
</body></html>"""
    path = tmp_path / "outputs.html"
    path.write_text(page_html, encoding="utf-8")
    page, _ = browser
    page.goto(path.as_uri())
    assert not page.locator("#live .fk-lineage-static").is_visible()
    assert page.locator("#static .fk-lineage-static svg").is_visible()
    assert not page.locator("#classic .fk-lineage-static").is_visible()
