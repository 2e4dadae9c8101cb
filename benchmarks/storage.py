"""Team-store benchmark: a store on S3 (a moto server on loopback) vs the same on a local folder.

1. ``training_set`` on one view, on an S3 root and on a local root with the same data:
   the ratio, and where the time goes, timed at the seams: registry listings, registry
   reads, the Delta log (pinning the version), reading the pinned table (Delta log and
   parquet), and the rest (the join, hashing, bookkeeping). Repeated sets with the same
   labels reuse their recorded labels, so no table is written in the timed runs.
2. Registry operations per second (``log_model``: list the versions, create the next one
   create-only) with 1 and 4 writer processes on one root, S3 and local.

The emulator runs on the same two cores as the client, so S3 figures here are an upper
bound on the request overhead, not a forecast for a real bucket (which adds network latency
but not CPU). Reports ratios measured in the same run.

Usage: python benchmarks/storage.py [--labels 2e5] [--rows 2e6] [--entities 2e4]
       [--ops 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the same emulator the tests use

import featurekit as fk  # noqa: E402
from featurekit.storage import delta  # noqa: E402

BUCKET = "featurekit-bench"


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def build_store(root: str, options: dict[str, str], features: pl.DataFrame) -> Any:
    from pit import bench

    entity = fk.Entity("entity", keys=["entity_id"])
    source = fk.Source("rows", features, timestamp="event_ts", created_timestamp="created_ts")
    view = fk.feature_view(entity=entity, sources=[source], ttl="1d")(bench)
    store = fk.Store(root, storage_options=options or None, progress=False, online=False)
    store.materialize(view)
    return store


PARTS = ("registry listing", "registry reads", "delta log", "table reads", "table writes")


def training_set_figures(store: Any, labels: pl.DataFrame, repeat: int) -> dict[str, float]:
    """Median training_set time, and where one run's time goes (timed at the seams)."""
    wanted = ["bench:*"]
    run = lambda: store.training_set(labels, wanted, "label_ts")  # noqa: E731
    run()  # the first run also writes the labels and the manifest: measured apart below
    total = median_time(run, repeat)
    spent = dict.fromkeys(PARTS, 0.0)

    def timed(part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - began

        return wrapper

    objects = store.registry.objects
    originals = {
        name: getattr(delta, name)
        for name in ("read_rows", "current_version", "version_at", "write_rows")
    }
    saved = {name: getattr(objects, name) for name in ("list", "read", "exists", "write_if_absent")}
    try:
        objects.list = timed("registry listing", saved["list"])
        for name in ("read", "exists", "write_if_absent"):
            setattr(objects, name, timed("registry reads", saved[name]))
        delta.read_rows = timed("table reads", originals["read_rows"])
        delta.current_version = timed("delta log", originals["current_version"])
        delta.version_at = timed("delta log", originals["version_at"])
        delta.write_rows = timed("table writes", originals["write_rows"])
        began = time.perf_counter()
        run()
        one = time.perf_counter() - began
    finally:
        for name, fn in originals.items():
            setattr(delta, name, fn)
        for name in saved:
            delattr(objects, name)  # back to the class's methods
    # the parts scaled to the median run; the rest is the join, hashing and bookkeeping
    scale = total / one if one else 1.0
    out = {part: spent[part] * scale for part in PARTS}
    out["total"] = total
    out["rest"] = max(total - sum(out[p] for p in PARTS), 0.0)
    return out


def _writer(root: str, options: dict[str, str], ts_id: str, ops: int, start: Any) -> None:
    store = fk.Store(root, storage_options=options or None, progress=False, online=False)
    start.wait(120)
    for i in range(ops):
        store.log_model("bench", training_set=ts_id, model=f"uri://m/{uuid.uuid4().hex}/{i}")


def registry_ops_per_second(
    root: str, options: dict[str, str], ts_id: str, writers: int, ops: int
) -> tuple[float, list[int]]:
    """log_model calls per second over all writers, and the version numbers they got."""
    store = fk.Store(root, storage_options=options or None, progress=False, online=False)
    before = len(store.registry.model_versions("bench"))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(writers + 1)
    procs = [
        ctx.Process(target=_writer, args=(root, options, ts_id, ops, start)) for _ in range(writers)
    ]
    for p in procs:
        p.start()
    start.wait(120)
    began = time.perf_counter()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - began
    if any(p.exitcode for p in procs):
        raise SystemExit("a registry writer failed")
    numbers = [m.version for m in store.registry.model_versions("bench")][before:]
    return writers * ops / elapsed, numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=float, default=1e5)
    parser.add_argument("--rows", type=float, default=1e6)
    parser.add_argument("--entities", type=float, default=1e4)
    parser.add_argument("--ops", type=int, default=40, help="log_model calls per writer")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from pit import make_data
    from s3_emulator import create_bucket, moto_server, storage_options

    features, labels = make_data(int(args.labels), int(args.rows), int(args.entities))
    print(
        f"labels {labels.height:,}, feature rows {features.height:,}, "
        f"entities {int(args.entities):,}; registry: {args.ops} ops per writer"
    )
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        folder = Path(tmp)
        create_bucket(endpoint, BUCKET)
        options = storage_options(endpoint)
        roots = {
            "local": (str(folder / "store"), {}),
            "s3": (f"s3://{BUCKET}/store", options),
        }
        figures: dict[str, dict[str, float]] = {}
        sets: dict[str, str] = {}
        for kind, (root, opts) in roots.items():
            began = time.perf_counter()
            store = build_store(root, opts, features)
            built = time.perf_counter() - began
            figures[kind] = training_set_figures(store, labels, args.repeat)
            sets[kind] = store.training_set(labels.head(10), ["bench:*"], "label_ts").id
            f = figures[kind]
            parts = " + ".join(f"{p} {f[p]:.3f}s" for p in (*PARTS, "rest"))
            print(
                f"{kind:>5}: materialize {built:6.2f}s | training_set {f['total']:.3f}s = {parts}"
            )
        ratio = figures["s3"]["total"] / figures["local"]["total"]
        extra = figures["s3"]["total"] - figures["local"]["total"]
        print(f"training_set S3 / local: {ratio:.2f} (S3 adds {extra:.3f}s)")
        for part in (*PARTS, "rest"):
            delta_s = figures["s3"][part] - figures["local"][part]
            share = delta_s / extra if extra > 0 else 0.0
            print(f"  {part:>16}: {delta_s:+.3f}s ({share:.0%} of the difference)")
        for kind, (root, opts) in roots.items():
            for writers in (1, 4):
                rate, numbers = registry_ops_per_second(root, opts, sets[kind], writers, args.ops)
                dense = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
                print(
                    f"registry ops/s, {kind:>5}, {writers} writer(s): {rate:7.1f} "
                    f"({len(numbers)} versions, dense and unique: {dense})"
                )
                if not dense or len(numbers) != writers * args.ops:
                    raise SystemExit("registry versions were lost or duplicated")


if __name__ == "__main__":
    main()
