"""Bucketed storage benchmark: a knowledge-time training set with bucketing on, against
polars sort + ``join_asof`` and against the floor, all measured in the same run.

The floor is what any training set over this store must do at least: read the stored
table's needed columns and sort the labels by (key, time). The same data is also built
out of core (under a memory budget far below its size), and the per-bucket throughput
that docs/scale.md's cost model starts from is printed.

Usage: python benchmarks/scale.py [--labels 1e6] [--rows 1e7] [--entities 1e5]
       [--buckets 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import polars as pl
from _targets import target
from pit import bench, make_data, peak_mib, polars_asof, timed

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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            child(Path(args.child), args.budget)
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
        plain.materialize(view, full_refresh=True)
        bucketed = fk.Store(folder / "bucketed", progress=False, online=False)
        bucketed.materialize(view, full_refresh=True)
        began = time.perf_counter()
        bucketed.optimize("bench", buckets=n)
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
        floor_s = timed(floor, args.repeat)
        one = timed(lambda: build(plain), args.repeat)
        many = timed(lambda: build(bucketed), args.repeat)
        many_event = timed(lambda: build(bucketed, "event"), args.repeat)
        assert build(plain).manifest.result_hash == build(bucketed).manifest.result_hash
        size = labels.estimated_size() + labels.height * 16 * 5
        tight = fk.Store(folder / "bucketed", progress=False, online=False, memory_budget=size)
        began = time.perf_counter()
        spilled = build(tight)
        out_of_core = time.perf_counter() - began
        assert spilled.manifest.result_hash == build(plain).manifest.result_hash
        print(f"polars sort + join_asof (event time)     : 1.00  ({baseline:.2f}s baseline)")
        print(
            f"floor: read needed columns + sort labels : {floor_s / baseline:.2f}x  ({floor_s:.2f}s)"
        )
        print(f"featurekit knowledge time, B=1           : {one / baseline:.2f}x")
        print(
            f"featurekit knowledge time, B={n:<3}         : {many / baseline:.2f}x"
            f"{target('  (target <= 0.5)')}, {many / floor_s:.2f}x the floor"
            f"{target('  (target <= 1.6)')}"
        )
        print(f"featurekit event time, B={n:<3}             : {many_event / baseline:.2f}x")
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


if __name__ == "__main__":
    main()
