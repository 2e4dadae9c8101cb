"""Shared fixtures: a small ride-share dataset on disk and a fresh store."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

import featurekit as fk

BASE = datetime(2026, 1, 1)


def at(hours: float) -> datetime:
    """A naive (UTC) instant ``hours`` after the base time."""
    return BASE + timedelta(hours=hours)


def trips_frame() -> pl.DataFrame:
    """Trips of two drivers; one arrives late (ingested a day after it happened)."""
    return pl.DataFrame(
        {
            "driver_id": [1, 1, 2, 2, 1, 2],
            "event_ts": [at(0), at(10), at(1), at(30), at(40), at(5)],
            "ingested_at": [at(0.1), at(10.1), at(1.1), at(30.1), at(40.1), at(29)],
            "fare": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
            "status": ["ok", "ok", "ok", "cancelled", "ok", "ok"],
        }
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    trips_frame().write_parquet(folder / "trips.parquet")
    return folder


@pytest.fixture
def store(tmp_path: Path) -> fk.Store:
    return fk.Store(tmp_path / "store", progress=False)


def load_module(path: Path, name: str, source: str) -> ModuleType:
    """Write ``source`` to ``path`` and import it fresh (views need real source files)."""
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
