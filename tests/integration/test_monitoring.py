"""Quality and drift metrics on a real server, the Grafana dashboard, `featurekit monitor`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import polars as pl
import pytest
from conftest import at
from test_online_support import served
from test_quality_store import checked_view, shifted_trips

import featurekit as fk

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "featurekit.json"


def monitor(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "featurekit.cli", "monitor", "--store", str(root), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )


@pytest.fixture
def drifting(tmp_path: Path, data_dir: Path) -> Path:
    """A store whose view has a warn-level check failing and a shifted recent window."""
    root = tmp_path / "store"
    store = fk.Store(root, progress=False)
    view = checked_view(data_dir, fk.Check(pl.col("fare") <= 45, name="fare_cap", severity="warn"))
    with pytest.warns(fk.FeatureKitWarning):
        store.materialize(view)
    shifted_trips(data_dir)
    with pytest.warns(fk.FeatureKitWarning):
        store.materialize(view)
    return root


def test_monitor_exits_1_when_a_feature_drifted(drifting: Path) -> None:
    # current: the shifted trips (after hour 40); reference: the 80 hours before
    done = monitor(drifting, "--window", "80h", "--json")
    assert done.returncode == 1, done.stderr
    rows = json.loads(done.stdout)
    flagged = {(r["feature"], r["metric"]) for r in rows if r["drifted"]}
    assert ("fare", "psi") in flagged


def test_monitor_exits_0_when_nothing_drifted(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    pl.DataFrame(
        {
            "driver_id": [i % 4 for i in range(60)],
            "event_ts": [at(i) for i in range(60)],
            "ingested_at": [at(i) for i in range(60)],
            "fare": [10.0 * (i % 3 + 1) for i in range(60)],
            "status": ["ok"] * 60,
        }
    ).write_parquet(folder / "trips.parquet")
    root = tmp_path / "store"
    fk.Store(root, progress=False).materialize(checked_view(folder))
    calm = monitor(root, "--window", "30h")  # both windows hold the same fare cycle
    assert calm.returncode == 0, calm.stdout + calm.stderr
    assert "fare_features" in calm.stdout and "yes" not in calm.stdout


def test_every_dashboard_metric_is_in_a_real_scrape(drifting: Path) -> None:
    fk.Store(drifting, progress=False).drift(
        "fare_features", reference=(at(0), at(50)), current=(at(100), at(120))
    )
    with served(drifting) as base:
        body = {"features": ["fare_features:fare"], "entities": {"driver_id": [1, 2, 9]}}
        assert httpx.post(f"{base}/v1/features", json=body, timeout=10).status_code == 200
        scrape = httpx.get(f"{base}/metrics", timeout=10).text
    samples = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line[:1] != "#"}
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\bfeaturekit_[a-z_]+", e)}
    assert len(queried) >= 9
    assert queried - samples == set()
    assert 'featurekit_feature_drifted{view="fare_features",feature="fare"} 1.000000' in scrape
    assert (
        'featurekit_view_validation_failures{view="fare_features",check="fare_cap",'
        'severity="warn"} 20.000000' in scrape
    )
