"""Point-in-time join benchmark: featurekit's training_set vs raw polars join_asof (and DuckDB).

Reports ratios against baselines measured in the same run, never bare seconds as a target.
Peak memory: each variant (polars join_asof reading the same data from parquet, featurekit
reading its Delta store) runs once more in a fresh child process; ru_maxrss is compared.

Usage: python benchmarks/pit.py [--labels 1e6] [--rows 1e7] [--entities 1e5] [--repeat 3]
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from _targets import target

import featurekit as fk

FEATURES = [f"f{i}" for i in range(5)]
START_US = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
SPAN_S = 90 * 86_400


def make_data(
    labels: int, rows: int, entities: int, seed: int = 7
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Deterministic feature rows (with a created time) and labels."""
    rng = np.random.default_rng(seed)
    event = rng.integers(0, SPAN_S, rows)
    features = pl.DataFrame(
        {
            "entity_id": rng.integers(0, entities, rows),
            "event_ts": _instants(event),
            "created_ts": _instants(event + rng.integers(0, 3_600, rows)),
            **{f: rng.random(rows) for f in FEATURES},
        }
    )
    label_frame = pl.DataFrame(
        {
            "entity_id": rng.integers(0, entities, labels),
            "label_ts": _instants(rng.integers(0, SPAN_S, labels)),
        }
    )
    return features, label_frame


def _instants(seconds: np.ndarray) -> pl.Series:
    return pl.Series(seconds * 1_000_000 + START_US).cast(pl.Datetime("us"))


def timed(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs)


def polars_asof(features: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """The baseline: event-time as-of join with the sorts it needs (no knowledge time)."""
    return labels.sort("label_ts").join_asof(
        features.sort("event_ts"),
        left_on="label_ts",
        right_on="event_ts",
        by="entity_id",
        tolerance="1d",
        check_sortedness=False,
    )


def duckdb_asof(features: pl.DataFrame, labels: pl.DataFrame) -> object:
    import duckdb

    con = duckdb.connect()
    con.register("f", features.to_arrow())
    con.register("l", labels.to_arrow())
    # ASOF cannot tie-break on a second column: keep the latest-created row per
    # (entity, event) first, as the point-in-time rules require (event time only, no TTL)
    return con.sql(
        "WITH d AS (SELECT * FROM f QUALIFY row_number() OVER "
        "(PARTITION BY entity_id, event_ts ORDER BY created_ts DESC) = 1) "
        "SELECT * FROM l ASOF LEFT JOIN d ON l.entity_id = d.entity_id AND l.label_ts >= d.event_ts"
    ).arrow()


def peak_mib() -> float:
    """This process's peak resident memory in MiB.

    ``VmHWM`` belongs to the process image, so a child started by a big parent does not
    inherit the parent's peak (``ru_maxrss`` survives fork+exec on Linux and would).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(variant: str, folder: Path) -> dict[str, float]:
    """Run one variant in a fresh child process; its seconds and peak RSS (MiB)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--dir", str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def child(variant: str, folder: Path) -> None:
    """One measurement in this (fresh) process; prints seconds and ru_maxrss as JSON."""
    labels = pl.read_parquet(folder / "labels.parquet")
    began = time.perf_counter()
    if variant == "polars":
        polars_asof(pl.read_parquet(folder / "features.parquet"), labels)
    elif variant == "featurekit":
        store = fk.Store(folder / "store", progress=False, online=False)
        store.training_set(labels, features=["bench:*"], timestamp="label_ts")
    seconds = time.perf_counter() - began
    peak = peak_mib()  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mib": peak}))


def bench(rows: pl.LazyFrame) -> pl.LazyFrame:
    """The benchmark view: the rows as they are (keys, event, created, 5 features)."""
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=float, default=1e6)
    parser.add_argument("--rows", type=float, default=1e7)
    parser.add_argument("--entities", type=float, default=1e5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-duckdb", action="store_true")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            child(args.child, Path(args.dir))
        return
    features, labels = make_data(int(args.labels), int(args.rows), int(args.entities))
    print(f"labels={labels.height:,} rows={features.height:,} entities={int(args.entities):,}")

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(tmp)
        entity = fk.Entity("entity", keys=["entity_id"])
        source = fk.Source("rows", features, timestamp="event_ts", created_timestamp="created_ts")
        view = fk.feature_view(entity=entity, sources=[source], ttl="1d")(bench)
        store = fk.Store(folder / "store", progress=False, online=False)
        write_s = timed(lambda: store.materialize(view, full_refresh=True), 1)
        baseline = timed(lambda: polars_asof(features, labels), args.repeat)
        ours = timed(
            lambda: store.training_set(labels, features=["bench:*"], timestamp="label_ts"),
            args.repeat,
        )
        print(f"polars join_asof (sorts included)      : 1.00  ({baseline:.2f}s baseline)")
        print(
            f"featurekit training_set (knowledge time): {ours / baseline:.2f}x{target('  (target <= 0.7)')}"
        )
        if not args.no_duckdb:
            duck = timed(lambda: duckdb_asof(features, labels), args.repeat)
            print(f"duckdb ASOF JOIN + created-time dedupe  : {duck / baseline:.2f}x")
        print(f"materialize (one-time write)           : {write_s / baseline:.2f}x")
        small = labels.head(1_000)
        small_base = timed(lambda: polars_asof(features, small), args.repeat)
        small_ours = timed(
            lambda: store.training_set(small, features=["bench:*"], timestamp="label_ts"),
            args.repeat,
        )
        print(
            f"1k labels on the same store: featurekit {small_ours:.3f}s "
            f"{target('(target <= 0.5 s) ')}(polars join_asof on in-memory data {small_base:.3f}s)"
        )
        if args.no_rss:
            return
        features.write_parquet(folder / "features.parquet")
        labels.write_parquet(folder / "labels.parquet")
        idle = peak_rss("idle", folder)
        base_rss = peak_rss("polars", folder)
        ours_rss = peak_rss("featurekit", folder)
        print(
            f"peak RSS (fresh process each): polars {base_rss['peak_mib']:,.0f} MiB, featurekit "
            f"{ours_rss['peak_mib']:,.0f} MiB -> {ours_rss['peak_mib'] / base_rss['peak_mib']:.2f}x"
            f"{target(' (target <= 1.5)')}; an idle child holding the labels: "
            f"{idle['peak_mib']:,.0f} MiB"
        )


if __name__ == "__main__":
    main()
