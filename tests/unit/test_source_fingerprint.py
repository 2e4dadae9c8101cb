"""Lineage fingerprints of file sources: every byte counts, whatever the format."""

from __future__ import annotations

from pathlib import Path

import polars as pl

import featurekit as fk
from featurekit.lineage.record import _fingerprint


def frame(value: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "k": [1, 2, 3],
            "ts": pl.datetime_range(
                pl.datetime(2026, 1, 1), pl.datetime(2026, 1, 3), "1d", eager=True
            ),
            "x": [1.0, value, 3.0],
        }
    )


def fingerprint(path: Path) -> str:
    return _fingerprint(fk.Source("s", str(path), timestamp="ts"))[0]


def test_parquet_fingerprint_follows_every_value(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    frame(2.0).write_parquet(path, compression="uncompressed")
    first = fingerprint(path)
    frame(2.0).write_parquet(path, compression="uncompressed")  # same data: same fingerprint
    assert fingerprint(path) == first
    # one value changed, inside min/max and uncompressed: the footer (sizes, statistics)
    # stays byte-for-byte the same, so only hashing the data itself sees the change
    frame(2.5).write_parquet(path, compression="uncompressed")
    assert fingerprint(path) != first


def test_csv_fingerprint_hashes_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    frame(2.0).write_csv(path)
    first = fingerprint(path)
    frame(2.5).write_csv(path)
    assert fingerprint(path) != first
