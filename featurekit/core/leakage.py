"""Leakage lint: event times stamped earlier than the data behind them.

A common leak: ``group_by(pl.col("ts").dt.truncate("1d"))`` stamps a whole day's trips at
midnight, so a label at 05:00 sees trips from 13:00 the same day. The fix is to stamp the
period's *end*: ``pl.col("ts").dt.truncate("1d").dt.offset_by("1d")``.

Two detectors, each returning typed :class:`LeakageFinding` objects (never raising on
a suspicious view; the writer decides to warn):

* :func:`plan_findings` reads the view's polars plan (``LazyFrame.explain``; SQL views
  run through polars and show up the same way) and flags an output event-time column
  computed with ``dt.truncate``, ``dt.round`` or ``dt.date`` that is not moved forward
  again (``.dt.offset_by("1d")`` or ``+ duration``) by at least the period. It is cheap
  (no data) and names the expression; it cannot see through renames of intermediate
  columns or ``group_by_dynamic`` labels, which the next detector covers.
* :func:`prefix_findings` runs the view again on its inputs cut at an instant ``T`` and
  compares: a view whose rows only use data up to their own event time gives the *same*
  rows stamped at or before ``T`` whether or not the later source rows exist. A row that
  changes used data from after its stamp. This needs no lineage, so it works for any
  polars or SQL view, at the cost of running the view once per cutoff: give it a sample
  (all rows of a few entities).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import polars as pl

from featurekit.core.errors import LeakageWarning
from featurekit.core.names import shown
from featurekit.core.timeutil import to_utc_datetime, to_utc_expr

__all__ = [
    "LeakageFinding",
    "plan_findings",
    "prefix_findings",
]

_FLOOR = re.compile(r'\.dt\.(truncate|round)\(\["([^"\]]*)"\]\)|\.dt\.(date)\(\)')
_OFFSET = re.compile(r'\.dt\.offset_by\(\["([^"\]]*)"\]\)|\s\+\s(-?[0-9][0-9a-z]*)')
#: plan lines whose expression lists do not produce output columns (sort keys, join keys)
_NOT_PRODUCING = re.compile(r"^\s*(SORT|FILTER)|\bON:")
_ALIAS = re.compile(r'\.alias\("((?:[^"\\]|\\.)*)"\)$')
_ROOT = re.compile(r'col\("((?:[^"\\]|\\.)*)"\)')
_RENAME = re.compile(r'^col\("((?:[^"\\]|\\.)*)"\)\.alias\("((?:[^"\\]|\\.)*)"\)$')
_DURATION_PART = re.compile(r"(\d+)(ns|us|ms|mo|s|m|h|d|w|q|y|i)")
_UNIT = {
    "ns": timedelta(microseconds=0.001),
    "us": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "mo": timedelta(days=28),  # the shortest month: an offset of "1mo" covers any month
    "q": timedelta(days=89),
    "y": timedelta(days=365),
}


@dataclass(frozen=True)
class LeakageFinding:
    """An output event time that may be earlier than the data behind it.

    Attributes:
        view: the view's name.
        column: the output event-time column.
        method: ``"plan"`` (read from the polars plan) or ``"data"`` (rows changed when
            later source rows were removed).
        message: what was found, naming the expression or a sample row.
        fix: how to stamp rows so they only see the past.
    """

    view: str
    column: str
    method: Literal["plan", "data"]
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.fix}"

    def warn(self, stacklevel: int = 2) -> None:
        """Issue this finding as a :class:`~featurekit.core.errors.LeakageWarning`.

        ``stacklevel`` as in :func:`warnings.warn`, counted from the caller of this method.
        """
        warnings.warn(str(self), LeakageWarning, stacklevel=stacklevel)


def plan_findings(output: pl.LazyFrame, timestamp: str, *, view: str) -> list[LeakageFinding]:
    """Findings from the polars plan of a view's output (no data is read).

    Example:
        >>> lf = trips.group_by("driver_id", pl.col("ts").dt.truncate("1d")).agg(...)
        >>> print(plan_findings(lf, "ts", view="daily")[0].fix)
        stamp the period's end: pl.col('ts').dt.truncate('1d').dt.offset_by('1d'), so ...
    """
    producers: dict[str, list[str]] = {}
    for expr in _expressions(output.explain(optimized=False)):
        producers.setdefault(_output_name(expr), []).append(expr)
    findings = []
    for expr in _producers_of(timestamp, producers):
        problem = _floor_without_offset(expr)
        if problem is None:
            continue
        op, period = problem
        findings.append(
            LeakageFinding(
                view=view,
                column=timestamp,
                method="plan",
                message=(
                    f"view {view!r}: event time {timestamp!r} is computed as {shown(expr, 160)}, "
                    f"which moves each row's stamp back to the start of its period ({period} "
                    f"by {op}): a row summarizing a whole period is then visible before the "
                    "period's data exists, and a label inside the period sees its future."
                ),
                fix=_period_fix(timestamp, period),
            )
        )
    return findings


def prefix_findings(
    run: Callable[[Mapping[str, pl.LazyFrame]], pl.LazyFrame | pl.DataFrame],
    inputs: Mapping[str, tuple[pl.LazyFrame | pl.DataFrame, str]],
    *,
    timestamp: str,
    view: str,
    cutoffs: int = 3,
) -> list[LeakageFinding]:
    """Findings from running the view on its inputs cut at a few instants.

    Args:
        run: runs the view on frames bound by input name (e.g. ``lambda f: view(**f)``).
        inputs: each input's rows and its event-time column, by input name.
        timestamp: the output's event-time column.
        view: the view's name, for messages.
        cutoffs: how many instants to cut at (source event times at evenly spaced
            quantiles); each costs one more run of the view.

    Returns:
        At most one finding: the first cutoff at which a row stamped at or before it
        changed. Rows are compared as multisets, floats with a relative tolerance of 1e-9.
    """
    frames = {name: frame.lazy() for name, (frame, _) in inputs.items()}
    times = {name: column for name, (_, column) in inputs.items()}
    full = _collect(run(frames))
    for cut in _cutoffs(frames, times, cutoffs):
        cut_inputs = {
            name: lf.filter(
                to_utc_expr(times[name], lf.collect_schema()[times[name]], what="event time") <= cut
            )
            for name, lf in frames.items()
        }
        before = _stamped_by(full, timestamp, cut)
        again = _stamped_by(_collect(run(cut_inputs)), timestamp, cut)
        if _same_rows(before, again):
            continue
        changed = before.join(again, on=before.columns, how="anti", nulls_equal=True)
        sample = (changed if changed.height else before).head(1).rows(named=True)
        shown_row = shown(sample[0], 200) if sample else "(a row is missing)"
        return [
            LeakageFinding(
                view=view,
                column=timestamp,
                method="data",
                message=(
                    f"view {view!r}: rows stamped at or before {cut.isoformat()} change when "
                    f"the source rows after that instant are removed ({before.height} rows "
                    f"with them, {again.height} without), so they use data from after their "
                    f"own event time {timestamp!r}. Example row: {shown_row}."
                ),
                fix=_generic_fix(timestamp),
            )
        ]
    return []


# ---- plan text --------------------------------------------------------------------------
def _expressions(plan: str) -> list[str]:
    """Every top-level expression in the ``[...]`` lists of an explained plan."""
    found: list[str] = []
    for line in plan.splitlines():
        if _NOT_PRODUCING.search(line):
            continue
        depth, start, quoted = 0, -1, False
        for i, ch in enumerate(line):
            if ch == '"' and (i == 0 or line[i - 1] != "\\"):
                quoted = not quoted
            if quoted:
                continue
            if ch in "[(":
                depth += 1
                if ch == "[" and depth == 1:
                    start = i + 1
            elif ch in "])":
                depth -= 1
                if ch == "]" and depth == 0 and start >= 0:
                    found.extend(_split_top_level(line[start:i]))
                    start = -1
    return [e for e in found if e]


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        if not quoted:
            if ch in "[(":
                depth += 1
            elif ch in "])":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append("".join(current).strip())
                current = []
                continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def _output_name(expr: str) -> str:
    alias = _ALIAS.search(expr)
    if alias:
        return alias.group(1)
    root = _ROOT.search(expr)
    return root.group(1) if root else ""


def _producers_of(column: str, producers: Mapping[str, list[str]]) -> list[str]:
    """Expressions that produce ``column``, following pure renames ``col(a).alias(b)``."""
    seen, todo, out = {column}, [column], []
    while todo:
        name = todo.pop()
        for expr in producers.get(name, []):
            rename = _RENAME.match(expr)
            if rename and rename.group(1) not in seen:
                seen.add(rename.group(1))
                todo.append(rename.group(1))
            elif not rename:
                out.append(expr)
    return out


def _floor_without_offset(expr: str) -> tuple[str, str] | None:
    """(operation, period) when the last floor in ``expr`` is not moved forward enough."""
    floors = list(_FLOOR.finditer(expr))
    if not floors:
        return None
    last = floors[-1]
    op = last.group(1) or last.group(3)
    period = last.group(2) if last.group(1) else "1d"
    need = _duration(period)
    for offset in _OFFSET.finditer(expr, last.end()):
        text = offset.group(1) or offset.group(2) or ""
        if text.startswith("-"):
            continue
        moved = _duration(text)
        if need is None or moved is None or moved >= need:
            return None
    return f"dt.{op}", period


def _duration(text: str) -> timedelta | None:
    """A polars duration string ("1d", "1h30m", "1mo") as a lower-bound timedelta."""
    body = text.removesuffix("_saturating")
    parts = _DURATION_PART.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body or any(u == "i" for _, u in parts):
        return None
    return sum((int(n) * _UNIT[u] for n, u in parts), timedelta())


def _period_fix(column: str, period: str) -> str:
    return (
        f"stamp the period's end: pl.col({column!r}).dt.truncate({period!r})"
        f".dt.offset_by({period!r}), so each row becomes visible once its period is over "
        "(or opt the view out of the lint if the start is intended)."
    )


def _generic_fix(column: str) -> str:
    return (
        "stamp each row with the end of the period it summarizes, e.g. "
        f"pl.col({column!r}).dt.truncate('1d').dt.offset_by('1d') (group_by_dynamic: "
        "label='right'), or with the latest source event time it uses "
        f"(pl.col({column!r}).max()); do not use statistics of the whole input."
    )


# ---- data comparison --------------------------------------------------------------------
def _collect(result: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    return result.collect() if isinstance(result, pl.LazyFrame) else result


def _cutoffs(
    frames: Mapping[str, pl.LazyFrame], times: Mapping[str, str], count: int
) -> list[datetime]:
    stamps = pl.concat(
        [
            lf.select(
                to_utc_expr(times[name], lf.collect_schema()[times[name]], what="event time").alias(
                    "t"
                )
            )
            for name, lf in frames.items()
        ]
    ).collect()["t"]
    distinct = stamps.drop_nulls().unique().sort()
    if distinct.len() < 2:
        return []
    # never the last instant: cutting there removes nothing
    picks = {
        min(int((i + 1) * distinct.len() / (count + 1)), distinct.len() - 2) for i in range(count)
    }
    return [to_utc_datetime(distinct[i]) for i in sorted(picks)]


def _stamped_by(frame: pl.DataFrame, timestamp: str, cut: datetime) -> pl.DataFrame:
    stamp = to_utc_expr(timestamp, frame.schema[timestamp], what="event time")
    return frame.filter(stamp <= cut)


def _same_rows(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Same rows in any order; floats equal within a relative 1e-9 (sums reorder)."""
    if a.height != b.height or a.schema != b.schema:
        return False
    a, b = a.sort(a.columns, nulls_last=True), b.sort(b.columns, nulls_last=True)
    for name in a.columns:
        x, y = a.get_column(name), b.get_column(name)
        if x.dtype.is_float():
            same = (x.is_null() & y.is_null()) | (x.is_nan() & y.is_nan())
            close = (x - y).abs() <= 1e-12 + 1e-9 * y.abs()
            if not (same | close).fill_null(False).all():
                return False
        elif not x.equals(y):
            return False
    return True
