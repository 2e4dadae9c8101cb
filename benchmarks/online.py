"""Online benchmark: lookups and pushes against the raw-store and framework floors.

One run measures, on one store of 10 features x N entities:
  - floors: a dict lookup, a raw SQLite point read, a raw Redis HGET, and an empty
    FastAPI endpoint on uvicorn (the server framework's own cost, no featurekit);
  - store.get_online_features for 1 and 100 entities x 10 features (SQLite, Redis, memory);
  - HTTP on loopback (featurekit serve started and stopped here): 1 and 100 entities;
  - store.push and POST /v1/push: rows/s for 1-row and 1,000-row pushes (1-row pushes
    also from 8 threads / 8 HTTP clients at once), and push-to-visible latency (push
    returns, then a lookup shows the value) p50/p99.
Each line prints its ratio to the floor measured in the same run. Targets on the 2-core
box: in-process 1 entity p99 <= 5x the raw SQLite read p99; HTTP 1 entity p99 <= 3 ms.
`--load` adds 8 threads x 2,000 HTTP requests. `--feast-results PATH` reads Feast's
figures from the peer harness (`../shared/peers/run_all.py --only online --http`, run in
the same window) and prints the p99 ratios the goals name; `--lookups-only` skips pushes
and Redis.

Usage: python benchmarks/online.py [--entities 10000] [--requests 2000] [--load]
       [--feast-results RESULTS.json] [--lookups-only | --push-only]
"""

from __future__ import annotations

import argparse
import os
import random
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
from _servers import free_port, start_redis
from _targets import smoke, target

import featurekit as fk

FEATURES = [f"f{i}" for i in range(10)]
entity = fk.Entity("driver", keys=["driver_id"])


def bench_stats(stats: pl.LazyFrame) -> pl.LazyFrame:
    """Ten float features per driver (and the knowledge time, which a push sets)."""
    return stats.select("driver_id", "event_ts", "ingested_at", *FEATURES)


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


def report(
    name: str,
    p: tuple[float, float],
    note: str = "",
    floor: tuple[str, tuple[float, float]] | None = None,
) -> tuple[float, float]:
    """Print p50/p99 and, given a floor measured in the same run, the ratio of the p99s."""
    ratio = f"p99 = {p[1] / floor[1][1]:.1f}x {floor[0]}  " if floor else ""
    print(f"{name:<52} p50 {p[0]:>9.1f} us   p99 {p[1]:>9.1f} us   {ratio}{note}")
    return p


EMPTY_APP = """
import sys
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

app = FastAPI()


@app.post("/empty")
def empty() -> Response:
    return Response(b"{}", media_type="application/json")


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def wait_up(base: str, path: str, method: str = "GET") -> None:
    import httpx

    for _ in range(300):
        try:
            if httpx.request(method, f"{base}{path}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{base} did not start")


def framework_floor(n: int) -> tuple[float, float]:
    """An empty POST endpoint on FastAPI + uvicorn, served as `featurekit serve` serves."""
    return empty_endpoint(EMPTY_APP, "floor: empty FastAPI endpoint (httpx)", n)


def empty_endpoint(app: str, label: str, n: int) -> tuple[float, float]:
    """p50/p99 of POSTs of a 1-entity lookup body to ``app`` (a script serving /empty)."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", app, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base, "/empty", "POST")
        body = {"features": [f"bench_stats:{f}" for f in FEATURES], "entities": {"driver_id": [1]}}
        with httpx.Client(base_url=base) as client:
            return report(label, timed(lambda: client.post("/empty", json=body), n))
    finally:
        proc.terminate()
        proc.wait(10)


def push_rows(ids: list[int], count: int, *, iso: bool = False) -> list[dict[str, Any]]:
    """``count`` rows for random drivers, event time now (ISO strings for JSON)."""
    now = datetime.now(UTC)
    rows = []
    for _ in range(count):
        row: dict[str, Any] = {"driver_id": random.choice(ids), "event_ts": now}
        row.update({f: random.random() for f in FEATURES})
        if iso:
            row["event_ts"] = now.isoformat()
        rows.append(row)
    return rows


def push_count(n: int) -> int:
    """Pushes per variant: a tenth of the lookups (a smoke run only proves they work)."""
    return 5 if smoke() else max(10, n // 10)


def pushes(
    label: str,
    push: Callable[[list[dict[str, Any]]], object],
    lookup: Callable[[int], float | None],
    ids: list[int],
    n: int,
    *,
    iso: bool = False,
    floor: tuple[str, tuple[float, float]] | None = None,
    pusher: Callable[[], Callable[[list[dict[str, Any]]], object]] | None = None,
) -> None:
    """Rows/s of 1-row and 1,000-row pushes, and push-to-visible latency.

    ``pusher`` makes one push function per thread (an HTTP client each): 1-row pushes
    are then also measured from :data:`PUSHERS` threads at once, which concurrent pushes
    to one view turn into fewer Delta commits (group commit).
    """
    singles = [push_rows(ids, 1, iso=iso) for _ in range(n)]
    began = time.perf_counter()
    for rows in singles:
        push(rows)
    took = time.perf_counter() - began
    print(
        f"{'push ' + label + ', 1-row pushes':<52} {n / took:>9,.0f} rows/s  ({took / n * 1e3:.2f} ms each)"
    )
    if pusher is not None:
        concurrent_pushes(label, pusher, ids, n, iso=iso)
    batches = [push_rows(ids, 1000, iso=iso) for _ in range(1 if smoke() else max(2, n // 50))]
    began = time.perf_counter()
    for rows in batches:
        push(rows)
    took = time.perf_counter() - began
    print(
        f"{'push ' + label + ', 1,000-row pushes':<52} {1000 * len(batches) / took:>9,.0f} rows/s"
        f"  ({took / len(batches) * 1e3:.1f} ms each)"
    )
    samples = []
    lookups = 0  # lookups after push returned; 1 each means visible on the first read
    for i in range(n):
        rows = push_rows(ids, 1, iso=iso)
        rows[0]["f0"] = value = 1000.0 + i  # a value no earlier push wrote
        began = time.perf_counter_ns()
        push(rows)
        lookups += 1
        while lookup(rows[0]["driver_id"]) != value:
            lookups += 1
        samples.append((time.perf_counter_ns() - began) / 1000)
    samples.sort()
    report(
        f"push {label}: push-to-visible",
        (statistics.median(samples), samples[int(len(samples) * 0.99) - 1]),
        f"({lookups} lookups for {n} pushes)",
        floor=floor,
    )


#: Threads (HTTP clients) pushing at once in the concurrent 1-row variant.
PUSHERS = 8


def concurrent_pushes(
    label: str,
    pusher: Callable[[], Callable[[list[dict[str, Any]]], object]],
    ids: list[int],
    n: int,
    *,
    iso: bool,
) -> None:
    """Rows/s of ``n`` 1-row pushes from :data:`PUSHERS` threads, and each push's latency."""
    each = max(5, n // PUSHERS)
    work = [[push_rows(ids, 1, iso=iso) for _ in range(each)] for _ in range(PUSHERS)]
    funcs = [pusher() for _ in range(PUSHERS)]
    latencies: list[float] = []
    errors: list[BaseException] = []
    start = threading.Barrier(PUSHERS + 1)

    def worker(push: Callable[[list[dict[str, Any]]], object], batches: list[Any]) -> None:
        start.wait()
        try:
            for rows in batches:
                began = time.perf_counter_ns()
                push(rows)
                latencies.append((time.perf_counter_ns() - began) / 1000)
        except BaseException as err:
            errors.append(err)

    threads = [
        threading.Thread(target=worker, args=(f, w)) for f, w in zip(funcs, work, strict=True)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    if errors:
        raise errors[0]
    latencies.sort()
    total = each * PUSHERS
    print(
        f"{'push ' + label + f', 1-row pushes x {PUSHERS} threads':<52} {total / took:>9,.0f} rows/s"
        f"  (each push p50 {statistics.median(latencies) / 1e3:.1f} ms,"
        f" p99 {latencies[int(len(latencies) * 0.99) - 1] / 1e3:.1f} ms)"
    )


def build(folder: Path, entities: int) -> tuple[fk.Store, fk.FeatureView]:
    rng = random.Random(7)
    now = datetime.now(UTC).replace(tzinfo=None)
    frame = pl.DataFrame(
        {
            "driver_id": list(range(entities)),
            "event_ts": [now - timedelta(minutes=rng.randint(1, 600)) for _ in range(entities)],
            **{f: [rng.random() for _ in range(entities)] for f in FEATURES},
        }
    ).with_columns(pl.col("event_ts").alias("ingested_at"))
    (folder / "data").mkdir()
    frame.write_parquet(folder / "data" / "stats.parquet")
    source = fk.Source(
        "stats",
        folder / "data" / "stats.parquet",
        timestamp="event_ts",
        created_timestamp="ingested_at",
    )
    view = fk.feature_view(entity=entity, sources=[source], ttl="1d")(bench_stats)
    store = fk.Store(folder / "store", progress=False)
    store.materialize(view)
    return store, view


def in_process(
    store: fk.Store,
    label: str,
    entities: int,
    n: int,
    floor: tuple[str, tuple[float, float]],
    embedded: bool,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Lookups from this process. The targets are for embedded stores; Redis adds a hop."""
    refs = [f"bench_stats:{f}" for f in FEATURES]
    ids = list(range(entities))
    one = report(
        f"get_online_features {label}, 1 entity x 10",
        timed(lambda: store.get_online_features(refs, {"driver_id": [random.choice(ids)]}), n),
        floor=floor,
    )
    if embedded and not smoke():
        print(" " * 52, target(f"(target p99 <= 5x floor: {one[1] / floor[1][1]:.1f}x)"))
    hundred = report(
        f"get_online_features {label}, 100 entities x 10",
        timed(
            lambda: store.get_online_features(refs, {"driver_id": random.sample(ids, 100)}), n // 4
        ),
        "(server hop)" if not embedded else "",
    )
    return one, hundred


def in_process_push(store: fk.Store, label: str, entities: int, n: int) -> None:
    ids = list(range(entities))

    def lookup(driver: int) -> float | None:
        value = store.get_online_features(["bench_stats:f0"], {"driver_id": [driver]}).item(0, "f0")
        return float(value) if value is not None else None

    def push(rows: list[dict[str, Any]]) -> object:
        return store.push("bench_stats", rows)

    pushes(label, push, lookup, ids, n, pusher=lambda: push)


def http(
    store: fk.Store,
    entities: int,
    n: int,
    load: bool,
    floor: tuple[str, tuple[float, float]],
    push: bool = True,
) -> tuple[float, float]:
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

            single = report(
                "HTTP loopback (httpx), 1 entity x 10",
                timed(one, n),
                target("(target p99 <= 3 ms)"),
                floor=floor,
            )
            report("HTTP loopback (httpx), 100 entities x 10", timed(hundred, n // 4), floor=floor)

            def push_http(rows: list[dict[str, Any]]) -> None:
                reply = client.post("/v1/push", json={"view": "bench_stats", "rows": rows})
                assert reply.status_code == 200, reply.text

            def lookup(driver: int) -> float | None:
                body = {"features": ["bench_stats:f0"], "entities": {"driver_id": [driver]}}
                value = client.post("/v1/features", json=body).json()["columns"]["f0"][0]
                return float(value) if value is not None else None

            def http_pusher() -> Callable[[list[dict[str, Any]]], object]:
                own = httpx.Client(base_url=base, timeout=60)  # one client per thread
                clients.append(own)

                def push_own(rows: list[dict[str, Any]]) -> None:
                    reply = own.post("/v1/push", json={"view": "bench_stats", "rows": rows})
                    assert reply.status_code == 200, reply.text

                return push_own

            clients: list[httpx.Client] = []
            if push:
                try:
                    pushes(
                        "over HTTP",
                        push_http,
                        lookup,
                        ids,
                        push_count(n),
                        iso=True,
                        floor=floor,
                        pusher=http_pusher,
                    )
                finally:
                    for own in clients:
                        own.close()
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
    return single


RAW_APP = """
import sys
import uvicorn


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def raw_floor(n: int) -> tuple[float, float]:
    """An empty POST endpoint as a bare ASGI callable on uvicorn: the HTTP server's own
    cost (and httpx's), without FastAPI; the lookup route is answered at this level."""
    return empty_endpoint(RAW_APP, "floor: empty ASGI endpoint on uvicorn (httpx)", n)


def server_stack() -> str:
    """The HTTP parser and event loop uvicorn picks here ("auto": the fast ones if importable)."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"http={http}, loop={loop}"


def feast_figures(path: Path) -> dict[str, tuple[float, float]]:
    """p50/p99 (µs) per measure of the peer harness's results.json (Feast's online run)."""
    import json

    data = json.loads(path.read_text())
    rows = data.get("online", {}).get("json", []) if isinstance(data, dict) else []
    return {
        row["measure"]: (float(row["p50_us"]), float(row["p99_us"]))
        for row in rows
        if "p99_us" in row
    }


def goals(
    ours: dict[str, tuple[float, float]], feast: dict[str, tuple[float, float]] | None
) -> None:
    """The p99 ratios the online goals are stated in, each against its bound."""
    print("\ngoals (p99 ratios; Feast from --feast-results, measured in the same window):")

    def line(
        what: str, mine: str, theirs: tuple[str, dict[str, tuple[float, float]]], most: float
    ) -> None:
        name, source = theirs
        if mine not in ours or name not in source:
            print(f"  {what:<58} (not measured)")
            return
        ratio = ours[mine][1] / source[name][1]
        verdict = "met" if ratio <= most else "NOT met"
        bound = f"1/{round(1 / most)}" if most < 1 else f"{most:g}"
        print(
            f"  {what:<58} {ours[mine][1]:>8.1f} / {source[name][1]:>8.1f} us = "
            f"{ratio:.2f}x (goal <= {bound}x): {verdict}"
        )

    line("in process 1 entity x 10 vs raw SQLite read", "one", ("sqlite", ours), 5)
    if feast is None:
        print("  (pass --feast-results PATH/results.json for the ratios to Feast)")
        return
    line("in process 1 entity x 10 vs Feast SDK", "one", ("online_sdk_single", feast), 1 / 3)
    line("in process 100 entities x 10 vs Feast SDK", "hundred", ("online_sdk_batch", feast), 1 / 5)
    line("HTTP 1 entity x 10 vs feast serve", "http", ("http_single", feast), 1 / 2)
    if "http_health_floor" in feast and "empty" in ours:
        print(
            f"  {'(floors: empty FastAPI endpoint / feast serve /health)':<58} "
            f"{ours['empty'][1]:>8.1f} / {feast['http_health_floor'][1]:>8.1f} us"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--load", action="store_true", help="also 8 threads x 2,000 HTTP requests")
    parser.add_argument(
        "--feast-results",
        type=Path,
        help="the peer harness's results.json (run_all.py --only online --http), measured "
        "in the same window: prints the p99 ratios to Feast the goals are stated in",
    )
    parser.add_argument(
        "--lookups-only", action="store_true", help="skip pushes and Redis (lookup figures only)"
    )
    parser.add_argument(
        "--push-only", action="store_true", help="only the push rows (SQLite, in process and HTTP)"
    )
    args = parser.parse_args()
    feast = feast_figures(args.feast_results) if args.feast_results else None
    ours: dict[str, tuple[float, float]] = {}
    n = args.requests
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store, view = build(folder, args.entities)
        if args.push_only:
            in_process_push(store, "in process (SQLite)", args.entities, push_count(n))
            http(store, args.entities, n, False, ("empty endpoint", framework_floor(n)), True)
            return
        print(f"store: 1 view x 10 Float64 features x {args.entities:,} entities; {n} calls each")
        print(f"uvicorn: {server_stack()} (featurekit depends on httptools and uvloop)\n")
        # floors: the raw stores, no featurekit in the loop
        from featurekit.online.snapshot import encode_key

        keys = [encode_key((i,)) for i in range(args.entities)]
        table = {k: b"x" * 200 for k in keys}
        dict_floor = report("floor: dict lookup", timed(lambda: table.get(random.choice(keys)), n))
        conn = sqlite3.connect(folder / "store" / "online" / "online.sqlite")
        sid = conn.execute("SELECT sid FROM snapshots").fetchone()[0]
        sql = "SELECT value FROM entries WHERE sid = ? AND key = ?"
        sqlite_floor = report(
            "floor: raw SQLite point read",
            timed(lambda: conn.execute(sql, (sid, random.choice(keys))).fetchone(), n),
        )
        ours["sqlite"] = sqlite_floor
        ours["one"], ours["hundred"] = in_process(
            store, "(SQLite)", args.entities, n, ("SQLite read", sqlite_floor), True
        )
        memory = fk.Store(folder / "store", progress=False, online="memory")
        memory.materialize(view)
        in_process(memory, "(memory)", args.entities, n, ("dict lookup", dict_floor), True)
        redis = None if args.lookups_only else start_redis()
        if redis is None:
            if not args.lookups_only:
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
                hget = report(
                    "floor: raw Redis HGET",
                    timed(lambda: client.hget(rows, random.choice(keys)), n),
                )
                in_process(on_redis, "(Redis)", args.entities, n, ("HGET", hget), False)
                in_process_push(on_redis, "in process (Redis)", args.entities, push_count(n))
            finally:
                proc.terminate()
                proc.wait(10)
        if not args.lookups_only:
            in_process_push(store, "in process (SQLite)", args.entities, push_count(n))
        ours["empty"] = empty = framework_floor(n)
        raw_floor(n)
        ours["http"] = http(
            store, args.entities, n, args.load, ("empty endpoint", empty), not args.lookups_only
        )
        if not smoke():  # toy sizes: timings only, no verdicts
            goals(ours, feast)
        os.sync()


if __name__ == "__main__":
    main()
