"""Rich HTML for notebooks: Store, FeatureView, TrainingSet, models, PIT explanations.

Plain HTML and inline SVG, no JavaScript and no third-party imports, so every output also
renders in static viewers (GitHub, nbconvert). Each function returns one ``<div>``.
"""

from __future__ import annotations

import html
import inspect
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from featurekit.core.errors import FeatureKitError
from featurekit.core.redact import redact
from featurekit.core.timeutil import duration_label, utcnow

if TYPE_CHECKING:
    from featurekit.core.authoring import FeatureView
    from featurekit.notebook.explain import Explanation, ViewExplanation
    from featurekit.offline.models import ModelRecord
    from featurekit.offline.training import TrainingSet
    from featurekit.storage.registry import VersionRecord
    from featurekit.store import Store

#: Longest lists shown in full; the rest is summarized ("… and 12 more").
MAX_ROWS = 20

_STYLE = (
    "<style>"
    ".fkr{font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:12px;"
    "color:var(--jp-ui-font-color1,#1e293b);max-width:100%;overflow-x:auto}"
    ".fkr h4{margin:4px 0;font-size:13px}.fkr .fkr-muted{color:var(--jp-ui-font-color2,#64748b)}"
    ".fkr table{border-collapse:collapse;margin:4px 0 8px 0;font-size:12px}"
    ".fkr th,.fkr td{padding:2px 8px;text-align:left;vertical-align:top;"
    "border-bottom:1px solid var(--jp-border-color2,#e2e8f0)}"
    ".fkr th{font-weight:600}.fkr code{font-size:11px}"
    ".fkr .fkr-chip{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px}"
    "</style>"
)
_STATUS_COLORS = {
    "chosen": "#16a34a",
    "lost tie": "#f59e0b",
    "older": "#94a3b8",
    "outside ttl": "#a855f7",
    "not yet known": "#ef4444",
    "future": "#0ea5e9",
    "null time": "#64748b",
    "in window": "#16a34a",
    "before window": "#94a3b8",
}


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]], *, cls: str = "") -> str:
    """An HTML table; cells are already-escaped HTML."""
    shown = rows[:MAX_ROWS]
    more = (
        f"<div class='fkr-muted'>… and {len(rows) - MAX_ROWS} more</div>"
        if len(rows) > MAX_ROWS
        else ""
    )
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in shown)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    seconds = max(0, int((utcnow() - when).total_seconds()))
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


def _duration(us: int | None) -> str:
    if us is None:
        return "none"
    return duration_label(timedelta(microseconds=us))


# ---- Store ------------------------------------------------------------------------------------
def store_html(store: Store) -> str:
    """Views (latest version, features, freshness), training sets and models of a store."""
    views = store.views()
    rows = []
    for name in views[:MAX_ROWS]:
        records = store.registry.versions(name)
        latest = records[-1]
        history = store.runs(name, latest.version)
        last = history[-1] if history else None
        fresh = (
            f"{_e(_ago(last.committed_at))} <span class='fkr-muted'>"
            f"({_e(last.mode or last.operation)}, Delta v{last.delta_version})"
            "</span>"
            if last
            else "<span class='fkr-muted'>not materialized</span>"
        )
        features = ", ".join(f"{_e(f)}: <i>{_e(d)}</i>" for f, d in latest.features.items())
        rows.append(
            [
                f"<b>{_e(name)}</b>",
                f"v{latest.version} <span class='fkr-muted'>of {len(records)}</span>",
                f"<code>{_e(latest.fingerprint)}</code>",
                _e(_duration(latest.ttl_us)),
                features,
                fresh,
            ]
        )
    sets = store.training_sets()
    models = store.models()
    parts = [
        _STYLE,
        "<div class='fkr fk-store'>",
        f"<h4>featurekit Store <code>{_e(store.root)}</code></h4>",
        f"<div class='fkr-muted'>{len(views)} views · {len(sets)} training sets · "
        f"{len(models)} models</div>",
    ]
    if rows:
        parts.append(
            _table(["view", "version", "fingerprint", "ttl", "features", "last materialized"], rows)
        )
        if len(views) > MAX_ROWS:
            parts.append(f"<div class='fkr-muted'>… and {len(views) - MAX_ROWS} more views</div>")
    else:
        parts.append("<p class='fkr-muted'>No views yet: store.materialize(view) adds one.</p>")
    if sets:
        recent = sorted(sets, key=lambda s: s["created_at"])[-5:]
        parts.append("<b>Training sets</b> <span class='fkr-muted'>(latest 5)</span>")
        parts.append(
            _table(
                ["id", "names", "rows", "views", "created"],
                [
                    [
                        f"<code>{_e(s['id'])}</code>",
                        _e(", ".join(s["names"])),
                        f"{s['rows']:,}",
                        _e(", ".join(s["views"])),
                        _e(str(s["created_at"])[:19]),
                    ]
                    for s in reversed(recent)
                ],
            )
        )
    if models:
        parts.append("<b>Models</b>")
        parts.append(
            _table(
                ["model", "training set", "metrics", "created"],
                [
                    [
                        f"<code>{_e(m.id)}</code>",
                        f"<code>{_e(m.training_set)}</code>",
                        _e(_metrics(m.metrics)),
                        _e(m.created_at.isoformat()[:19]),
                    ]
                    for m in models
                ],
            )
        )
    parts.append("</div>")
    return "".join(parts)


def _metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())) or "—"


# ---- FeatureView ------------------------------------------------------------------------------
def view_html(view: FeatureView, store: Store | None = None) -> str:
    """A view's signature, features with dtypes and, given a store, its version history."""
    from featurekit.offline.resolve import resolve

    kind = "SQL" if view.sql else "polars"
    inputs = ", ".join(f"{_e(s.name)}: {_e(type(s).__name__)}" for s in view.sources)
    parts = [
        _STYLE,
        "<div class='fkr fk-view'>",
        f"<h4>FeatureView <code>{_e(view.name)}</code> <span class='fkr-muted'>({kind})</span></h4>",
        f"<div><code>{_e(view.name)}({inputs})</code> → entity <b>{_e(view.entity.name)}</b> "
        f"keys {_e(list(view.keys))} at <code>{_e(view.timestamp)}</code>, ttl "
        f"{_e(_duration(None if view.ttl is None else int(view.ttl / timedelta(microseconds=1))))}"
        "</div>",
    ]
    if view.description:
        parts.append(f"<div class='fkr-muted'>{_e(view.description)}</div>")
    if view.tags:
        parts.append(f"<div>tags: {_e(dict(view.tags))}</div>")
    fingerprint = None
    try:
        resolved = resolve(view)
        fingerprint = resolved.fingerprint
        features = [[_e(f), f"<i>{_e(d)}</i>"] for f, d in resolved.layout.feature_dtypes]
        parts.append(f"<div>fingerprint <code>{_e(fingerprint)}</code></div>")
        parts.append(_table(["feature", "dtype"], features))
    except FeatureKitError as err:
        # the error may quote a source URL with its token; notebooks keep their outputs
        parts.append(f"<div class='fkr-muted'>cannot resolve yet: {_e(redact(str(err)))}</div>")
    if view.sql:
        parts.append(f"<pre>{_e(view.sql)}</pre>")
    elif view.fn is not None:
        try:
            signature = f"def {view.fn.__name__}{inspect.signature(view.fn)}"
            parts.append(f"<div><code>{_e(signature)}</code></div>")
        except (TypeError, ValueError):
            pass
    if store is not None:
        parts.append(_history_html(store, view.name, fingerprint))
    parts.append("</div>")
    return "".join(parts)


def _history_html(store: Store, name: str, fingerprint: str | None) -> str:
    records = store.registry.versions(name)
    if not records:
        return "<p class='fkr-muted'>Not in this store yet: store.materialize(view) adds it.</p>"
    rows = []
    for r in records:
        history = store.runs(name, r.version)
        last = history[-1] if history else None
        current = " ← current definition" if r.fingerprint == fingerprint else ""
        rows.append(
            [
                f"v{r.version}{_e(current)}",
                f"<code>{_e(r.fingerprint)}</code>",
                _e(r.created_at.isoformat()[:19]),
                _e(", ".join(r.reason)),
                _e(_ago(last.committed_at) if last else "never"),
                _e(f"{len(history)} runs"),
            ]
        )
    return "<b>Versions</b>" + _table(
        ["version", "fingerprint", "created", "why", "last materialized", "runs"], rows
    )


def version_html(record: VersionRecord) -> str:
    """One registered version: fingerprint, why it is new, features with dtypes."""
    features = [[_e(f), f"<i>{_e(d)}</i>"] for f, d in record.features.items()]
    return (
        f"{_STYLE}<div class='fkr fk-version'><h4>{_e(record.view)} v{record.version}</h4>"
        f"<div>fingerprint <code>{_e(record.fingerprint)}</code> · created "
        f"{_e(record.created_at.isoformat()[:19])} · why: {_e(', '.join(record.reason))} · "
        f"ttl {_e(_duration(record.ttl_us))}</div>{_table(['feature', 'dtype'], features)}</div>"
    )


# ---- models -----------------------------------------------------------------------------------
def model_html(record: ModelRecord) -> str:
    """A model entry: id, training set, metrics, params, what was recorded of the model."""
    rows = [
        ["training set", f"<code>{_e(record.training_set)}</code>"],
        ["created", _e(record.created_at.isoformat()[:19])],
        ["model", _e(record.model.get("uri") or record.model.get("type") or record.model)],
        ["metrics", _e(_metrics(record.metrics))],
    ]
    if record.params:
        rows.append(["params", _e(record.params)])
    if record.mlflow_run_id:
        rows.append(["MLflow run", f"<code>{_e(record.mlflow_run_id)}</code>"])
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        f"{_STYLE}<div class='fkr fk-model'><h4>Model <code>{_e(record.id)}</code></h4>"
        f"<table>{body}</table></div>"
    )


# ---- TrainingSet ------------------------------------------------------------------------------
def training_set_html(ts: TrainingSet) -> str:
    """Manifest, row count, null rate and a small histogram per feature, first rows."""
    m = ts.manifest
    rows = ts.scan()  # a set larger than memory is read one feature column at a time
    names = rows.collect_schema().names()
    height = len(ts)
    label_columns = set(m.labels.columns)
    views = _table(
        ["view", "version", "fingerprint", "Delta version", "ttl", "features"],
        [
            [
                _e(v.view),
                str(v.version),
                f"<code>{_e(v.fingerprint)}</code>",
                _e(v.delta_version),
                _e(_duration(v.ttl_us)),
                _e(", ".join(v.features)),
            ]
            for v in m.views
        ],
    )
    stats = []
    for name in [c for c in names if c not in label_columns]:
        column = rows.select(name).collect().to_series()
        rate = column.null_count() / height if height else 0.0
        stats.append(
            [
                f"<code>{_e(name)}</code>",
                f"<i>{_e(column.dtype)}</i>",
                f"{_null_bar(rate)} {rate:.1%}",
                _histogram(column),
            ]
        )
    versions = ", ".join(f"{k} {v}" for k, v in m.library_versions.items())
    return "".join(
        [
            _STYLE,
            "<div class='fkr fk-training-set'>",
            f"<h4><b>TrainingSet</b> <code>{_e(ts.id)}</code></h4>",
            f"<div>{height:,} rows × {len(names)} columns · point_in_time="
            f"<b>{_e(m.point_in_time)}</b> · label time <code>{_e(m.labels.timestamp)}</code>"
            f"{' · as_of ' + _e(m.as_of.isoformat()) if m.as_of else ''} · created "
            f"{_e(m.created_at.isoformat()[:19])}</div>",
            f"<div class='fkr-muted'>result hash <code>{_e(m.result_hash[:16])}</code> · "
            f"{_e(versions)} · rebuild with store.training_set_by_id({ts.id!r})</div>",
            views,
            "<b>Features</b>",
            _table(["feature", "dtype", "null rate", "distribution"], stats),
            "<b>First rows</b>",
            rows.head(5).collect()._repr_html_(),
            "</div>",
        ]
    )


def _null_bar(rate: float) -> str:
    width = 60
    filled = round(width * rate)
    return (
        f"<svg width='{width}' height='8' style='vertical-align:middle'>"
        f"<rect width='{width}' height='8' fill='#e2e8f0'/>"
        f"<rect width='{filled}' height='8' fill='#f97316'/></svg>"
    )


def _histogram(column: pl.Series, bins: int = 16) -> str:
    """A small inline SVG histogram of a numeric (or boolean) column."""
    values = column.drop_nulls()
    if values.len() == 0:
        return "<span class='fkr-muted'>all null</span>"
    if values.dtype == pl.Boolean:
        share = values.cast(pl.Float64).mean()
        return f"{share if isinstance(share, float) else 0.0:.1%} true"
    if not values.dtype.is_numeric():
        return f"<span class='fkr-muted'>{values.n_unique():,} distinct</span>"
    floats = values.cast(pl.Float64).filter(values.cast(pl.Float64).is_finite())
    if floats.len() == 0:
        return "<span class='fkr-muted'>no finite values</span>"
    low, high = float(floats.min()), float(floats.max())  # type: ignore[arg-type]
    if math.isclose(low, high):
        return f"<span class='fkr-muted'>constant {low:.4g}</span>"
    step = (high - low) / bins
    index = ((floats - low) / step).floor().clip(0, bins - 1).cast(pl.Int64)
    counts = [0] * bins
    for i, n in index.value_counts().iter_rows():
        counts[int(i)] = int(n)
    top = max(counts)
    w, h = 4, 24
    bars = "".join(
        f"<rect x='{i * w}' y='{h - round(h * c / top)}' width='{w - 1}' "
        f"height='{round(h * c / top)}' fill='#3b82f6'/>"
        for i, c in enumerate(counts)
    )
    return (
        f"<svg width='{bins * w}' height='{h}' style='vertical-align:middle'>"
        f"<title>{low:.4g} … {high:.4g}</title>{bars}</svg> "
        f"<span class='fkr-muted'>{low:.3g} … {high:.3g}</span>"
    )


# ---- PIT explain ------------------------------------------------------------------------------
def explanation_html(ex: Explanation) -> str:
    """The leakage story of one label row: a timeline and a table per view."""
    label = ", ".join(f"{k}={v}" for k, v in ex.label.items())
    parts = [
        _STYLE,
        "<div class='fkr fk-explain'>",
        f"<h4>PIT explain · training set <code>{_e(ex.training_set)}</code> row {ex.row}</h4>",
        f"<div>label: {_e(label)}</div>",
        f"<div class='fkr-muted'>label time t = {_e(ex.timestamp)} (UTC) · point_in_time="
        f"{_e(ex.point_in_time)}</div>",
        _legend(),
    ]
    for view in ex.views:
        parts.extend(
            f"<div class='fkr-warn' style='color:#b45309'>&#9888; leakage warning: {_e(text)}</div>"
            for text in view.leakage
        )
        parts.append(_view_explanation(view, ex.timestamp))
    parts.append("</div>")
    return "".join(parts)


def _legend() -> str:
    chips = "".join(
        f"<span class='fkr-chip' style='background:{c};color:white;margin-right:4px'>{_e(s)}</span>"
        for s, c in _STATUS_COLORS.items()
        if s not in ("in window", "before window", "null time")
    )
    return f"<div style='margin:4px 0'>{chips}</div>"


def _view_explanation(view: ViewExplanation, t: datetime) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(view.status_counts().items()))
    if view.aggregation:
        result = "aggregated: " + ", ".join(f"{k}={v}" for k, v in view.values.items())
    elif view.chosen is None:
        result = "no eligible row: features are null"
    else:
        result = f"chose candidate #{view.chosen}: " + ", ".join(
            f"{k}={v}" for k, v in view.values.items()
        )
    limit = "window" if view.aggregation else "ttl"
    head = (
        f"<div style='margin-top:8px'><b>{_e(view.view)}@{view.version}</b> keys {_e(view.keys)} · "
        f"{limit} {_e(_duration(None if view.ttl is None else int(view.ttl / timedelta(microseconds=1))))}"
        f" · knowledge time {'enforced' if view.knowledge else 'not used'} · "
        f"{view.candidates.height} candidates ({_e(counts or 'none')})</div>"
        f"<div>{_e(result)}</div>"
    )
    if view.candidates.height == 0:
        return head
    return head + _timeline(view, t) + _candidate_table(view, t)


def _timeline(view: ViewExplanation, t: datetime) -> str:
    """Candidates on a time axis around the label time: one lane per status."""
    events = [e for e in view.candidates.get_column("event_ts").to_list() if e is not None]
    past = [e for e in events if e <= t]
    # the interesting stretch: the TTL (or back to the latest past row), and a bit after t
    reach = view.ttl or (t - max(past) if past else timedelta(days=1)) or timedelta(hours=1)
    low, high = t - reach * 1.25, t + reach * 0.5
    frame = view.candidates.filter(pl.col("event_ts").is_between(low, high))
    if frame.height == 0:
        return "<div class='fkr-muted'>no candidate near the label time</div>"
    span = (high - low).total_seconds()
    lanes = [s for s in _STATUS_COLORS if s in set(frame.get_column("status").to_list())]
    width, left, lane_h = 640, 100, 16
    height = 24 + lane_h * len(lanes)

    def x(value: datetime) -> float:
        return left + (width - left - 10) * (value - low).total_seconds() / span

    parts = [f"<svg width='{width}' height='{height}' font-size='10' font-family='sans-serif'>"]
    if view.ttl is not None:
        parts.append(
            f"<rect x='{x(t - view.ttl):.1f}' y='0' width='{x(t) - x(t - view.ttl):.1f}' "
            f"height='{height - 14}' fill='#f1f5f9'><title>ttl/window: "
            f"{_e(t - view.ttl)} … {_e(t)}</title></rect>"
        )
    for i, status in enumerate(lanes):
        y = 8 + i * lane_h
        parts.append(
            f"<text x='0' y='{y + 4}' fill='{_STATUS_COLORS[status]}'>{_e(status)}</text>"
            f"<line x1='{left}' y1='{y}' x2='{width - 10}' y2='{y}' stroke='#e2e8f0'/>"
        )
    lane_of = {s: i for i, s in enumerate(lanes)}
    for item in frame.iter_rows(named=True):
        e, c, status = item["event_ts"], item["created_ts"], item["status"]
        if e is None:
            continue
        y = 8 + lane_of[status] * lane_h
        color = _STATUS_COLORS[status]
        if c is not None and c > e:  # known later than it happened: the arrival delay
            parts.append(
                f"<line x1='{x(e):.1f}' y1='{y}' x2='{x(min(c, high)):.1f}' y2='{y}' stroke='{color}' "
                "stroke-opacity='0.5'/>"
            )
        radius = 5 if status == "chosen" else 3
        parts.append(
            f"<circle cx='{x(e):.1f}' cy='{y}' r='{radius}' fill='{color}'>"
            f"<title>#{item['candidate']} {_e(status)}: {_e(item['reason'])}</title></circle>"
        )
    parts.append(
        f"<line x1='{x(t):.1f}' y1='0' x2='{x(t):.1f}' y2='{height - 14}' stroke='#0f172a' "
        "stroke-width='1.5'/>"
        f"<text x='{min(x(t) + 3, width - 60):.1f}' y='{height - 2}' fill='#0f172a'>label t</text>"
        f"<text x='{left}' y='{height - 2}' fill='#64748b'>{_e(str(low)[:16])}</text>"
        f"<text x='{width - 10}' y='{height - 2}' fill='#64748b' text-anchor='end'>"
        f"{_e(str(high)[:16])}</text></svg>"
    )
    hidden = view.candidates.height - frame.height
    if hidden:
        parts.append(f"<div class='fkr-muted'>{hidden} candidates outside the drawn range</div>")
    return "".join(parts)


def _candidate_table(view: ViewExplanation, t: datetime) -> str:
    """The chosen row and its closest rivals first: the rows worth reading."""
    frame = view.candidates
    order = {s: i for i, s in enumerate(_STATUS_COLORS)}
    ranked = sorted(
        frame.iter_rows(named=True),
        key=lambda r: (
            order.get(r["status"], 99),
            abs((r["event_ts"] - t).total_seconds()) if r["event_ts"] else 0.0,
        ),
    )
    picked: list[dict[str, Any]] = []
    per_status: dict[str, int] = {}
    for item in ranked:  # a few of each status, so every reason is visible
        seen = per_status.get(item["status"], 0)
        if seen < 3:
            picked.append(item)
            per_status[item["status"]] = seen + 1
    features = [
        c
        for c in frame.columns
        if c not in ("candidate", "event_ts", "created_ts", "status", "reason")
    ]
    rows = [
        [
            f"#{r['candidate']}",
            _e(str(r["event_ts"])[:19]),
            _e(str(r["created_ts"])[:19] if r["created_ts"] else "—"),
            f"<span class='fkr-chip' style='background:{_STATUS_COLORS[r['status']]};color:white'>"
            f"{_e(r['status'])}</span>",
            _e(r["reason"]),
            *[_e(r[f]) for f in features],
        ]
        for r in sorted(picked, key=lambda r: r["candidate"])
    ]
    hidden = frame.height - len(picked)
    note = (
        f"<div class='fkr-muted'>{hidden} more candidates not listed "
        "(explanation.to_polars() has them all)</div>"
        if hidden
        else ""
    )
    return _table(["#", "event time", "known at", "status", "why", *features], rows) + note
