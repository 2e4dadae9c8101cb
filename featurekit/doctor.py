"""``featurekit doctor``: check that a store's files are intact, without changing any of them.

A store is plain files, so anything can damage it: a disk that fills up mid-copy, a sync
tool that truncates a parquet file, a hand edit of a JSON record, a ``vacuum`` run by
another tool. The damage then surfaces much later, as a failed rebuild. :func:`check_store`
looks for it up front, and reports every problem it finds rather than stopping at the
first:

- the store marker and every registry record parse (view versions, training-set
  manifests and names, model entries, lineage records);
- every view version's Delta table opens, and its latest version reads in full (every
  data file it lists exists and parses);
- every training set's labels table and every feature table version it pinned still
  read in full, so ``training_set_by_id`` can rebuild it.

Reading the tables in full is what finds a truncated or missing file; it costs one pass
over the data the checks cover.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

from featurekit.core.errors import FeatureKitError, StorageError
from featurekit.offline.models import models
from featurekit.storage import delta
from featurekit.storage.layout import StoreLayout
from featurekit.storage.registry import Registry
from featurekit.storage.roots import parse_root
from featurekit.store import Store

__all__ = ["Check", "DoctorReport", "check_store"]

T = TypeVar("T")

#: How much of an error message a report line shows (Rust errors append long backtraces).
_MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class Check:
    """One thing :func:`check_store` looked at, and what it found."""

    status: Literal["ok", "problem", "note"]
    subject: str
    detail: str


@dataclass
class DoctorReport:
    """Everything :func:`check_store` looked at; healthy when no check found a problem."""

    root: Path | str
    checks: list[Check] = field(default_factory=list)

    @property
    def problems(self) -> list[Check]:
        """The checks that found something wrong."""
        return [c for c in self.checks if c.status == "problem"]

    @property
    def healthy(self) -> bool:
        """True when no check found a problem."""
        return not self.problems

    def lines(self) -> list[str]:
        """The report as text lines, one per check, then a one-line verdict."""
        tags = {"ok": "ok     ", "problem": "PROBLEM", "note": "note   "}
        out = [f"featurekit doctor: {StoreLayout(self.root).shown_root}"]
        out += [f"  {tags[c.status]}  {c.subject}: {c.detail}" for c in self.checks]
        if self.healthy:
            out.append(f"healthy: {len(self.checks)} checks, no problems.")
        else:
            count = len(self.problems)
            out.append(
                f"{count} problem{'s' if count > 1 else ''} found in {len(self.checks)} checks. "
                "Rebuild what a damaged table holds with store.materialize(view, "
                "full_refresh=True), or restore the named files from a backup."
            )
        return out


def check_store(root: str | Path) -> DoctorReport:
    """Check a store's registry records and Delta tables; never writes anything.

    Args:
        root: the store root (the folder holding ``_featurekit/``, or an object-storage URI).

    Returns:
        A :class:`DoctorReport`; ``report.healthy`` is False when anything is damaged.

    Example:
        >>> report = check_store("./featurekit-demo/store")
        >>> print("\\n".join(report.lines())); report.healthy
    """
    report = DoctorReport(parse_root(root))
    registry = _attempt(
        report,
        StoreLayout(report.root).marker_key,
        lambda: Registry(report.root, create=False),
        "the store marker parses",
    )
    if registry is None:
        return report
    _check_views(report, registry)
    _check_training_sets(report, registry)
    _attempt(
        report,
        "models",
        lambda: f"every entry parses ({len(models(registry))})",
    )
    _attempt(report, "lineage records", lambda: _lineage_summary(report.root))
    return report


def _check_views(report: DoctorReport, registry: Registry) -> None:
    for name in registry.view_names():
        records = _attempt(
            report, f"view {name}", partial(registry.versions, name), "records parse"
        )
        for record in records or []:
            uri = registry.layout.table_uri(name, record.version)
            subject = f"view {name} v{record.version}"
            if not delta.table_exists(uri) and not Path(uri).exists():
                report.checks.append(
                    Check("note", subject, "registered, no data yet (never materialized)")
                )
                continue
            _attempt(report, subject, partial(_read_latest, uri), table=uri)


def _read_latest(uri: str) -> str:
    version = delta.current_version(uri)
    if version is None:
        raise StorageError(f"{uri} holds files but no readable Delta log (_delta_log/).")
    rows = delta.read_rows(uri, version=version).height
    return f"Delta table reads in full at version {version} ({rows:,} rows)"


def _check_training_sets(report: DoctorReport, registry: Registry) -> None:
    ids = registry.training_set_ids()
    names = _attempt(report, "training set names", registry.training_set_names, "records parse")
    for name, ts_id in (names or {}).items():
        if ts_id not in ids:
            report.checks.append(
                Check("problem", f"training set name {name!r}", f"names {ts_id!r}, not recorded")
            )
    by_id: dict[str, list[str]] = {}
    for name, ts_id in (names or {}).items():
        by_id.setdefault(ts_id, []).append(name)
    for ts_id in ids:
        called = f" ({', '.join(by_id[ts_id])})" if ts_id in by_id else ""
        subject = f"training set {ts_id}{called}"
        manifest = _attempt(
            report,
            subject,
            partial(registry.manifest, ts_id),
            "manifest parses",
        )
        if manifest is None:
            continue
        labels = registry.layout.training_set_uri(ts_id, "labels")
        _attempt(report, f"{subject} labels", partial(_read_latest, labels), table=labels)
        for pinned in manifest.views:
            where = f"{subject} reads {pinned.view}@{pinned.version}"
            if pinned.delta_version is None:
                report.checks.append(
                    Check("note", where, "nothing pinned: the table did not exist at its as_of")
                )
                continue
            # the manifest records the table relative to the store root, as rebuilds read it
            uri = registry.layout.uri(pinned.table)
            _attempt(report, where, partial(_read_pinned, uri, pinned.delta_version), table=uri)


def _read_pinned(uri: str, version: int) -> str:
    rows = delta.read_rows(uri, version=version).height
    return f"pinned Delta version {version} reads in full ({rows:,} rows)"


def _lineage_summary(root: Path | str) -> str:
    graph = Store(root, progress=False, online=False).lineage()
    return f"{len(graph.nodes)} nodes, {len(graph.edges)} edges"


def _attempt(
    report: DoctorReport,
    subject: str,
    step: Callable[[], T],
    ok: str | None = None,
    *,
    table: str | None = None,
) -> T | None:
    """Run one check: its result (an ``ok`` line), or None and a ``problem`` line.

    A problem line names ``table`` (relative to the store root) when the error does not.
    """
    try:
        result = step()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # Rust panics in the readers derive from BaseException
        message = _message(err)
        if table is not None:
            shown = _key_or_uri(report.root, table)
            message = message if shown in message else f"table {shown}: {message}"
        report.checks.append(Check("problem", subject, message))
        return None
    detail = ok if ok is not None else str(result)
    report.checks.append(Check("ok", subject, detail))
    return result


def _key_or_uri(root: Path | str, table: str) -> str:
    """``table`` as its key under the store root (as records name it), else as given."""
    try:
        return StoreLayout(root).key_of(table)
    except StorageError:
        return table


def _message(err: BaseException) -> str:
    """The error's first line, cut short: Rust errors append backtraces of many lines."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    kind = type(err).__name__
    text = f"{kind}: {text}" if not isinstance(err, FeatureKitError) else text
    return text if len(text) <= _MESSAGE_LIMIT else f"{text[: _MESSAGE_LIMIT - 3]}..."
