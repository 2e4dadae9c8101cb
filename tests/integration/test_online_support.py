"""Shared pieces of the online-serving tests: views (in a real module, so they can be
fingerprinted), data relative to the wall clock, a real redis-server and a real HTTP server.

It holds no tests itself; the test_online_* modules import it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import featurekit as fk

N_DRIVERS = 300
driver = fk.Entity("driver", keys=["driver_id"])
driver_zone = fk.Entity("driver_zone", keys=["driver_id", "zone"])


def driver_stats(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Per-trip driver features; keeps ingested_at, so knowledge time applies."""
    return trips.select("driver_id", "event_ts", "ingested_at", "avg_fare", "trips_today", "rating")


def zone_stats(zones: pl.LazyFrame) -> pl.LazyFrame:
    """Per (driver, zone) features with two key columns and no created time."""
    return zones.select("driver_id", "zone", "event_ts", "surge", "last_seen", "active")


@fk.on_demand(inputs=["driver_stats:avg_fare"], request={"amount": pl.Float64})
def fare_ratio(df: pl.DataFrame) -> pl.DataFrame:
    """The request's amount against the driver's average fare."""
    return df.select(
        (pl.col("amount") / pl.col("avg_fare")).alias("fare_ratio"),
        (pl.col("avg_fare").is_null()).alias("no_fare"),
    )


pricing = fk.FeatureService("pricing", features=["zone_stats:surge", fare_ratio])


def now_floor() -> datetime:
    """The current instant, naive UTC, whole seconds."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def write_data(folder: Path, now: datetime, seed: int = 7) -> None:
    """Trips and zones around ``now``: fresh, expired, missing, late-known, future and tied rows."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for d in range(N_DRIVERS):
        kind = d % 6
        fare = float(rng.uniform(5, 50))
        if d % 7 == 0:
            fare = float("nan")
        elif d % 11 == 0:
            fare = float("inf")

        def row(
            event: timedelta, created: timedelta | None, value: float = fare, d: int = d
        ) -> None:
            rows.append(
                {
                    "driver_id": d,
                    "event_ts": now + event,
                    "ingested_at": None if created is None else now + created,
                    "avg_fare": value,
                    "trips_today": int(rng.integers(0, 40)),
                    "rating": None if d % 5 == 0 else float(rng.uniform(3, 5)),
                }
            )

        if kind == 1:  # fresh
            row(-timedelta(minutes=30), -timedelta(minutes=29))
        elif kind == 2:  # older than the 2h TTL: expired
            row(-timedelta(hours=5), -timedelta(hours=5))
        elif kind == 3:  # history, the latest fresh, and an event in the future
            row(-timedelta(hours=9), -timedelta(hours=9), 1.0)
            row(-timedelta(minutes=50), -timedelta(minutes=49))
            row(timedelta(minutes=90), timedelta(minutes=91), 2.0)
        elif kind == 4:  # a late-known row: happened 10 min ago, known only in 60 min
            row(-timedelta(minutes=60), -timedelta(minutes=59), 3.0)
            row(-timedelta(minutes=10), timedelta(minutes=60), 4.0)
        elif kind == 5:  # a tie on event time (greater created wins), a row never known
            row(-timedelta(minutes=40), -timedelta(minutes=39), 5.0)
            row(-timedelta(minutes=40), -timedelta(minutes=35), 6.0)
            row(-timedelta(minutes=10), None, 7.0)
        # kind 0: no rows at all (not_found)
    trips = pl.DataFrame(
        rows,
        schema={
            "driver_id": pl.Int64,
            "event_ts": pl.Datetime("us"),
            "ingested_at": pl.Datetime("us"),
            "avg_fare": pl.Float64,
            "trips_today": pl.Int64,
            "rating": pl.Float64,
        },
    )
    trips.write_parquet(folder / "trips.parquet")
    zone_rows = []
    for d in range(N_DRIVERS):
        if d % 4 == 0:
            continue
        for zone in ("a", "b") if d % 3 else ("a",):
            for back in sorted(rng.uniform(0.1, 30, 2), reverse=True):
                zone_rows.append(
                    {
                        "driver_id": d,
                        "zone": zone,
                        "event_ts": now - timedelta(hours=float(back)),
                        "surge": float(rng.uniform(1, 3)),
                        "last_seen": now - timedelta(seconds=int(rng.integers(0, 10**6))),
                        "active": bool(rng.integers(0, 2)),
                    }
                )
    pl.DataFrame(zone_rows).with_columns(pl.col("event_ts").dt.cast_time_unit("us")).write_parquet(
        folder / "zones.parquet"
    )


def views(folder: Path, ttl: str = "2h") -> tuple[fk.FeatureView, fk.FeatureView]:
    trips = fk.Source(
        "trips", folder / "trips.parquet", timestamp="event_ts", created_timestamp="ingested_at"
    )
    zones = fk.Source("zones", folder / "zones.parquet", timestamp="event_ts")
    a = fk.feature_view(entity=driver, sources=[trips], ttl=ttl)(driver_stats)
    b = fk.feature_view(entity=driver_zone, sources=[zones])(zone_stats)
    return a, b


def filled_store(root: Path) -> fk.Store:
    """A store under ``root`` with both views materialized over fresh data in ``root/data``."""
    (root / "data").mkdir()
    write_data(root / "data", now_floor())
    store = fk.Store(root / "store", progress=False)
    for view in views(root / "data"):
        store.materialize(view)
    return store


def entities(n: int = N_DRIVERS) -> dict[str, list[Any]]:
    """Every driver, an unknown one and a null key; zones alternate; request amounts."""
    ids: list[Any] = [*range(n), 100_000, None]
    return {
        "driver_id": ids,
        "zone": ["a" if i % 2 else "b" for i in range(len(ids))],
        "amount": [float(i % 17) + 0.5 for i in range(len(ids))],
    }


def labels_at(ents: dict[str, list[Any]], when: datetime) -> pl.DataFrame:
    """The same entities as labels at one instant."""
    frame = pl.DataFrame(ents, schema_overrides={"driver_id": pl.Int64, "zone": pl.String})
    return frame.with_columns(pl.lit(when).cast(pl.Datetime("us", "UTC")).alias("label_ts"))


# ---- processes ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A real redis-server on a free loopback port; yields its URL."""
    with redis_process() as (port, _):
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def redis_process(*args: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """redis-server with extra ``args`` on a free loopback port; yields (port, process).

    In CI a missing binary fails the test; elsewhere it skips.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; .ci/run installs Debian's redis-server")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(10)


SERVE = ("python", "-m", "featurekit.cli", "serve")


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], seconds: float, output: Callable[[], str]
) -> None:
    """Wait until the server at ``url`` answers ``/health``; fail with its ``output`` if its
    process exits first, or after ``seconds``."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        if proc.poll() is not None:
            raise AssertionError(f"featurekit serve exited: {output()}")
        assert time.monotonic() < deadline, "featurekit serve did not start"
        time.sleep(0.1)


@contextlib.contextmanager
def serve_logged(
    root: str | Path, *args: str, env: dict[str, str], logs: Path
) -> Iterator[tuple[str, Path]]:
    """``featurekit serve`` writing stdout and stderr to a file in ``logs`` (to check what it
    prints); yields its URL and the file."""
    import sys

    port = free_port()
    output = logs / f"serve-{port}.log"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, *SERVE[1:], "--store", str(root), "--port", str(port), *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, 60, output.read_text)
            yield url, output
        finally:
            proc.terminate()
            proc.wait(10)


@contextlib.contextmanager
def served(root: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``featurekit serve`` as a real subprocess on a free loopback port; yields its URL."""
    import sys

    port = free_port()
    serve = (sys.executable, *SERVE[1:])
    proc = subprocess.Popen(
        [*serve, "--store", str(root), "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"

    def output() -> str:
        return repr(proc.stdout.read() if proc.stdout else b"")

    try:
        wait_healthy(base, proc, 30, output)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def http_server(app: Any) -> Iterator[str]:
    """Run ``app`` on uvicorn in a thread on a free loopback port; stop it afterwards."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def from_json(columns: dict[str, list[Any]], like: pl.DataFrame) -> pl.DataFrame:
    """A JSON response's columns as a frame with ``like``'s dtypes (NaN came back as null)."""
    out = []
    for name, dtype in like.schema.items():
        values = columns[name]
        if isinstance(dtype, pl.Datetime):
            series = pl.Series(name, values, dtype=pl.String).str.to_datetime(time_zone="UTC")
            out.append(series.cast(dtype))
        else:
            out.append(pl.Series(name, values, dtype=dtype))
    return pl.DataFrame(out)
