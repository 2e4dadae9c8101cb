"""Every tutorial notebook runs top to bottom in a real Jupyter kernel, and says what it should.

Also: ``ts.explain(row)`` against a real store agrees with the training set, row by row.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import featurekit as fk
from featurekit.demo_data import generate_rideshare

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"


def run_notebook(name: str, workdir: Path) -> list[dict[str, Any]]:
    """Execute a notebook in a fresh ipykernel (cwd ``workdir``); return its code cells."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        book,
        kernel_name="python3",
        timeout=180,
        startup_timeout=60,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env={"FEATUREKIT_PROGRESS": "1"})  # bars on, as a user would have them
    return [c for c in book.cells if c.cell_type == "code"]


def text(cell: dict[str, Any]) -> str:
    """Everything a cell printed or displayed as text/plain."""
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o["text"])
        elif "data" in o and "text/plain" in o["data"] and WIDGET not in o["data"]:
            out.append(o["data"]["text/plain"])
    return "".join(out)


def html(cell: dict[str, Any]) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.get("outputs", []))


def mimes(cell: dict[str, Any]) -> set[str]:
    return {m for o in cell.get("outputs", []) for m in o.get("data", {})}


def cell_with(cells: list[dict[str, Any]], snippet: str) -> dict[str, Any]:
    found = [c for c in cells if snippet in c.source]
    assert found, f"no cell contains {snippet!r}"
    return found[0]


def test_notebooks_are_committed_without_outputs() -> None:
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == [
        "features_and_versions",
        "online_and_lineage",
        "quality_and_drift",
        "quickstart",
        "training_sets_and_pit_explain",
    ]
    for path in NOTEBOOKS.glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            assert cell.get("outputs", []) == [], f"{path.name}: outputs must be stripped"
            assert cell.get("execution_count") is None, f"{path.name}: execution counts stripped"


def test_what_the_notebooks_write_is_ignored_by_git() -> None:
    """Run from notebooks/ (as Jupyter does), the tutorials' data and stores stay untracked."""
    import shutil
    import subprocess

    repo = NOTEBOOKS.parent
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    written: set[str] = set()
    pattern = re.compile(r"""(?:Path|Store|export_html\(\w+,)\(?\s*f?["']([^"'{]+)""")
    for path in NOTEBOOKS.glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            written.update(pattern.findall("".join(cell["source"])))
    assert {"quickstart-data", "quickstart-store", "online-data/", "lineage.html"} <= written
    for name in sorted(written):
        folder = "" if "." in name or name.endswith("/") else "/"  # git matches dirs by the slash
        done = subprocess.run(
            ["git", "-C", str(repo), "check-ignore", "-q", f"notebooks/{name}{folder}"],
            check=False,
        )
        assert done.returncode == 0, f"notebooks/{name} is not ignored by .gitignore"


@pytest.mark.slow
def test_quickstart(tmp_path: Path) -> None:
    cells = run_notebook("quickstart", tmp_path)
    assert "TrainingSet" in html(cell_with(cells, "ts = store.training_set"))
    assert "version=1" in text(cell_with(cells, 'store.versions("driver_fares")'))
    store_html = html(cells[-2])
    assert "featurekit Store" in store_html and "driver_fares" in store_html
    lineage = cells[-1]
    assert WIDGET in mimes(lineage), "in a kernel, the lineage displays as the widget"
    assert "<svg" in html(lineage), "with the static SVG as text/html fallback"


@pytest.mark.slow
def test_quality_and_drift(tmp_path: Path) -> None:
    cells = run_notebook("quality_and_drift", tmp_path)
    refused = text(cell_with(cells, "except fk.ValidationError"))
    assert "refused: [('fare_non_negative', 1)]" in refused and "versions: []" in refused
    quarantined = html(cell_with(cells, 'store.quarantine("driver_fares")'))
    assert "-8.0" in quarantined and "fare_non_negative" in quarantined
    verdicts = text(cell_with(cells, "result = store.materialize"))
    assert "('fare_non_negative', True)" in verdicts and "('unique', True)" in verdicts
    stats = html(cell_with(cells, 'store.stats("driver_fares")'))
    assert "fk-stats" in stats and "<svg" in stats  # a table with a histogram per feature
    assert "fk-stats" in html(cell_with(cells, "store.stats(ts)"))
    drift = cell_with(cells, "report = store.drift")
    assert "drifted: ('fare',)" in text(drift)
    assert "fk-drift" in html(drift) and "fare (drifted)" in html(drift)
    assert "SkewReport(values=5, differences=0)" in text(cell_with(cells, "served.skew()"))


@pytest.mark.slow
def test_features_and_versions(tmp_path: Path) -> None:
    cells = run_notebook("features_and_versions", tmp_path)
    first = cell_with(cells, "first = store.materialize")
    assert text(first).startswith("v1 full rows=")
    assert WIDGET in mimes(first), "tqdm.auto draws the progress bar as a notebook widget"
    assert "stderr" not in {o.get("name") for o in first["outputs"]}, "no text bar in Jupyter"
    assert WIDGET not in mimes(cell_with(cells, "progress=False")), "progress=False: no bar"
    assert text(cell_with(cells, "again = store.materialize")).strip() == "v1 noop"
    second = text(cell_with(cells, "second = store.materialize"))
    assert second.startswith("v2 full rows=")
    assert "'new'" in second and "code" in second  # why v2 exists
    card = html(cell_with(cells, "fkn.view_card"))
    assert "fare_per_km" in card and "Float64" in card and "current definition" in card
    assert "v1" in card and "v2" in card
    store_html = html(cells[-1])
    assert "driver_rating" in store_html and "driver_trips" in store_html
    assert "last materialized" in store_html and "(full, Delta v0)" in store_html


@pytest.mark.slow
def test_training_sets_and_pit_explain(tmp_path: Path) -> None:
    cells = run_notebook("training_sets_and_pit_explain", tmp_path)
    ts_html = html(cell_with(cells, "ts = store.training_set"))
    assert "null rate" in ts_html and "<svg" in ts_html  # null bars and histograms
    explained = cell_with(cells, "ex = ts.explain(100)")
    assert "chosen" in text(explained) and "PIT explain" in html(explained)
    late = cell_with(cells, "late_row = next(")
    assert "'not yet known'" in text(late) and "not yet known" in html(late)
    assert "became known at" in html(late)
    changed = re.search(r"differ between knowledge and event mode: (\d+)", text(cells[-2]))
    assert changed is not None and int(changed.group(1)) > 0
    assert text(cells[-1]).strip() == "identical: True"


@pytest.mark.slow
def test_online_and_lineage(tmp_path: Path) -> None:
    cells = run_notebook("online_and_lineage", tmp_path)
    assert "online == offline: True" in text(cell_with(cells, "offline = store.training_set"))
    online = cell_with(cells, "online = store.get_online_features")
    assert "not_found" in text(online) and "present" in text(online)
    graph = cell_with(cells, "graph = store.lineage")
    assert WIDGET in mimes(graph) and "<svg" in html(graph)
    assert "column:trips@" in text(cell_with(cells, "graph.raw_columns"))
    assert WIDGET in mimes(cell_with(cells, "widget = fkn.LineageWidget"))
    assert text(cell_with(cells, "fkn.export_html")).strip() == "True True"
    assert "model:churn@1" in html(cells[-1]) or "churn" in text(cells[-1])
    assert (tmp_path / "lineage.html").exists()


# ---- explain against the kernel, on a real store -----------------------------------------------
@pytest.fixture(scope="module")
def demo_ts(tmp_path_factory: pytest.TempPathFactory) -> fk.TrainingSet:
    root = tmp_path_factory.mktemp("explain")
    data = generate_rideshare(root / "data", drivers=20, riders=100, days=20)
    store = fk.Store(root / "store", progress=False)
    driver = fk.Entity("driver", keys=["driver_id"])
    trips = fk.Source("trips", data["trips"], timestamp="event_ts", created_timestamp="ingested_at")
    view = fk.feature_view(
        name="trips_v",
        entity=driver,
        sources=[trips],
        ttl="2d",
        sql="SELECT driver_id, event_ts, ingested_at, fare FROM trips",
    )
    store.materialize(view)
    labels = pl.read_parquet(data["labels"])
    return store.training_set(labels, features=["trips_v:fare"], timestamp="label_ts")


def test_explain_agrees_with_the_training_set_on_every_row(demo_ts: fk.TrainingSet) -> None:
    frame = demo_ts.to_polars()
    seen: set[str] = set()
    for row in range(frame.height):
        view = demo_ts.explain(row).view("trips_v")
        statuses = view.candidates["status"].to_list()
        seen.update(statuses)
        assert statuses.count("chosen") == (0 if view.chosen is None else 1)
        if view.chosen is None:
            assert frame["fare"][row] is None
            continue
        chosen = view.candidates.filter(pl.col("status") == "chosen")
        assert chosen["fare"].item() == frame["fare"][row] == view.values["fare"]
        # no passed-over eligible row ranks above the chosen one
        eligible = view.candidates.filter(pl.col("status").is_in(["lost tie", "older"]))
        assert (eligible["event_ts"] <= chosen["event_ts"].item()).all()
    assert {"chosen", "older", "future", "outside ttl", "not yet known"} <= seen


def test_explain_errors_and_null_keys(demo_ts: fk.TrainingSet) -> None:
    with pytest.raises(fk.DefinitionError, match="out of range"):
        demo_ts.explain(len(demo_ts))
    frame = demo_ts.to_polars()
    nulls = frame.with_row_index().filter(pl.col("driver_id").is_null())["index"].to_list()
    if nulls:
        view = demo_ts.explain(int(nulls[0])).view("trips_v")
        assert view.candidates.height == 0 and view.chosen is None
    assert demo_ts.explain(-1).row == len(demo_ts) - 1
