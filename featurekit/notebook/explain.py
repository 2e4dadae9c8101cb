"""PIT explain: for one label row, every candidate feature row and why it was or wasn't used.

The choice itself is made by the point-in-time kernel (:func:`featurekit.kernels.pit.pit_join`) on
the candidate rows, exactly as when the training set was built: the explanation only adds
the reasons for the rows the kernel passed over, in the order of the rules of docs/pit.md:

- ``future``: its event time is after the label time;
- ``not yet known``: it happened before the label time but became known (created
  timestamp) after it, in ``point_in_time="knowledge"`` mode;
- ``outside ttl``: older than the view's TTL at the label time;
- ``lost tie``: same event time as the chosen row, which was known later or comes later
  in the view's output (later run, later row);
- ``older``: a row with a later event time was chosen.

For aggregation views the rows are events: ``in window`` events are aggregated,
``before window`` ones are older than the widest window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from featurekit.core.errors import DefinitionError, NotFoundError
from featurekit.core.timeutil import duration_label, to_utc_expr
from featurekit.kernels.pit import ViewFrame, pit_join
from featurekit.storage import delta
from featurekit.storage.manifest import ManifestView

if TYPE_CHECKING:
    from featurekit.offline.training import TrainingSet

_ROW = "__fk_candidate"
_E = "__fk_event_utc"
_C = "__fk_created_utc"

CHOSEN = "chosen"
FUTURE = "future"
UNKNOWN = "not yet known"
OUTSIDE_TTL = "outside ttl"
LOST_TIE = "lost tie"
OLDER = "older"
NULL_TIME = "null time"
IN_WINDOW = "in window"
BEFORE_WINDOW = "before window"
#: Every status a candidate can get.
STATUSES = (
    CHOSEN,
    LOST_TIE,
    OLDER,
    OUTSIDE_TTL,
    UNKNOWN,
    FUTURE,
    NULL_TIME,
    IN_WINDOW,
    BEFORE_WINDOW,
)


@dataclass(frozen=True)
class ViewExplanation:
    """One view's candidates for one label row.

    Attributes:
        view: view name; ``version`` its version.
        keys: the label's entity key values.
        ttl: the TTL applied (None: no limit); for aggregation views, the widest window.
        knowledge: whether created timestamps were enforced (knowledge mode and the view
            has a created timestamp).
        candidates: one row per candidate, in the view's output order: ``candidate``
            (position), ``event_ts``, ``created_ts`` (UTC), ``status``, ``reason``, then
            the stored feature columns.
        chosen: the chosen candidate's position, or None (the features are null).
        values: the features as the training set holds them for this row.
        aggregation: True for aggregation views (candidates are events).
        leakage: the leakage lint's findings on the view version (with their fix).
    """

    view: str
    version: int
    keys: dict[str, Any]
    ttl: timedelta | None
    knowledge: bool
    candidates: pl.DataFrame
    chosen: int | None
    values: dict[str, Any]
    aggregation: bool = False
    leakage: tuple[str, ...] = ()

    def status_counts(self) -> dict[str, int]:
        """How many candidates got each status."""
        counts = self.candidates.get_column("status").value_counts()
        return {str(s): int(n) for s, n in counts.iter_rows()}


@dataclass(frozen=True)
class Explanation:
    """Why one training-set row holds the feature values it holds.

    Example:
        >>> ex = ts.explain(42)
        >>> ex.views[0].chosen, ex.views[0].status_counts()
        >>> ex  # a timeline per view in Jupyter
    """

    training_set: str
    row: int
    label: dict[str, Any]
    timestamp: datetime
    point_in_time: str
    views: list[ViewExplanation] = field(default_factory=list)

    def view(self, name: str) -> ViewExplanation:
        """The explanation of one view, by name."""
        for item in self.views:
            if item.view == name:
                return item
        raise NotFoundError(
            f"training set {self.training_set!r} has no view {name!r}; it has "
            f"{[v.view for v in self.views]}."
        )

    def to_polars(self) -> pl.DataFrame:
        """All candidates of all views, with a leading ``view`` column."""
        frames = [
            v.candidates.select("candidate", "event_ts", "created_ts", "status", "reason")
            .with_columns(pl.lit(v.view).alias("view"))
            .select("view", "candidate", "event_ts", "created_ts", "status", "reason")
            for v in self.views
        ]
        return pl.concat(frames) if frames else pl.DataFrame()

    def __repr__(self) -> str:
        lines = [
            f"Explanation(training_set={self.training_set!r}, row={self.row}, "
            f"t={self.timestamp.isoformat()}, point_in_time={self.point_in_time!r})"
        ]
        for v in self.views:
            counts = ", ".join(f"{k}={n}" for k, n in sorted(v.status_counts().items()))
            lines.append(
                f"  {v.view}@{v.version} keys={v.keys}: chosen={v.chosen} ({counts or 'no rows'})"
            )
            lines.extend(f"    leakage warning: {text}" for text in v.leakage)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from featurekit.notebook.reprs import explanation_html

        return explanation_html(self)


def explain(ts: TrainingSet, row: int) -> Explanation:
    """Explain row ``row`` (0-based, in label order) of a training set.

    Raises:
        DefinitionError: ``row`` is out of range.
    """
    height = len(ts)
    if not isinstance(row, int) or isinstance(row, bool) or not -height <= row < height:
        raise DefinitionError(
            f"row {row!r} is out of range: training set {ts.id!r} has {height} rows "
            f"(0..{height - 1})."
        )
    row = row % height
    frame = ts.scan().slice(row, 1).collect()  # one row: a set larger than memory stays on disk
    manifest = ts.manifest
    label_columns = list(manifest.labels.columns)
    timestamp = manifest.labels.timestamp
    labels = frame.select(label_columns)
    label_dtype = labels.schema[timestamp]
    t = labels.select(to_utc_expr(timestamp, label_dtype, what="label timestamp", rounding="down"))
    when = t.item()
    mode = manifest.point_in_time
    result_row = frame.row(0, named=True)
    views = []
    for spec in manifest.views:
        # helper columns (on-demand inputs nobody asked for) are gone from the frame
        values = {f: result_row.get(n) for f, n in zip(spec.features, spec.columns, strict=True)}
        views.append(_explain_view(ts, spec, labels, timestamp, when, mode, values))
    return Explanation(
        training_set=ts.id,
        row=row,
        label={c: result_row[c] for c in label_columns},
        timestamp=when,
        point_in_time=mode,
        views=views,
    )


def _explain_view(
    ts: TrainingSet,
    spec: ManifestView,
    labels: pl.DataFrame,
    timestamp: str,
    when: datetime | None,
    mode: str,
    values: dict[str, Any],
) -> ViewExplanation:
    from featurekit.offline.training import aggregation_specs

    registry = ts.registry
    record = registry.version(spec.view, spec.version)
    keys = list(spec.keys)
    key_values = {k: labels.get_column(k).item() for k in keys}
    ttl = None if spec.ttl_us is None else timedelta(microseconds=spec.ttl_us)
    created = spec.created_timestamp
    knowledge = mode == "knowledge" and created is not None
    aggs = aggregation_specs(record, spec.features)
    stored = record.event_columns if aggs else spec.features
    wanted = [*keys, spec.timestamp, *([created] if created else [])]
    wanted.extend(c for c in stored if c not in wanted)
    table = registry.layout.uri(spec.table)
    if any(v is None for v in key_values.values()) or when is None:
        rows = _empty(table, spec, wanted, registry.storage_options)
    else:
        where = pl.lit(True)
        for key, value in key_values.items():
            where = where & (pl.col(key) == pl.lit(value))
        version = spec.delta_version
        rows = (
            delta.read_rows(
                table,
                version=version,
                columns=wanted,
                where=where,
                storage_options=registry.storage_options,
            )
            if version is not None
            else _empty(table, spec, wanted, registry.storage_options)
        )
    rows = rows.with_row_index(_ROW)
    chosen: int | None = None
    if aggs:
        windows = [a.window for a in aggs]
        ttl = None if None in windows else max(w for w in windows if w is not None)
    elif rows.height and when is not None:
        chosen = _kernel_choice(spec, rows, labels, timestamp, ttl, mode)
    candidates = _classify(rows, spec, when, ttl, knowledge, chosen, aggregation=bool(aggs))
    return ViewExplanation(
        view=spec.view,
        version=spec.version,
        keys=key_values,
        ttl=ttl,
        knowledge=knowledge,
        candidates=candidates,
        chosen=chosen,
        values=values,
        aggregation=bool(aggs),
        leakage=tuple(record.leakage),
    )


def _empty(
    table: str, spec: ManifestView, columns: list[str], options: Mapping[str, str]
) -> pl.DataFrame:
    """No candidates, with the table's schema (version 0 when it had no commit yet)."""
    version = spec.delta_version or 0
    return delta.read_rows(
        table, version=version, columns=columns, where=pl.lit(False), storage_options=options
    )


def _kernel_choice(
    spec: ManifestView,
    rows: pl.DataFrame,
    labels: pl.DataFrame,
    timestamp: str,
    ttl: timedelta | None,
    mode: Any,
) -> int | None:
    """The candidate the PIT kernel picks for this label: the same code as the training set."""
    view = ViewFrame(
        name=spec.view,
        frame=rows,
        keys=tuple(spec.keys),
        timestamp=spec.timestamp,
        created_timestamp=spec.created_timestamp,
        features=(_ROW,),
        ttl=ttl,
    )
    joined = pit_join(labels, timestamp=timestamp, views=[view], point_in_time=mode)
    value = joined.get_column(_ROW).item()
    return None if value is None else int(value)


def _classify(
    rows: pl.DataFrame,
    spec: ManifestView,
    when: datetime | None,
    ttl: timedelta | None,
    knowledge: bool,
    chosen: int | None,
    *,
    aggregation: bool,
) -> pl.DataFrame:
    ts_col, created = spec.timestamp, spec.created_timestamp
    times = [to_utc_expr(ts_col, rows.schema[ts_col], what="event timestamp").alias(_E)]
    if created:
        times.append(to_utc_expr(created, rows.schema[created], what="created").alias(_C))
    else:
        times.append(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias(_C))
    timed = rows.with_columns(times)
    best = timed.row(chosen, named=True) if chosen is not None else None
    statuses: list[str] = []
    reasons: list[str] = []
    for item in timed.iter_rows(named=True):
        status, reason = _reason(item, when, ttl, knowledge, best, aggregation)
        statuses.append(status)
        reasons.append(reason)
    features = [c for c in rows.columns if c not in (_ROW, *spec.keys, ts_col, created)]
    return timed.select(
        pl.col(_ROW).cast(pl.Int64).alias("candidate"),
        pl.col(_E).alias("event_ts"),
        pl.col(_C).alias("created_ts"),
        pl.Series("status", statuses, dtype=pl.String),
        pl.Series("reason", reasons, dtype=pl.String),
        *[pl.col(c) for c in features],
    )


def _reason(
    item: dict[str, Any],
    when: datetime | None,
    ttl: timedelta | None,
    knowledge: bool,
    best: dict[str, Any] | None,
    aggregation: bool,
) -> tuple[str, str]:
    e, c = item[_E], item[_C]
    if when is None:
        return NULL_TIME, "the label time is null, so no row can match"
    if e is None:
        return NULL_TIME, "its event time is null; such rows never match"
    if e > when:
        return FUTURE, f"happened at {_fmt(e)}, after the label time {_fmt(when)}"
    if knowledge and c is None:
        return NULL_TIME, "its created time is null, so it was never known (knowledge mode)"
    if knowledge and c > when:
        return UNKNOWN, (
            f"happened at {_fmt(e)} but only became known at {_fmt(c)}, after the label time"
        )
    if aggregation:
        if ttl is not None and when - e >= ttl:
            return (
                BEFORE_WINDOW,
                f"{_age(when - e)} before the label time; the widest window is {duration_label(ttl)}",
            )
        return IN_WINDOW, "inside the window: aggregated into the features"
    if ttl is not None and when - e > ttl:
        return (
            OUTSIDE_TTL,
            f"{_age(when - e)} old at the label time; the TTL is {duration_label(ttl)}",
        )
    if best is None:  # cannot happen when the kernel agrees with these rules
        return OLDER, "eligible, but the kernel chose no row"
    if item[_ROW] == best[_ROW]:
        return CHOSEN, "the latest eligible row at the label time"
    if e == best[_E]:
        bc = best[_C]
        if c is not None and bc is not None and c < bc:
            return LOST_TIE, f"same event time; the chosen row was known later ({_fmt(bc)})"
        return LOST_TIE, "same event time; the chosen row comes later (later run or row)"
    return OLDER, f"a later row (event time {_fmt(best[_E])}) was chosen"


def _fmt(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _age(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{seconds}s"
