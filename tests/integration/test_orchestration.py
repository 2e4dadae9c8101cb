"""The orchestration examples: a Dagster asset per view (run for real when dagster is
installed), an Airflow DAG (parsed only: Airflow is too heavy to install here) and a cron
line whose command and flags exist.
"""

from __future__ import annotations

import ast
import importlib.util
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

import featurekit as fk
from featurekit.cli import app
from featurekit.project.apply import apply_plan
from featurekit.project.config import load_project
from featurekit.project.plan import make_plan
from featurekit.project.scaffold import scaffold

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orchestration"


@pytest.fixture
def applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scaffolded project whose definitions are applied to its store."""
    folder = tmp_path / "proj"
    scaffold(folder)
    monkeypatch.chdir(folder)
    project = load_project()
    store = fk.Store(project.store, progress=False)
    apply_plan(store, project.definitions, make_plan(store.registry, project.definitions).digest)
    monkeypatch.chdir(tmp_path)  # the assets must not depend on the caller's folder
    monkeypatch.setenv("FEATUREKIT_PROJECT", str(folder))
    return folder


def test_dagster_assets_materialize_each_view(applied: Path) -> None:
    dg = pytest.importorskip("dagster", reason="optional extra: pip install 'featurekit[dagster]'")
    spec = importlib.util.spec_from_file_location(
        "fk_dagster_example", EXAMPLES / "dagster_assets.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assets = module.view_assets(applied)
    assert [a.key.path for a in assets] == [["featurekit", "driver_stats"]]
    instance = dg.DagsterInstance.ephemeral()
    first = dg.materialize(assets, instance=instance)
    assert first.success
    (event,) = first.asset_materializations_for_node("featurekit__driver_stats")
    assert {k: v.value for k, v in event.metadata.items()} == {
        "version": 1,
        "mode": "full",
        "rows_written": 448,
        "delta_version": 0,
    }
    second = dg.materialize(assets, instance=instance)
    (again,) = second.asset_materializations_for_node("featurekit__driver_stats")
    assert (again.metadata["mode"].value, again.metadata["rows_written"].value) == ("noop", 0)
    assert Path.cwd() != applied  # the asset left the working directory as it found it


def test_airflow_dag_parses_and_runs_real_commands() -> None:
    source = (EXAMPLES / "airflow_dag.py").read_text()
    tree = ast.parse(source)  # Airflow itself is not installed here: parse only
    commands = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.JoinedStr)
        for n in n.values
        if isinstance(n, ast.Constant) and "featurekit" in str(n.value)
    ]
    assert any("featurekit materialize" in str(c) for c in commands)
    assert "--json" in source
    help_text = CliRunner().invoke(app, ["materialize", "--help"]).output
    assert "--json" in help_text


def test_cron_line_names_a_real_command() -> None:
    lines = [
        ln
        for ln in (EXAMPLES / "crontab").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert len(lines) == 1
    fields = lines[0].split(maxsplit=5)
    assert fields[:5] == ["*/15", "*", "*", "*", "*"]
    command = shlex.split(fields[5].split("&&", 1)[1].split(">>", 1)[0])
    assert command == ["featurekit", "materialize", "--json"]
    result = CliRunner().invoke(app, [*command[1:], "--help"])
    assert result.exit_code == 0 and "--json" in result.output


def test_examples_do_not_import_private_names() -> None:
    for path in EXAMPLES.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "featurekit" in node.module:
                assert all(not a.name.startswith("_") for a in node.names), path
