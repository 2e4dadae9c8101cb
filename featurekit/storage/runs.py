"""Materialization runs, read back from a view version's Delta commit log.

Every write to a feature table is one Delta commit carrying featurekit's metadata (see
:mod:`featurekit.storage.delta`). :class:`RunRecord` is the typed reading of one commit,
so callers ask ``run.mode`` instead of digging through ``entry["featurekit"]["mode"]``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from featurekit.storage import delta

__all__ = ["RunCheck", "RunRecord", "RunWindow", "runs"]


class RunWindow(BaseModel):
    """The event-time range ``[start, end)`` a run replaced (None: unbounded)."""

    model_config = ConfigDict(frozen=True)

    start: datetime | None = None
    end: datetime | None = None


class RunCheck(BaseModel):
    """One data-quality check's verdict on the rows a run wrote."""

    model_config = ConfigDict(frozen=True)

    name: str
    severity: str
    passed: bool
    #: failing rows (0 for frame-level checks such as ``row_count``)
    failing: int
    #: what was measured, in words
    detail: str


class RunRecord(BaseModel):
    """One commit to a view version's table: a materialization run or a compaction.

    Attributes:
        delta_version: the Delta version the commit created.
        committed_at: when it was committed (UTC).
        operation: the Delta operation (``WRITE``, ``DELETE``, ...).
        rows_written: rows added by the commit, when Delta reports it.
        view, version, fingerprint: the view version the table holds.
        run_id: a random id of the run.
        mode: ``full``, ``incremental``, ``range`` or ``optimize`` (None: not written
            by featurekit).
        window: the event-time range replaced (materialization runs only).
        watermarks: per raw source, the greatest times read (``max_event``,
            ``max_created``, ISO strings).
        checks: the checks that ran on the rows written and their verdicts (empty for
            commits before checks ran, compactions, and runs written in batches).

    Example:
        >>> [(r.delta_version, r.mode, r.rows_written) for r in store.runs("driver_stats")]
    """

    model_config = ConfigDict(frozen=True)

    delta_version: int
    committed_at: datetime
    operation: str | None = None
    rows_written: int | None = None
    view: str | None = None
    version: int | None = None
    fingerprint: str | None = None
    run_id: str | None = None
    mode: str | None = None
    window: RunWindow | None = None
    watermarks: dict[str, dict[str, Any]] = {}
    checks: list[RunCheck] = []

    @classmethod
    def from_commit(cls, entry: dict[str, Any]) -> RunRecord:
        """Read one entry of :func:`featurekit.storage.delta.history`."""
        meta = entry.get("featurekit") or {}
        window = meta.get("window")
        marks = meta.get("watermarks")
        version = meta.get("version")
        rows = entry.get("rows_written")
        checks = meta.get("checks")
        if isinstance(checks, str):  # stored as JSON text, like every non-string value
            checks = orjson.loads(checks)
        return cls(
            delta_version=int(entry["version"]),
            committed_at=entry["timestamp"],
            operation=entry.get("operation"),
            rows_written=None if rows is None else int(rows),
            view=meta.get("view"),
            version=None if version is None else int(version),
            fingerprint=meta.get("fingerprint"),
            run_id=meta.get("run_id"),
            mode=meta.get("mode"),
            window=RunWindow.model_validate(window) if isinstance(window, dict) else None,
            watermarks=marks if isinstance(marks, dict) else {},
            checks=[RunCheck.model_validate(c) for c in checks] if isinstance(checks, list) else [],
        )


def runs(uri: str) -> list[RunRecord]:
    """Every commit of the table at ``uri``, oldest first (empty when it has none)."""
    return [RunRecord.from_commit(entry) for entry in delta.history(uri)]
