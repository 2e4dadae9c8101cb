"""Names that could reach a path are refused at every Python and CLI entry point.

``../x``, ``a/b``, empty, over-long, NUL and other control characters: a
:class:`~featurekit.DefinitionError` from the one validator at the Python API, a one-line
error (exit code 1, no traceback) at the CLI, and nothing written anywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import at
from typer.testing import CliRunner
from views_trips import fare_view

import featurekit as fk
from featurekit.cli import app

BAD_NAMES = ["../x", "..", "a/b", "/etc/passwd", "", "x" * 256, "a\x00b", "a\nb", "__fk_x"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[fk.Store, fk.TrainingSet]:
    from conftest import trips_frame

    folder = tmp_path_factory.mktemp("names")
    (folder / "data").mkdir()
    trips_frame().write_parquet(folder / "data" / "trips.parquet")
    store = fk.Store(folder / "store", progress=False, online=False)
    store.materialize(fare_view(folder / "data"))
    labels = pl.DataFrame({"driver_id": [1, 2], "ts": [at(12), at(6)]})
    ts = store.training_set(labels, features=["fare_features:fare"], timestamp="ts")
    store.log_model("churn", training_set=ts)
    return store, ts


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "locks" not in p.parts
    }


ENTRY_POINTS: dict[str, Callable[[fk.Store, fk.TrainingSet, Any], object]] = {
    "Store.versions": lambda s, ts, n: s.versions(n),
    "Store.read": lambda s, ts, n: s.read(n),
    "Store.runs": lambda s, ts, n: s.runs(n),
    "Store.optimize": lambda s, ts, n: s.optimize(n),
    "Store.training_set_by_id": lambda s, ts, n: s.training_set_by_id(n),
    "Store.log_model name": lambda s, ts, n: s.log_model(n, training_set=ts),
    "Store.log_model training_set": lambda s, ts, n: s.log_model("churn", training_set=n),
    "Store.models": lambda s, ts, n: s.models(n),
    "TrainingSet.save": lambda s, ts, n: ts.save(n),
    "FeatureService": lambda s, ts, n: fk.FeatureService(n, features=["fare_features:fare"]),
    "on_demand": lambda s, ts, n: fk.on_demand(inputs=["fare_features:fare"], name=n)(
        lambda df: df
    ),
    "Entity": lambda s, ts, n: fk.Entity(n, keys=["k"]),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_python_entry_points_refuse_bad_names(
    built: tuple[fk.Store, fk.TrainingSet], entry: str, name: str
) -> None:
    store, ts = built
    parent = store.root.parent
    before = snapshot(parent)
    with pytest.raises(fk.DefinitionError, match="is not valid") as info:
        ENTRY_POINTS[entry](store, ts, name)
    message = str(info.value)
    assert len(message) < 400, message  # a long name is cut, not echoed whole
    assert str(store.root) not in message
    assert snapshot(parent) == before  # nothing written, inside the store or next to it


@pytest.mark.parametrize("name", ["x" * 256, "__fk_x"], ids=repr)
def test_feature_references_with_bad_view_names(
    built: tuple[fk.Store, fk.TrainingSet], name: str
) -> None:
    store, _ = built
    labels = pl.DataFrame({"driver_id": [1], "ts": [at(12)]})
    with pytest.raises(fk.DefinitionError, match="view name '(xxx|__fk_x).* is not valid"):
        store.training_set(labels, features=[f"{name}:fare"], timestamp="ts")


def test_a_bad_saved_name_keeps_the_set_unsaved(built: tuple[fk.Store, fk.TrainingSet]) -> None:
    store, ts = built
    with pytest.raises(fk.DefinitionError, match=r"training set name '\.\./x' is not valid"):
        ts.save("../x")
    assert store.registry.training_set_names() == {}
    assert ts.save("churn-2026.11") is ts  # labels: '-' and '.' are fine
    assert store.registry.training_set_names() == {"churn-2026.11": ts.id}


WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}


@pytest.mark.parametrize(
    "command",
    [["versions", "{}"], ["optimize", "{}"]],
    ids=lambda c: c[0],
)
@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_cli_refuses_bad_names_without_a_traceback(
    built: tuple[fk.Store, fk.TrainingSet], command: list[str], name: str
) -> None:
    store, _ = built
    args = [a.format(name) if a == "{}" else a for a in command]
    result = CliRunner().invoke(app, [*args, "--store", str(store.root)], env=WIDE)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error: view name" in result.output and "is not valid" in result.output


def test_cli_as_a_real_process(built: tuple[fk.Store, fk.TrainingSet]) -> None:
    store, _ = built
    env = {**os.environ, **WIDE, "PYTHONPATH": str(Path(fk.__file__).parents[1])}
    for name in ("../../etc", "x" * 300):
        out = subprocess.run(
            [sys.executable, "-m", "featurekit.cli", "versions", name, "--store", str(store.root)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert out.returncode == 1
        assert out.stdout == ""
        assert out.stderr.startswith("error: view name '"), out.stderr
        assert "is not valid" in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr) < 400
