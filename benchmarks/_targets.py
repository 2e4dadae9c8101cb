"""Performance targets in benchmark output, shown only where they mean something.

A smoke run (``run_all.py --quick``) runs every benchmark at toy sizes to prove it still
works end to end. At those sizes fixed costs dominate, so a ratio such as ``5.81x`` says
nothing about the target it would be compared with; printing the target beside it reads
like a failure. ``run_all.py --quick`` sets :data:`SMOKE_ENV`, and every target goes
through :func:`target`, which then prints nothing.
"""

from __future__ import annotations

import os

__all__ = ["SMOKE_ENV", "smoke", "target"]

#: Set to ``1`` by ``run_all.py --quick`` for its child processes.
SMOKE_ENV = "FEATUREKIT_BENCH_SMOKE"


def smoke() -> bool:
    """Whether this process is part of a smoke run (toy sizes, timings meaningless)."""
    return os.environ.get(SMOKE_ENV) == "1"


def target(text: str) -> str:
    """``text`` (a target such as ``(target <= 0.7)``) in a real run; nothing in a smoke run."""
    return "" if smoke() else text
