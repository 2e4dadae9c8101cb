"""Materialization: compute a view version and write it to its own Delta table.

Incremental by event time; late rows are never lost when sources declare a created column:

- The first run (or ``full_refresh=True``) computes everything and replaces the table.
- Each run records, per raw source, watermarks in its Delta commit metadata: the greatest
  event time and created time it read.
- The next run finds the earliest event time T among the *new* source rows: rows created
  after the created-time watermark (so late-arriving rows with old event times count), or,
  for sources without a created column, rows after the event-time watermark. It recomputes
  the view over source rows with event time >= T and atomically replaces the stored rows
  with event time >= T. Re-running finds nothing new and writes nothing.
- ``start``/``end`` recompute and replace exactly ``[start, end)`` (a backfill); they do
  not move the watermarks.

This assumes a view's row at event time e is computed from source rows at event time
>= T whenever e >= T (row-level maps, filters). A view that moves rows outside the window
is refused with a clear error; views that accumulate over history should use
``full_refresh=True``. Sources without a created column cannot reveal late rows: rows
with old event times added later are picked up by ``full_refresh=True`` or a backfill.

The Delta commit is the atomic step: a run killed before it leaves no visible rows, and
the registry records a new version only after its first commit, so the registry never
names a version without data.

A run whose sources are estimated to exceed the memory budget is computed and written in
batches of entity keys, streamed into that same single commit (see
:mod:`featurekit.offline.batching`); the table it writes is the one the in-memory path writes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from featurekit.core.definitions import Source
from featurekit.core.errors import SchemaError, StorageError
from featurekit.core.timeutil import to_utc_datetime, utcnow
from featurekit.offline.batching import DEFAULT_BUDGET, batch_count, estimate_bytes, key_partitions
from featurekit.offline.compute import Layout, Window, call_view, collect_rows, shaped, view_inputs
from featurekit.offline.resolve import ResolvedView, changed_parts
from featurekit.storage import delta
from featurekit.storage.layout import StoreLayout
from featurekit.storage.registry import Registry, VersionRecord
from featurekit.storage.sources import TimeBound, scan_source

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
) -> MaterializeResult:
    """Materialize one resolved view (see the module docstring for the rules).

    ``memory_budget`` (bytes; default :data:`~featurekit.offline.batching.DEFAULT_BUDGET`) bounds
    the run's memory: larger inputs are computed and written in batches of entity keys.

    Racing writers (other machines on an object-storage root, where there are no locks) are
    met with Delta's optimistic concurrency: a run whose commit loses re-plans from what
    the winner committed (its watermarks, its table) and tries again.
    """
    registry.check_writable()
    for attempt in range(_RACE_ATTEMPTS):
        with registry.lock(resolved.name):
            try:
                return _run(registry, resolved, start, end, full_refresh, step, memory_budget)
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
    uri = registry.layout.table_uri(name, number)
    runs = delta.history(uri, options) if claim == "ours" else []
    previous = _last_watermarks(runs)
    step("finding new rows")
    mode, window = _plan(resolved, start, end, full_refresh, previous)
    run_id = uuid.uuid4().hex[:16]
    if mode == "noop":
        if existing is None:  # the table is a racing writer's of this same definition
            _recorded(registry, resolved, number, runs[-1]["version"])
        return MaterializeResult(
            name, number, resolved.fingerprint, run_id, "noop", 0, runs[-1]["version"], window
        )
    step("computing")
    batches = _batches(resolved, window, number, memory_budget or DEFAULT_BUDGET)
    counted = _Counted(resolved, window, mode, batches)
    watermarks = dict(previous or {})
    if mode != "range":
        watermarks.update(_watermarks(resolved, window))
    step("writing")
    predicate = None
    if runs and mode != "full":
        predicate = delta.window_predicate(resolved.layout.timestamp, window.start, window.end)
    elif runs and not registry.layout.is_local:
        # without a lock, a full replace must notice a commit that lands while it writes
        # (delta-rs checks concurrent additions only against a predicate)
        predicate = delta.REPLACE_ALL
    version = delta.write_rows(
        uri,
        counted.frames() if len(batches) > 1 else next(counted.frames()),
        predicate=predicate,
        metadata={
            "view": name,
            "version": str(number),
            "fingerprint": resolved.fingerprint,
            "run_id": run_id,
            "mode": mode,
            "window": {"start": _iso(window.start), "end": _iso(window.end)},
            "watermarks": watermarks,
        },
        storage_options=options,
        # a table this run found absent is created only if still absent: of two racing
        # writers one creates it, the other re-plans on top of it
        create=not runs and claim != "leftover",
        replace_schema=claim == "leftover",  # a crashed run's table may be of another view
    )
    if existing is None:
        _recorded(registry, resolved, number, version)
    return MaterializeResult(
        name, number, resolved.fingerprint, run_id, mode, counted.rows, version, window
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


def _recorded(registry: Registry, resolved: ResolvedView, number: int, version: int) -> None:
    """Record the version after its table's first commit, under the number it was written to."""
    name = resolved.name
    if _append(registry, resolved).version != number:
        # locally the run holds the view's lock; on object storage, another definition
        # recorded this number while this run took over what looked like a leftover table
        raise StorageError(
            f"view {name!r}: version {number} was taken by another writer while this run "
            f"wrote its table (Delta version {version}); re-run store.materialize({name})."
        )


class _Counted:
    """The run's tidy rows batch by batch, checked before the commit can happen.

    A check that fails raises while the writer is still consuming, so nothing commits.
    """

    def __init__(
        self, resolved: ResolvedView, window: Window, mode: RunMode, batches: list[_Batch]
    ) -> None:
        self.resolved, self.window, self.mode, self.batches = resolved, window, mode, batches
        self.rows = 0

    def frames(self) -> Iterator[pl.DataFrame]:
        for compute in self.batches:
            rows = compute()
            _check_inside(self.resolved, rows, self.window)
            self.rows += rows.height
            if compute is self.batches[-1] and self.rows == 0 and self.mode == "full":
                _refuse_empty_sources(self.resolved)
            yield rows
            del rows  # released before the next batch is computed: one batch held at a time


_Batch = Callable[[], pl.DataFrame]


def _batches(resolved: ResolvedView, window: Window, version: int, budget: int) -> list[_Batch]:
    """One callable per batch; one batch when the inputs fit the budget."""
    lf, layout = _lazy_rows(resolved, window, version)
    sources = resolved.leaf_sources()
    estimated = estimate_bytes(sources, [window.bounds(s.timestamp) for s in sources])
    n = batch_count(estimated, budget)
    view = resolved.view
    if n == 1:
        return [lambda: collect_rows(view, lf, layout, version)]
    parts = key_partitions(lf, layout.keys, n)
    return [
        lambda part=part: collect_rows(view, lf.filter(part), layout, version)  # type: ignore[misc]
        for part in parts
    ]


def register(registry: Registry, resolved: ResolvedView) -> VersionRecord:
    """Record the version without computing it (idempotent)."""
    return _append(registry, resolved)


def _append(registry: Registry, resolved: ResolvedView) -> VersionRecord:
    """The version of ``resolved``: its existing record, or the next number, recorded once."""
    record: VersionRecord = registry.append_version(
        "view",
        resolved.name,
        lambda number: _record(registry, resolved, number),
        reuse=lambda records: next(
            (r for r in records if r.fingerprint == resolved.fingerprint), None
        ),
    )
    return record


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
    )


def _plan(
    resolved: ResolvedView,
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
        first = _earliest_new_event(src, mark)
        if first is not None and (earliest is None or first < earliest):
            earliest = first
    if earliest is None:
        return "noop", Window()
    return "incremental", Window(start=earliest)


def _earliest_new_event(src: Source, mark: Mapping[str, Any]) -> datetime | None:
    bounds: list[TimeBound] = []
    if src.created_timestamp and mark.get("max_created"):
        bounds.append((src.created_timestamp, ">", _parse(mark["max_created"])))
    elif mark.get("max_event"):
        bounds.append((src.timestamp, ">", _parse(mark["max_event"])))
    lf = scan_source(src, bounds=bounds)  # pushed into the scan: old files are skipped
    value = lf.select(pl.col(src.timestamp).min()).collect().item()
    return value if isinstance(value, datetime) else None


def _watermarks(resolved: ResolvedView, window: Window) -> dict[str, dict[str, str | None]]:
    marks: dict[str, dict[str, str | None]] = {}
    for src in resolved.leaf_sources():
        lf = scan_source(src, bounds=window.bounds(src.timestamp))
        exprs = [pl.col(src.timestamp).max().alias("max_event")]
        if src.created_timestamp:
            exprs.append(pl.col(src.created_timestamp).max().alias("max_created"))
        row = lf.select(exprs).collect().row(0, named=True)
        marks[src.name] = {k: _iso(v) for k, v in row.items()}
    return marks


def _last_watermarks(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    for run in reversed(runs):
        marks = run["featurekit"].get("watermarks")
        if isinstance(marks, dict):
            return marks
    return None


def _lazy_rows(
    resolved: ResolvedView, window: Window, version: int | None
) -> tuple[pl.LazyFrame, Layout]:
    """A view's shaped output as one lazy plan, upstream views computed in the same plan."""
    upstream = {u.name: _lazy_rows(u, window, None) for u in resolved.upstream}
    inputs = view_inputs(resolved.view, window, upstream)
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


def _refuse_empty_sources(resolved: ResolvedView) -> None:
    for src in resolved.leaf_sources():
        if scan_source(src).select(pl.len()).collect().item() == 0:
            raise SchemaError(
                f"source {src.name!r} of view {resolved.name!r} has no rows; nothing was "
                "materialized. Check the source's path or filter."
            )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else to_utc_datetime(value).isoformat()


def _parse(text: str) -> datetime:
    return to_utc_datetime(datetime.fromisoformat(text))
