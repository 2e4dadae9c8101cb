"""Data quality during materialization: checks before the commit, statistics in the same pass.

A run hands every batch of rows it is about to write to :class:`RunQuality` (one call,
while the Delta writer is still consuming, so a raise aborts the commit):

* the view's checks plus the defaults (:func:`~featurekit.core.checks.with_default_checks`)
  run on the batch. An error-level failure writes the failing rows (at most
  :data:`~featurekit.core.checks.QUARANTINE_LIMIT`, with the names of the checks each
  failed) to the view version's quarantine table and raises
  :class:`~featurekit.core.errors.ValidationError`: nothing is committed, offline or
  online (the online sync runs after the commit);
* per-feature statistics of the batch are summarized from the same frame (no second read)
  and merged (:mod:`featurekit.kernels.stats`), on a thread of their own while the Delta
  writer writes the batch (one batch at a time: the next waits for the last); a run of
  one batch starts them as soon as its rows are checked, while they are sorted, and
  redoes them on the rows written only if tidying dropped some. After the commit they
  are appended to the version's statistics table, one row per feature, tagged with the
  run. Summarized in line, a 10M-row full run's statistics (1.2 s) came on top of its
  write (1.3 s); statistics that fail warn after the commit, as a failure to save them
  does, and lose only themselves.

What the checks see. A run checks its rows as the view produced them, before rows that
share (keys, event time, created time) are resolved to the last one (so ``unique`` can
report them), and summarizes the rows it writes. Which rows: on an incremental run, the rows of
the replaced window ``[T, ...)``. That is enough for the default ``Check.unique()`` on
(keys, event time): the rows kept from earlier runs all have event times before ``T``, so
none can share a (key, time) with a new row. Batched runs (over the memory budget) split
rows by entity key, so every (key, time) group sits in one batch too; ``row_count`` and
``fresh`` are judged on the whole run, other frame-level expressions per batch, and a
``unique`` on columns other than the keys per batch.

:func:`check_rows` is the same evaluation for any rows in the view's output shape (pushed
rows go through it).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from featurekit.core import display
from featurekit.core.checks import (
    Check,
    CheckReport,
    FreshRule,
    RowCountRule,
    as_checks,
    evaluate_checks,
    with_default_checks,
)
from featurekit.core.errors import FeatureKitError, FeatureKitWarning, ValidationError
from featurekit.core.leakage import LeakageFinding, plan_findings
from featurekit.core.timeutil import to_utc_datetime, utcnow
from featurekit.kernels.stats import (
    FeatureStats,
    StatsState,
    compute_stats,
    finish,
    merge_states,
    partial_stats,
    stats_frame,
)
from featurekit.offline.batching import batch_count, frame_bytes
from featurekit.offline.compute import call_view, empty_frame
from featurekit.offline.resolve import ResolvedView
from featurekit.offline.training import TrainingSet
from featurekit.storage import delta
from featurekit.storage.layout import StoreLayout
from featurekit.storage.sources import source_schema

__all__ = [
    "CheckSummary",
    "RunQuality",
    "StatsTable",
    "check_rows",
    "checks_of",
    "latest_checks",
    "leakage_findings",
    "quarantine",
    "read_table",
    "save_training_stats",
    "training_stats",
]

#: Columns every statistics row carries besides the statistics themselves.
RUN_COLUMNS = ("run_id", "delta_version", "mode", "computed_at", "rows")


def check_rows(
    resolved: ResolvedView, rows: pl.DataFrame, now: datetime | None = None
) -> CheckReport:
    """Evaluate a view's checks (plus the defaults) on rows in its output shape.

    Example:
        >>> report = check_rows(resolve(driver_stats), rows)
        >>> report.raise_or_warn("driver_stats")
    """
    return evaluate_checks(
        rows,
        checks_of(resolved),
        keys=_identity(resolved),
        timestamp=resolved.layout.timestamp,
        now=now,
    )


def checks_of(resolved: ResolvedView) -> tuple[Check, ...]:
    """A view's checks plus the defaults; aggregation views store events, where many rows
    at one key and time are normal, so they get no default ``unique``."""
    if resolved.layout.aggregations:
        return as_checks(resolved.view.checks)
    return with_default_checks(resolved.view.checks)


def _identity(resolved: ResolvedView) -> tuple[str, ...]:
    """What ``Check.unique()`` groups by besides the event time.

    The entity keys, and the created time when the view has one: rows at one key and event
    time with different created times are corrections (knowledge time tells them apart),
    not duplicates; rows that share all three are what a write silently resolves to one.
    """
    layout = resolved.layout
    created = (layout.created_timestamp,) if layout.created_timestamp else ()
    return (*layout.keys, *created)


@dataclass(frozen=True)
class CheckSummary:
    """One check's verdict over a whole run (what the run record keeps)."""

    name: str
    severity: str
    passed: bool
    failing: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """The form stored in a commit's metadata."""
        return {
            "name": self.name,
            "severity": self.severity,
            "passed": self.passed,
            "failing": self.failing,
            "detail": self.detail,
        }


def quarantine(
    layout: StoreLayout, view: str, version: int, run_id: str, failing: pl.DataFrame
) -> str:
    """Append rows that failed an error-level check (``CheckReport.failing_rows``) to the
    view version's quarantine table, tagged with the run; returns the table's location."""
    tagged = failing.with_columns(
        pl.lit(run_id).alias("run_id"), pl.lit(utcnow()).alias("quarantined_at")
    )
    uri = layout.quarantine_uri(view, version)
    if tagged.height:
        _append(uri, tagged, run_id, {"view": view, "version": str(version), "run_id": run_id})
    return uri


_ROWS_FAIL = re.compile(r"(\d+) of (\d+) rows fail (.*)", re.DOTALL)


def _merged_detail(old: CheckSummary, detail: str, passed: bool) -> str:
    """The detail of two batches' verdicts: "k of n rows fail (...)" counts add up, so a
    run in batches says what the same run in one batch says; else the latest failing one."""
    before, now = _ROWS_FAIL.fullmatch(old.detail), _ROWS_FAIL.fullmatch(detail)
    if before and now and before.group(3) == now.group(3):
        failing = int(before.group(1)) + int(now.group(1))
        rows = int(before.group(2)) + int(now.group(2))
        return f"{failing} of {rows} rows fail {now.group(3)}"
    return old.detail if passed and not old.passed else detail


class RunQuality:
    """Checks and statistics of one materialization run, fed batch by batch."""

    def __init__(
        self,
        resolved: ResolvedView,
        layout: StoreLayout,
        version: int,
        run_id: str,
        *,
        now: datetime | None = None,
    ) -> None:
        self.resolved, self.layout, self.version, self.run_id = resolved, layout, version, run_id
        self.now = to_utc_datetime(now) if now else utcnow()
        self._checks = checks_of(resolved)
        self._order = [c.name for c in self._checks]
        self.batched = False
        self._summaries: dict[str, CheckSummary] = {}
        self._states: dict[str, StatsState] = {}
        self._summarizer: ThreadPoolExecutor | None = None
        self._summarizing: Future[dict[str, StatsState]] | None = None
        self._early: int | None = None  # rows of a batch summarized before it was tidied
        self._stats_error: Exception | None = None
        self._latest: list[pl.DataFrame] = []
        self._warnings: list[str] = []
        self.rows = 0
        self._checked = 0
        self._refused: tuple[pl.DataFrame, list[CheckSummary]] | None = None

    @property
    def batched(self) -> bool:
        """Whether the run comes in several batches (set before the first batch)."""
        return self._batched

    @batched.setter
    def batched(self, value: bool) -> None:
        # batched: the whole-run rules wait for the last batch; the rest run per batch
        run_level = (RowCountRule, FreshRule)
        self._batched = value
        self._per_batch = [c for c in self._checks if not (value and isinstance(c.rule, run_level))]
        self._per_run = [c for c in self._checks if value and isinstance(c.rule, run_level)]

    def check(self, rows: pl.DataFrame) -> None:
        """Check one batch as the view produced it (raising, before the commit, on an error).

        A run of one batch also starts summarizing these rows, so the statistics are
        computed while the rows are sorted rather than after: tidying only drops rows
        (null keys, exact duplicates), so when :meth:`summarize` gets as many rows back,
        they are these rows and the summary stands.
        """
        ts = self.resolved.layout.timestamp
        report = evaluate_checks(
            rows, self._per_batch, keys=_identity(self.resolved), timestamp=ts, now=self.now
        )
        self._refuse_or_keep(report, rows)
        if self._per_run:
            self._latest.append(rows.select(pl.col(ts).max()))
        self._checked += rows.height
        if not self.batched:
            self._start(rows)
            self._early = rows.height

    def summarize(self, rows: pl.DataFrame) -> None:
        """Add one batch of the rows written to the run's statistics, on the statistics
        thread (after the batch before it: one batch held for them at a time)."""
        early, self._early = self._early, None
        self.rows += rows.height
        if early == rows.height:
            return  # summarized as produced (see :meth:`check`): the same rows
        if early is not None:  # tidying dropped rows: summarize those written instead
            self._settle_batch(keep=False)
        self._start(rows)

    def _start(self, rows: pl.DataFrame) -> None:
        self._settle_batch()
        if self._summarizer is None:
            self._summarizer = ThreadPoolExecutor(1, thread_name_prefix="featurekit-stats")
        features = list(self.resolved.layout.stored_values)
        self._summarizing = self._summarizer.submit(partial_stats, rows, features)

    def _settle_batch(self, *, keep: bool = True) -> None:
        """Wait for the batch being summarized and merge it (``keep``); keep its failure
        for :meth:`save_stats`."""
        pending, self._summarizing = self._summarizing, None
        if pending is None:
            return
        try:
            part = pending.result()
        except Exception as err:
            if keep:
                self._stats_error = self._stats_error or err
            return
        if keep:
            self._states = merge_states(self._states, part) if self._states else part

    def settle(self) -> None:
        """Wait for the statistics thread and let it go (every run calls this, however
        it ends)."""
        self._settle_batch()
        if self._summarizer is not None:
            self._summarizer.shutdown(wait=True)
            self._summarizer = None

    def finish(self) -> None:
        """Judge the whole-run rules of a batched run (after its last batch, before commit)."""
        if not self._per_run:
            return
        layout = self.resolved.layout
        latest = pl.concat(self._latest).select(pl.col(layout.timestamp).max())
        for check in self._per_run:
            # row_count reads only the height: a Null column of that height costs no memory
            frame = (
                latest
                if isinstance(check.rule, FreshRule)
                else pl.select(pl.repeat(None, self._checked, dtype=pl.Null).alias("n"))
            )
            report = evaluate_checks(
                frame, [check], keys=layout.keys, timestamp=layout.timestamp, now=self.now
            )
            self._refuse_or_keep(report, frame)

    def _refuse_or_keep(self, report: CheckReport, rows: pl.DataFrame) -> None:
        name = self.resolved.name
        error = report.error(name)
        if error is not None:
            # kept, not written: this may run inside the Delta writer's stream, where no
            # other table can be written; keep_refused() writes them once the run is aborted
            failing = report.failing_rows(rows)
            verdicts = [
                CheckSummary(r.name, r.severity, r.passed, r.failing, r.detail)
                for r in report.results
            ]
            self._refused = (failing, verdicts)
            uri, count = self.layout.quarantine_uri(name, self.version), failing.height
            where = (
                f"{count} failing row(s) were written to the quarantine table {uri!r} "
                f"(run_id {self.run_id!r}; read them with store.quarantine({name!r}))."
                if count
                else "No row-level check failed, so no row was quarantined."
            )
            raise ValidationError(
                f"{error}\nNothing was committed (view {name!r} version {self.version}). {where}",
                failures=error.failures,
            )
        text = report.warning_text(name)
        if text is not None:
            self._warnings.append(text)
        for r in report.results:
            old = self._summaries.get(r.name)
            if old is None:
                self._summaries[r.name] = CheckSummary(
                    r.name, r.severity, r.passed, r.failing, r.detail
                )
            else:  # a later batch: counts add up, the latest failing detail is kept
                self._summaries[r.name] = CheckSummary(
                    r.name,
                    r.severity,
                    old.passed and r.passed,
                    old.failing + r.failing,
                    _merged_detail(old, r.detail, r.passed),
                )

    @property
    def results(self) -> list[CheckSummary]:
        """Every check's verdict so far, in declaration order."""
        return [self._summaries[n] for n in self._order if n in self._summaries]

    def metadata(self) -> dict[str, Any]:
        """What the run's commit records: the checks that ran and their verdicts."""
        return {"checks": [s.to_dict() for s in self.results]}

    def warn(self) -> None:
        """Warn about the warn-level failures (once the rows are committed)."""
        for text in self._warnings:
            # stacklevel: this method, materialize, the Store method, the user's call
            warnings.warn(f"{text}\nThe rows were committed.", FeatureKitWarning, stacklevel=4)

    def stats(self) -> pl.DataFrame:
        """Statistics of every stored value column over the run's rows, one row per feature.

        Raises:
            Exception: what summarizing a batch raised.
        """
        self.settle()
        if self._stats_error is not None:
            raise self._stats_error
        return stats_frame(finish(self._states.values()))

    def keep_refused(self) -> None:
        """Write a refused run's failing rows to the quarantine and its verdicts to the log."""
        if self._refused is None:
            return
        failing, verdicts = self._refused
        quarantine(self.layout, self.resolved.name, self.version, self.run_id, failing)
        self._record(verdicts, committed=False)

    def _record(self, verdicts: list[CheckSummary], *, committed: bool) -> None:
        """Append the verdicts to the store's check log (what the metrics export)."""
        frame = pl.DataFrame(
            [s.to_dict() for s in verdicts],
            schema={
                "name": pl.String,
                "severity": pl.String,
                "passed": pl.Boolean,
                "failing": pl.Int64,
                "detail": pl.String,
            },
        ).with_columns(
            pl.lit(self.resolved.name).alias("view"),
            pl.lit(self.version, pl.Int64).alias("version"),
            pl.lit(self.run_id).alias("run_id"),
            pl.lit(committed).alias("committed"),
            pl.lit(self.now).alias("checked_at"),
        )
        _append(self.layout.monitoring_uri("checks"), frame, self.run_id, {"run_id": self.run_id})

    def save_stats(self, delta_version: int, mode: str) -> None:
        """Append the run's statistics to the version's statistics table.

        Runs after the commit: a failure here (or summarizing the rows) warns and loses
        only these statistics.
        """
        uri = self.layout.stats_uri(self.resolved.name, self.version)
        meta = {"view": self.resolved.name, "version": str(self.version), "run_id": self.run_id}
        try:
            frame = self.stats().with_columns(
                pl.lit(self.run_id).alias("run_id"),
                pl.lit(delta_version, pl.Int64).alias("delta_version"),
                pl.lit(mode).alias("mode"),
                pl.lit(self.now).alias("computed_at"),
                pl.lit(self.rows, pl.Int64).alias("rows"),
            )
            # two small Delta writes, side by side (the writer lets go of the GIL): the
            # log reads and commits of each are most of an incremental run's fixed cost
            with ThreadPoolExecutor(1, thread_name_prefix="featurekit-record") as pool:
                recorded = pool.submit(self._record, self.results, committed=True)
                _append(uri, frame, self.run_id, meta)
                recorded.result()
        except Exception as err:  # the rows are committed; only the statistics are lost
            warnings.warn(
                f"view {self.resolved.name!r}: the run's rows are committed (Delta version "
                f"{delta_version}) but its statistics could not be computed or saved to {uri!r}: "
                f"{type(err).__name__}: {err}",
                FeatureKitWarning,
                stacklevel=4,
            )


def _append(uri: str, frame: pl.DataFrame, run_id: str, metadata: Mapping[str, Any]) -> None:
    """Add one run's rows to a table: a replace of that run's rows, so a retry is harmless."""
    predicate = f"run_id = '{run_id}'" if delta.table_exists(uri) else None
    delta.write_rows(uri, frame, metadata=metadata, predicate=predicate)


def read_table(uri: str) -> pl.DataFrame | None:
    """The latest rows of a quality table (None: nothing was ever written)."""
    version = delta.current_version(uri)
    return None if version is None else delta.read_rows(uri, version=version)


class StatsTable(pl.DataFrame):
    """Statistics as a polars DataFrame that draws itself in Jupyter (a row per feature
    with its histogram or top values); every polars operation returns a plain DataFrame."""

    def _repr_html_(self, **kwargs: Any) -> str:
        return display.html_for(self) or super()._repr_html_(**kwargs)


def training_stats(ts: TrainingSet, *, memory_budget: int | None = None) -> pl.DataFrame:
    """Statistics of a training set's features, one row per (view, feature): the baseline.

    ``feature`` is the view's feature name; ``column`` the training set's column for it.
    A set whose features fit ``memory_budget`` (or with no budget) is summarized in one
    read, exactly. A larger one (a set built out of core, read from its files) is read in
    row ranges sized like the batches of a materialization under that budget, each
    summarized by :func:`~featurekit.kernels.stats.partial_stats` and merged, so memory
    holds one range of one view's features: the statistics are then those of a batched
    run (quantiles and histograms exact up to ``SKETCH_SIZE`` valid values per feature,
    within about ``count / SKETCH_SIZE`` ranks above; see the stats kernel).
    """
    rows = ts.scan()
    present = set(rows.collect_schema().names())
    total = len(ts)
    parts = []
    for view in ts.manifest.views:
        # hidden inputs of on-demand features are dropped from the rows: skip them
        pairs = [
            (f, c)
            for f, c in zip(view.features, view.columns or view.features, strict=True)
            if c in present
        ]
        if not pairs:
            continue
        columns = [c for _, c in pairs]
        stats = stats_frame(_column_stats(rows.select(columns), total, memory_budget))
        parts.append(
            stats.with_columns(
                pl.Series("feature", [f for f, _ in pairs], pl.String),
                pl.Series("column", columns, pl.String),
                pl.lit(view.view).alias("view"),
                pl.lit(view.version, pl.Int64).alias("version"),
            )
        )
    if not parts:
        return stats_frame(())
    return pl.concat(parts, how="vertical")


def _column_stats(
    columns: pl.LazyFrame, total: int, memory_budget: int | None
) -> tuple[FeatureStats, ...]:
    """Exact in one read when the columns fit the budget, else merged over row ranges."""
    chunks = 1 if memory_budget is None else batch_count(frame_bytes(columns), memory_budget)
    if chunks <= 1 or total <= 1:
        return compute_stats(columns.collect())
    size = math.ceil(total / chunks)
    states: dict[str, StatsState] = {}
    for offset in range(0, total, size):
        # a slice of a parquet scan reads only the files and row groups it covers
        part = partial_stats(columns.slice(offset, size).collect())
        states = merge_states(states, part) if states else part
    return finish(states.values())


def save_training_stats(
    layout: StoreLayout, ts: TrainingSet, *, memory_budget: int | None = None
) -> None:
    """Keep a training set's feature statistics beside it (once: the id fixes the rows)."""
    uri = layout.training_set_uri(ts.id, "stats")
    if not delta.table_exists(uri) and ts.manifest.views:
        stats = training_stats(ts, memory_budget=memory_budget)
        delta.write_rows(uri, stats, metadata={"training_set": ts.id})


def latest_checks(layout: StoreLayout) -> pl.DataFrame:
    """Per view, the verdicts of its latest checked run (refused or committed), and per view
    how many runs were refused, from the store's check log (empty: nothing logged)."""
    found = read_table(layout.monitoring_uri("checks"))
    if found is None:
        return pl.DataFrame(
            schema={
                "view": pl.String,
                "name": pl.String,
                "severity": pl.String,
                "failing": pl.Int64,
                "refused_runs": pl.UInt32,
            }
        )
    latest = found.sort("checked_at").group_by("view").agg(pl.col("run_id").last())
    refused = (
        found.filter(~pl.col("committed"))
        .group_by("view")
        .agg(pl.col("run_id").n_unique().alias("refused_runs"))
    )
    return (
        found.join(latest, on=["view", "run_id"])
        .join(refused, on="view", how="left")
        .with_columns(pl.col("refused_runs").fill_null(0))
        .select("view", "name", "severity", "failing", "refused_runs")
        .sort("view", "name")
    )


def leakage_findings(resolved: ResolvedView) -> list[LeakageFinding]:
    """The leakage lint of a view, read from its polars plan on empty inputs (no data).

    None for a view declared with ``leakage="ignore"``, or whose plan cannot be built on
    empty inputs (resolving the view reports that failure itself).
    """
    view = resolved.view
    if view.leakage == "ignore":
        return []
    upstream = {u.name: u for u in resolved.upstream}
    frames = {
        s.name: empty_frame(
            pl.Schema(dict(upstream[s.name].layout.schema))
            if s.name in upstream
            else source_schema(s)  # type: ignore[arg-type]
        )
        for s in view.sources
    }
    try:
        output = call_view(view, frames)
        return plan_findings(output, resolved.layout.timestamp, view=resolved.name)
    except FeatureKitError:
        return []
