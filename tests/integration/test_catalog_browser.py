"""The catalog page in a real browser: ``featurekit ui`` as a process, Debian's chromium
driven by Playwright. Every request the page makes is intercepted and recorded; anything
not on the loopback server fails the test. ``FEATUREKIT_UPDATE_SCREENSHOT=1`` also
refreshes docs/img/catalog.png."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from browser import CHROMIUM, RECORD_VIOLATIONS, chromium_context
from catalog_store import build_catalog_store

import featurekit as fk

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "img" / "catalog.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``featurekit ui --store ROOT`` running as its own process on a loopback port."""
    built = build_catalog_store(tmp_path_factory.mktemp("catalog"))
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", "from featurekit.cli import main; main()", "ui"]
    args = ["--store", str(built["store"].root), "--port", str(port)]
    process = subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ui/api/index", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield {"base": base, **built}
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


@pytest.fixture()
def browser(server: dict[str, Any]) -> Iterator[tuple[Any, list[str]]]:
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        context, profile = chromium_context(p, viewport={"width": 1360, "height": 900})

        def route(r: Any) -> None:
            url = r.request.url
            requests.append(url)
            r.continue_() if url.startswith(server["base"] + "/") else r.abort()

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
        outside = [u for u in requests if not u.startswith(server["base"] + "/")]
        assert outside == [], "the page asked for something off the machine"


def open_page(page: Any, server: dict[str, Any], route: str = "") -> None:
    """Load the page afresh at ``route`` (a hash alone would navigate inside the old one)."""
    page.goto("about:blank")
    page.goto(f"{server['base']}/ui/{route}")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)


def test_search_by_tag_as_you_type_then_open_with_the_keyboard(
    browser: tuple[Any, list[str]], server: dict[str, Any]
) -> None:
    page, requests = browser
    open_page(page, server)
    assert page.get_by_test_id("views").locator("tbody tr").count() == 2
    page.keyboard.press("/")  # focuses the search box from anywhere
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("growth")  # a tag value of rider_loyalty only
    # results follow the typing (each keystroke may render a step): wait for the last one
    expect(page.get_by_test_id("result-count")).to_have_text("1 feature found")
    results = page.get_by_test_id("results").locator("a")
    expect(results).to_have_count(1)
    assert results.first.locator(".what").inner_text() == "rider_loyalty:loyalty_km"
    page.fill("#q", "tier:gold")  # key:value form of a tag
    expect(page.locator("[data-result]")).to_have_count(1)
    page.fill("#q", "pricing")  # the other view's team tag: both its features
    expect(page.locator("[data-result]")).to_have_count(2)
    assert page.evaluate("location.hash") == "#/search/pricing"  # a shareable search
    assert page.locator("main").inner_text().splitlines()[-1].endswith("pricing model.")
    page.focus("#q")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused.startswith("driver_stats:fare_per_km")
    page.keyboard.press("Enter")
    row = page.wait_for_selector("[data-testid=focused-feature]")
    assert row.inner_text().startswith("fare_per_km")
    assert page.evaluate("location.hash") == "#/feature/driver_stats@2/fare_per_km"
    page.keyboard.press("ArrowDown")  # nothing breaks when there are no results to move in
    assert all(u.startswith(server["base"]) for u in requests)


def test_a_view_shows_its_versions_and_a_code_diff(
    browser: tuple[Any, list[str]], server: dict[str, Any]
) -> None:
    page, _ = browser
    open_page(page, server, "#/view/driver_stats")
    versions = page.get_by_test_id("versions").locator("tbody tr")
    assert versions.count() == 2
    assert versions.nth(0).inner_text().split("\t")[2] == "new"
    assert versions.nth(1).inner_text().split("\t")[2] == "code"
    features = page.get_by_test_id("features").inner_text()
    assert "fare_scaled" in features and "Float64" in features and "7d" in features
    assert page.get_by_test_id("runs").locator("tbody tr").first.inner_text().split("\t")[3] == "5"
    stats = page.locator("section[aria-labelledby=h-stats]")
    assert stats.locator("svg.hist").count() == 2  # one small histogram per feature
    assert "unique" in page.locator("section[aria-labelledby=h-checks]").inner_text()
    page.get_by_test_id("diff-2").click()
    page.wait_for_selector(".diff")
    diff = page.locator(".diff")
    assert diff.locator(".del").inner_text() == "-<self>.factor = 1.0"
    assert diff.locator(".add").inner_text() == "+<self>.factor = 2.0"
    assert page.evaluate("location.hash") == "#/view/driver_stats@2/diff/1/2"
    # the diff is a deep link: opening it afresh shows the same
    open_page(page, server, "#/view/driver_stats@2/diff/1/2")
    assert page.locator(".diff .add").inner_text() == "+<self>.factor = 2.0"
    assert page.evaluate("document.activeElement.id") == "h-diff"


def test_the_lineage_graph_renders_marks_stale_nodes_and_a_click_selects(
    browser: tuple[Any, list[str]], server: dict[str, Any]
) -> None:
    page, _ = browser
    open_page(page, server, "#/lineage/model:fare_model")
    page.wait_for_selector(".fk-node")
    drawn = {
        page.locator(".fk-node").nth(i).get_attribute("data-id")
        for i in range(page.locator(".fk-node").count())
    }
    ts = f"training_set:{server['training_set']}"
    assert {"model:fare_model@1", ts, "view:driver_stats@1", "view:rider_loyalty@1"} <= drawn
    stale = page.locator(".fk-node.fk-stale")
    assert {stale.nth(i).get_attribute("data-id") for i in range(stale.count())} == {
        "model:fare_model@1",
        ts,
    }
    page.locator(".fk-node[data-id='view:driver_stats@1']").click()
    node = page.locator(".fk-node[data-id='view:driver_stats@1']")
    assert "fk-selected" in (node.get_attribute("class") or "")
    assert page.get_by_test_id("details-title").inner_text() == "view:driver_stats@1"
    assert page.evaluate("location.hash") == "#/lineage/view%3Adriver_stats%401"
    page.get_by_test_id("selected-page").get_by_text("open its page").click()
    page.wait_for_selector("[data-testid=versions]")
    assert page.locator("h1").inner_text() == "driver_stats v1"
    # keyboard: a node takes focus with Tab and Enter selects it
    open_page(page, server, "#/lineage/model:fare_model")
    page.wait_for_selector(".fk-node")
    model = page.locator(".fk-node[data-id='model:fare_model@1']")
    model.focus()
    page.keyboard.press("Enter")
    assert "fk-selected" not in (model.get_attribute("class") or "")  # it was the focus: off
    page.keyboard.press("Enter")
    assert "fk-selected" in (model.get_attribute("class") or "")
    details = page.get_by_test_id("details").inner_text()
    assert "stale" in details and "view:driver_stats@2 is newer" in details
    assert page.evaluate("window.__violations") == []


def test_training_set_and_model_pages_say_whether_they_still_rebuild(
    browser: tuple[Any, list[str]], server: dict[str, Any]
) -> None:
    page, _ = browser
    open_page(page, server, "#/training-set/pricing_train")
    assert page.get_by_test_id("rebuilds").inner_text().startswith("yes")
    assert "driver_stats@2 is newer" in page.get_by_test_id("stale").inner_text()
    open_page(page, server, "#/model/fare_model")
    assert "version 1" in page.locator("main").inner_text()
    open_page(page, server, "#/view/no_such")
    assert "no view named 'no_such'" in page.get_by_role("alert").inner_text()


def test_screenshot(browser: tuple[Any, list[str]], server: dict[str, Any], tmp_path: Path) -> None:
    page, _ = browser
    open_page(page, server, "#/view/driver_stats@2/diff/1/2")
    page.wait_for_selector(".fk-node")
    shot = tmp_path / "catalog.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("FEATUREKIT_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


class _QualityStore(fk.Store):
    """A store with statistics and drift, shaped as the quality work records them."""

    def stats(self, view: str, version: int | None = None, run: Any = None) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "feature": ["fare_scaled"],
                "count": [5],
                "mean": [23.0],
                "histogram_edges": [[10.0, 20.0, 30.0, 40.0]],
                "histogram_counts": [[2, 1, 2]],
            }
        )

    def drift(self, view: str, reference: Any = None, current: Any = "serving") -> Any:
        frame = pl.DataFrame(
            {"feature": ["fare_scaled"], "metric": ["psi"], "value": [0.31], "drifted": [True]}
        )
        return type("Report", (), {"to_polars": lambda self: frame})()


def test_statistics_and_drift_render_when_recorded(
    browser: tuple[Any, list[str]], server: dict[str, Any]
) -> None:
    import threading

    import uvicorn

    from featurekit.ui.routes import create_ui_app

    store = _QualityStore(server["store"].root, progress=False, online=False)
    port = _free_port()
    config = uvicorn.Config(create_ui_app(store), host="127.0.0.1", port=port, log_level="error")
    quality = uvicorn.Server(config)
    thread = threading.Thread(target=quality.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not quality.started and time.monotonic() < deadline:
            time.sleep(0.05)
        page, _ = browser
        seen: list[str] = []

        def loopback_only(r: Any) -> None:  # this second server is on loopback too
            seen.append(r.request.url)
            local = r.request.url.startswith(f"http://127.0.0.1:{port}/")
            r.continue_() if local else r.abort()

        page.goto("about:blank")
        page.route("**/*", loopback_only)
        page.goto(f"http://127.0.0.1:{port}/ui/#/view/driver_stats@1")
        page.wait_for_selector("body[data-ready='true']")
        section = page.locator("section[aria-labelledby=h-stats]")
        assert section.locator("svg.hist rect").count() == 3
        row = section.locator("tbody tr").inner_text().split("\t")
        assert row[:6] == ["fare_scaled", "", "5", "", "", "23"]  # absent fields stay empty
        page.get_by_role(
            "button", name="Compute drift against the training sets that read it"
        ).click()
        drift = page.get_by_test_id("drift")
        drift.locator("table").wait_for()
        assert drift.locator("tbody tr").inner_text().split("\t") == [
            "fare_scaled",
            "psi",
            "0.3100",
            "true",
        ]
        assert seen and all(u.startswith(f"http://127.0.0.1:{port}/") for u in seen)
    finally:
        quality.should_exit = True
        thread.join(timeout=10)


def test_on_a_keyed_server_the_page_asks_for_the_key_once(
    browser: tuple[Any, list[str]], server: dict[str, Any]
) -> None:
    import threading

    import uvicorn

    from featurekit.server import create_server
    from featurekit.serving.auth import ApiKeys, add_key

    path = server["store"].root.parent / "browser-keys.json"
    key = add_key(path, "reader", ["view:rider_loyalty"])
    store = fk.Store(server["store"].root, progress=False, online="memory")
    port = _free_port()
    app = create_server(store, api_keys=ApiKeys.load(path))
    keyed = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=keyed.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not keyed.started and time.monotonic() < deadline:
            time.sleep(0.05)
        page, _ = browser
        sent: list[str | None] = []

        def loopback_only(r: Any) -> None:
            local = r.request.url.startswith(f"http://127.0.0.1:{port}/")
            if "/ui/api/" in r.request.url:
                sent.append(r.request.headers.get("authorization"))
            r.continue_() if local else r.abort()

        page.goto("about:blank")
        page.route("**/*", loopback_only)
        page.goto(f"http://127.0.0.1:{port}/ui/")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        page.get_by_role("textbox", name="API key").fill(key)
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-ready='true']")
        rows = page.get_by_test_id("views").locator("tbody tr")
        expect(rows).to_have_count(1)  # the key is granted one view
        assert rows.first.inner_text().startswith("rider_loyalty")
        page.goto(f"http://127.0.0.1:{port}/ui/#/view/driver_stats")
        page.wait_for_selector("body[data-ready='true']")
        assert "not granted view 'driver_stats'" in page.get_by_role("alert").inner_text()
        assert sent[0] is None and set(sent[1:]) == {f"Bearer {key}"}  # asked once, then kept
    finally:
        keyed.should_exit = True
        thread.join(timeout=10)
