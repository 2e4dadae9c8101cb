"""Online lookup benchmark: p50/p99 of get_online_features against the raw-store floor.

One run measures, on one store of 10 features x N entities:
  - floors: a dict lookup, a raw SQLite point read, a raw Redis HGET;
  - store.get_online_features for 1 and 100 entities x 10 features (SQLite, Redis, memory);
  - HTTP on loopback (featurekit serve started and stopped here): 1 and 100 entities.
Targets on the 2-core box: in-process 1 entity p99 <= 200 us, 100 entities p99 <= 2 ms,
HTTP 1 entity p99 <= 3 ms. `--load` adds 8 threads x 2,000 HTTP requests.

Usage: python benchmarks/online.py [--entities 10000] [--requests 2000] [--load]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from _targets import target

import featurekit as fk

FEATURES = [f"f{i}" for i in range(10)]
entity = fk.Entity("driver", keys=["driver_id"])


def bench_stats(stats: pl.LazyFrame) -> pl.LazyFrame:
    """Ten float features per driver."""
    return stats.select("driver_id", "event_ts", *FEATURES)


def timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """p50 and p99 in microseconds over ``n`` calls (after a warm-up)."""
    for _ in range(min(200, n)):
        fn()
    samples = []
    for _ in range(n):
        began = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - began) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def report(name: str, p: tuple[float, float], note: str = "") -> None:
    print(f"{name:<52} p50 {p[0]:>9.1f} us   p99 {p[1]:>9.1f} us   {note}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build(folder: Path, entities: int) -> tuple[fk.Store, fk.FeatureView]:
    rng = random.Random(7)
    now = datetime.now(UTC).replace(tzinfo=None)
    frame = pl.DataFrame(
        {
            "driver_id": list(range(entities)),
            "event_ts": [now - timedelta(minutes=rng.randint(1, 600)) for _ in range(entities)],
            **{f: [rng.random() for _ in range(entities)] for f in FEATURES},
        }
    )
    (folder / "data").mkdir()
    frame.write_parquet(folder / "data" / "stats.parquet")
    source = fk.Source("stats", folder / "data" / "stats.parquet", timestamp="event_ts")
    view = fk.feature_view(entity=entity, sources=[source], ttl="1d")(bench_stats)
    store = fk.Store(folder / "store", progress=False)
    store.materialize(view)
    return store, view


def start_redis() -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def in_process(store: fk.Store, label: str, entities: int, n: int, embedded: bool) -> None:
    """Lookups from this process. The targets are for embedded stores; Redis adds a hop."""
    refs = [f"bench_stats:{f}" for f in FEATURES]
    ids = list(range(entities))
    report(
        f"get_online_features {label}, 1 entity x 10",
        timed(lambda: store.get_online_features(refs, {"driver_id": [random.choice(ids)]}), n),
        target("(target p99 <= 200 us)") if embedded else "(server hop: compare with raw HGET)",
    )
    report(
        f"get_online_features {label}, 100 entities x 10",
        timed(
            lambda: store.get_online_features(refs, {"driver_id": random.sample(ids, 100)}), n // 4
        ),
        target("(target p99 <= 2 ms)") if embedded else "(server hop)",
    )


def http(store: fk.Store, entities: int, n: int, load: bool) -> None:
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "featurekit.cli",
            "serve",
            "--store",
            str(store.root),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        refs = [f"bench_stats:{f}" for f in FEATURES]
        ids = list(range(entities))
        with httpx.Client(base_url=base) as client:

            def one() -> Any:
                body = {"features": refs, "entities": {"driver_id": [random.choice(ids)]}}
                reply = client.post("/v1/features", json=body)
                assert reply.status_code == 200, reply.text
                return reply

            def hundred() -> Any:
                body = {"features": refs, "entities": {"driver_id": random.sample(ids, 100)}}
                reply = client.post("/v1/features", json=body)
                assert reply.status_code == 200, reply.text
                return reply

            report(
                "HTTP loopback (httpx), 1 entity x 10",
                timed(one, n),
                target("(target p99 <= 3 ms)"),
            )
            report("HTTP loopback (httpx), 100 entities x 10", timed(hundred, n // 4))
        if load:
            errors: list[str] = []
            began = time.perf_counter()

            def worker() -> None:
                with httpx.Client(base_url=base, timeout=30) as c:
                    for _ in range(2000):
                        body = {"features": refs, "entities": {"driver_id": [random.choice(ids)]}}
                        if c.post("/v1/features", json=body).status_code != 200:
                            errors.append("non-200")

            threads = [threading.Thread(target=worker) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.perf_counter() - began
            print(
                f"load: 8 threads x 2,000 requests in {took:.1f} s ({16000 / took:,.0f} req/s), errors={len(errors)}"
            )
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--load", action="store_true", help="also 8 threads x 2,000 HTTP requests")
    args = parser.parse_args()
    n = args.requests
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store, view = build(folder, args.entities)
        print(f"store: 1 view x 10 Float64 features x {args.entities:,} entities; {n} calls each\n")
        # floors: the raw stores, no featurekit in the loop
        from featurekit.online.snapshot import encode_key

        keys = [encode_key((i,)) for i in range(args.entities)]
        table = {k: b"x" * 200 for k in keys}
        report("floor: dict lookup", timed(lambda: table.get(random.choice(keys)), n))
        conn = sqlite3.connect(folder / "store" / "online" / "online.sqlite")
        sid = conn.execute("SELECT sid FROM snapshots").fetchone()[0]
        sql = "SELECT value FROM entries WHERE sid = ? AND key = ?"
        report(
            "floor: raw SQLite point read",
            timed(lambda: conn.execute(sql, (sid, random.choice(keys))).fetchone(), n),
        )
        in_process(store, "(SQLite)", args.entities, n, embedded=True)
        memory = fk.Store(folder / "store", progress=False, online="memory")
        memory.materialize(view)
        in_process(memory, "(memory)", args.entities, n, embedded=True)
        redis = start_redis()
        if redis is None:
            print("redis-server not installed: Redis rows skipped")
        else:
            proc, url = redis
            try:
                import redis as redis_lib

                on_redis = fk.Store(folder / "store", progress=False, online=url)
                on_redis.materialize(view)
                client = redis_lib.Redis.from_url(url)
                ptr = next(iter(client.scan_iter(match="featurekit:ptr:*")))
                rows = f"featurekit:rows:{client.get(ptr).decode()}"
                report(
                    "floor: raw Redis HGET",
                    timed(lambda: client.hget(rows, random.choice(keys)), n),
                )
                in_process(on_redis, "(Redis)", args.entities, n, embedded=False)
            finally:
                proc.terminate()
                proc.wait(10)
        http(store, args.entities, n, args.load)
        os.sync()


if __name__ == "__main__":
    main()
