"""Windowed aggregations benchmark: exact per-label aggregates vs a plain join_asof, same run.

1M labels, 10M events, 100k entities by default; sum/count/mean/max over 1h/7d/30d.
Reports the time ratio against a single plain polars join_asof on the same data (target
<= 2x), a naive join+filter+group_by on a sample of labels (to show the cost it avoids),
and peak memory (target < 8 GiB), each measured in a fresh child process.

Usage: python benchmarks/aggregations.py [--labels 1e6] [--events 1e7] [--entities 1e5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _targets import target
from pit import make_data

import featurekit as fk

WINDOWS = {"1h": timedelta(hours=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
FUNCTIONS = ["sum", "count", "mean", "max"]


def run(variant: str, labels_n: int, events_n: int, entities: int) -> dict[str, float]:
    """One measurement in this process: seconds for the variant, and peak RSS."""
    features, labels = make_data(labels_n, events_n, entities)
    events = features.select("entity_id", "event_ts", "created_ts", pl.col("f0").alias("fare"))
    began = time.perf_counter()
    if variant == "join_asof":
        labels.sort("label_ts").join_asof(
            events.sort("event_ts"),
            left_on="label_ts",
            right_on="event_ts",
            by="entity_id",
            check_sortedness=False,
        )
    elif variant == "naive_sample":
        sample = labels.head(max(1, labels_n // 100))
        pairs = sample.join(events, on="entity_id")
        pl.concat(
            [
                pairs.filter(
                    (pl.col("event_ts") <= pl.col("label_ts"))
                    & (pl.col("event_ts") > pl.col("label_ts") - w)
                    & (pl.col("created_ts") <= pl.col("label_ts"))
                )
                .group_by("entity_id", "label_ts")
                .agg(
                    pl.col("fare").sum().alias("sum"),
                    pl.len().alias("count"),
                    pl.col("fare").mean().alias("mean"),
                    pl.col("fare").max().alias("max"),
                )
                for w in WINDOWS.values()
            ]
        )
    else:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entity = fk.Entity("entity", keys=["entity_id"])
            source = fk.Source(
                "events", events, timestamp="event_ts", created_timestamp="created_ts"
            )
            aggs = [fk.Aggregation("fare", f, w) for w in WINDOWS for f in FUNCTIONS]

            def activity(events: pl.LazyFrame) -> pl.LazyFrame:
                return events

            view = fk.feature_view(entity=entity, sources=[source], aggregations=aggs)(activity)
            store = fk.Store(Path(tmp) / "store", progress=False)
            store.materialize(view)
            began = time.perf_counter()
            store.training_set(labels, features=["activity:*"], timestamp="label_ts")
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # KiB -> GiB
    return {"seconds": seconds, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=float, default=1e6)
    parser.add_argument("--events", type=float, default=1e7)
    parser.add_argument("--entities", type=float, default=1e5)
    parser.add_argument("--repeat", type=int, default=5, help="rounds (median reported)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (int(args.labels), int(args.events), int(args.entities))
    if args.variant:
        print(json.dumps(run(args.variant, *sizes)))
        return
    runs: dict[str, list[dict[str, float]]] = {}
    # variants interleaved, each in a fresh process, so machine noise hits all of them alike
    for _ in range(args.repeat):
        for variant in ("join_asof", "featurekit", "naive_sample"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--variant",
                    variant,
                    "--labels",
                    str(sizes[0]),
                    "--events",
                    str(sizes[1]),
                    "--entities",
                    str(sizes[2]),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.setdefault(variant, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {
        variant: {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "peak_gib": max(r["peak_gib"] for r in rs),
        }
        for variant, rs in runs.items()
    }
    base = results["join_asof"]["seconds"]
    print(
        f"labels={sizes[0]:,} events={sizes[1]:,} entities={sizes[2]:,}; "
        f"{len(FUNCTIONS)} functions x {len(WINDOWS)} windows"
    )
    print(
        f"plain join_asof (baseline)          : 1.00  ({base:.2f}s, peak {results['join_asof']['peak_gib']:.2f} GiB)"
    )
    fk_res = results["featurekit"]
    print(
        f"featurekit exact aggregations       : {fk_res['seconds'] / base:.2f}x  "
        f"{target('(target <= 2x) ')}(peak {fk_res['peak_gib']:.2f} GiB{target(', target < 8 GiB')})"
    )
    naive = results["naive_sample"]
    print(
        f"naive join+filter+group_by, 1% of labels: {naive['seconds'] / base:.2f}x "
        f"(peak {naive['peak_gib']:.2f} GiB; grows with labels x events per entity)"
    )


if __name__ == "__main__":
    main()
