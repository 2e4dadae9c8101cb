"""Notebook displays of statistics and drift: HTML tables and inline SVG, no plotting library.

A drift report draws one small panel per feature (reference and current shares per bin,
overlaid), titled with its metrics; a statistics table draws each feature's histogram (or
top values) as a sparkline beside its numbers. Both are plain HTML, so they survive static
exports (nbconvert, GitHub) unchanged.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import polars as pl

from featurekit.offline.monitoring import Distribution, ViewDrift

__all__ = ["drift_html", "drift_svg", "stats_html"]

_REF, _CUR, _FLAG = "#4c78a8", "#f58518", "#d62728"
_W, _H, _PAD = 220, 120, 18


def drift_svg(report: ViewDrift) -> str:
    """Small multiples: one panel per feature, reference vs current distribution."""
    panels = []
    for d in report.distributions:
        results = [r for r in report.results if r.feature == d.feature]
        drifted = any(r.drifted for r in results)
        metrics = ", ".join(f"{r.metric} {_num(r.value)}" for r in results)
        panels.append(_panel(d, metrics, drifted))
    return (
        '<div class="fk-drift" style="display:flex;flex-wrap:wrap;gap:8px">'
        + "".join(panels)
        + "</div>"
    )


def _panel(d: Distribution, metrics: str, drifted: bool) -> str:
    n = len(d.labels)
    top = max([*d.reference, *d.current, 1e-12])
    inner_h = _H - 2 * _PAD
    width = (_W - 8) / max(n, 1)
    bars = []
    for i in range(n):
        x = 4 + i * width
        for share, color in ((d.reference[i], _REF), (d.current[i], _CUR)):
            h = inner_h * share / top
            bars.append(
                f'<rect x="{x:.1f}" y="{_PAD + inner_h - h:.1f}" width="{max(width - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{color}" fill-opacity="0.55">'
                f"<title>{html.escape(d.labels[i])}: {share:.1%}</title></rect>"
            )
    title = html.escape(d.feature) + (" (drifted)" if drifted else "")
    border = _FLAG if drifted else "#ccc"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H + 14}" '
        f'style="border:1px solid {border};border-radius:4px" role="img" '
        f'aria-label="{title}">'
        f'<text x="4" y="12" font-size="11" font-family="sans-serif" '
        f'fill="{_FLAG if drifted else "#222"}">{title}</text>'
        + "".join(bars)
        + f'<text x="4" y="{_H + 10}" font-size="9" font-family="sans-serif" fill="#555">'
        f"{html.escape(metrics)}</text></svg>"
    )


def drift_html(report: ViewDrift) -> str:
    """The report's title, legend, small multiples and metrics table."""
    flagged = ", ".join(report.drifted_features) or "none"
    head = (
        f"<div><b>Drift of {html.escape(report.view)}</b>: "
        f'<span style="color:{_REF}">&#9632; {html.escape(report.reference_label)}</span> '
        f"({report.reference_rows:,} rows) vs "
        f'<span style="color:{_CUR}">&#9632; {html.escape(report.current_label)}</span> '
        f"({report.current_rows:,} rows); drifted: {html.escape(flagged)}</div>"
    )
    return head + drift_svg(report) + _table(report.to_polars())


def stats_html(frame: pl.DataFrame) -> str:
    """A statistics table with each feature's distribution as a sparkline."""
    shown = [
        c
        for c in ("feature", "kind", "count", "nulls", "mean", "std", "min", "max", "distinct")
        if c in frame.columns
    ]
    rows = []
    for row in frame.iter_rows(named=True):
        cells = "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in shown)
        counts = row.get("histogram_counts") or row.get("top_counts") or []
        rows.append(f"<tr>{cells}<td>{_sparkline(counts)}</td></tr>")
    header = "".join(f"<th>{html.escape(c)}</th>" for c in [*shown, "distribution"])
    return f'<table class="fk-stats"><tr>{header}</tr>{"".join(rows)}</table>'


def _sparkline(counts: Sequence[int]) -> str:
    if not counts:
        return ""
    top = max(max(counts), 1)
    w = 6
    bars = "".join(
        f'<rect x="{i * w}" y="{20 - 20 * c / top:.1f}" width="{w - 1}" '
        f'height="{20 * c / top:.1f}" fill="{_REF}"/>'
        for i, c in enumerate(counts)
    )
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(counts)}" height="20">{bars}</svg>'


def _table(frame: pl.DataFrame) -> str:
    header = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in frame.iter_rows()
    )
    return f"<table><tr>{header}</tr>{body}</table>"


def _cell(value: object) -> str:
    return _num(value) if isinstance(value, float) else str(value)


def _num(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:.4g}"
