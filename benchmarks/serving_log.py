"""Serving log overhead: lookup p50/p99 with the serving log off vs on, and that every
request was logged exactly once.

One run, on one store of 10 features x N entities, measures both modes in the same run,
in alternating blocks (off, on, on, off, ...), so that drift on a shared machine falls on
both alike:
  - in-process: ``get_online_features`` for 1 and 100 entities x 10 features, from two
    Stores on the same root, ``Store(log_serving=False)`` and ``Store(log_serving=True)``,
    one lookup at a time on the embedded store (a stricter case than the load test: the
    lookup loop keeps one core busy, so whatever the log spends is taken from it);
  - in-process under load, as in the in-process half of tests/integration/test_online_load.py:
    ``--threads`` threads of one process looking up at once from a Redis online store (a
    redis-server started on loopback; the part is skipped, with a message, without one),
    1 and 100 entities x 10 features and the load test's own 50 entities x 2 features;
  - HTTP on loopback: real ``featurekit serve`` processes on the same store under a
    concurrent load (``--threads`` clients, as in tests/integration/test_online_load.py),
    the same three lookups per request. Each block gets a server process of its own, started
    (and warmed up) off the clock, with ``--log-features`` for an "on" block: two long-lived
    servers differed by more than the log costs (one process faster than the other for
    reasons of its own: memory layout, hash seed, the core it ran on), and that difference
    fell on one mode only. Fresh processes spread it over both modes.
The log's writer (a process of its own, fed over a socket) runs in the background, so the
blocks with logging on last several of its flush intervals and include its writes. Before
each block the log of the previous block is drained off the clock, so the writer never
runs inside an "off" block.

After each part the log is read back (``store.serving_log()``) and grouped by request id:
the multiset of entity keys per logged request must equal the requests sent, so a lookup
logged twice, dropped or split fails the run (exit 1).

Target: with logging on, p99 at most 1.10x the p99 with logging off (ratio on/off).

Usage: python benchmarks/serving_log.py [--entities 10000] [--blocks 6] [--block-seconds 1.5]
                                        [--threads 8] [--runs 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import NamedTuple

import polars as pl
from _servers import free_port, start_redis
from _targets import target

import featurekit as fk
from featurekit.online.serving_log import FLUSH_SECONDS

FEATURES = [f"f{i}" for i in range(10)]
REFS = [f"bench_stats:{f}" for f in FEATURES]
TARGET = 1.10
entity = fk.Entity("driver", keys=["driver_id"])

Signature = tuple[int, ...]


def bench_stats(stats: pl.LazyFrame) -> pl.LazyFrame:
    """Ten float features per driver."""
    return stats.select("driver_id", "event_ts", *FEATURES)


def feature_view(folder: Path) -> fk.FeatureView:
    """The benchmark's view over the parquet file that :func:`build` writes in ``folder``."""
    source = fk.Source("stats", folder / "data" / "stats.parquet", timestamp="event_ts")
    return fk.feature_view(entity=entity, sources=[source], ttl="1d")(bench_stats)


def build(folder: Path, entities: int) -> Path:
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
    store = fk.Store(folder / "store", progress=False)
    store.materialize(feature_view(folder))
    return store.root


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]


class Result:
    """Latencies (us) per mode of one case, and the ratios on/off."""

    def __init__(self, name: str, off: list[float], on: list[float]) -> None:
        self.name = name
        self.off, self.on = percentiles(off), percentiles(on)
        self.n = (len(off), len(on))
        self.p50 = self.on[0] / self.off[0]
        self.p99 = self.on[1] / self.off[1]

    def show(self) -> None:
        met = "" if self.p99 <= TARGET else "NOT MET"
        print(
            f"{self.name:<40} off p50 {self.off[0]:>8.1f} p99 {self.off[1]:>8.1f} us | "
            f"on p50 {self.on[0]:>8.1f} p99 {self.on[1]:>8.1f} us | "
            f"on/off p50 {self.p50:.3f} p99 {self.p99:.3f} "
            f"{target(f'(target p99 <= {TARGET:.2f}) {met}')}  [n {self.n[0]}/{self.n[1]}]",
            flush=True,
        )


def choose(ids: list[int], size: int) -> Signature:
    return (random.choice(ids),) if size == 1 else tuple(random.sample(ids, size))


def logged_requests(root: Path, since: datetime) -> tuple[Counter[Signature], int]:
    """Entity keys per logged request id (as sorted tuples), and the number of rows."""
    with fk.Store(root, progress=False) as reader:
        log = reader.serving_log(since=since)
    keys = log.select(
        "request_id", pl.col("entity").str.json_path_match("$.driver_id").cast(pl.Int64)
    )
    grouped = keys.group_by("request_id").agg(pl.col("entity").sort())
    return Counter(tuple(k) for k in grouped["entity"].to_list()), log.height


def verify(label: str, root: Path, since: datetime, sent: list[Signature]) -> bool:
    """Every request sent with logging on is logged exactly once (by request id)."""
    logged, rows = logged_requests(root, since)
    expected = Counter(tuple(sorted(s)) for s in sent)
    ok = logged == expected
    missing = sum((expected - logged).values())
    extra = sum((logged - expected).values())
    want_rows = sum(len(s) for s in sent)
    print(
        f"{label}: {len(sent):,} requests sent with logging on, {logged.total():,} request ids "
        f"logged, {rows:,} rows (expected {want_rows:,}): "
        + (
            "each logged exactly once"
            if ok and rows == want_rows
            else f"MISMATCH: {missing} not logged, {extra} logged in excess"
        ),
        flush=True,
    )
    return ok and rows == want_rows


def alternate(blocks: int) -> list[bool]:
    """off, on, on, off, off, on, ...: each mode goes first as often as second."""
    return [bool((i + i // 2) % 2) for i in range(2 * blocks)]


class Shape(NamedTuple):
    """What one lookup asks for: how many entities, and how many of the 10 features."""

    entities: int
    features: int = 10

    @property
    def refs(self) -> list[str]:
        return REFS[: self.features]


#: the one-at-a-time loop's lookups
SHAPES = (Shape(1), Shape(100))
#: the concurrent parts' lookups: also the load test's own, 50 entities x 2 features
#: (tests/integration/test_online_load.py)
LOAD_SHAPES = (*SHAPES, Shape(50, 2))


# ---- in-process ------------------------------------------------------------------------
def in_process(root: Path, entities: int, args: argparse.Namespace) -> tuple[list[Result], bool]:
    off = fk.Store(root, progress=False)
    on = fk.Store(root, progress=False, log_serving=True)
    log = on.online_service().serving_log
    assert log is not None
    ids = list(range(entities))
    since = datetime.now(UTC)
    sent: list[Signature] = []
    results = []
    for shape in SHAPES:
        samples: dict[bool, list[float]] = {False: [], True: []}
        for store in (off, on):  # warm-up (logged too, so counted as sent)
            for _ in range(50):
                sig = choose(ids, shape.entities)
                store.get_online_features(shape.refs, {"driver_id": list(sig)})
                if store is on:
                    sent.append(sig)
        for logging in alternate(args.blocks):
            log.flush()  # the previous block's writes stay out of this block
            store = on if logging else off
            out = samples[logging]
            deadline = time.perf_counter() + args.block_seconds
            while time.perf_counter() < deadline:
                sig = choose(ids, shape.entities)
                began = time.perf_counter_ns()
                store.get_online_features(shape.refs, {"driver_id": list(sig)})
                out.append((time.perf_counter_ns() - began) / 1000)
                if logging:
                    sent.append(sig)
        name = case("in-process", shape)
        results.append(Result(name, samples[False], samples[True]))
        results[-1].show()
    dropped = log.dropped
    on.close()
    if dropped:
        print(f"in-process: the log dropped {dropped} lookups (queue full or failed writes)")
    return results, verify("in-process log", root, since, sent)


def concurrently(
    threads: int,
    seconds: float,
    draw: Callable[[], Signature],
    call: Callable[[int, Signature], bool],
) -> tuple[list[float], list[Signature]]:
    """``threads`` threads calling ``call(thread, signature)`` for ``seconds``: every
    call's latency (us), and the signatures of the calls that succeeded."""
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()
    out: list[float] = []
    done: list[Signature] = []

    def worker(thread: int) -> None:
        mine: list[float] = []
        sigs: list[Signature] = []
        while time.perf_counter() < deadline:
            sig = draw()
            began = time.perf_counter_ns()
            ok = call(thread, sig)
            mine.append((time.perf_counter_ns() - began) / 1000)
            if ok:
                sigs.append(sig)
        with lock:
            out.extend(mine)
            done.extend(sigs)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return out, done


def case(prefix: str, shape: Shape) -> str:
    """A case's name in the output: how it looks up, how many entities and features."""
    n = shape.entities
    return f"{prefix}, {n} entit{'y' if n == 1 else 'ies'} x {shape.features}"


def lookup(store: fk.Store, shape: Shape) -> Callable[[int, Signature], bool]:
    """A :func:`concurrently` call that looks the signature's entities up in ``store``."""
    refs = shape.refs

    def call(_: int, sig: Signature) -> bool:
        store.get_online_features(refs, {"driver_id": list(sig)})
        return True

    return call


# ---- in process under concurrent load, on Redis ------------------------------------------
def in_process_load(
    root: Path, entities: int, args: argparse.Namespace
) -> tuple[list[Result], bool]:
    """The in-process half of the online load test (tests/integration/test_online_load.py):
    ``--threads`` threads of one process looking up at once, from a Redis online store."""
    started = start_redis()
    if started is None:
        print("redis-server is not installed: the in-process load on Redis is skipped")
        return [], True
    proc, url = started
    ids = list(range(entities))
    since = datetime.now(UTC)
    sent: list[Signature] = []
    results = []
    try:
        off = fk.Store(root, progress=False, online=url)
        off.materialize(feature_view(root.parent))  # fills Redis (a no-op offline)
        on = fk.Store(root, progress=False, online=url, log_serving=True)
        log = on.online_service().serving_log
        assert log is not None
        for shape in LOAD_SHAPES:
            samples: dict[bool, list[float]] = {False: [], True: []}
            draw = partial(choose, ids, shape.entities)
            # warm-up, off the clock (logged too, so counted as sent)
            warm = min(0.5, args.block_seconds)
            concurrently(args.threads, warm, draw, lookup(off, shape))
            sent += concurrently(args.threads, warm, draw, lookup(on, shape))[1]
            for logging in alternate(args.blocks):
                log.flush()  # the previous block's writes stay out of this block
                store = on if logging else off
                latencies, done = concurrently(
                    args.threads, args.block_seconds, draw, lookup(store, shape)
                )
                samples[logging] += latencies
                if logging:
                    sent.extend(done)
            name = case(f"in-process x{args.threads}, Redis", shape)
            results.append(Result(name, samples[False], samples[True]))
            results[-1].show()
        dropped = log.dropped
        on.close()
        off.close()
    finally:
        proc.terminate()
        proc.wait(10)
    if dropped:
        print(f"in-process load: the log dropped {dropped} lookups (queue full or failed writes)")
    return results, verify("in-process load log (Redis)", root, since, sent)


# ---- HTTP --------------------------------------------------------------------------------
def serve(root: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "featurekit.cli", "serve", "--store", str(root)),
            *("--port", str(port), *extra),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"featurekit serve {' '.join(extra)} did not start")


def http(root: Path, entities: int, args: argparse.Namespace) -> tuple[list[Result], bool]:
    import httpx

    since = datetime.now(UTC)
    ids = list(range(entities))
    sent: list[Signature] = []
    errors: list[str] = []

    def load(
        clients: list[httpx.Client], logging: bool, shape: Shape, seconds: float
    ) -> list[float]:
        """One client per thread posting for ``seconds``: the latencies (us)."""
        refs = shape.refs

        def call(thread: int, sig: Signature) -> bool:
            body = {"features": refs, "entities": {"driver_id": list(sig)}}
            reply = clients[thread].post("/v1/features", json=body)
            if reply.status_code != 200:
                errors.append(f"HTTP {reply.status_code}: {reply.text[:200]}")
            return reply.status_code == 200

        out, done = concurrently(len(clients), seconds, partial(choose, ids, shape.entities), call)
        if logging:
            sent.extend(done)
        return out

    samples: dict[Shape, dict[bool, list[float]]] = {
        shape: {False: [], True: []} for shape in LOAD_SHAPES
    }
    for logging in alternate(args.blocks):
        # a server of its own per block (every shape), started off the clock
        proc, base = serve(root, *(("--log-features",) if logging else ()))
        clients = [httpx.Client(base_url=base, timeout=30) for _ in range(args.threads)]
        try:
            for shape in LOAD_SHAPES:
                load(clients, logging, shape, min(0.5, args.block_seconds))  # warm-up
                # the server's writer flushes at least every FLUSH_SECONDS: wait for it, so
                # that the warm-up's (and the previous shape's) writes stay out of the block
                time.sleep(FLUSH_SECONDS + 0.3)
                samples[shape][logging] += load(clients, logging, shape, args.block_seconds)
        finally:
            for c in clients:
                c.close()
            proc.terminate()  # an orderly stop: the logging server writes what is queued
            proc.wait(30)
    results = []
    for shape in LOAD_SHAPES:
        name = case(f"HTTP x{args.threads}", shape)
        results.append(Result(name, samples[shape][False], samples[shape][True]))
        results[-1].show()
    if errors:
        print(f"HTTP: {len(errors)} failed requests, e.g. {errors[0]}")
    return results, verify("HTTP log", root, since, sent) and not errors


def one_run(args: argparse.Namespace) -> tuple[list[Result], bool]:
    with tempfile.TemporaryDirectory() as tmp:
        root = build(Path(tmp), args.entities)
        results, ok = in_process(root, args.entities, args)
        loaded, ok_load = in_process_load(root, args.entities, args)
        more, ok_http = http(root, args.entities, args)
        return results + loaded + more, ok and ok_load and ok_http


def summary(runs: list[list[Result]]) -> None:
    print("\nover runs: median ratio on/off (min-max)")
    for i, first in enumerate(runs[0]):
        p50 = [run[i].p50 for run in runs]
        p99 = [run[i].p99 for run in runs]
        med = statistics.median(p99)
        met = "met" if med <= TARGET else "NOT MET"
        print(
            f"{first.name:<40} p50 {statistics.median(p50):.3f} ({min(p50):.3f}-{max(p50):.3f})"
            f"   p99 {med:.3f} ({min(p99):.3f}-{max(p99):.3f}) "
            f"{target(f'(target <= {TARGET:.2f}: {met})')}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--blocks", type=int, default=6, help="blocks per mode and case")
    parser.add_argument("--block-seconds", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--runs", type=int, default=1, help="whole runs, then a summary")
    args = parser.parse_args()
    print(
        f"store: 1 view x 10 Float64 features x {args.entities:,} entities; {args.blocks} "
        f"blocks of {args.block_seconds} s per mode and case, alternating\n",
        flush=True,
    )
    runs = []
    ok = True
    for r in range(args.runs):
        if args.runs > 1:
            print(f"-- run {r + 1} of {args.runs}", flush=True)
        results, good = one_run(args)
        runs.append(results)
        ok = ok and good
    if args.runs > 1:
        summary(runs)
    if not ok:
        sys.exit("the serving log did not log every request exactly once")


if __name__ == "__main__":
    main()
