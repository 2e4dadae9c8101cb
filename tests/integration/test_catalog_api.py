"""The catalog's JSON API on a real store: what each page reads, name checks, limits, auth
shape, feature-detected sections, and the cost of the first page on 200 views."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from catalog_store import BASE, DRIVER, build_catalog_store
from fastapi.testclient import TestClient

import featurekit as fk
from featurekit.server import create_server
from featurekit.serving.app import Limits
from featurekit.ui import Catalog
from featurekit.ui.routes import create_ui_app


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_catalog_store(tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="module")
def client(built: dict[str, Any]) -> TestClient:
    return TestClient(create_ui_app(built["store"]))


def test_index_lists_views_with_features_tags_and_owner(client: TestClient, built: Any) -> None:
    body = client.get("/ui/api/index").json()
    assert body["sections"] == {"stats": True, "drift": True}
    views = {v["name"]: v for v in body["views"]}
    assert sorted(views) == ["driver_stats", "rider_loyalty"]
    stats = views["driver_stats"]
    assert (stats["latest"], stats["versions"], stats["owner"]) == (2, 2, "ana")
    assert stats["tags"] == {"team": "pricing", "owner": "ana"}
    assert stats["features"] == [
        {"name": "fare_scaled", "dtype": "Float64"},
        {"name": "fare_per_km", "dtype": "Float64"},
    ]
    assert stats["ttl_seconds"] == 7 * 86400
    assert views["rider_loyalty"]["owner"] == "growth"  # no owner tag: the team tag
    assert body["training_sets"][0]["id"] == built["training_set"]
    assert body["training_sets"][0]["names"] == ["pricing_train"]
    assert body["training_sets"][0]["views"] == ["driver_stats@1", "rider_loyalty@1"]
    assert body["models"][0]["name"] == "fare_model"


def test_a_view_shows_versions_with_reasons_runs_and_what_uses_it(
    client: TestClient, built: Any
) -> None:
    body = client.get("/ui/api/views/driver_stats", params={"version": 1}).json()
    assert (body["version"], body["latest"]) == (1, 2)
    assert [(v["version"], v["reason"], v["source_kept"]) for v in body["versions"]] == [
        (1, ["new"], True),
        (2, ["code"], True),
    ]
    assert [f["name"] for f in body["features"]] == ["fare_scaled", "fare_per_km"]
    assert [(r["mode"], r["rows_written"]) for r in body["runs"]] == [("full", 5)]
    assert body["freshness"]["materialized"] is True
    assert body["freshness"]["max_event"].startswith("2026-01-01T07:00:00")
    ts = built["training_set"]
    assert body["used_by"] == {
        "training_sets": [ts],
        "services": [],
        "models": ["model:fare_model@1"],
    }
    # statistics and check results the materialization recorded with the run
    stats = {r["feature"]: r for r in body["stats"]["rows"]}
    fare = stats["fare_scaled"]
    assert (fare["count"], fare["min"], fare["max"], fare["mean"]) == (5, 10.0, 40.0, 23.0)
    assert sum(fare["histogram_counts"]) == 5
    assert fare["run_id"] == body["runs"][-1]["run_id"]
    assert body["checks"]["recorded"] is True
    assert [(c["name"], c["passed"]) for c in body["checks"]["results"]] == [("unique", True)]
    latest = client.get("/ui/api/views/driver_stats").json()
    assert latest["version"] == 2 and latest["used_by"]["training_sets"] == []


def test_the_diff_between_two_versions_is_their_kept_code(client: TestClient) -> None:
    body = client.get("/ui/api/views/driver_stats/diff", params={"from": 1, "to": 2}).json()
    assert body["reason"] == ["code"]
    changed = [
        line for line in body["lines"] if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert changed == ["-<self>.factor = 1.0", "+<self>.factor = 2.0"]
    assert body["lines"][:2] == ["--- driver_stats@1", "+++ driver_stats@2"]


def test_lineage_is_centred_on_the_node_with_stale_marks(client: TestClient, built: Any) -> None:
    body = client.get("/ui/api/lineage", params={"node": "model:fare_model"}).json()
    ts = f"training_set:{built['training_set']}"
    assert body["state"]["graph"]["focus"] == "model:fare_model@1"
    assert body["stale"] == {
        "model:fare_model@1": [
            f"code: {ts} used view:driver_stats@1; view:driver_stats@2 is newer (changed: code)"
        ],
        ts: ["code: reads driver_stats@1; driver_stats@2 is newer (changed: code)"],
    }
    assert body["state"]["details"][ts]["lists"][0] == ["stale", body["stale"][ts]]
    assert [c.rsplit(":", 1)[1] for c in body["raw_columns"]] == ["distance_km", "fare"]


def test_a_training_set_still_rebuilds_until_a_pinned_table_is_gone(
    client: TestClient, built: Any, tmp_path: Path
) -> None:
    body = client.get("/ui/api/training-sets/pricing_train").json()
    assert body["id"] == built["training_set"] and body["rebuilds"] is True
    assert [(p["view"], p["version"], p["ok"]) for p in body["pinned"]] == [
        ("driver_stats", 1, True),
        ("rider_loyalty", 1, True),
    ]
    assert body["manifest"]["labels"]["rows"] == 3
    assert body["models"] == ["model:fare_model@1"]
    model = client.get("/ui/api/models/fare_model").json()
    assert model["versions"][0]["rebuilds"] is True
    assert model["versions"][0]["stale"] == body["stale"]

    copy = tmp_path / "copy"
    shutil.copytree(built["store"].root, copy)
    shutil.rmtree(copy / "features" / "driver_stats" / "v1")
    broken = TestClient(create_ui_app(fk.Store(copy, progress=False, online=False)))
    body = broken.get(f"/ui/api/training-sets/{built['training_set']}").json()
    assert body["rebuilds"] is False
    assert [p["ok"] for p in body["pinned"]] == [False, True]
    assert body["pinned"][0]["message"].startswith("Delta version 0 does not open")


@pytest.mark.parametrize(
    ("path", "status", "field", "message"),
    [
        ("/ui/api/views/no_such", 404, None, "no view named 'no_such' in this store."),
        ("/ui/api/views/bad name", 422, "view", "view name 'bad name' is not valid"),
        ("/ui/api/views/driver_stats?version=9", 404, None, "view 'driver_stats' has no version 9"),
        ("/ui/api/models/nope", 404, None, "no model named 'nope' in this store."),
        ("/ui/api/training-sets/nope", 404, None, "no training set named or with id 'nope'"),
        ("/ui/api/lineage?node=bogus", 422, "node", "node id 'bogus' does not parse"),
        ("/ui/api/views/" + "v" * 200, 422, "view", "view name 'vvvvvvvvv"),
        ("/ui/api/views/driver_stats/diff?from=a&to=2", 422, "from", "from: Input should be"),
    ],
)
def test_bad_names_get_the_servers_error_shape(
    client: TestClient, path: str, status: int, field: str | None, message: str
) -> None:
    response = client.get(path)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"].startswith(message)
    assert error.get("field") == field


def test_on_the_feature_server_the_catalog_has_the_servers_limits(built: Any) -> None:
    store = fk.Store(built["store"].root, progress=False, online="memory")
    app = create_server(store, limits=Limits(max_name_length=12))
    client = TestClient(app)
    assert client.get("/ui/api/index").status_code == 200
    page = client.get("/ui/")
    assert (
        page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    )
    response = client.get("/ui/api/views/driver_stats_long")
    assert response.status_code == 422
    assert response.json()["error"] == {
        "type": "ValidationError",
        "message": "view name 'driver_stats_long' is longer than 12 characters.",
        "field": "view",
    }
    assert str(built["store"].root) not in client.get("/ui/api/views/zzz").text


def test_a_store_without_statistics_says_they_are_not_recorded(built: Any) -> None:
    catalog = Catalog(_Plain(built["store"]))
    assert catalog.sections() == {"stats": False, "drift": False}
    view = catalog.view("driver_stats", 1)
    assert view["stats"] == {
        "recorded": False,
        "message": "statistics are not recorded by this store.",
    }
    assert catalog.drift("driver_stats", 1) == {
        "recorded": False,
        "message": "drift is not recorded by this store.",
    }


class _Plain:
    """A store as older featurekit releases have it: no statistics, no drift."""

    def __init__(self, store: fk.Store) -> None:
        self.root, self.registry, self.lineage = store.root, store.registry, store.lineage


class _StatsStore(fk.Store):
    """A store as the quality work will give it: statistics and drift."""

    def stats(self, view: str, version: int | None = None, run: str | None = None) -> Any:
        return pl.DataFrame({"feature": ["fare_scaled"], "count": [5], "histogram": [[1, 3, 1]]})

    def drift(self, view: str, reference: Any = None, current: Any = None) -> Any:
        class Report:
            def to_polars(self) -> pl.DataFrame:
                return pl.DataFrame({"feature": ["fare_scaled"], "metric": ["psi"], "value": [0.1]})

        return Report()


def test_statistics_and_drift_appear_when_the_store_records_them(built: Any) -> None:
    store = _StatsStore(built["store"].root, progress=False, online=False)
    client = TestClient(create_ui_app(store))
    assert client.get("/ui/api/index").json()["sections"] == {"stats": True, "drift": True}
    body = client.get("/ui/api/views/driver_stats", params={"version": 1}).json()
    assert body["stats"] == {
        "recorded": True,
        "rows": [{"feature": "fare_scaled", "count": 5, "histogram": [1, 3, 1]}],
    }
    drift = client.get("/ui/api/views/driver_stats/drift", params={"version": 1}).json()
    assert drift["reports"] == [
        {
            "training_set": built["training_set"],
            "rows": [{"feature": "fare_scaled", "metric": "psi", "value": 0.1}],
        }
    ]
    latest = client.get("/ui/api/views/driver_stats/drift").json()
    assert latest == {
        "recorded": False,
        "message": "no training set reads this version: there is no baseline.",
    }


def test_the_page_and_its_assets_come_from_the_package(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"
    page = client.get("/ui/").text
    assert 'src="static/catalog.js"' in page and "http" not in page.split("<body>")[0]
    widget = client.get("/ui/static/lineage.js")
    assert widget.status_code == 200 and widget.headers["content-type"].startswith(
        "text/javascript"
    )
    assert client.get("/ui/static/../routes.py").status_code == 404
    for name in ("catalog.js", "catalog.css", "lineage.css"):
        text = client.get(f"/ui/static/{name}").text
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text


@pytest.mark.slow
def test_first_page_on_200_views(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reported, not asserted: the first page on a store with 200 views, served from
    loopback by a real server (the page, then the index it reads), and a view's page."""
    folder = tmp_path / "data"
    folder.mkdir()
    frame = pl.DataFrame({"driver_id": [1], "event_ts": [BASE], "fare": [1.0]})
    frame.write_parquet(folder / "t.parquet")
    trips = fk.Source("trips", str(folder / "t.parquet"), timestamp="event_ts")
    store = fk.Store(tmp_path / "store", progress=False, online=False)

    def view_fn(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select("driver_id", "event_ts", "fare")

    for i in range(200):
        store.register(
            fk.feature_view(
                view_fn, entity=DRIVER, sources=[trips], name=f"view_{i:03d}", tags={"n": str(i)}
            )
        )
    import threading
    import urllib.request

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(create_ui_app(store), host="127.0.0.1", port=0, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}/ui"
        timings = []
        for path in ("/", "/api/index", "/api/views/view_199", "/api/lineage?node=view:view_199"):
            began = time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=30) as reply:
                body = reply.read()
            timings.append((path, (time.perf_counter() - began) * 1000))
            assert reply.status == 200
            if path == "/api/index":
                assert body.count(b'"name":"view_') == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    first = timings[0][1] + timings[1][1]
    with capsys.disabled():
        each = ", ".join(f"{path} {ms:.0f} ms" for path, ms in timings)
        print(f"\ncatalog, 200 views, loopback: first page {first:.0f} ms ({each})")


def test_every_asset_the_page_names_ships_in_the_wheel() -> None:
    """The page's files are package data: the wheel packages all of featurekit/, and every
    file the page or its modules name is served from the package."""
    import re
    import tomllib

    config = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    wheel = config["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["featurekit"] and "exclude" not in wheel
    from featurekit.ui.routes import page_assets

    assets = page_assets()
    page = assets["index.html"].decode()
    named = re.findall(r'(?:src|href)="static/([^"]+)"', page)
    named += re.findall(r'from "\./([^"]+)"', assets["catalog.js"].decode())
    assert sorted(set(named)) == ["catalog.css", "catalog.js", "lineage.css", "lineage.js"]
    assert set(named) <= set(assets)


def test_featurekit_ui_refuses_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from featurekit.cli import app

    result = CliRunner().invoke(app, ["ui", "--store", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert "is not a featurekit store" in result.output
    assert not (tmp_path / "nothing").exists()  # nothing created by accident
    assert "catalog" in CliRunner().invoke(app, ["--help"]).output


def test_featurekit_ui_refuses_a_reachable_host_without_insecure(built: Any) -> None:
    from typer.testing import CliRunner

    from featurekit.cli import app

    root = str(built["store"].root)
    result = CliRunner().invoke(app, ["ui", "--store", root, "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to serve the catalog on '0.0.0.0' without API keys" in result.output
    assert "featurekit serve --api-keys FILE" in " ".join(result.output.split())


# ---- behind the server's API keys ----------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(built: dict[str, Any]) -> dict[str, Any]:
    """The feature server with API keys: one key per view, one for everything."""
    from featurekit.serving.auth import ApiKeys, add_key

    path = built["store"].root.parent / "api-keys.json"
    made = {
        "stats": add_key(path, "stats", ["view:driver_stats"]),
        "loyalty": add_key(path, "loyalty", ["view:rider_loyalty"]),
        "all": add_key(path, "all", ["view:*"]),
    }
    store = fk.Store(built["store"].root, progress=False, online="memory")
    app = create_server(store, api_keys=ApiKeys.load(path))
    return {"client": TestClient(app), **made}


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_page_shell_is_open_and_the_api_needs_a_key(keyed: dict[str, Any]) -> None:
    client = keyed["client"]
    # a browser cannot send a key when it navigates: the shell (no store data) is open
    for path in ("/ui/", "/ui/static/catalog.js", "/ui/static/lineage.js"):
        assert client.get(path).status_code == 200, path
    for path in ("/ui/api/index", "/ui/api/views/driver_stats", "/ui/api/lineage"):
        reply = client.get(path)
        assert reply.status_code == 401, path
        assert reply.json()["error"]["type"] == "AuthenticationError"
    assert client.get("/ui/static/nope.js").status_code == 401  # only the shell is open
    assert client.get("/ui/api/index", headers=_as(keyed["all"])).status_code == 200


def test_a_key_sees_only_the_views_it_is_granted(keyed: dict[str, Any], built: Any) -> None:
    client, ts = keyed["client"], built["training_set"]
    index = client.get("/ui/api/index", headers=_as(keyed["loyalty"])).json()
    assert [v["name"] for v in index["views"]] == ["rider_loyalty"]
    # the training set also read driver_stats: hidden, and so is the model trained on it
    assert index["training_sets"] == [] and index["models"] == []
    full = client.get("/ui/api/index", headers=_as(keyed["all"])).json()
    assert [t["id"] for t in full["training_sets"]] == [ts]

    reply = client.get("/ui/api/views/driver_stats", headers=_as(keyed["loyalty"]))
    assert reply.status_code == 403
    assert reply.json()["error"] == {
        "type": "PermissionDeniedError",
        "message": "this API key is not granted view 'driver_stats'; a key needs "
        "'view:driver_stats' for it (featurekit keys add NAME --grant view:driver_stats).",
    }
    for path in (
        "/ui/api/views/driver_stats/diff?from=1&to=2",
        f"/ui/api/training-sets/{ts}",
        "/ui/api/models/fare_model",
        "/ui/api/lineage?node=model:fare_model",
    ):
        assert client.get(path, headers=_as(keyed["loyalty"])).status_code == 403, path
    mine = client.get("/ui/api/views/rider_loyalty", headers=_as(keyed["loyalty"])).json()
    assert mine["used_by"] == {"training_sets": [], "services": [], "models": []}

    def lineage(key: str) -> set[str]:
        params = {"node": "view:rider_loyalty"}
        body = client.get("/ui/api/lineage", params=params, headers=_as(key)).json()
        return {n["id"] for n in body["state"]["graph"]["nodes"]}

    everything = lineage(keyed["all"])
    assert {f"training_set:{ts}", "model:fare_model@1"} <= everything
    hidden = {n for n in everything if n.startswith(("training_set:", "model:"))}
    assert lineage(keyed["loyalty"]) == everything - hidden  # the source stays: it feeds
    whole = client.get("/ui/api/lineage", headers=_as(keyed["stats"])).json()["state"]["graph"]
    assert {n["name"] for n in whole["nodes"] if n["kind"] == "view"} == {"driver_stats"}
