"""Materialization: compute a view version and write it to its own Delta table.

Incremental by event time; late rows are never lost when sources declare a created column:

- The first run (or ``full_refresh=True``) computes everything and replaces the table.
- Each run first takes one snapshot of every raw source (its exact file list, or its
  Delta version, see :func:`featurekit.storage.sources.snapshot`) and reads only that:
  the rows it computes from and the watermarks it records come from the same rows, so a
  file that lands while the run is in progress is left whole for the next run.
- Each run records, per raw source, watermarks in its Delta commit metadata: the greatest
  event time and created time it read, and how many rows it read *at* each (the ties).
- The next run finds the earliest event time T among the *new* source rows: rows created
  after the created-time watermark (so late-arriving rows with old event times count), or,
  for sources without a created column, rows after the event-time watermark. Rows created
  exactly at the watermark are new too when there are more of them than the run that
  recorded it read (coarse created times, such as dates or whole seconds, tie often);
  then every row at the watermark is read again, which the replace below makes harmless.
  It recomputes the view over source rows with event time >= T and atomically replaces
  the stored rows with event time >= T. Re-running finds nothing new and writes nothing.
- ``start``/``end`` recompute and replace exactly ``[start, end)`` (a backfill); they do
  not move the watermarks.

This assumes a view's row at event time e is computed from source rows at event time
>= T whenever e >= T (row-level maps, filters). A view that moves rows outside the window
is refused with a clear error; views that accumulate over history should use
``full_refresh=True``. Sources without a created column cannot reveal late rows: rows
with old event times added later are picked up by ``full_refresh=True`` or a backfill.
Likewise a row whose created time is *below* a watermark already recorded (a writer whose
clock runs behind, or that makes its rows visible out of created-time order) is only
picked up by ``full_refresh=True`` or a backfill.

The Delta commit is the atomic step: a run killed before it leaves no visible rows, and
the registry records a new version only after its first commit, so the registry never
names a version without data. Whatever can be known to fail is checked before the commit
(the version record is built first; ``before_commit`` lets the caller check its own
later steps, such as the online sync, against the version's schema). A step that still
fails after the commit says what was committed and how to resume.

A run whose sources are estimated to exceed the memory budget is computed and written in
batches of entity keys, streamed into that same single commit (see
:mod:`featurekit.offline.batching`); the table it writes is the one the in-memory path writes.

On a cluster engine (``engine="ray"``), an entity-local view of a bucketed table is
computed bucket by bucket as tasks (:mod:`featurekit.offline.distribute`); the driver
checks each bucket's rows before the writer starts and streams them into the same single
commit, so the table, checks, statistics and commit metadata are those of a local run.
"""

from __future__ import annotations

import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from featurekit.core.errors import FeatureKitWarning, SchemaError, StorageError, ValidationError
from featurekit.core.timeutil import to_utc_datetime, utcnow
from featurekit.offline import buckets, distribute
from featurekit.offline.batching import (
    DEFAULT_BUDGET,
    batch_count,
    estimate_bytes,
    key_partitions,
    source_errors,
)
from featurekit.offline.compute import (
    Layout,
    Window,
    call_view,
    collect_output,
    describe,
    shaped,
    tidy_rows,
    view_inputs,
)
from featurekit.offline.engine import LOCAL, Runner
from featurekit.offline.push import keep_pushed
from featurekit.offline.quality import CheckSummary, RunQuality, leakage_findings
from featurekit.offline.resolve import ResolvedView, changed_parts
from featurekit.storage import delta
from featurekit.storage.layout import StoreLayout
from featurekit.storage.registry import Registry, VersionRecord
from featurekit.storage.sources import SourceSnapshot, scan_source, snapshot

RunMode = Literal["full", "incremental", "range", "noop"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class MaterializeResult:
    """What one materialization run did."""

    view: str
    version: int
    fingerprint: str
    run_id: str
    mode: RunMode
    rows_written: int
    delta_version: int | None
    window: Window
    #: each check's verdict over the run (empty for a run that wrote nothing)
    checks: tuple[CheckSummary, ...] = ()

    def __repr__(self) -> str:
        return (
            f"MaterializeResult(view={self.view!r}, version={self.version}, mode={self.mode!r}, "
            f"rows_written={self.rows_written}, delta_version={self.delta_version})"
        )


def table_uri(root: Path, view: str, version: int) -> str:
    """Where one view version's Delta table lives under a local root (the layout decides)."""
    return StoreLayout(root).table_uri(view, version)


def materialize(
    registry: Registry,
    resolved: ResolvedView,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    full_refresh: bool = False,
    step: Progress = lambda _: None,
    memory_budget: int | None = None,
    before_commit: Callable[[VersionRecord, pl.Schema], None] | None = None,
    runner: Runner = LOCAL,
) -> MaterializeResult:
    """Materialize one resolved view (see the module docstring for the rules).

    ``memory_budget`` (bytes; default :data:`~featurekit.offline.batching.DEFAULT_BUDGET`) bounds
    the run's memory: larger inputs are computed and written in batches of entity keys.
    ``before_commit(record, schema)`` runs before anything is computed, with the version's
    record and stored schema; it raises to refuse a run whose later steps would fail.
    ``runner`` other than the local one (``engine="ray"``) computes an entity-local view
    of a bucketed table bucket by bucket as its tasks (:mod:`featurekit.offline.distribute`);
    the rows, checks, statistics and commit are the same.

    Racing writers (other machines on an object-storage root, where there are no locks) are
    met with Delta's optimistic concurrency: a run whose commit loses re-plans from what
    the winner committed (its watermarks, its table) and tries again.
    """
    registry.check_writable()
    for attempt in range(_RACE_ATTEMPTS):
        with registry.lock(resolved.name):
            try:
                return _run(
                    registry,
                    resolved,
                    start,
                    end,
                    full_refresh,
                    step,
                    memory_budget,
                    before_commit,
                    runner,
                )
            except delta.CommitConflict:
                if attempt == _RACE_ATTEMPTS - 1:
                    raise
                step("another writer committed first; re-planning")
    raise AssertionError("unreachable")  # pragma: no cover


#: How often a run re-plans after losing a Delta commit to another writer.
_RACE_ATTEMPTS = 8
#: How long a run waits for another writer to record the version whose table it created,
#: before taking that table over as a crashed run's leftover (object storage only; a
#: local run holds the view's lock, so a table without a record there is always a leftover).
ORPHAN_GRACE_SECONDS = 30.0


def _run(
    registry: Registry,
    resolved: ResolvedView,
    start: datetime | None,
    end: datetime | None,
    full_refresh: bool,
    step: Progress,
    memory_budget: int | None,
    before_commit: Callable[[VersionRecord, pl.Schema], None] | None,
    runner: Runner = LOCAL,
) -> MaterializeResult:
    name = resolved.name
    options = registry.storage_options
    existing = next(
        (r for r in registry.versions(name) if r.fingerprint == resolved.fingerprint), None
    )
    if existing is not None:
        number, claim = existing.version, "ours"
    else:
        number, claim = _claim_number(registry, resolved)
    record = existing or _record(registry, resolved, number)
    # stack: this warning's helper, _run, materialize, the Store method, the user's call
    _warn_knowledge_time(resolved, number, stacklevel=5)
    if before_commit is not None:
        before_commit(record, pl.Schema(dict(resolved.layout.schema)))
    uri = registry.layout.table_uri(name, number)
    runs = delta.history(uri, options) if claim == "ours" else []
    previous = _last_watermarks(runs)
    step("finding new rows")
    snaps = {src.name: snapshot(src) for src in resolved.leaf_sources()}
    mode, window = _plan(resolved, snaps, start, end, full_refresh, previous)
    run_id = uuid.uuid4().hex[:16]
    if mode == "noop":
        if existing is None:  # the table is a racing writer's of this same definition
            _add_committed(registry, resolved, record, uri, runs[-1]["version"])
        return MaterializeResult(
            name, number, resolved.fingerprint, run_id, "noop", 0, runs[-1]["version"], window
        )
    step("computing")
    budget = memory_budget or DEFAULT_BUDGET
    quality = RunQuality(resolved, registry.layout, number, run_id)
    watermarks = dict(previous or {})
    if mode != "range":
        watermarks.update(_watermarks(snaps, window))
    step("writing")
    predicate = None
    if runs and mode != "full":
        predicate = delta.window_predicate(resolved.layout.timestamp, window.start, window.end)
    elif runs and not registry.layout.is_local:
        # without a lock, a full replace must notice a commit that lands while it writes
        # (delta-rs checks concurrent additions only against a predicate)
        predicate = delta.REPLACE_ALL
    # bucketed tables (featurekit.offline.buckets): B is kept, or grown by a full run
    layout = resolved.layout
    split = buckets.for_run(
        uri,
        layout.keys,
        dict(layout.schema),
        snaps,
        window,
        full=mode == "full",
        first=record.buckets,
    )
    if existing is None:
        record = record.model_copy(update={"buckets": split.buckets})
    staging: Path | None = None
    parts: list[str] = []
    verified = None
    if resolved.view.entity_local and (existing is None or runner is not LOCAL):
        verified = distribute.verify(resolved, snaps, window)  # a false declaration raises
    if (
        runner is not LOCAL
        and split.buckets > 1
        and registry.layout.is_local
        and distribute.distributable(resolved, snaps)
        and (verified or (verified is None and distribute.verify(resolved, snaps, window)))
    ):
        staging = Path(registry.layout.staging_uri(name, number, run_id))
        parts = _bucket_parts(resolved, snaps, window, number, split.buckets, staging, runner)
        if not parts:  # no input rows: the one local batch refuses the run or writes nothing
            shutil.rmtree(staging, ignore_errors=True)
            staging = None
    if parts:  # the view ran bucket by bucket; the driver never runs it on everything
        batches = _staged_batches(resolved, parts, number, quality, split)
    else:
        batches = _batches(resolved, snaps, window, number, budget, quality, split)
    counted = _Counted(resolved, snaps, window, mode, batches, quality)
    try:
        # one batch is checked here, before its commit metadata is built; batches are
        # checked while the writer streams them, so their verdicts miss the commit metadata
        frames: pl.DataFrame | Iterator[pl.DataFrame]
        if staging is not None and len(batches) > 1:
            # computed buckets are checked before the writer starts, so the commit
            # metadata has the checks' verdicts, as a one-batch run's has
            frames = _checked_first(counted, staging)
        else:
            frames = counted.frames() if len(batches) > 1 else next(counted.frames())
        if runs:  # rows pushed into the table (store.push) are not derived: keep them
            predicate, frames = keep_pushed(uri, predicate, frames)
        version = delta.write_rows(
            uri,
            split.frames(frames),
            partition_by=split.partition_by,
            predicate=predicate,
            metadata={
                "view": name,
                "version": str(number),
                "fingerprint": resolved.fingerprint,
                "run_id": run_id,
                "mode": mode,
                "window": {"start": _iso(window.start), "end": _iso(window.end)},
                "watermarks": watermarks,
                **(quality.metadata() if len(batches) == 1 or staging is not None else {}),
            },
            storage_options=options,
            # a table this run found absent is created only if still absent: of two racing
            # writers one creates it, the other re-plans on top of it
            create=not runs and claim != "leftover",
            replace_schema=claim == "leftover",  # a crashed run's table may be of another view
        )
    except ValidationError:
        quality.keep_refused()  # the quarantine, written once the writer has let go
        raise
    finally:
        quality.settle()  # the statistics thread, whatever ended the write
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    del frames
    if existing is None:
        _add_committed(registry, resolved, record, uri, version)
    quality.save_stats(version, mode)
    quality.warn()
    return MaterializeResult(
        name,
        number,
        resolved.fingerprint,
        run_id,
        mode,
        counted.rows,
        version,
        window,
        tuple(quality.results),
    )


def _claim_number(
    registry: Registry, resolved: ResolvedView
) -> tuple[int, Literal["ours", "new", "leftover"]]:
    """The version number a new definition's table goes under, and what is there now.

    The registry records a version only after its table's first commit, so the next number
    may already have a table: this definition's (a racing run of the same code: adopt it),
    another definition's whose writer has not recorded it yet (wait for that record, then
    try the next number), or a leftover of a run that died between commit and record
    (take it over once it is older than :data:`ORPHAN_GRACE_SECONDS`).
    """
    name, options = resolved.name, registry.storage_options
    grace = 0.0 if registry.layout.is_local else ORPHAN_GRACE_SECONDS
    waited_since: float | None = None
    while True:
        records = registry.versions(name)
        found = next((r for r in records if r.fingerprint == resolved.fingerprint), None)
        if found is not None:
            raise delta.CommitConflict(f"view {name!r}: recorded by another writer; re-plan.")
        number = records[-1].version + 1 if records else 1
        owner = delta.first_commit_meta(registry.layout.table_uri(name, number), options)
        if owner is None:
            return number, "new"
        if owner.get("fingerprint") == resolved.fingerprint:
            return number, "ours"
        now = time.monotonic()
        waited_since = now if waited_since is None else waited_since
        if now - waited_since >= grace:
            return number, "leftover"  # the full run below replaces its rows
        time.sleep(0.2)


class _Counted:
    """The run's tidy rows batch by batch, checked before the commit can happen.

    A check that fails raises while the writer is still consuming, so nothing commits;
    ``quality`` checks and summarizes each batch as it passes (see :mod:`.quality`).
    """

    def __init__(
        self,
        resolved: ResolvedView,
        snaps: Mapping[str, SourceSnapshot],
        window: Window,
        mode: RunMode,
        batches: list[_Batch],
        quality: RunQuality,
    ) -> None:
        self.resolved, self.snaps, self.window = resolved, snaps, window
        self.mode, self.batches, self.quality = mode, batches, quality
        self.rows = 0

    def frames(self) -> Iterator[pl.DataFrame]:
        for compute in self.batches:
            rows = compute()
            _check_inside(self.resolved, rows, self.window)
            self.rows += rows.height
            if compute is self.batches[-1] and self.rows == 0 and self.mode == "full":
                _refuse_empty_sources(self.resolved, self.snaps)
            self.quality.summarize(rows)
            yield rows
            del rows  # released before the next batch is computed: one batch held at a time
        self.quality.finish()


_Batch = Callable[[], pl.DataFrame]


def _batch(
    resolved: ResolvedView,
    lf: pl.LazyFrame,
    version: int,
    quality: RunQuality,
    split: buckets.Bucketing,
) -> pl.DataFrame:
    """One batch of the run's rows: computed, checked as the view produced it, given its
    bucket columns, then tidied (sorted bucket first where they need a sort, so the
    writer gets each bucket as a slice)."""
    view, layout = resolved.view, resolved.layout
    rows = collect_output(view, lf, layout, version)
    quality.check(rows)
    return tidy_rows(split.frame(rows), layout, describe(view, version), lead=split.lead)


def _batches(
    resolved: ResolvedView,
    snaps: Mapping[str, SourceSnapshot],
    window: Window,
    version: int,
    budget: int,
    quality: RunQuality,
    split: buckets.Bucketing,
) -> list[_Batch]:
    """One callable per batch; one batch when the inputs fit the budget."""
    lf, _ = _lazy_rows(resolved, snaps, window, version)
    sources = list(snaps.values())
    estimated = estimate_bytes(sources, [window.bounds(s.source.timestamp) for s in sources])
    n = batch_count(estimated, budget)
    quality.batched = n > 1
    if n == 1:
        return [lambda: _batch(resolved, lf, version, quality, split)]
    parts = key_partitions(lf, resolved.layout.keys, n)
    return [
        lambda part=part: _batch(resolved, lf.filter(part), version, quality, split)  # type: ignore[misc]
        for part in parts
    ]


def _bucket_parts(
    resolved: ResolvedView,
    snaps: Mapping[str, SourceSnapshot],
    window: Window,
    version: int,
    count: int,
    staging: Path,
    runner: Runner,
) -> list[str]:
    """The view computed bucket by bucket by ``runner`` (files in ``staging``, bucket order)."""
    try:
        return distribute.bucket_parts(
            resolved,
            snaps,
            window,
            version=version,
            buckets=count,
            staging=str(staging),
            runner=runner,
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the parts of a run that failed
        raise


def _staged_batches(
    resolved: ResolvedView,
    parts: list[str],
    version: int,
    quality: RunQuality,
    split: buckets.Bucketing,
) -> list[_Batch]:
    """One batch per computed bucket: its file, checked as the view produced it, then tidied."""
    quality.batched = len(parts) > 1
    return [
        lambda part=part: _batch(resolved, pl.scan_parquet(part), version, quality, split)  # type: ignore[misc]
        for part in parts
    ]


def _checked_first(counted: _Counted, staging: Path) -> Iterator[pl.DataFrame]:
    """Every batch checked and tidied (kept in ``staging``), then handed to the writer."""
    folder = staging / "tidy"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rows in enumerate(counted.frames()):
        paths.append(folder / f"{i:05d}.parquet")
        rows.write_parquet(paths[-1])
    return (pl.read_parquet(path) for path in paths)


def register(registry: Registry, resolved: ResolvedView) -> VersionRecord:
    """Record the version without computing it (idempotent)."""
    record = _append(registry, resolved)
    _warn_knowledge_time(resolved, record.version)
    return record


def _append(
    registry: Registry, resolved: ResolvedView, prepared: VersionRecord | None = None
) -> VersionRecord:
    """The version of ``resolved``: its existing record, or the next number, recorded once.

    ``prepared`` is the record a run built before its commit; it is written as is when
    its number is still the next one.
    """
    record: VersionRecord = registry.append_version(
        "view",
        resolved.name,
        lambda number: (
            prepared
            if prepared is not None and prepared.version == number
            else _record(registry, resolved, number)
        ),
        reuse=lambda records: next(
            (r for r in records if r.fingerprint == resolved.fingerprint), None
        ),
    )
    return record


def _warn_knowledge_time(resolved: ResolvedView, version: int, *, stacklevel: int = 4) -> None:
    """Say so, every time, when a view's rows are not guarded against late values, or
    when the leakage lint finds event times stamped before the data behind them."""
    message = resolved.knowledge_time_warning(version)
    if message is not None:
        # stacklevel: this helper, register (or _run and materialize), the Store method,
        # the user's call
        warnings.warn(message, FeatureKitWarning, stacklevel=stacklevel)
    for finding in leakage_findings(resolved):  # the leakage lint, on the same occasions
        finding.warn(stacklevel=stacklevel + 1)


def _add_committed(
    registry: Registry,
    resolved: ResolvedView,
    record: VersionRecord,
    uri: str,
    delta_version: int,
) -> None:
    """Register a version whose first rows are committed; a failure says how to resume."""
    resume = (
        f"Until it is recorded, training sets and store.versions() do not see it. Fix the "
        f"cause, then run store.materialize({record.view}) again: it finds the committed rows "
        "and records them."
    )
    try:
        recorded = _append(registry, resolved, record)
    except Exception as err:
        raise StorageError(
            f"view {record.view!r} version {record.version}: its rows are committed (Delta "
            f"version {delta_version} of {uri}), but recording the version in the registry "
            f"failed: {type(err).__name__}: {err} {resume}"
        ) from err
    if recorded.version != record.version:
        # locally the run holds the view's lock; on object storage, another definition
        # recorded this number while this run took over what looked like a leftover table
        raise StorageError(
            f"view {record.view!r}: version {record.version} was taken by another writer while "
            f"this run wrote its table (Delta version {delta_version}); re-run "
            f"store.materialize({record.view})."
        )


def _record(registry: Registry, resolved: ResolvedView, number: int) -> VersionRecord:
    view, layout = resolved.view, resolved.layout
    previous = registry.versions(view.name)
    reason = changed_parts(previous[-1].parts, resolved.parts) if previous else ["new"]
    return VersionRecord(
        view=view.name,
        version=number,
        fingerprint=resolved.fingerprint,
        created_at=utcnow(),
        reason=reason,
        entity=view.entity.name,
        keys=list(layout.keys),
        timestamp=layout.timestamp,
        created_timestamp=layout.created_timestamp,
        features={name: str(dtype) for name, dtype in layout.feature_dtypes},
        ttl_us=None if view.ttl is None else int(view.ttl.total_seconds() * 1_000_000),
        parts=resolved.parts,
        description=view.description,
        tags=dict(view.tags),
        aggregations=list(view.aggregations),
        event_columns=list(layout.event_columns),
        knowledge_time_dropped=resolved.knowledge_time_dropped,
        leakage=[str(f) for f in leakage_findings(resolved)],
    )


def _plan(
    resolved: ResolvedView,
    snaps: Mapping[str, SourceSnapshot],
    start: datetime | None,
    end: datetime | None,
    full_refresh: bool,
    previous: Mapping[str, Any] | None,
) -> tuple[RunMode, Window]:
    if start is not None or end is not None:
        window = Window(
            to_utc_datetime(start) if start else None, to_utc_datetime(end) if end else None
        )
        if window.start and window.end and window.start >= window.end:
            raise SchemaError(f"materialize: start {start} must be before end {end}.")
        return "range", window
    if full_refresh or previous is None:
        return "full", Window()
    earliest: datetime | None = None
    for src in resolved.leaf_sources():
        mark = previous.get(src.name)
        if mark is None:
            return "full", Window()  # a source never read before: recompute everything
        first = _earliest_new_event(snaps[src.name], mark)
        if first is not None and (earliest is None or first < earliest):
            earliest = first
    if earliest is None:
        return "noop", Window()
    return "incremental", Window(start=earliest)


def _earliest_new_event(snap: SourceSnapshot, mark: Mapping[str, Any]) -> datetime | None:
    """Earliest event time among the rows of ``snap`` the run recording ``mark`` did not read."""
    src = snap.source
    if src.created_timestamp and mark.get("max_created"):
        column, at, ties = src.created_timestamp, mark["max_created"], mark.get("created_ties")
    elif mark.get("max_event"):
        column, at, ties = src.timestamp, mark["max_event"], mark.get("event_ties")
    else:  # the last run read no rows of this source: every row is new
        value = scan_source(snap).select(pl.col(src.timestamp).min()).collect().item()
        return value if isinstance(value, datetime) else None
    when = _parse(at)
    lf = scan_source(snap, bounds=[(column, ">=", when)])  # pushed into the scan
    after, from_mark, now_tied = (
        lf.select(
            pl.col(src.timestamp).filter(pl.col(column) > pl.lit(when)).min().alias("after"),
            pl.col(src.timestamp).min().alias("from_mark"),
            (pl.col(column) == pl.lit(when)).sum().alias("now_tied"),
        )
        .collect()
        .row(0)
    )
    # more rows at the watermark than were read there: one or more of them is new, and
    # which one cannot be told, so all of them are read again (the replace is idempotent);
    # a mark without a tie count predates counting: read its ties again to be safe
    value = from_mark if ties is None or now_tied > int(ties) else after
    return value if isinstance(value, datetime) else None


def _watermarks(
    snaps: Mapping[str, SourceSnapshot], window: Window
) -> dict[str, dict[str, str | int | None]]:
    """Per source: the greatest event and created time the run reads, and the rows at each.

    Computed from the run's own snapshot and window, that is from exactly the rows it
    reads; every row at or above the previous watermark lies inside that window.
    """
    marks: dict[str, dict[str, str | int | None]] = {}
    for name, snap in snaps.items():
        src = snap.source
        lf = scan_source(snap, bounds=window.bounds(src.timestamp))
        columns = {"event": src.timestamp, "created": src.created_timestamp}
        exprs = []
        for role, column in columns.items():
            if column is None:
                continue
            top = pl.col(column).max()
            exprs += [top.alias(f"max_{role}"), (pl.col(column) == top).sum().alias(f"{role}_ties")]
        with source_errors(name):
            row = lf.select(exprs).collect().row(0, named=True)
        marks[name] = {k: v if isinstance(v, int) else _iso(v) for k, v in row.items()}
        marks[name].update(snap.describe())  # what was read: the file count or Delta version
    return marks


def _last_watermarks(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    for run in reversed(runs):
        marks = run["featurekit"].get("watermarks")
        if isinstance(marks, dict):
            return marks
    return None


def _lazy_rows(
    resolved: ResolvedView,
    snaps: Mapping[str, SourceSnapshot],
    window: Window,
    version: int | None,
) -> tuple[pl.LazyFrame, Layout]:
    """A view's shaped output as one lazy plan, upstream views computed in the same plan."""
    upstream = {u.name: _lazy_rows(u, snaps, window, None) for u in resolved.upstream}
    inputs = view_inputs(resolved.view, window, upstream, snaps)
    lf = call_view(resolved.view, inputs, version)
    return shaped(lf, resolved.layout), resolved.layout


def _check_inside(resolved: ResolvedView, rows: pl.DataFrame, window: Window) -> None:
    """A windowed run may only replace rows inside its window; say so if the view moved any."""
    condition = window.filter(resolved.layout.timestamp)
    if condition is None:
        return
    outside = rows.filter(~condition).height
    if outside:
        raise SchemaError(
            f"view {resolved.name!r} produced {outside} row(s) with event times outside the "
            f"window [{_iso(window.start)}, {_iso(window.end)}) it was computed for (it moves "
            "event times), so an incremental or ranged run cannot replace them safely. "
            "Nothing was written. Use store.materialize(view, full_refresh=True)."
        )


def _refuse_empty_sources(resolved: ResolvedView, snaps: Mapping[str, SourceSnapshot]) -> None:
    for src in resolved.leaf_sources():
        if scan_source(snaps[src.name]).select(pl.len()).collect().item() == 0:
            raise SchemaError(
                f"source {src.name!r} of view {resolved.name!r} has no rows; nothing was "
                "materialized. Check the source's path or filter."
            )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else to_utc_datetime(value).isoformat()


def _parse(text: str) -> datetime:
    return to_utc_datetime(datetime.fromisoformat(text))
