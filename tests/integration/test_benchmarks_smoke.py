"""The CI smoke run of the benchmarks prints timings at toy sizes, but never a target beside them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_quick_run_prints_no_targets() -> None:
    done = subprocess.run(
        [
            *(sys.executable, str(BENCHMARKS / "run_all.py"), "--quick"),
            *("pit.py", "multiview.py", "scale.py"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)},
    )
    assert done.returncode == 0, done.stderr
    assert "featurekit training_set (knowledge time):" in done.stdout  # the ratios still print
    assert "x the sum" in done.stdout
    assert "x the floor" in done.stdout  # scale.py: bucketed, out of core, per bucket
    assert "per bucket:" in done.stdout
    assert "target" not in done.stdout.lower()


def test_every_printed_target_goes_through_the_smoke_switch() -> None:
    # The scripts not run above (materialize, aggregations, online) are slower; their
    # printed targets must use the same switch, so a bare "(target" in a string is a bug.
    for script in sorted(BENCHMARKS.glob("[!_]*.py")):  # not _targets.py, the switch itself
        for number, line in enumerate(script.read_text().splitlines(), 1):
            if re.search(r"""["'][^"']*\(target\b""", line):
                assert "target(" in line, f"{script.name}:{number} prints a target directly"
