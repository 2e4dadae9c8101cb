"""Shared fixtures: a small ride-share dataset on disk and a fresh store."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

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


# ---- team stores: the same tests on a local folder and on a real S3 server ---------------
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # never reach a cloud metadata endpoint

S3_BUCKET = "featurekit-tests"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the whole session, with one bucket."""
    from s3_emulator import create_bucket, moto_server

    with moto_server() as endpoint:
        create_bucket(endpoint, S3_BUCKET)
        yield endpoint


@dataclass
class StoreRoot:
    """Where a test's stores live: a local folder or a prefix of the session's S3 bucket.

    ``open()`` makes a new, empty store each call (a fresh prefix or folder), so hypothesis
    examples and tests never share one. S3 stores get an explicit local SQLite online
    store, since a remote root has none by default.
    """

    kind: str
    tmp: Path
    options: dict[str, str] = field(default_factory=dict)
    endpoint: str = ""

    def uri(self, name: str = "store") -> str:
        unique = f"{name}-{uuid.uuid4().hex[:8]}"
        if self.kind == "local":
            return str(self.tmp / unique)
        return f"s3://{S3_BUCKET}/{unique}"

    def open(self, uri: str | None = None, **kwargs: Any) -> fk.Store:
        kwargs.setdefault("progress", False)
        if self.kind == "s3":
            kwargs.setdefault("storage_options", self.options)
            kwargs.setdefault("online", str(self.tmp / f"online-{uuid.uuid4().hex[:8]}.sqlite"))
        return fk.Store(uri or self.uri(), **kwargs)


@pytest.fixture(params=["local", "s3"])
def store_root(request: pytest.FixtureRequest, tmp_path: Path) -> StoreRoot:
    """The store-level suite runs once on a local root and once on an S3 root."""
    if request.param == "local":
        return StoreRoot("local", tmp_path)
    from s3_emulator import storage_options

    endpoint = request.getfixturevalue("s3_endpoint")
    return StoreRoot("s3", tmp_path, storage_options(endpoint), endpoint)


def load_module(path: Path, name: str, source: str) -> ModuleType:
    """Write ``source`` to ``path`` and import it fresh (views need real source files)."""
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fares_view(folder: Path, factor: int = 2) -> fk.FeatureView:
    """View ``fares`` (``fare`` × ``factor`` per driver) over ``trips_frame()`` in ``folder``,
    defined in a fresh module file (views need real source files)."""
    data = folder / "trips.parquet"
    if not data.exists():
        trips_frame().write_parquet(data)
    name = f"fares_view_{factor}_{uuid.uuid4().hex[:6]}"
    module: Any = load_module(
        folder / f"{name}.py",
        name,
        f"""
        import polars as pl
        import featurekit as fk
        driver = fk.Entity("driver", keys=["driver_id"])
        trips = fk.Source("trips", {str(data)!r}, timestamp="event_ts",
                          created_timestamp="ingested_at")

        @fk.feature_view(entity=driver, sources=[trips])
        def fares(trips: pl.LazyFrame) -> pl.LazyFrame:
            return trips.select("driver_id", "event_ts", "ingested_at",
                                (pl.col("fare") * {factor}).alias("fare"))
        """,
    )
    return module.fares  # type: ignore[no-any-return]
