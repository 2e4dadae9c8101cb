"""Drift of a view's features between a reference and a current sample, kept for metrics.

The metrics themselves (PSI, KS, Jensen-Shannon and their thresholds) are
:func:`featurekit.kernels.drift.compute_drift`'s; this module finds the rows to compare
and keeps what a plot and the metrics exporter need:

* rows of a view between two instants are read from its stored table (latest Delta
  version, event time in ``[start, end)``); rows of a training set are its columns for the
  view, renamed to the view's feature names; serving rows come from the serving log;
* :class:`ViewDrift` is a :class:`~featurekit.kernels.drift.DriftReport` that also carries,
  per feature, both sides' distributions on common bins (numeric: :data:`PLOT_BINS`
  equal-width bins over both samples' range; categorical: the :data:`PLOT_CATEGORIES`
  most frequent values of both), which the notebook layer draws as small multiples;
* every report is appended to the store's drift log (``monitoring/drift``), so a server
  exports the latest score per feature and ``featurekit monitor`` can be scheduled.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import polars as pl

from featurekit.core import display
from featurekit.core.errors import NotFoundError, SchemaError
from featurekit.core.timeutil import to_utc_datetime, utcnow
from featurekit.kernels.drift import DriftReport, DriftThresholds, compute_drift
from featurekit.kernels.stats import feature_kind
from featurekit.storage import delta
from featurekit.storage.layout import StoreLayout
from featurekit.storage.registry import Registry

__all__ = [
    "PLOT_BINS",
    "PLOT_CATEGORIES",
    "Distribution",
    "SkewReport",
    "ViewDrift",
    "latest_drift",
    "save_drift",
    "skew_rows",
    "view_drift",
    "view_rows",
]

PLOT_BINS = 20
PLOT_CATEGORIES = 10


@dataclass(frozen=True)
class Distribution:
    """Both sides of one feature on common bins, as proportions of each side's values.

    Attributes:
        feature: the feature.
        kind: ``"numeric"`` or ``"categorical"``.
        labels: a label per bin (a category, or the bin's lower edge as text).
        edges: numeric bins' edges (one more than ``labels``); empty for categories.
        reference, current: each side's share of its non-null values per bin.
    """

    feature: str
    kind: str
    labels: tuple[str, ...]
    edges: tuple[float, ...]
    reference: tuple[float, ...]
    current: tuple[float, ...]


@dataclass(frozen=True)
class ViewDrift(DriftReport):
    """A drift report of one view, with what was compared and the distributions to plot.

    In Jupyter it draws reference vs current per feature (small multiples, inline SVG).
    """

    view: str = ""
    reference_label: str = ""
    current_label: str = ""
    distributions: tuple[Distribution, ...] = ()

    def _repr_html_(self) -> str | None:
        return display.html_for(self)


def view_rows(
    registry: Registry, name: str, version: int | None, start: Any, end: Any
) -> pl.DataFrame:
    """Stored rows of a view version with event time in ``[start, end)`` (latest Delta)."""
    record = registry.version(name, version)
    uri = registry.layout.table_uri(name, record.version)
    current = delta.current_version(uri)
    if current is None:
        raise NotFoundError(
            f"view {name!r} version {record.version} has no data yet; run store.materialize."
        )
    low, high = to_utc_datetime(start, what="start"), to_utc_datetime(end, what="end")
    if low >= high:
        raise SchemaError(f"drift: the range start {low} must be before its end {high}.")
    ts = pl.col(record.timestamp)
    return delta.read_rows(uri, version=current, where=(ts >= low) & (ts < high))


def view_drift(
    view: str,
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: Sequence[str],
    *,
    thresholds: DriftThresholds | None = None,
    labels: tuple[str, str] = ("reference", "current"),
) -> ViewDrift:
    """Drift of ``features`` (those numeric or categorical on both sides) of one view."""
    usable = [
        f
        for f in features
        if f in reference.columns
        and f in current.columns
        and feature_kind(reference.schema[f]) != "other"
        and feature_kind(reference.schema[f]) == feature_kind(current.schema[f])
    ]
    if not usable:
        raise SchemaError(
            f"drift of view {view!r}: none of its features {list(features)} is numeric or "
            f"categorical on both sides (reference columns {reference.columns}, current "
            f"columns {current.columns})."
        )
    for side, frame in (("reference", reference), ("current", current)):
        if frame.height == 0:
            raise SchemaError(
                f"drift of view {view!r}: the {side} ({labels[0 if side == 'reference' else 1]}) "
                "holds no rows; widen its time range."
            )
    report = compute_drift(reference, current, usable, thresholds=thresholds)
    return ViewDrift(
        report.results,
        report.reference_rows,
        report.current_rows,
        view=view,
        reference_label=labels[0],
        current_label=labels[1],
        distributions=tuple(_distribution(f, reference[f], current[f]) for f in usable),
    )


def _distribution(feature: str, ref: pl.Series, cur: pl.Series) -> Distribution:
    if feature_kind(ref.dtype) == "numeric":
        a = ref.cast(pl.Float64).drop_nulls().drop_nans()
        b = cur.cast(pl.Float64).drop_nulls().drop_nans()
        both = pl.concat([a, b])
        if both.len() == 0:
            return Distribution(feature, "numeric", (), (), (), ())
        low, high = float(both.min()), float(both.max())  # type: ignore[arg-type]
        width = (high - low) / PLOT_BINS or 1.0
        edges = tuple(low + i * width for i in range(PLOT_BINS + 1))
        return Distribution(
            feature,
            "numeric",
            tuple(f"{e:.4g}" for e in edges[:-1]),
            edges,
            _shares(a, low, width),
            _shares(b, low, width),
        )
    a, b = ref.cast(pl.String).drop_nulls(), cur.cast(pl.String).drop_nulls()
    top = (
        pl.concat([a, b])
        .value_counts(sort=True, name="n")
        .sort(["n", a.name], descending=[True, False])
        .head(PLOT_CATEGORIES)
        .get_column(a.name)
        .to_list()
    )
    return Distribution(
        feature, "categorical", tuple(top), (), _category_shares(a, top), _category_shares(b, top)
    )


def _shares(values: pl.Series, low: float, width: float) -> tuple[float, ...]:
    if values.len() == 0:
        return (0.0,) * PLOT_BINS
    index = ((values - low) / width).floor().cast(pl.Int64).clip(0, PLOT_BINS - 1)
    counts = index.value_counts(name="n")
    by_bin = dict(zip(counts[index.name].to_list(), counts["n"].to_list(), strict=True))
    return tuple(by_bin.get(i, 0) / values.len() for i in range(PLOT_BINS))


def _category_shares(values: pl.Series, top: list[str]) -> tuple[float, ...]:
    if values.len() == 0:
        return (0.0,) * len(top)
    counts = values.value_counts(name="n")
    by_value = dict(zip(counts[values.name].to_list(), counts["n"].to_list(), strict=True))
    return tuple(by_value.get(v, 0) / values.len() for v in top)


def save_drift(layout: StoreLayout, report: ViewDrift, at: datetime | None = None) -> None:
    """Append a report to the store's drift log (the metrics export its latest scores)."""
    when = to_utc_datetime(at) if at else utcnow()
    frame = report.to_polars().with_columns(
        pl.lit(report.view).alias("view"),
        pl.lit(report.reference_label).alias("reference"),
        pl.lit(report.current_label).alias("current"),
        pl.lit(when).alias("computed_at"),
    )
    report_id = uuid.uuid4().hex[:16]
    frame = frame.with_columns(pl.lit(report_id).alias("report_id"))
    uri = layout.monitoring_uri("drift")
    # an append: replace the rows of this (new) report id, none, and keep every other
    predicate = f"report_id = '{report_id}'" if delta.table_exists(uri) else None
    delta.write_rows(uri, frame, metadata={"view": report.view}, predicate=predicate)


def latest_drift(layout: StoreLayout) -> pl.DataFrame:
    """Each (view, feature, metric)'s latest logged drift result (empty: none logged)."""
    uri = layout.monitoring_uri("drift")
    version = delta.current_version(uri)
    if version is None:
        return pl.DataFrame(schema={"view": pl.String, "feature": pl.String, "metric": pl.String})
    rows = delta.read_rows(uri, version=version)
    return (
        rows.sort("computed_at")
        .group_by("view", "feature", "metric", maintain_order=True)
        .last()
        .sort("view", "feature", "metric")
    )


@dataclass(frozen=True)
class SkewReport:
    """Logged lookups replayed through ``training_set`` at their lookup instants.

    Attributes:
        values: (lookup, entity, feature) values compared.
        differences: one row per value that differs: ``request_id``, ``lookup_at``,
            ``view``, ``version``, ``entity`` (JSON), ``feature``, ``served`` and
            ``offline`` (JSON), ``reason``.
        training_sets: ids of the training sets the replay built (one per view version).

    Example:
        >>> report = store.skew(since="2026-01-01")
        >>> report.count, report.to_polars()
    """

    values: int
    differences: pl.DataFrame
    training_sets: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """How many values differ (zero by construction)."""
        return self.differences.height

    def to_polars(self) -> pl.DataFrame:
        """The differences, one row per value."""
        return self.differences

    def __repr__(self) -> str:
        return f"SkewReport(values={self.values}, differences={self.count})"


SKEW_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "lookup_at": pl.Datetime("us", "UTC"),
    "view": pl.String(),
    "version": pl.Int64(),
    "entity": pl.String(),
    "feature": pl.String(),
    "served": pl.String(),
    "offline": pl.String(),
    "reason": pl.String(),
}


def skew_rows(
    log: pl.DataFrame,
    replayed: pl.DataFrame,
    columns: dict[str, str],
    offline_event: list[Any],
    latest_version: int,
) -> list[dict[str, Any]]:
    """The differing values of one view version's logged lookups.

    ``replayed`` holds the training set's rows in log order; ``columns`` maps each feature
    to its training-set column; ``offline_event`` is, per log row, the event time of the
    newest stored row at or before the lookup instant (None: none).
    """
    out = []
    for i, row in enumerate(log.iter_rows(named=True)):
        served = orjson.loads(row["features"])
        for feature, column in columns.items():
            offline_value = replayed[column][i]
            a = orjson.dumps(served.get(feature), default=str)
            b = orjson.dumps(offline_value, default=str)
            if a == b:
                continue
            out.append(
                {
                    "request_id": row["request_id"],
                    "lookup_at": row["lookup_at"],
                    "view": row["view"],
                    "version": row["version"],
                    "entity": row["entity"],
                    "feature": feature,
                    "served": a.decode(),
                    "offline": b.decode(),
                    "reason": _reason(row, offline_value, offline_event[i], latest_version),
                }
            )
    return out


def _reason(row: dict[str, Any], offline: Any, offline_event: Any, latest: int) -> str:
    status, served_at = row["status"], row["event_ts"]
    if row["version"] != latest:
        note = f" (served version {row['version']}; the view's latest is {latest})"
    else:
        note = ""
    if offline_event is not None and (served_at is None or offline_event > served_at):
        shown_at = "no row" if served_at is None else f"the row at {served_at.isoformat()}"
        return (
            f"stale online snapshot: it served {shown_at}, the offline store has a row at "
            f"{offline_event.isoformat()}; materialize with the online store to sync it" + note
        )
    if status == "expired" and offline is not None:
        return "expired online (TTL) but valid offline: TTLs differ between the two" + note
    if status == "present" and offline is None:
        return (
            "served online but not known offline at the lookup instant (the stored row was "
            "rewritten, or its created time is after the lookup)" + note
        )
    return "value differs for the same row (the stored row was rewritten since)" + note
