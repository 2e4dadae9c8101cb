"""Distribution drift between a reference and a current sample of each feature.

Metrics and their default thresholds (:class:`DriftThresholds`):

* numeric features (integers, floats, decimals):
  - ``psi``: population stability index over :data:`PSI_BINS` bins whose edges are the
    reference's quantiles (so each bin holds about a tenth of the reference); drifted when
    ``psi > 0.2`` (the usual reading: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shifted);
  - ``ks_pvalue``: two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``,
    two-sided); drifted when the p-value is below 0.05. Large samples make tiny shifts
    significant; ``DriftThresholds(ks_statistic=0.1)`` judges the KS statistic instead
    (metric ``ks_statistic``, drifted when above the threshold);
* categorical features (strings, categoricals, enums, booleans):
  - ``psi`` over the union of categories, drifted above 0.2;
  - ``js``: Jensen-Shannon *distance* (``scipy.spatial.distance.jensenshannon``, base 2,
    so between 0 and 1); drifted above 0.1.

PSI is ``sum((c - r) * ln(c / r))`` over bins, with reference and current proportions
``r`` and ``c``; an empty bin's proportion is raised to :data:`PSI_EPSILON` so the
logarithm stays finite. Nulls and NaNs are left out of every metric (compare null rates
with the statistics). A feature with no values on either side gets ``NaN`` and is not
flagged: there is nothing to compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from featurekit.core.errors import SchemaError
from featurekit.kernels.stats import feature_kind

__all__ = [
    "PSI_BINS",
    "PSI_EPSILON",
    "DriftReport",
    "DriftResult",
    "DriftThresholds",
    "compute_drift",
    "jensen_shannon",
    "ks_test",
    "psi_categorical",
    "psi_numeric",
]

PSI_BINS = 10
PSI_EPSILON = 1e-4

DriftMetric = Literal["psi", "ks_pvalue", "ks_statistic", "js"]


@dataclass(frozen=True)
class DriftThresholds:
    """When a metric counts as drift (see the module docstring for the defaults' reading).

    Attributes:
        psi: PSI above this is drift (numeric and categorical).
        ks_pvalue: a KS p-value below this is drift.
        ks_statistic: if set, judge the KS statistic (above it is drift) instead of the
            p-value.
        js: a Jensen-Shannon distance above this is drift.
    """

    psi: float = 0.2
    ks_pvalue: float = 0.05
    ks_statistic: float | None = None
    js: float = 0.1


@dataclass(frozen=True)
class DriftResult:
    """One metric of one feature."""

    feature: str
    metric: DriftMetric
    value: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    """Drift per feature and metric, between a reference and a current sample.

    Example:
        >>> report = compute_drift(train_rows, recent_rows, features=["fare"])
        >>> report.drifted, report.drifted_features
        (True, ('fare',))
        >>> report.to_polars()  # feature, metric, value, threshold, drifted
    """

    results: tuple[DriftResult, ...]
    reference_rows: int
    current_rows: int

    @property
    def drifted(self) -> bool:
        """Whether any feature drifted on any metric."""
        return any(r.drifted for r in self.results)

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Features flagged by at least one metric, in report order."""
        return tuple(dict.fromkeys(r.feature for r in self.results if r.drifted))

    def to_polars(self) -> pl.DataFrame:
        """One row per (feature, metric): feature, metric, value, threshold, drifted."""
        return pl.DataFrame(
            [
                {
                    "feature": r.feature,
                    "metric": r.metric,
                    "value": r.value,
                    "threshold": r.threshold,
                    "drifted": r.drifted,
                }
                for r in self.results
            ],
            schema={
                "feature": pl.String,
                "metric": pl.String,
                "value": pl.Float64,
                "threshold": pl.Float64,
                "drifted": pl.Boolean,
            },
        )


def psi_numeric(reference: pl.Series, current: pl.Series, *, bins: int = PSI_BINS) -> float:
    """PSI of a numeric feature over bins cut at the reference's quantiles.

    Edges are the reference's ``1/bins .. (bins-1)/bins`` quantiles (linear interpolation,
    repeated edges merged); a value equal to an edge goes to the bin above it.
    """
    ref, cur = _numeric(reference), _numeric(current)
    if not ref.size or not cur.size:
        return math.nan
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    width = edges.size + 1
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=width)
    cur_counts = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=width)
    return _psi(ref_counts, cur_counts)


def psi_categorical(reference: pl.Series, current: pl.Series) -> float:
    """PSI of a categorical feature over the union of the categories seen on either side."""
    ref_counts, cur_counts = _category_counts(reference, current)
    if not ref_counts.sum() or not cur_counts.sum():
        return math.nan
    return _psi(ref_counts, cur_counts)


def ks_test(reference: pl.Series, current: pl.Series) -> tuple[float, float]:
    """(statistic, p-value) of the two-sided two-sample KS test (``scipy.stats.ks_2samp``)."""
    from scipy.stats import ks_2samp

    ref, cur = _numeric(reference), _numeric(current)
    if not ref.size or not cur.size:
        return math.nan, math.nan
    result = ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def jensen_shannon(reference: pl.Series, current: pl.Series) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the category frequencies."""
    from scipy.spatial.distance import jensenshannon

    ref_counts, cur_counts = _category_counts(reference, current)
    if not ref_counts.sum() or not cur_counts.sum():
        return math.nan
    return float(jensenshannon(ref_counts, cur_counts, base=2))


def compute_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: Sequence[str] | None = None,
    *,
    thresholds: DriftThresholds | None = None,
) -> DriftReport:
    """Drift of each feature from ``reference`` to ``current``.

    Args:
        reference: rows of the baseline (e.g. a training set's features).
        current: rows to compare (e.g. a recent window, or logged serving values).
        features: columns to compare (default: every column of ``reference`` that is
            numeric or categorical and present in ``current``).
        thresholds: when each metric counts as drift (default: :class:`DriftThresholds`).

    Raises:
        SchemaError: a requested feature is missing from a side, or is neither numeric
            nor categorical, or has a different kind on each side.
    """
    limits = thresholds or DriftThresholds()
    names = list(features) if features is not None else _default_features(reference, current)
    results: list[DriftResult] = []
    for name in names:
        for side, frame in (("reference", reference), ("current", current)):
            if name not in frame.columns:
                raise SchemaError(
                    f"drift: feature {name!r} is not in the {side} rows (columns: {frame.columns})."
                )
        kind = feature_kind(reference.schema[name])
        if kind != feature_kind(current.schema[name]) or kind == "other":
            raise SchemaError(
                f"drift: feature {name!r} is {reference.schema[name]} in the reference and "
                f"{current.schema[name]} in the current rows; drift compares numeric or "
                "categorical features of one kind."
            )
        ref, cur = reference.get_column(name), current.get_column(name)
        results.append(_judge(name, "psi", _psi_of(kind, ref, cur), limits.psi, above=True))
        if kind == "numeric":
            statistic, pvalue = ks_test(ref, cur)
            if limits.ks_statistic is not None:
                results.append(
                    _judge(name, "ks_statistic", statistic, limits.ks_statistic, above=True)
                )
            else:
                results.append(_judge(name, "ks_pvalue", pvalue, limits.ks_pvalue, above=False))
        else:
            results.append(_judge(name, "js", jensen_shannon(ref, cur), limits.js, above=True))
    return DriftReport(tuple(results), reference.height, current.height)


def _psi_of(kind: str, ref: pl.Series, cur: pl.Series) -> float:
    return psi_numeric(ref, cur) if kind == "numeric" else psi_categorical(ref, cur)


def _judge(
    feature: str, metric: DriftMetric, value: float, threshold: float, *, above: bool
) -> DriftResult:
    drifted = not math.isnan(value) and (value > threshold if above else value < threshold)
    return DriftResult(feature, metric, value, threshold, drifted)


def _default_features(reference: pl.DataFrame, current: pl.DataFrame) -> list[str]:
    return [
        name
        for name, dtype in reference.schema.items()
        if name in current.columns and feature_kind(dtype) != "other"
    ]


def _numeric(series: pl.Series) -> np.ndarray:
    values = series.drop_nulls().cast(pl.Float64)
    return values.filter(values.is_not_nan()).to_numpy()


def _category_counts(reference: pl.Series, current: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    ref = reference.drop_nulls().cast(pl.String).value_counts(name="ref")
    cur = current.drop_nulls().cast(pl.String).value_counts(name="cur")
    ref, cur = ref.rename({ref.columns[0]: "value"}), cur.rename({cur.columns[0]: "value"})
    both = ref.join(cur, on="value", how="full", coalesce=True).fill_null(0).sort("value")
    return both["ref"].to_numpy().astype(float), both["cur"].to_numpy().astype(float)


def _psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    ref = np.maximum(ref_counts / ref_counts.sum(), PSI_EPSILON)
    cur = np.maximum(cur_counts / cur_counts.sum(), PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))
