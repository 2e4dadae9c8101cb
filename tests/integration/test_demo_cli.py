"""The demo, the CLI and the rideshare example, end to end (in process and as real processes)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

import featurekit as fk
from featurekit.cli import app
from featurekit.demo import DAYS, MARKER, MODEL_NAME, TRAINING_SET_NAME, run_demo
from featurekit.demo_data import generate_rideshare

REPO_ROOT = Path(__file__).resolve().parents[2]
WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}
TS_ID = re.compile(r"^training set ([0-9a-f]{16}) saved as", re.MULTILINE)
KEY_LINES = (
    "featurekit demo in ",
    "driver_trip_stats  v1",
    "driver_rating      v1",
    "null rate per feature:",
    "rebuilt by id: identical",
    "model model:churn@1 logged",
)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=WIDE)


def _featurekit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("featurekit")
    if exe is None:
        pytest.skip("the featurekit console script is not installed (pip install -e .)")
    return subprocess.run(
        [exe, *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env={**os.environ, **WIDE},
        check=False,
    )


def _assert_store_layout(root: Path) -> None:
    assert (root / MARKER).is_file()
    assert (root / "store" / "_featurekit" / "store.json").is_file()
    for view in ("driver_trip_stats", "driver_rating"):
        assert (root / "store" / "features" / view / "v1" / "_delta_log").is_dir()
    for name in ("trips", "driver_ratings", "labels"):
        assert (root / "data" / f"{name}.parquet").is_file()


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))
    }


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo built by a real `featurekit demo` process, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("shared") / "demo"
    done = _featurekit("demo", "--root", str(root), "--no-progress")
    assert done.returncode == 0, done.stderr
    return root


# ---- data generator ---------------------------------------------------------------------
def test_generator_is_deterministic(tmp_path: Path) -> None:
    first = generate_rideshare(tmp_path / "a")
    second = generate_rideshare(tmp_path / "b")
    other_seed = generate_rideshare(tmp_path / "c", seed=8)
    assert set(first) == {"trips", "driver_ratings", "labels"}
    assert _file_hashes(tmp_path / "a") == _file_hashes(tmp_path / "b")
    assert _file_hashes(tmp_path / "a") != _file_hashes(tmp_path / "c")
    assert {p.name for p in first.values()} == {p.name for p in second.values()}
    assert all(p.parent == tmp_path / "c" for p in other_seed.values())


def test_generator_data_is_realistic(tmp_path: Path) -> None:
    paths = generate_rideshare(tmp_path)
    trips = pl.read_parquet(paths["trips"])
    ratings = pl.read_parquet(paths["driver_ratings"])
    labels = pl.read_parquet(paths["labels"])

    assert 18_000 <= trips.height <= 22_000
    assert trips.schema["event_ts"] == pl.Datetime("us")  # naive, meaning UTC
    assert trips.schema["ingested_at"] == pl.Datetime("us")
    assert trips["trip_id"].is_unique().all()
    assert trips["event_ts"].is_sorted()
    assert set(trips["status"].unique()) == {"completed", "cancelled"}
    delay_min = (trips["ingested_at"] - trips["event_ts"]).dt.total_minutes()
    assert (delay_min >= 0).all()
    quick = (delay_min <= 10).mean()
    assert isinstance(quick, float) and quick > 0.9  # mostly minutes...
    late = (delay_min >= 24 * 60).mean()
    assert isinstance(late, float) and 0.01 <= late <= 0.03  # ...about 2% a day or more late

    assert ratings.schema["rating"] == pl.Float64
    assert sorted(ratings["rating"].unique()) == [1.0, 2.0, 3.0, 4.0, 5.0]

    assert 4_500 <= labels.height <= 5_500
    assert labels.schema["churned"] == pl.Boolean
    assert labels.height - labels.unique().height > 0  # a few duplicate rows
    assert 0 < labels["driver_id"].null_count() < 50  # a few null keys
    first, last = trips["event_ts"].min(), trips["event_ts"].max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    label_ts = labels["label_ts"]
    assert (label_ts >= first + (last - first) / 3).all()  # the last two thirds...
    assert (label_ts <= last).all()
    assert (label_ts >= first + (last - first) * 0.9).any()  # ...spread out to the end


# ---- demo through the CLI ---------------------------------------------------------------
def test_demo_via_cli_runner(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = _invoke("demo", "--root", str(root), "--no-progress")
    assert result.exit_code == 0, result.output
    for line in KEY_LINES:
        assert line in result.output
    assert f"saved as {TRAINING_SET_NAME!r}" in result.output
    _assert_store_layout(root)
    store = fk.Store(root / "store")
    assert store.views() == ["driver_rating", "driver_trip_stats"]
    [recorded] = store.training_sets()
    assert recorded["names"] == [TRAINING_SET_NAME]
    assert TS_ID.search(result.output) is not None
    assert TS_ID.search(result.output).group(1) == recorded["id"]  # type: ignore[union-attr]


def test_demo_with_progress_bars(tmp_path: Path) -> None:
    result = _invoke("demo", "--root", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert "rebuilt by id: identical" in result.stdout


def test_run_demo_returns_the_facts(tmp_path: Path) -> None:
    lines: list[str] = []
    facts = run_demo(tmp_path / "demo", progress=False, echo=lines.append)
    assert facts["rebuilt_identical"] is True
    assert set(facts["views"]) == {"driver_trip_stats", "driver_rating"}
    assert facts["views"]["driver_trip_stats"]["rows_written"] > 15_000
    assert facts["views"]["driver_trip_stats"]["version"] == 1
    assert facts["training_set_name"] == TRAINING_SET_NAME
    assert facts["rows"] == pl.read_parquet(facts["data"]["labels"]).height
    assert set(facts["null_rates"]) == {
        "fare",
        "distance_km",
        "fare_per_km",
        "is_completed",
        "rating",
    }
    assert all(0.0 <= rate < 0.2 for rate in facts["null_rates"].values())
    assert "rebuilt by id: identical" in lines
    rebuilt = fk.Store(facts["store"]).training_set_by_id(TRAINING_SET_NAME)
    assert rebuilt.id == facts["training_set_id"]
    [model] = fk.Store(facts["store"]).models(MODEL_NAME)
    assert model.id == facts["model"] == "model:churn@1"
    assert model.training_set == facts["training_set_id"]
    assert 0.5 < model.metrics["accuracy"] <= 1.0


def test_demo_data_ends_at_the_given_date_and_is_deterministic_for_it(tmp_path: Path) -> None:
    day, root = date(2026, 1, 10), tmp_path / "demo"
    quiet: Any = lambda _: None  # noqa: E731
    first = run_demo(root, progress=False, echo=quiet, today=day)
    assert first["period"] == ("2025-12-11", "2026-01-09")
    trips = pl.read_parquet(first["data"]["trips"])
    midnight = datetime(2026, 1, 10)
    assert midnight - timedelta(hours=6) <= trips["event_ts"].max() < midnight  # type: ignore[operator]
    assert trips["event_ts"].min() >= midnight - timedelta(days=DAYS)  # type: ignore[operator]

    again = run_demo(root, progress=False, echo=quiet, today=day)  # same day: same everything
    assert again["training_set_id"] == first["training_set_id"]
    later = run_demo(root, progress=False, echo=quiet, today=day + timedelta(days=1))
    assert later["training_set_id"] != first["training_set_id"]
    shifted = pl.read_parquet(later["data"]["trips"])
    assert shifted["event_ts"].equals(trips["event_ts"] + timedelta(days=1))


def test_demo_store_serves_fresh_values_now(demo_root: Path) -> None:
    """`featurekit demo` then `featurekit serve`: the values are live, not long expired."""
    store = fk.Store(demo_root / "store", progress=False)
    drivers = list(range(1, 201))
    online = store.get_online_features(
        ["driver_trip_stats:fare", "driver_rating:rating"],
        {"driver_id": drivers},
        with_metadata=True,
    )
    statuses = online["driver_trip_stats__status"].value_counts().to_dicts()
    assert online["driver_trip_stats__status"].to_list().count("present") > 150, statuses
    assert online["driver_rating__status"].to_list().count("present") > 150
    # Independently: driver 1's latest trip known now, within the 7-day TTL.
    now = datetime.now(UTC).replace(tzinfo=None)
    trips = pl.read_parquet(demo_root / "data" / "trips.parquet")
    latest = (
        trips.filter(
            (pl.col("driver_id") == 1)
            & (pl.col("event_ts") <= now)
            & (pl.col("ingested_at") <= now)
            & (pl.col("event_ts") > now - timedelta(days=7))
        )
        .sort("event_ts", "ingested_at")
        .tail(1)
    )
    assert latest.height == 1
    assert online["fare"][0] == latest["fare"].item() and online["fare"][0] is not None
    assert online["rating"][0] is not None


@pytest.mark.slow
def test_featurekit_serve_on_the_demo_store_answers_with_values(demo_root: Path) -> None:
    """The real pair of commands a newcomer runs: `featurekit demo`, then `featurekit serve`."""
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = str(demo_root / "store")
    server = subprocess.Popen(
        [sys.executable, "-m", "featurekit.cli", "serve", "--store", store, "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        body = {
            "features": ["driver_trip_stats:fare", "driver_rating:rating"],
            "entities": {"driver_id": [1, 2, 3]},
            "with_metadata": True,
        }
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/v1/features", json=body, timeout=10)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert reply.status_code == 200, reply.text
        columns = reply.json()["columns"]
        assert columns["driver_trip_stats__status"] == ["present"] * 3
        assert columns["driver_rating__status"] == ["present"] * 3
        assert all(isinstance(v, float) for v in columns["fare"] + columns["rating"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_lineage_help_examples_run_on_the_demo_store(demo_root: Path) -> None:
    shown = " ".join(_invoke("lineage", "--help").stdout.split())
    examples = re.findall(r"\b(?:model|view|training_set|feature):[\w@:]*\w", shown)
    assert {"model:churn", "view:driver_trip_stats@1", "training_set:rideshare_churn"} <= set(
        examples
    )
    for node in examples:
        result = _invoke("lineage", node, "--store", str(demo_root / "store"), "--depth", "1")
        assert result.exit_code == 0, (node, result.output)
        assert result.stdout.startswith(node.split(":")[0] + ":"), result.stdout
    command = re.search(r"featurekit (lineage \S+ --store \S+)", shown)
    assert command is not None
    args = command.group(1).replace("./featurekit-demo", str(demo_root)).split()
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "model:churn@1"


@pytest.mark.slow
def test_demo_as_a_process_twice_gives_the_same_training_set(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    first = _featurekit("demo", "--root", str(root), "--no-progress")
    assert first.returncode == 0, first.stderr
    for line in KEY_LINES:
        assert line in first.stdout
    _assert_store_layout(root)
    data_hashes = _file_hashes(root / "data")
    (root / "store" / "leftover.txt").write_text("from the first run")

    second = _featurekit("demo", "--root", str(root), "--no-progress")
    assert second.returncode == 0, second.stderr
    _assert_store_layout(root)
    assert not (root / "store" / "leftover.txt").exists()  # the old demo was wiped first
    assert _file_hashes(root / "data") == data_hashes
    ids = [TS_ID.search(run.stdout) for run in (first, second)]
    assert ids[0] is not None and ids[1] is not None
    assert ids[0].group(1) == ids[1].group(1)
    assert len(fk.Store(root / "store").training_sets()) == 1


@pytest.mark.parametrize("via", ["runner", "process"])
def test_demo_refuses_a_non_demo_folder(tmp_path: Path, via: str) -> None:
    root = tmp_path / "precious"
    root.mkdir()
    (root / "thesis.tex").write_text("do not delete")
    if via == "runner":
        result = _invoke("demo", "--root", str(root), "--no-progress")
        code, err = result.exit_code, result.stderr
    else:
        done = _featurekit("demo", "--root", str(root), "--no-progress")
        code, err = done.returncode, done.stderr
    assert code == 1
    assert "refusing" in err and "not empty" in err and str(root) in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert (root / "thesis.tex").read_text() == "do not delete"
    assert sorted(p.name for p in root.iterdir()) == ["thesis.tex"]


def test_demo_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    result = _invoke("demo", "--root", str(target), "--no-progress")
    assert result.exit_code == 1
    assert "is a file" in result.stderr


# ---- read-only commands -----------------------------------------------------------------
def test_views_lists_the_views(demo_root: Path) -> None:
    result = _invoke("views", "--store", str(demo_root / "store"))
    assert result.exit_code == 0, result.output
    for text in ("driver_trip_stats", "driver_rating", "fare_per_km", "rating", "7d", "30d"):
        assert text in result.stdout


@pytest.mark.slow
def test_views_and_versions_as_a_process(demo_root: Path) -> None:
    views = _featurekit("views", "--store", str(demo_root / "store"))
    assert views.returncode == 0, views.stderr
    assert "driver_trip_stats" in views.stdout and "driver_rating" in views.stdout
    versions = _featurekit("versions", "driver_rating", "--store", str(demo_root / "store"))
    assert versions.returncode == 0, versions.stderr
    assert "v1" in versions.stdout and "new" in versions.stdout


def test_versions_lists_fingerprint_and_reason(demo_root: Path) -> None:
    store = fk.Store(demo_root / "store")
    [record] = store.versions("driver_trip_stats")
    result = _invoke("versions", "driver_trip_stats", "--store", str(demo_root / "store"))
    assert result.exit_code == 0, result.output
    for header in ("version", "fingerprint", "created", "why changed"):
        assert header in result.stdout
    assert "v1" in result.stdout
    assert record.fingerprint[:12] in result.stdout
    assert "new" in result.stdout


def test_training_sets_lists_the_saved_set(demo_root: Path) -> None:
    [recorded] = fk.Store(demo_root / "store").training_sets()
    result = _invoke("training-sets", "--store", str(demo_root / "store"))
    assert result.exit_code == 0, result.output
    assert recorded["id"] in result.stdout
    assert TRAINING_SET_NAME in result.stdout
    assert "driver_trip_stats@1" in result.stdout


def test_unknown_view_is_a_one_line_error(demo_root: Path) -> None:
    result = _invoke("versions", "driver_trip_stat", "--store", str(demo_root / "store"))
    assert result.exit_code == 1
    assert "driver_trip_stat" in result.stderr and "Did you mean" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_store_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-store"
    for args in (["views"], ["versions", "x"], ["training-sets"]):
        result = _invoke(*args, "--store", str(missing))
        assert result.exit_code == 1, result.output
        assert "not a featurekit store" in result.stderr
    assert not missing.exists()


def test_help_lists_the_commands() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("demo", "views", "versions", "training-sets"):
        assert command in result.stdout


COMMANDS = ("demo", "views", "versions", "training-sets", "lineage", "optimize", "serve")
PYTHON_TYPE = re.compile(r"<(bool|str|int|float|path|list\[[^>]*\])>(\.\.\.)?")


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_shows_metavars_not_python_types(command: str) -> None:
    result = _invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert PYTHON_TYPE.search(result.stdout) is None, result.stdout
    help_line = next(ln for ln in result.stdout.splitlines() if "--help" in ln)
    assert re.search(r"--help\s+Show this message and exit\.", help_line), help_line
    if command:
        assert re.search(r"--(store\s+-s\s+ROOT|root\s+PATH)\s", result.stdout), result.stdout


def test_help_of_flags_and_repeated_arguments() -> None:
    demo = _invoke("demo", "--help").stdout
    assert re.search(r"--progress\s+--no-progress\s+Show progress bars\.", demo), demo
    optimize = _invoke("optimize", "--help").stdout
    assert "[VIEW...]" in optimize and re.search(r"VIEW\.\.\.\s+View name\(s\)", optimize)
    serve = _invoke("serve", "--help").stdout
    assert re.search(r"--definitions\s+-d\s+TEXT\s", serve), serve
    assert re.search(r"--port\s+INTEGER\s", serve), serve


# ---- the tutorial -----------------------------------------------------------------------
@pytest.mark.slow
def test_rideshare_example_runs_twice(tmp_path: Path) -> None:
    script = REPO_ROOT / "examples" / "rideshare.py"
    runs = [
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / "example")],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
            check=False,
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "rebuilt by id: identical" in run.stdout
    assert "materialized driver_trip_stats v1: full" in runs[0].stdout
    assert "materialized driver_trip_stats v1: noop" in runs[1].stdout
    ids = [re.search(r"training set ([0-9a-f]{16}) rebuilt", run.stdout) for run in runs]
    assert ids[0] is not None and ids[1] is not None
    assert ids[0].group(1) == ids[1].group(1)
    assert (tmp_path / "example" / "store" / "_featurekit" / "store.json").is_file()
