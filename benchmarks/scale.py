"""Bucketed storage benchmark: a knowledge-time training set with bucketing on, against
polars sort + ``join_asof`` and against the floor, all measured in the same run.

The floor is what any training set over this store must do at least: read the stored
table's needed columns and sort the labels by (key, time). The same data is also built
out of core (under a memory budget far below its size), and the per-bucket throughput
that docs/scale.md's cost model starts from is printed.

Three measurements, each from the command line:

- default: the in-memory figures above (1M labels x 10M rows x 100k entities unless told);
- ``--out-of-core``: the same training set at 10M labels x 100M rows x 1M entities under
  an 8 GiB budget, against 1M x 10M built the same way in the same run: the source is
  generated in parquet chunks (bounded memory) under ``--dir``, materialized, and the
  training set built, each step in a fresh process (its peak RSS is its own); prints
  seconds, peak RSS and the cost per stored row of each size;
- ``--ray``: the training set on a two-node Ray cluster started on 127.0.0.1 (and stopped
  afterwards) against the local engine, same data, same run; prints the ratio, whether
  the results are identical, and each Ray worker's peak RSS.

Usage: python benchmarks/scale.py [--labels 1e6] [--rows 1e7] [--entities 1e5]
       [--buckets 16] [--repeat 5]
       python benchmarks/scale.py --out-of-core [--dir /tmp/fk-scale] [--budget 8GiB]
       python benchmarks/scale.py --ray [--labels 1e6] [--rows 1e7] [--buckets 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import polars as pl
from _targets import target
from pit import FEATURES, SPAN_S, _instants, bench, make_data, peak_mib, polars_asof, timed

import featurekit as fk
from featurekit.storage import delta

COLUMNS = ["entity_id", "event_ts", "created_ts", "f0", "f1", "f2", "f3", "f4"]


def child(folder: Path, budget: int | None) -> None:
    """One training set in this fresh process; prints its seconds and peak RSS as JSON."""
    labels = pl.read_parquet(folder / "labels.parquet")
    store = fk.Store(folder / "bucketed", progress=False, online=False, memory_budget=budget)
    began = time.perf_counter()
    ts = store.training_set(labels, features=["bench:*"], timestamp="label_ts")
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib(), "rows": len(ts)}))


def peak_rss(folder: Path, budget: int | None) -> dict[str, float]:
    """Run :func:`child` in a fresh process (its peak is its own, not this one's)."""
    extra = [] if budget is None else ["--budget", str(budget)]
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(folder), *extra],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=float, default=1e6)
    parser.add_argument("--rows", type=float, default=1e7)
    parser.add_argument("--entities", type=float, default=1e5)
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--out-of-core", action="store_true", help="10M x 100M under a budget")
    parser.add_argument("--big-labels", type=float, default=1e7)
    parser.add_argument("--big-rows", type=float, default=1e8)
    parser.add_argument("--big-entities", type=float, default=1e6)
    parser.add_argument("--memory-budget", default="8GiB", help="--out-of-core's budget")
    parser.add_argument("--dir", help="--out-of-core's data (kept when given; else a temp dir)")
    parser.add_argument("--ray", action="store_true", help="Ray (two local nodes) vs local")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if args.phase:
                phase(args.phase, Path(args.child), args)
            else:
                child(Path(args.child), args.budget)
        return
    print(f"load average before: {os.getloadavg()[0]:.1f} (2-core machine: above 2 is contention)")
    if args.out_of_core:
        run_out_of_core(args)
        return
    if args.ray:
        ray_against_local(args)
        return
    features, labels = make_data(int(args.labels), int(args.rows), int(args.entities))
    n = args.buckets
    print(f"labels={labels.height:,} rows={features.height:,} buckets={n}")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(tmp)
        entity = fk.Entity("entity", keys=["entity_id"])
        source = fk.Source("rows", features, timestamp="event_ts", created_timestamp="created_ts")
        view = fk.feature_view(entity=entity, sources=[source], ttl="1d")(bench)
        plain = fk.Store(folder / "plain", progress=False, online=False)
        with mock.patch("featurekit.offline.buckets.choose_buckets", lambda size, dtypes: 1):
            plain.materialize(view, full_refresh=True)  # B = 1 whatever the size
        auto = fk.Store(folder / "auto", progress=False, online=False)
        auto.materialize(view, full_refresh=True)  # the B a full run chooses for this size
        chosen = auto.versions("bench")[-1].buckets
        bucketed = fk.Store(folder / "bucketed", progress=False, online=False)
        with mock.patch("featurekit.offline.buckets.choose_buckets", lambda size, dtypes: 1):
            bucketed.materialize(view, full_refresh=True)  # then moved to B = n below
        began = time.perf_counter()
        bucketed.optimize("bench", buckets=max(n, chosen))
        rebucket_s = time.perf_counter() - began
        uri = bucketed.registry.layout.table_uri("bench", 1)
        version = delta.current_version(uri)
        assert version is not None

        def floor() -> None:
            delta.read_rows(uri, version=version, columns=COLUMNS)
            labels.sort("entity_id", "label_ts")

        def build(store: fk.Store, mode: str = "knowledge") -> fk.TrainingSet:
            return store.training_set(
                labels,
                features=["bench:*"],
                timestamp="label_ts",
                point_in_time=mode,  # type: ignore[arg-type]
            )

        baseline = timed(lambda: polars_asof(features, labels), args.repeat)
        floors: list[float] = []

        def warm(fn: Callable[[], object]) -> float:
            """Seconds of ``fn``'s second of two runs in a row (the first warms it up)."""
            fn()
            return timed(fn, 1)

        def paired(fn: Callable[[], object]) -> tuple[float, float]:
            """``fn``'s median seconds, and the median of its ratios to a floor run just
            before each run, both warm: the floor takes a fifth of a second, so a ratio
            of two medians taken a minute apart moved with the machine (0.93-1.77 the
            floor over four runs of the same code)."""
            runs, ratios = [], []
            for _ in range(args.repeat):
                floors.append(warm(floor))
                runs.append(warm(fn))
                ratios.append(runs[-1] / floors[-1])
            return statistics.median(runs), statistics.median(ratios)

        # (what, B, store): the full run's own layout, and one file a bucket by optimize
        stores = [
            ("B=1", 1, plain),
            (f"B={chosen} (a full run's choice)", chosen, auto),
            (f"B={n} (optimize --buckets {n})", n, bucketed),
        ]
        measured = {
            (what, mode): paired(lambda st=st, mode=mode: build(st, mode))
            for what, _, st in stores
            for mode in ("knowledge", "event")
        }
        seconds = {key: took for key, (took, _) in measured.items()}
        floor_s = statistics.median(floors)
        for mode in ("knowledge", "event"):  # bucketing changes no answer
            want = build(plain, mode).manifest.result_hash
            for what, _, st in stores:
                assert build(st, mode).manifest.result_hash == want, (what, mode)
        many = seconds[(stores[-1][0], "knowledge")]
        size = labels.estimated_size() + labels.height * 16 * 5
        tight = fk.Store(folder / "bucketed", progress=False, online=False, memory_budget=size)
        began = time.perf_counter()
        spilled = build(tight)
        out_of_core = time.perf_counter() - began
        assert spilled.manifest.result_hash == build(plain).manifest.result_hash
        print(f"polars sort + join_asof (event time)     : 1.00  ({baseline:.2f}s baseline)")
        print(
            f"floor: read needed columns + sort labels : {floor_s / baseline:.2f}x  ({floor_s:.2f}s;"
            " each build below is timed against a floor run just before it)"
        )
        for what, b, _ in stores:
            for mode in ("knowledge", "event"):
                took, over_floor = measured[(what, mode)]
                goal = b > 1
                print(
                    f"featurekit {mode:<9} time, {what:<30}: {took / baseline:.2f}x"
                    f"{target('  (target <= 0.5)') if goal else ''}, "
                    f"{over_floor:.2f}x the floor{target('  (target <= 1.6)') if goal else ''}"
                )
        print("results hash-identical to B=1 in both modes: yes")
        print(
            f"out of core (budget {size / 2**20:.1f} MiB, B={n})    : {out_of_core / baseline:.2f}x"
            f"  ({out_of_core:.2f}s, {len(list((folder / 'bucketed').rglob('part-*.parquet')))} parts)"
        )
        print(f"optimize --buckets {n} (one-time)         : {rebucket_s:.2f}s")
        per_bucket = many / n
        print(
            f"per bucket: {per_bucket * 1000:.1f} ms for {features.height / n:,.0f} rows and "
            f"{labels.height / n:,.0f} labels = {features.height / many / 1e6:.1f}M rows/s, "
            f"{labels.height / many / 1e6:.2f}M labels/s (one process)"
        )
        if args.no_rss:
            return
        labels.write_parquet(folder / "labels.parquet")
        memory = peak_rss(folder, None)
        spilled_rss = peak_rss(folder, size)
        print(
            f"peak RSS, fresh process, B={n}: in memory {memory['peak_mib']:.0f} MiB "
            f"({memory['seconds']:.2f}s); out of core {spilled_rss['peak_mib']:.0f} MiB "
            f"({spilled_rss['seconds']:.2f}s)"
        )

        print(f"load average after: {os.getloadavg()[0]:.1f}")


CHUNK = 2_000_000


def phase(name: str, folder: Path, args: argparse.Namespace) -> None:
    """One step of ``--out-of-core`` in this fresh process; prints seconds and peak RSS."""
    began = time.perf_counter()
    extra: dict[str, object] = {}
    if name == "gen":  # chunk by chunk: memory holds one chunk, never the whole source
        rows, entities = int(args.rows), int(args.entities)
        (folder / "source").mkdir(parents=True, exist_ok=True)
        for i, first in enumerate(range(0, rows, CHUNK)):
            n = min(CHUNK, rows - first)
            rng = np.random.default_rng(1000 + i)
            event = rng.integers(0, SPAN_S, n)
            pl.DataFrame(
                {
                    "entity_id": rng.integers(0, entities, n),
                    "event_ts": _instants(event),
                    "created_ts": _instants(event + rng.integers(0, 3_600, n)),
                    **{f: rng.random(n) for f in FEATURES},
                }
            ).write_parquet(folder / "source" / f"part-{i:05d}.parquet")
        rng = np.random.default_rng(7)
        count = int(args.labels)
        pl.DataFrame(
            {
                "entity_id": rng.integers(0, entities, count),
                "label_ts": _instants(rng.integers(0, SPAN_S, count)),
            }
        ).write_parquet(folder / "labels.parquet")
    elif name == "mat":
        entity = fk.Entity("entity", keys=["entity_id"])
        source = fk.Source(
            "rows",
            str(folder / "source" / "*.parquet"),
            timestamp="event_ts",
            created_timestamp="created_ts",
        )
        view = fk.feature_view(entity=entity, sources=[source], ttl="1d")(bench)
        store = fk.Store(
            folder / "store", progress=False, online=False, memory_budget=args.memory_budget
        )
        store.materialize(view, full_refresh=True)
        extra["buckets"] = store.versions("bench")[-1].buckets
    else:  # "knowledge" or "event": the training set
        labels = pl.read_parquet(folder / "labels.parquet")
        store = fk.Store(
            folder / "store", progress=False, online=False, memory_budget=args.memory_budget
        )
        ts = store.training_set(
            labels,
            features=["bench:*"],
            timestamp="label_ts",
            point_in_time=name,  # type: ignore[arg-type]
        )
        extra["hash"] = ts.manifest.result_hash[:12]
        extra["spilled"] = bool(list((folder / "store").rglob("result/part-*.parquet")))
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib(), **extra}))


def run_phase(name: str, folder: Path, sizes: tuple[float, float, float], budget: str) -> dict:
    """:func:`phase` in a fresh process."""
    labels, rows, entities = sizes
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            *("--child", str(folder), "--phase", name, "--memory-budget", budget),
            *("--labels", str(labels), "--rows", str(rows), "--entities", str(entities)),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = os.getloadavg()[0]
    return result


def run_out_of_core(args: argparse.Namespace) -> None:
    """10M x 100M (by default) under the budget, against 1M x 10M built the same way."""
    keep = args.dir is not None
    root = Path(args.dir) if keep else Path(tempfile.mkdtemp(prefix="fk-scale-", dir="/tmp"))
    sizes = {
        "reference": (args.labels, args.rows, args.entities),
        "big": (args.big_labels, args.big_rows, args.big_entities),
    }
    print(f"budget {args.memory_budget}; data under {root} ({'kept' if keep else 'deleted'})")
    figures: dict[str, dict[str, dict]] = {}
    try:
        for size, dims in sizes.items():
            folder = root / size
            steps: dict[str, dict] = {}
            if not (folder / "labels.parquet").exists():
                steps["generate"] = run_phase("gen", folder, dims, args.memory_budget)
            if not (folder / "store" / "features").exists():
                steps["materialize"] = run_phase("mat", folder, dims, args.memory_budget)
            for mode in ("event", "knowledge"):
                steps[mode] = run_phase(mode, folder, dims, args.memory_budget)
            figures[size] = steps
            labels, rows, entities = dims
            print(f"{size}: {labels:,.0f} labels x {rows:,.0f} rows x {entities:,.0f} entities")
            for step, got in steps.items():
                what = {k: v for k, v in got.items() if k not in ("seconds", "peak_mib", "load")}
                print(
                    f"  {step:<12}: {got['seconds']:7.1f}s  peak RSS {got['peak_mib']:6.0f} MiB"
                    f"  (load {got['load']:.1f})  {what if what else ''}"
                )
        for mode in ("event", "knowledge"):
            per_row = {size: figures[size][mode]["seconds"] / sizes[size][1] for size in sizes}
            growth = per_row["big"] / per_row["reference"]
            print(
                f"{mode} training set, per stored row: {per_row['reference'] * 1e9:.1f} ns -> "
                f"{per_row['big'] * 1e9:.1f} ns = {growth:.2f}x{target('  (target <= 1.3)')}"
            )
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_cli() -> str:
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else "ray"


def _start_cluster(temp: str) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """Two Ray nodes on 127.0.0.1, one CPU each, each its own process group."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    here = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    common = ["--num-cpus", "1", "--object-store-memory", str(512 * 2**20), "--block"]
    head = [
        *("--head", "--node-ip-address", "127.0.0.1", "--port", str(port)),
        *("--include-dashboard", "false", "--temp-dir", temp, "--disable-usage-stats"),
    ]
    second = ["--address", address, "--node-ip-address", "127.0.0.1"]
    nodes: list[subprocess.Popen[bytes]] = []
    for extra, count in ((head, 1), (second, 2)):
        nodes.append(
            subprocess.Popen(
                [_ray_cli(), "start", *extra, *common],
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_nodes(address, count)
    return address, nodes


def _wait_nodes(address: str, count: int) -> None:
    probe = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False); "
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {count} nodes")


def _stop_cluster(nodes: list[subprocess.Popen[bytes]]) -> None:
    for node in reversed(nodes):
        os.killpg(node.pid, signal.SIGTERM)  # the node's own process group only
    for node in nodes:
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)


def _worker_peaks(sessions: set[int]) -> list[float]:
    """Peak RSS (MiB, VmHWM) of every Ray worker process of our nodes' sessions."""
    peaks = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) not in sessions:
                continue
            if not (proc / "cmdline").read_bytes().startswith(b"ray::"):
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except (OSError, ProcessLookupError):
            continue
    return sorted(peaks, reverse=True)


def ray_against_local(args: argparse.Namespace) -> None:
    """The same training set on the local engine and on a two-node local Ray cluster."""
    import ray

    features, labels = make_data(int(args.labels), int(args.rows), int(args.entities))
    n = args.buckets
    print(f"labels={labels.height:,} rows={features.height:,} buckets={n}")
    temp = tempfile.mkdtemp(prefix="fkray", dir="/tmp")  # Ray's socket paths must be short
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entity = fk.Entity("entity", keys=["entity_id"])
            source = fk.Source(
                "rows", features, timestamp="event_ts", created_timestamp="created_ts"
            )
            view = fk.feature_view(entity=entity, sources=[source], ttl="1d")(bench)
            local = fk.Store(Path(tmp) / "store", progress=False, online=False)
            local.materialize(view, full_refresh=True)
            local.optimize("bench", buckets=n)
            del features
            address, nodes = _start_cluster(temp)
            os.environ["RAY_ADDRESS"] = address
            remote = fk.Store(Path(tmp) / "store", progress=False, online=False, engine="ray")
            results = {}
            for mode in ("knowledge", "event"):

                def build(store: fk.Store, mode: str = mode) -> fk.TrainingSet:
                    return store.training_set(
                        labels,
                        features=["bench:*"],
                        timestamp="label_ts",
                        point_in_time=mode,  # type: ignore[arg-type]
                    )

                build(remote)  # connects, starts the workers
                here = timed(lambda: build(local), args.repeat)
                there = timed(lambda: build(remote), args.repeat)
                same = build(local).manifest.result_hash == build(remote).manifest.result_hash
                results[mode] = (here, there, same)
            peaks = _worker_peaks({node.pid for node in nodes})
            ray.shutdown()
        for mode, (here, there, same) in results.items():
            print(
                f"{mode}: local {here:.2f}s, Ray (2 nodes x 1 CPU) {there:.2f}s = "
                f"{there / here:.2f}x local; identical result hash: {same}"
            )
        shown = ", ".join(f"{p:.0f}" for p in peaks)
        print(f"Ray worker peak RSS (MiB, {len(peaks)} workers): {shown}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        if nodes:
            _stop_cluster(nodes)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
