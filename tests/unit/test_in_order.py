"""frames.in_order against a definition by sorting, on small random frames."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from featurekit.kernels.frames import in_order

BASE = datetime(2026, 1, 1)


def _expected(frame: pl.DataFrame, columns: list[str], strict: bool) -> bool:
    if frame.select(pl.any_horizontal(pl.col(columns).is_null().any())).item():
        return False
    part = frame.select(columns)
    if not part.equals(part.sort(columns, maintain_order=True)):
        return False
    return not strict or part.n_unique() == part.height


def test_in_order_agrees_with_sorting() -> None:
    rng = np.random.default_rng(0)
    for _ in range(400):
        n, r = int(rng.integers(2, 10)), int(rng.integers(1, 4))
        frame = pl.DataFrame(
            {
                "k": rng.integers(0, r, n),
                "e": [BASE.replace(second=int(s)) for s in rng.integers(0, r, n)],
                "c": rng.integers(0, r, n),
                "s": rng.choice(["a", "b"], n),
            }
        )
        if rng.random() < 0.6:
            frame = frame.sort("k", "e", "c", "s")
        for columns in (["k", "e", "c"], ["k", "e"], ["k"], ["s", "k", "e"]):
            for strict in (False, True):
                got = in_order(frame, columns, strict=strict)
                assert got == _expected(frame, columns, strict), (columns, strict, frame)
