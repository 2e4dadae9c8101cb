"""Features as code, end to end through real ``featurekit`` processes on a scaffolded project:
init, plan (exit codes, reasons, diffs, --check), apply (and its refusal when the store
moved), materialize (idempotent, concurrent), ls/show, and fresh-process rebuilds of
training sets whose on-demand code comes from the definitions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from featurekit.project.scaffold import FILES, example_trips, scaffold

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "FEATUREKIT_PROGRESS": "0"}


def fk(project: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """Run ``featurekit ARGS`` in ``project`` as a user would; assert its exit code."""
    done = subprocess.run(
        [sys.executable, "-m", "featurekit.cli", *args],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check is not None:
        assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
    return done


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    fk(tmp_path, "init", str(folder))
    return folder


def edit(project: Path, old: str, new: str) -> None:
    path = project / "features.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_init_writes_a_project_whose_own_tests_pass(project: Path) -> None:
    for relative in FILES:
        assert (project / relative).is_file(), relative
    assert (project / "featurekit.toml").read_text().splitlines()[2:] == [
        'store = "store"',
        'definitions = "features.py"',
    ]
    workflow = (project / ".github/workflows/features.yml").read_text()
    assert "featurekit plan --check" in workflow and "pytest -q" in workflow
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_the_scaffold_tests_still_pass_a_month_later(tmp_path: Path) -> None:
    scaffold(tmp_path / "old", now=datetime.now(UTC) - timedelta(days=30))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path / "old",
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_init_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("mine")
    done = fk(tmp_path, "init", "taken", check=1)
    assert "exists and is not an empty folder" in done.stderr
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["x.txt"]


def test_example_data_is_deterministic_and_recent() -> None:
    a, b = example_trips(NOW), example_trips(NOW + timedelta(minutes=59))
    assert a.equals(b)
    assert a["event_ts"].max() == NOW - timedelta(hours=1)
    assert a["ingested_at"].max() < NOW
    assert a.height == 14 * 4 * 8


def test_plan_apply_edit_check_flow(project: Path) -> None:
    first = fk(project, "plan", check=2)
    assert "+ view driver_stats: new (v1), additive" in first.stdout
    assert "+ on-demand quoted_fare: new (v1)" in first.stdout
    assert "+ service pricing: new (v1)" in first.stdout
    assert not (project / "store").exists()  # planning writes nothing to the store

    applied = fk(project, "apply")
    assert applied.stdout.splitlines()[:3] == [
        "registered view driver_stats v1",
        "registered on_demand quoted_fare v1",
        "registered service pricing v1",
    ]
    again = fk(project, "plan", check=0)
    assert "no changes: the store matches the definitions." in again.stdout
    assert "= view driver_stats: unchanged (v1)" in again.stdout

    # editing a helper the view calls makes a new version, reason code, with the diff
    edit(project, "    return amount / km", "    return amount / (km + 1.0)")
    changed = json.loads(fk(project, "plan", "--json", check=2).stdout)
    view = changed["changes"][0]
    assert (view["kind"], view["name"], view["status"]) == ("view", "driver_stats", "new_version")
    assert (view["version"], view["previous"], view["reason"]) == (2, 1, ["code"])
    assert view["impact"] == "additive"
    assert "-    return amount / km\n+    return amount / (km + 1.0)\n" in view["diff"]
    assert view["stale"] == ["on_demand:quoted_fare", "service:pricing"]
    on_demand = changed["changes"][1]
    assert (on_demand["name"], on_demand["status"], on_demand["reason"]) == (
        "quoted_fare",
        "new_version",
        ["upstream"],
    )
    assert changed["has_changes"] is True and changed["blocking"] == []
    assert fk(project, "plan", "--check", check=0).returncode == 0  # additive: CI passes

    # removing a column the pricing service reads is breaking: --check fails
    edit(project, '        pl.col("rating"),\n', "")
    breaking = fk(project, "plan", "--check", check=1)
    assert "- rating: Float64" in breaking.stdout
    assert "used by: service:pricing" in breaking.stdout
    assert "breaking change to what services or models use (view driver_stats)" in breaking.stderr
    report = json.loads(fk(project, "plan", "--json", check=2).stdout)
    assert report["changes"][0]["impact"] == "breaking"
    assert report["changes"][0]["removed"] == ["rating: Float64"]
    assert report["blocking"] == ["view:driver_stats"]


def test_apply_registers_exactly_the_plan_and_refuses_when_the_store_moved(
    project: Path,
) -> None:
    assert "no plan to apply" in fk(project, "apply", check=1).stderr
    fk(project, "plan", check=2)
    # someone else registers a view between our plan and our apply
    script = textwrap.dedent(
        """
        import sys; sys.path.insert(0, ".")
        import featurekit as fk
        from features import driver_stats
        fk.Store("store", progress=False).register(driver_stats)
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=project, env=env(), check=True)
    refused = fk(project, "apply", check=1)
    assert "the store or the definitions changed since the plan was made" in refused.stderr
    assert "nothing was applied" in refused.stderr
    store_dir = project / "store" / "_featurekit"
    assert not (store_dir / "services").exists()  # the service was not registered
    fk(project, "plan", check=2)
    fk(project, "apply")
    assert sorted(p.name for p in (store_dir / "services" / "pricing").iterdir()) == ["v1.json"]


def test_materialize_is_idempotent_and_refuses_unapplied_views(project: Path) -> None:
    refused = fk(project, "materialize", check=1)
    assert refused.stderr.count("\n") == 1  # one line a scheduler can alert on
    assert "view 'driver_stats': its current definition" in refused.stderr
    assert "is not applied to the store" in refused.stderr
    fk(project, "plan", check=2)
    fk(project, "apply")
    first = json.loads(fk(project, "materialize", "--json").stdout)["runs"]
    assert [(r["view"], r["version"], r["mode"], r["rows_written"]) for r in first] == [
        ("driver_stats", 1, "full", 448)
    ]
    second = json.loads(fk(project, "materialize", "--json").stdout)["runs"]
    assert [(r["mode"], r["rows_written"], r["delta_version"]) for r in second] == [
        ("noop", 0, first[0]["delta_version"])
    ]
    backfill = json.loads(
        fk(
            project,
            "materialize",
            "driver_stats",
            "--start",
            "2000-01-01",
            "--end",
            "2000-01-02",
            "--json",
        ).stdout
    )["runs"]
    assert (backfill[0]["mode"], backfill[0]["window_start"]) == (
        "range",
        "2000-01-01T00:00:00+00:00",
    )
    unknown = fk(project, "materialize", "driver_stat", check=1)
    assert "no view named 'driver_stat' in the definitions. Did you mean 'driver_stats'?" in (
        unknown.stderr
    )


def test_two_materialize_processes_at_once_lose_nothing(project: Path) -> None:
    fk(project, "plan", check=2)
    fk(project, "apply")
    fk(project, "materialize")
    # new trips arrive, then two scheduled runs overlap
    data = project / "data" / "trips.parquet"
    old = pl.read_parquet(data)
    later = old.filter(pl.col("event_ts") == old["event_ts"].max()).with_columns(
        pl.col("event_ts") + pl.duration(minutes=30),
        pl.col("ingested_at") + pl.duration(minutes=30),
        pl.col("fare") + 1.0,
    )
    pl.concat([old, later]).write_parquet(data)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "featurekit.cli", "materialize", "--json"],
            cwd=project,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    modes = sorted(json.loads(out)["runs"][0]["mode"] for out, _ in outs)
    rows = sorted(json.loads(out)["runs"][0]["rows_written"] for out, _ in outs)
    assert (modes, rows) == (["incremental", "noop"], [0, later.height])
    check = textwrap.dedent(
        """
        import featurekit as fk
        frame = fk.Store("store", progress=False).read("driver_stats")
        print(frame.height, frame.select("driver_id", "event_ts").is_duplicated().sum())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=project, env=env(), capture_output=True, text=True
    )
    assert done.stdout.split() == [str(old.height + later.height), "0"], done.stderr


def test_ls_show_and_search(project: Path) -> None:
    fk(project, "plan", check=2)
    fk(project, "apply")
    listing = fk(project, "ls").stdout.splitlines()
    assert listing[0].startswith("view       driver_stats v1  (2 features)  owner: pricing-team")
    assert listing[1].startswith("on_demand  quoted_fare v1")
    assert listing[2].startswith("service    pricing v1  (3 items)  What the pricing model reads.")
    shown = fk(project, "show", "pricing").stdout
    assert "service pricing (latest v1)" in shown
    assert "    driver_stats:fare_per_km" in shown
    found = json.loads(fk(project, "ls", "--search", "RIDER", "--json").stdout)
    assert [(f["view"], f["name"], f["owner"]) for f in found] == [
        ("driver_stats", "fare_per_km", "pricing-team"),
        ("driver_stats", "rating", "pricing-team"),
    ]
    assert json.loads(fk(project, "ls", "--search", "nothing-like-it", "--json").stdout) == []
    missing = fk(project, "show", "pricng", check=1)
    assert "nothing named 'pricng' in this store" in missing.stderr
    assert "Did you mean 'pricing'?" in missing.stderr


def test_config_in_pyproject_and_flags(project: Path, tmp_path: Path) -> None:
    (project / "featurekit.toml").unlink()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.featurekit]\nstore = "other-store"\n'
        'definitions = "features:defs"\n'
    )
    sub = project / "tests"
    assert "featurekit plan for " + str(project / "other-store") in fk(sub, "plan", check=2).stdout
    # flags win over the file
    flagged = fk(
        project, "plan", "--store", str(tmp_path / "s"), "--definitions", "features.py", check=2
    )
    assert f"featurekit plan for {tmp_path / 's'}:" in flagged.stdout
    (project / "pyproject.toml").write_text('[tool.featurekit]\nstore = "s"\nowner = "me"\n')
    bad = fk(project, "plan", check=1)
    assert "unknown featurekit keys ['owner']; the keys are 'store' and 'definitions'" in bad.stderr
    (project / "pyproject.toml").write_text('[tool.featurekit]\nstore = "s"\n')
    none = fk(project, "plan", check=1)
    assert "no definitions to load" in none.stderr


def test_fresh_process_rebuild_finds_on_demand_code_through_definitions(project: Path) -> None:
    fk(project, "plan", check=2)
    fk(project, "apply")
    fk(project, "materialize")
    build = textwrap.dedent(
        """
        import sys; sys.path.insert(0, ".")
        from datetime import UTC, datetime, timedelta
        import polars as pl
        import featurekit as fk
        from features import defs, pricing
        store = fk.Store("store", definitions=defs, progress=False)
        when = datetime.now(UTC) - timedelta(hours=1)
        labels = pl.DataFrame({"driver_id": [0, 3], "trip_km": [2.0, 4.0], "label_ts": [when] * 2})
        ts = store.training_set(labels, features=[pricing], timestamp="label_ts")
        ts.save("pricing-set")
        print(ts.id, ts.to_polars()["quoted_fare"].to_list())
        """
    )
    made = subprocess.run(
        [sys.executable, "-c", build], cwd=project, env=env(), capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    ts_id, values = made.stdout.split(" ", 1)
    rebuild = textwrap.dedent(
        """
        import sys; sys.path.insert(0, ".")
        import featurekit as fk
        from featurekit.project.config import load_project
        project = load_project()
        store = fk.Store(project.store, definitions=project.definitions, progress=False)
        ts = store.training_set_by_id("pricing-set")
        print(ts.id, ts.to_polars()["quoted_fare"].to_list())
        """
    )
    again = subprocess.run(
        [sys.executable, "-c", rebuild], cwd=project, env=env(), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == made.stdout
    # without the definitions, the error names what is missing: name, version, fingerprints
    bare = textwrap.dedent(
        """
        import featurekit as fk
        try:
            fk.Store("store", progress=False).training_set_by_id("pricing-set")
        except fk.ReproducibilityError as err:
            print(err)
        """
    )
    record = json.loads((project / "store/_featurekit/on_demand/quoted_fare/v1.json").read_text())
    missing = subprocess.run(
        [sys.executable, "-c", bare], cwd=project, env=env(), capture_output=True, text=True
    ).stdout
    assert missing.strip() == (
        f"training set {ts_id!r} needs on-demand feature 'quoted_fare' version 1 (fingerprint "
        f"{record['fingerprint']}, code fingerprint {record['parts']['code']}), whose code is "
        "not loaded in this process. Add it to the store's definitions (fk.Definitions("
        "on_demand=[quoted_fare]) or Store(definitions=[...])), or pass it: "
        f"store.training_set_by_id({ts_id!r}, on_demand=[quoted_fare])."
    )
    # with edited code, it says which code it needs and which it found
    edit(project, '(pl.col("fare_per_km") * pl.col("trip_km"))', '(pl.col("fare_per_km") * 2)')
    wrong = subprocess.run(
        [sys.executable, "-c", rebuild], cwd=project, env=env(), capture_output=True, text=True
    )
    assert wrong.returncode == 1
    assert f"code fingerprint {record['parts']['code']})" in wrong.stderr
    assert "but the 'quoted_fare' loaded here has code fingerprint" in wrong.stderr
    assert values  # the set had on-demand values to compare
