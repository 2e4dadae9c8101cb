"""`featurekit doctor` on a healthy store and on stores damaged the ways real ones get damaged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

import featurekit as fk
from featurekit.cli import app
from featurekit.doctor import check_store

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5)


def _rows(n: int, shift: float = 0.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "driver_id": [i % 5 for i in range(n)],
            "event_ts": [T0 + timedelta(minutes=i) for i in range(n)],
            "fare": [float(i) + shift for i in range(n)],
        }
    )


def _build(root: Path) -> tuple[fk.Store, str]:
    """A small store: one view (two Delta versions), one saved training set, one model."""
    store = fk.Store(root, progress=False, online=False)
    driver = fk.Entity("driver", keys=["driver_id"])
    source = fk.Source("trips", _rows(50), timestamp="event_ts")
    view = fk.feature_view(
        name="fares",
        entity=driver,
        sources=[source],
        sql="SELECT driver_id, event_ts, fare FROM trips",
    )
    store.materialize(view)
    labels = pl.DataFrame({"driver_id": [1, 2, 3], "label_ts": [T0 + timedelta(hours=2)] * 3})
    ts = store.training_set(labels, features=["fares:fare"], timestamp="label_ts")
    ts.save("small")
    store.log_model("churn", training_set=ts, model="models:/churn/1")
    return store, ts.id


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, str]:
    store, ts_id = _build(tmp_path / "store")
    return store.root, ts_id


def _doctor(root: Path) -> Any:
    return CliRunner().invoke(app, ["doctor", "--store", str(root)], env={"COLUMNS": "300"})


def _problems(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if "PROBLEM" in line]


def _data_file(table: Path) -> Path:
    [first, *_] = sorted(table.glob("*.parquet"))
    return first


def test_healthy_store(built: tuple[Path, str]) -> None:
    root, ts_id = built
    result = _doctor(root)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"featurekit doctor: {root.resolve()}"
    assert lines[-1].startswith("healthy: ") and lines[-1].endswith(" checks, no problems.")
    assert _problems(result.stdout) == []
    assert "  ok       view fares v1: Delta table reads in full at version 0 (50 rows)" in lines
    assert (
        f"  ok       training set {ts_id} (small) reads fares@1: "
        "pinned Delta version 0 reads in full (50 rows)"
    ) in lines
    assert f"  ok       training set {ts_id} (small) labels: " in result.stdout
    assert "  ok       models: every entry parses (1)" in lines
    assert check_store(root).healthy


def test_truncated_parquet_file(built: tuple[Path, str]) -> None:
    root, ts_id = built
    data = _data_file(root / "features" / "fares" / "v1")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    result = _doctor(root)
    assert result.exit_code == 1, result.output
    problems = _problems(result.stdout)
    assert len(problems) == 2, problems
    assert problems[0].startswith("PROBLEM  view fares v1: ")
    assert problems[1].startswith(f"PROBLEM  training set {ts_id} (small) reads fares@1: ")
    assert all("features/fares/v1" in p for p in problems)
    assert result.stdout.splitlines()[-1].startswith("2 problems found in ")
    assert "Traceback" not in result.output


def test_truncated_parquet_file_as_a_process(built: tuple[Path, str]) -> None:
    """A Rust panic in the reader must not escape as a traceback from the real command."""
    root, _ = built
    data = _data_file(root / "features" / "fares" / "v1")
    data.write_bytes(data.read_bytes()[:100])
    done = subprocess.run(
        [sys.executable, "-m", "featurekit.cli", "doctor", "--store", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "300"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert len(_problems(done.stdout)) == 2


def test_garbled_delta_log(built: tuple[Path, str]) -> None:
    root, _ = built
    [commit] = sorted((root / "features" / "fares" / "v1" / "_delta_log").glob("*.json"))
    commit.write_text('{"commitInfo": {"timestamp": 1')  # cut mid-write
    result = _doctor(root)
    assert result.exit_code == 1, result.output
    problems = _problems(result.stdout)
    assert any(p.startswith("PROBLEM  view fares v1: ") for p in problems), problems
    assert any(" reads fares@1: " in p for p in problems), problems
    assert all("features/fares/v1" in p for p in problems if "fares" in p)


def test_missing_delta_log(built: tuple[Path, str]) -> None:
    root, _ = built
    shutil.rmtree(root / "features" / "fares" / "v1" / "_delta_log")
    result = _doctor(root)
    assert result.exit_code == 1, result.output
    [view_problem] = [p for p in _problems(result.stdout) if "view fares v1" in p]
    assert "holds files but no readable Delta log (_delta_log/)" in view_problem


def test_broken_registry_record(built: tuple[Path, str]) -> None:
    root, _ = built
    record = root / "_featurekit" / "views" / "fares" / "v1.json"
    record.write_text(record.read_text()[:40])
    result = _doctor(root)
    assert result.exit_code == 1, result.output
    problem, lineage = _problems(result.stdout)  # lineage merges the registry, so it fails too
    assert problem.startswith("PROBLEM  view fares: registry file ")
    assert "'_featurekit/views/fares/v1.json'" in problem and "cannot be read" in problem
    assert lineage.startswith("PROBLEM  lineage records: registry file ")


def test_registry_record_with_missing_fields(built: tuple[Path, str]) -> None:
    root, ts_id = built
    manifest = root / "training_sets" / ts_id / "manifest.json"
    manifest.write_text(json.dumps({"id": ts_id}))
    result = _doctor(root)
    assert result.exit_code == 1, result.output
    problems = _problems(result.stdout)
    assert any(
        p.startswith(
            f"PROBLEM  training set {ts_id} (small): training-set manifest "
            f"'training_sets/{ts_id}/manifest.json' is damaged: "
        )
        for p in problems
    ), problems


def test_pinned_delta_version_that_no_longer_exists(tmp_path: Path) -> None:
    """The view's latest version reads fine; the version a training set pinned is gone."""
    store, ts_id = _build(tmp_path / "store")
    table = store.root / "features" / "fares" / "v1"
    pinned_file = _data_file(table)
    store.materialize(
        fk.feature_view(
            name="fares",
            entity=fk.Entity("driver", keys=["driver_id"]),
            sources=[fk.Source("trips", _rows(50), timestamp="event_ts")],
            sql="SELECT driver_id, event_ts, fare FROM trips",
        ),
        full_refresh=True,
    )
    pinned_file.unlink()  # what a vacuum of old files does
    result = _doctor(store.root)
    assert result.exit_code == 1, result.output
    [problem] = _problems(result.stdout)
    assert problem.startswith(f"PROBLEM  training set {ts_id} (small) reads fares@1: ")
    assert pinned_file.name in problem  # the file a rebuild would miss
    assert "  ok       view fares v1: Delta table reads in full at version 1 (50 rows)" in (
        result.stdout.splitlines()
    )


def test_registered_but_never_materialized_is_a_note(tmp_path: Path) -> None:
    store = fk.Store(tmp_path / "store", progress=False, online=False)
    view = fk.feature_view(
        name="later",
        entity=fk.Entity("driver", keys=["driver_id"]),
        sources=[fk.Source("trips", _rows(5), timestamp="event_ts")],
        sql="SELECT driver_id, event_ts, fare FROM trips",
    )
    store.register(view)
    result = _doctor(store.root)
    assert result.exit_code == 0, result.output
    assert "  note     view later v1: registered, no data yet (never materialized)" in (
        result.stdout.splitlines()
    )


def test_not_a_store_is_a_one_line_error(tmp_path: Path) -> None:
    result = _doctor(tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "is not a featurekit store" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists()


def test_garbled_store_marker(built: tuple[Path, str]) -> None:
    root, _ = built
    (root / "_featurekit" / "store.json").write_text("{")
    result = _doctor(root)
    assert result.exit_code == 1, result.output
    [problem] = _problems(result.stdout)
    assert problem.startswith("PROBLEM  _featurekit/store.json: registry file ")
