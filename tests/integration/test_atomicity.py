"""A materialization killed mid-write leaves nothing half-done; two processes lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import featurekit as fk

ROWS = 400_000

VIEW_MODULE = """
import polars as pl
import featurekit as fk
from pathlib import Path

entity = fk.Entity("entity", keys=["k"])


def source(folder, name):
    return fk.Source(name, Path(folder) / f"{name}.parquet", timestamp="ts",
                     created_timestamp="created")


def values(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.select("k", "ts", "created", (pl.col("v") * 2).alias("v2"))


def make(folder, name):
    return fk.feature_view(name=name, entity=entity, sources=[source(folder, "events")])(values)
"""

# Runs in a child process: materializes, but hands Delta a slow stream of batches and says
# on stdout when it is half way through, so the parent can SIGKILL it mid-write.
SLOW_RUNNER = """
import sys, time
import pyarrow as pa
import deltalake
sys.path.insert(0, sys.argv[1])
import views_mod
import featurekit as fk

original = deltalake.write_deltalake

def slow_write(uri, data, **kwargs):
    table = data if isinstance(data, pa.Table) else pa.table(data)
    batches = table.to_batches(max_chunksize=10_000)
    def gen():
        for i, batch in enumerate(batches):
            if i == len(batches) // 2:
                print("HALFWAY", flush=True)
                time.sleep(30)
            yield batch
    reader = pa.RecordBatchReader.from_batches(table.schema, gen())
    kwargs["target_file_size"] = 256 * 1024  # flush files early, so some are on disk at the kill
    return original(uri, reader, **kwargs)

deltalake.write_deltalake = slow_write
store = fk.Store(sys.argv[2], progress=False)
store.materialize(views_mod.make(sys.argv[1], sys.argv[3]))
print("DONE", flush=True)
"""

PLAIN_RUNNER = """
import sys
sys.path.insert(0, sys.argv[1])
import views_mod
import featurekit as fk
store = fk.Store(sys.argv[2], progress=False)
r = store.materialize(views_mod.make(sys.argv[1], sys.argv[3]))
print(r.version, r.rows_written, flush=True)
"""


def write_events(folder: Path, rows: int, offset_hours: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(rows + offset_hours)
    base = pl.datetime(2026, 1, 1)
    frame = (
        pl.DataFrame(
            {
                "k": np.arange(rows) % 5_000,  # unique (k, hour): no rows collapse as ties
                "h": np.arange(rows) // 1000 + offset_hours,
                "v": rng.random(rows),
            }
        )
        .with_columns(
            ts=base + pl.duration(hours=pl.col("h")),
            created=base + pl.duration(hours=pl.col("h") + 1),
        )
        .drop("h")
    )
    return frame


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "views_mod.py").write_text(textwrap.dedent(VIEW_MODULE))
    (folder / "slow.py").write_text(textwrap.dedent(SLOW_RUNNER))
    (folder / "plain.py").write_text(textwrap.dedent(PLAIN_RUNNER))
    write_events(folder, ROWS).write_parquet(folder / "events.parquet")
    return folder, tmp_path / "store"


def kill_halfway(folder: Path, root: Path, view: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(folder / "slow.py"), str(folder), str(root), view],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "HALFWAY", proc.stderr.read() if proc.stderr else line
    # wait until data files of the first half are on disk, then kill with no chance to clean up
    table = root / "features" / view / "v1"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(table.glob("*.parquet")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_killed_first_run_leaves_no_rows_and_no_version(setup: tuple[Path, Path]) -> None:
    folder, root = setup
    kill_halfway(folder, root, "vals")
    table = root / "features" / "vals" / "v1"
    assert any(table.rglob("*.parquet")), "the kill came too late to test anything"
    store = fk.Store(root, progress=False)
    assert store.views() == []
    with pytest.raises(fk.NotFoundError):
        store.read("vals")
    # the next run completes the work
    sys.path.insert(0, str(folder))
    try:
        import views_mod  # type: ignore[import-not-found]

        result = store.materialize(views_mod.make(str(folder), "vals"))
    finally:
        sys.path.remove(str(folder))
    assert (result.version, result.mode, result.rows_written) == (1, "full", ROWS)
    assert store.read("vals").height == ROWS


def test_killed_incremental_run_keeps_previous_rows(setup: tuple[Path, Path]) -> None:
    folder, root = setup
    subprocess.run(
        [sys.executable, str(folder / "plain.py"), str(folder), str(root), "vals"], check=True
    )
    store = fk.Store(root, progress=False)
    before = store.read("vals").sort("k", "ts")
    extra = write_events(folder, ROWS, offset_hours=1000)
    pl.concat([pl.read_parquet(folder / "events.parquet"), extra]).write_parquet(
        folder / "events.parquet"
    )
    kill_halfway(folder, root, "vals")
    assert store.read("vals").sort("k", "ts").equals(before)
    assert len(store.versions("vals")) == 1
    assert [r.mode for r in store.runs("vals")] == ["full"]
    out = subprocess.run(
        [sys.executable, str(folder / "plain.py"), str(folder), str(root), "vals"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.split() == ["1", str(ROWS)]
    assert store.read("vals").height == 2 * ROWS


def test_two_processes_materializing_into_one_store_lose_nothing(setup: tuple[Path, Path]) -> None:
    folder, root = setup
    fk.Store(root)
    names = ["view_a", "view_b", "view_c", "view_a"]  # view_a twice: same version, no dupes
    procs = [
        subprocess.Popen(
            [sys.executable, str(folder / "plain.py"), str(folder), str(root), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    deadline = time.monotonic() + 240
    for proc in procs:
        _, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
        assert proc.returncode == 0, err
    store = fk.Store(root, progress=False)
    assert store.views() == ["view_a", "view_b", "view_c"]
    for name in ["view_a", "view_b", "view_c"]:
        assert [r.version for r in store.versions(name)] == [1]
        rows = store.read(name)
        assert rows.height == ROWS
        assert rows.select("k", "ts", "created").is_duplicated().sum() == 0
