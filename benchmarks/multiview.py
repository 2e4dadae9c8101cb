"""Several views at once: 5 views x 5 features onto the same labels, vs the single-view times.

Each view is its own Delta table of the same size (the rows of benchmarks/pit.py with the
features shifted per view). Target: one training_set over all views <= 1.5x the sum of
the five single-view training_set times (the labels are sorted once, not once per view).

Usage: python benchmarks/multiview.py [--labels 1e6] [--rows 1e7] [--entities 1e5] [--views 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _targets import target
from pit import FEATURES, make_data, timed

import featurekit as fk


def shifted(k: int) -> Callable[[pl.LazyFrame], pl.LazyFrame]:
    """View number ``k``: five features of its own (``v<k>_f0`` ...)."""

    def view(rows: pl.LazyFrame) -> pl.LazyFrame:
        return rows.select(
            "entity_id",
            "event_ts",
            "created_ts",
            *[(pl.col(f) + k).alias(f"v{k}_{f}") for f in FEATURES],
        )

    view.__name__ = f"view{k}"
    view.__qualname__ = f"view{k}"
    return view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=float, default=1e6)
    parser.add_argument("--rows", type=float, default=1e7)
    parser.add_argument("--entities", type=float, default=1e5)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    features, labels = make_data(int(args.labels), int(args.rows), int(args.entities))
    print(
        f"labels={labels.height:,} rows={features.height:,} per view, views={args.views}, "
        f"{len(FEATURES)} features each"
    )
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        entity = fk.Entity("entity", keys=["entity_id"])
        source = fk.Source("rows", features, timestamp="event_ts", created_timestamp="created_ts")
        store = fk.Store(Path(tmp) / "store", progress=False, online=False)
        views = []
        for k in range(args.views):
            view = fk.feature_view(entity=entity, sources=[source], ttl="1d")(shifted(k))
            store.materialize(view)
            views.append(view)
        singles = [
            timed(lambda v=v: store.training_set(labels, [v], timestamp="label_ts"), args.repeat)
            for v in views
        ]
        together = timed(
            lambda: store.training_set(labels, views, timestamp="label_ts"), args.repeat
        )
        total = sum(singles)
        print(f"single views: {', '.join(f'{s:.2f}s' for s in singles)} (sum {total:.2f}s)")
        print(
            f"all {args.views} views in one training_set: {together:.2f}s -> "
            f"{together / total:.2f}x the sum{target(' (target <= 1.5)')}"
        )


if __name__ == "__main__":
    main()
