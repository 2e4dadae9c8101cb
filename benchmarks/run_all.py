"""Run every benchmark, one after the other, each in its own process.

``--quick`` runs small versions of all of them (a smoke test for CI: it checks that every
benchmark still runs end to end, never how fast; it takes well under a minute). Without
it, the full-size runs whose figures benchmarks/README.md records (tens of minutes).

Usage: python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _targets import SMOKE_ENV

HERE = Path(__file__).parent

QUICK: dict[str, list[str]] = {
    "pit.py": ["--labels", "2e3", "--rows", "2e4", "--entities", "200", "--repeat", "1"],
    "multiview.py": ["--labels", "2e3", "--rows", "2e4", "--entities", "200", "--repeat", "1"],
    "materialize.py": [
        *("--rows", "2e4", "--entities", "200", "--repeat", "1"),
        *("--stream-rows", "1e5", "--budget", "2MB"),
    ],
    "aggregations.py": ["--labels", "2e3", "--events", "2e4", "--entities", "200", "--repeat", "1"],
    "online.py": ["--entities", "200", "--requests", "200"],
    "storage.py": [
        *("--labels", "2e3", "--rows", "2e4", "--entities", "200", "--ops", "5", "--repeat", "1")
    ],
    "scale.py": [
        *("--labels", "2e3", "--rows", "2e4", "--entities", "200", "--buckets", "4"),
        *("--repeat", "1"),
    ],
    "serving_log.py": [
        *("--entities", "200", "--blocks", "1", "--block-seconds", "0.1", "--threads", "2"),
    ],
}

FULL: dict[str, list[str]] = {
    "pit.py": [],
    "multiview.py": [],
    "materialize.py": ["--stream-rows", "5e7", "--budget", "8GiB"],
    "aggregations.py": [],
    "online.py": [],
    "storage.py": [],
    "scale.py": [],
    "serving_log.py": ["--runs", "3"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a CI smoke test")
    parser.add_argument("only", nargs="*", help="run only these scripts (e.g. pit.py)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    failed = []
    env = dict(os.environ)
    if args.quick:
        env[SMOKE_ENV] = "1"  # toy sizes: each script prints its timings but no targets
        print("smoke run: toy sizes, so the timings below mean nothing", flush=True)
    for script, extra in plan.items():
        if args.only and script not in args.only:
            continue
        print(f"== {script} {' '.join(extra)}", flush=True)
        began = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / script), *extra], check=False, env=env)
        print(f"-- {script}: exit {done.returncode} in {time.perf_counter() - began:.1f}s")
        if done.returncode:
            failed.append(script)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
