"""Drift metrics equal reference computations; shifted samples are flagged, equal ones not."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from featurekit.core.errors import SchemaError
from featurekit.kernels.drift import (
    DriftThresholds,
    compute_drift,
    jensen_shannon,
    ks_test,
    psi_categorical,
    psi_numeric,
)

HALF_SHIFT_PSI = 0.25 * math.log(2) + 0.25 * math.log(1.5)  # proportions .5/.5 -> .25/.75


def test_psi_numeric_by_hand() -> None:
    # two bins cut at the reference median 2.5: reference [1, 2 | 3, 4], current [1 | 3, 4, 5]
    reference = pl.Series([1.0, 2.0, 3.0, 4.0])
    current = pl.Series([1.0, 3.0, 4.0, 5.0])
    assert psi_numeric(reference, current, bins=2) == pytest.approx(HALF_SHIFT_PSI, rel=1e-12)
    assert psi_numeric(reference, reference, bins=2) == 0.0


def test_psi_floors_empty_bins_at_epsilon() -> None:
    reference = pl.Series([1.0, 2.0, 3.0, 4.0])
    current = pl.Series([3.0, 4.0, 5.0, 6.0])  # nothing below 2.5
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2)
    assert psi_numeric(reference, current, bins=2) == pytest.approx(expected, rel=1e-12)


def test_psi_categorical_by_hand() -> None:
    reference = pl.Series(["a", "a", "b", "b", None])
    current = pl.Series(["a", "b", "b", "b"])
    assert psi_categorical(reference, current) == pytest.approx(HALF_SHIFT_PSI, rel=1e-12)


def test_ks_equals_scipy_on_fixed_samples() -> None:
    reference = [0.1, 0.4, 0.35, 0.8, 1.2, 0.05, None, 0.9, 0.33]
    current = [0.5, 0.7, 1.1, 1.4, 0.95, float("nan"), 1.8]
    statistic, pvalue = ks_test(pl.Series(reference), pl.Series(current))
    want = ks_2samp([v for v in reference if v is not None], [0.5, 0.7, 1.1, 1.4, 0.95, 1.8])
    assert (statistic, pvalue) == (want.statistic, want.pvalue)


def test_jensen_shannon_by_hand_and_equals_scipy() -> None:
    p, q = [0.5, 0.5], [0.25, 0.75]
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl = lambda x, y: sum(a * math.log2(a / b) for a, b in zip(x, y, strict=True))  # noqa: E731
    by_hand = math.sqrt(0.5 * kl(p, m) + 0.5 * kl(q, m))
    value = jensen_shannon(pl.Series(["a", "a", "b", "b"]), pl.Series(["b", "a", "b", "b"]))
    assert value == pytest.approx(by_hand, rel=1e-12)
    assert value == pytest.approx(float(jensenshannon(p, q, base=2)), rel=1e-12)


def test_a_shifted_distribution_is_flagged_an_identical_one_is_not() -> None:
    rng = np.random.default_rng(7)
    reference = pl.DataFrame(
        {
            "fare": rng.normal(20, 5, 2_000),
            "city": rng.choice(["a", "b", "c"], 2_000, p=[0.6, 0.3, 0.1]),
        }
    )
    shifted = pl.DataFrame(
        {
            "fare": rng.normal(26, 5, 2_000),
            "city": rng.choice(["a", "b", "c"], 2_000, p=[0.2, 0.3, 0.5]),
        }
    )
    drift = compute_drift(reference, shifted)
    assert drift.drifted and drift.drifted_features == ("fare", "city")
    assert [(r.feature, r.metric, r.drifted) for r in drift.results] == [
        ("fare", "psi", True),
        ("fare", "ks_pvalue", True),
        ("city", "psi", True),
        ("city", "js", True),
    ]
    same = compute_drift(reference, reference.sample(fraction=1.0, shuffle=True, seed=1))
    assert not same.drifted
    values = {(r.feature, r.metric): r.value for r in same.results}
    assert values[("fare", "psi")] == 0.0 and values[("city", "psi")] == 0.0
    assert values[("fare", "ks_pvalue")] == 1.0 and values[("city", "js")] == 0.0


def test_to_polars_columns_and_thresholds() -> None:
    reference = pl.DataFrame({"fare": [1.0, 2.0, 3.0, 4.0], "city": ["a", "a", "b", "b"]})
    current = pl.DataFrame({"fare": [1.0, 3.0, 4.0, 5.0], "city": ["a", "b", "b", "b"]})
    table = compute_drift(reference, current, ["city"]).to_polars()
    assert table.columns == ["feature", "metric", "value", "threshold", "drifted"]
    assert table.select("feature", "metric", "threshold", "drifted").rows() == [
        ("city", "psi", 0.2, True),
        ("city", "js", 0.1, True),
    ]
    strict = compute_drift(
        reference, current, ["fare"], thresholds=DriftThresholds(psi=100.0, ks_statistic=0.2)
    )
    assert [(r.metric, r.threshold, r.drifted) for r in strict.results] == [
        ("psi", 100.0, False),
        ("ks_statistic", 0.2, True),  # D = 0.25
    ]
    assert strict.results[1].value == 0.25


def test_nothing_to_compare_is_nan_and_not_drift() -> None:
    reference = pl.DataFrame({"fare": [1.0, 2.0]})
    empty = pl.DataFrame({"fare": [None, None]}, schema={"fare": pl.Float64})
    report = compute_drift(reference, empty)
    assert all(math.isnan(r.value) and not r.drifted for r in report.results)
    assert report.current_rows == 2


def test_features_missing_or_of_another_kind_are_schema_errors() -> None:
    reference = pl.DataFrame({"fare": [1.0], "city": ["a"]})
    with pytest.raises(SchemaError) as caught:
        compute_drift(reference, pl.DataFrame({"city": ["a"]}), ["fare"])
    assert str(caught.value) == (
        "drift: feature 'fare' is not in the current rows (columns: ['city'])."
    )
    with pytest.raises(SchemaError, match="'city' is String in the reference and Int64"):
        compute_drift(reference, pl.DataFrame({"city": [1]}), ["city"])
    # the default feature list skips columns drift cannot compare
    assert compute_drift(reference, reference.with_columns(pl.lit(None).alias("x"))).results
