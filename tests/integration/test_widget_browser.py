"""The lineage widget in a real browser: Debian's chromium, driven by Playwright, offline.

The widget is exported to a standalone HTML page (its own ES module and CSS inlined) and
opened from a file. Every request the page makes is intercepted: only the file itself may
load. ``FEATUREKIT_UPDATE_SCREENSHOT=1`` also refreshes docs/img/lineage-widget.png.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, RECORD_VIOLATIONS, chromium_context

import featurekit as fk
from featurekit.demo import run_demo
from featurekit.notebook import export_html

sync_api = pytest.importorskip("playwright.sync_api")

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "lineage-widget.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
]


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> fk.LineageGraph:
    root = tmp_path_factory.mktemp("widget")
    facts = run_demo(root / "demo", progress=False, echo=lambda _: None)
    store = fk.Store(facts["store"], progress=False)
    store.log_model("churn", training_set=facts["training_set_id"], model="models:/churn/1")
    return store.lineage("model:churn")


@pytest.fixture()
def page(tmp_path: Path) -> Iterator[tuple[Any, list[str]]]:
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        context, profile = chromium_context(p, viewport={"width": 1280, "height": 640})

        def route(r: Any) -> None:
            url = r.request.url
            requests.append(url)
            local = url.startswith(("file://", "blob:", "data:", "http://127.0.0.1"))
            r.continue_() if local else r.abort()

        context.route("**/*", route)
        context.add_init_script(RECORD_VIOLATIONS)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            yield page, requests
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
        assert errors == [], f"JavaScript errors: {errors}"


def open_widget(page: Any, graph: fk.LineageGraph, path: Path, **state: Any) -> None:
    export_html(graph, path, **state)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)


def test_widget_renders_offline_and_clicks_select(
    graph: fk.LineageGraph, page: tuple[Any, list[str]], tmp_path: Path
) -> None:
    browser, requests = page
    open_widget(browser, graph, tmp_path / "lineage.html", selected="")
    datasets = [n for n in graph.nodes.values() if n.kind not in ("column", "feature")]
    nodes = browser.locator(".fk-node")
    assert nodes.count() == len(datasets) == 6  # 2 sources, 2 views, 1 training set, 1 model
    assert browser.get_by_test_id("node-count").inner_text() == f"6 of {len(graph.nodes)} nodes"
    assert "Click a node" in browser.get_by_test_id("details").inner_text()

    view = graph.node("view:driver_rating@1")
    browser.locator(f".fk-node[data-id='{view.id}']").click()
    assert "fk-selected" in (
        browser.locator(f".fk-node[data-id='{view.id}']").get_attribute("class") or ""
    )
    assert browser.get_by_test_id("details-title").inner_text() == view.id
    details = browser.get_by_test_id("details").inner_text()
    assert view.attrs["fingerprint"] in details and "rows written" in details
    assert "column:ratings@" in details  # the raw column that feeds it
    assert browser.evaluate("window.featurekitModel.get('selected')") == view.id
    # its path lights up: upstream source and downstream model stay, the trips branch dims
    dimmed = browser.locator(".fk-node.fk-dim")
    dim_ids = {dimmed.nth(i).get_attribute("data-id") for i in range(dimmed.count())}
    path = {view.id, *graph.upstream(view.id), *graph.downstream(view.id)}
    assert dim_ids == {n.id for n in datasets} - path
    assert {n.split("@")[0] for n in dim_ids} == {"source:trips", "view:driver_trip_stats"}

    browser.get_by_test_id("toggle-columns").click()  # expand to column level
    assert browser.locator(".fk-node").count() == len(graph.nodes) == 15
    assert browser.evaluate("window.featurekitModel.get('expanded')") is True

    assert requests == [(tmp_path / "lineage.html").as_uri()], "only the page itself may load"
    assert browser.evaluate("window.__violations") == []


def test_screenshot(graph: fk.LineageGraph, page: tuple[Any, list[str]], tmp_path: Path) -> None:
    browser, requests = page
    feature = "feature:driver_trip_stats@1:fare_per_km"
    browser.set_viewport_size({"width": 1560, "height": 640})  # every layer in view
    open_widget(browser, graph, tmp_path / "shot.html", expanded=True, selected=feature)
    assert browser.get_by_test_id("details-title").inner_text() == feature
    shot = tmp_path / "lineage-widget.png"
    browser.locator(".fk-lineage").screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("FEATUREKIT_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    assert all(u.startswith("file://") for u in requests)
