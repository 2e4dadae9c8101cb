"""Data-quality checks on a view's output: declared with the view, evaluated before a write.

A :class:`Check` is a named rule with a severity. The native form is a polars boolean
expression, true on good rows; built-in constructors cover the common rules, and a pandera
polars schema (optional extra ``featurekit[pandera]``) is accepted too::

    fk.Check(pl.col("fare") >= 0, name="fare_non_negative")
    fk.Check.not_null("fare")
    fk.Check.unique()                       # (keys, event time) rows that differ in values
    fk.Check.between("rating", 1, 5)
    fk.Check.row_count(min=1)
    fk.Check.fresh("2h")                    # latest event time at most 2h before `now`
    fk.Check(pandera_schema, severity="warn")

:func:`evaluate_checks` runs them on an in-memory frame and returns a :class:`CheckReport`
(pure: no I/O, no clock unless ``now`` is omitted). What the report is used for (refusing a
commit on an error, writing the failing rows to a quarantine table, recording results in the
run record) belongs to the writer, not to this module.

Semantics shared by every row-level rule:

* a row fails when the rule is *false* for it; a null result does not fail (as in a SQL
  ``CHECK`` constraint), so ``pl.col("fare") >= 0`` passes a null fare; forbid nulls with
  :meth:`Check.not_null`;
* an expression that reduces to one value (``pl.col("fare").mean() < 100``) is a
  frame-level rule: it passes or fails as a whole and has no failing rows.

Checks never change data, so they are not part of a view's fingerprint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, get_args

import polars as pl

from featurekit.core.errors import DefinitionError, FeatureKitWarning, SchemaError, ValidationError
from featurekit.core.names import shown, validate_name
from featurekit.core.timeutil import parse_duration, to_utc_datetime, to_utc_expr, utcnow

__all__ = [
    "FAILED_CHECKS_COLUMN",
    "QUARANTINE_LIMIT",
    "SAMPLE_ROWS",
    "BetweenRule",
    "Check",
    "CheckReport",
    "CheckResult",
    "ExprRule",
    "FreshRule",
    "NotNullRule",
    "PanderaRule",
    "RowCountRule",
    "Rule",
    "Severity",
    "UniqueRule",
    "as_checks",
    "evaluate_checks",
    "with_default_checks",
]

Severity = Literal["error", "warn"]

#: Failing rows shown per failed check, in the report and in :class:`ValidationError`.
SAMPLE_ROWS = 5
#: Default cap on the rows :meth:`CheckReport.failing_rows` returns (the quarantine size).
QUARANTINE_LIMIT = 10_000
#: Column of :meth:`CheckReport.failing_rows` listing the checks each row failed. Reserved
#: prefix, so it can never clash with a feature column.
FAILED_CHECKS_COLUMN = "__fk_failed_checks"

_SLUG = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True)
class _Context:
    """What a rule may need besides the frame: the view's keys, event time and clock."""

    keys: tuple[str, ...]
    timestamp: str
    now: datetime


@dataclass(frozen=True)
class _Outcome:
    """A rule's verdict. ``mask`` is True on failing rows (None: frame-level rule)."""

    passed: bool
    detail: str
    mask: pl.Series | None = None


class Rule(Protocol):
    """What a check tests. Each rule evaluates itself on a frame (pure)."""

    def describe(self) -> str:
        """Short text of the rule, for reprs and messages."""
        ...

    def evaluate(self, frame: pl.DataFrame, ctx: _Context) -> _Outcome:
        """The verdict on ``frame``; polars errors propagate (the evaluator wraps them)."""
        ...


def _row_outcome(frame: pl.DataFrame, failing: pl.Series, what: str) -> _Outcome:
    mask = failing.fill_null(False).alias("failing")
    count = int(mask.sum())
    return _Outcome(
        passed=count == 0, detail=f"{count} of {frame.height} rows fail ({what})", mask=mask
    )


@dataclass(frozen=True, eq=False)
class ExprRule:
    """A polars boolean expression, true on good rows (or one value for the whole frame)."""

    expr: pl.Expr

    def describe(self) -> str:
        return str(self.expr)

    def evaluate(self, frame: pl.DataFrame, ctx: _Context) -> _Outcome:
        result = frame.select(self.expr.alias("__fk_check")).to_series()
        if result.dtype != pl.Boolean:
            raise DefinitionError(
                f"gives {result.dtype}, not a boolean: write a condition that is true on good "
                "rows, e.g. pl.col('fare') >= 0."
            )
        if result.len() == frame.height:
            return _row_outcome(frame, ~result, self.describe())
        if result.len() == 1:
            ok = result[0] is not False
            return _Outcome(passed=ok, detail=f"{self.describe()} is {result[0]} for the frame")
        raise DefinitionError(
            f"gives {result.len()} values for {frame.height} rows: write one boolean per row "
            "or one for the whole frame."
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExprRule) and self.expr.meta.eq(other.expr)

    def __hash__(self) -> int:
        return hash(str(self.expr))


@dataclass(frozen=True)
class NotNullRule:
    """No null in ``column`` (NaN is a value; forbid it with ``pl.col(c).is_not_nan()``)."""

    column: str

    def describe(self) -> str:
        return f"{self.column} is not null"

    def evaluate(self, frame: pl.DataFrame, ctx: _Context) -> _Outcome:
        failing = frame.select(pl.col(self.column).is_null()).to_series()
        return _row_outcome(frame, failing, self.describe())


@dataclass(frozen=True)
class UniqueRule:
    """One row per ``columns`` (default: the view's keys and event time).

    With ``ignore_identical`` (the default) rows that agree in every column are not
    failures: a point-in-time lookup gives the same value whichever it picks. Rows that
    share the key but differ in values are, since a lookup would silently pick one.
    """

    columns: tuple[str, ...] | None = None
    ignore_identical: bool = True

    def resolved(self, ctx: _Context) -> list[str]:
        """The columns that must be unique, once the view's keys and time are known."""
        return list(self.columns) if self.columns else [*ctx.keys, ctx.timestamp]

    def describe(self) -> str:
        cols = ", ".join(self.columns) if self.columns else "keys, event time"
        return f"({cols}) is unique" + (" among differing rows" if self.ignore_identical else "")

    def evaluate(self, frame: pl.DataFrame, ctx: _Context) -> _Outcome:
        cols = self.resolved(ctx)
        if self.ignore_identical:
            failing = pl.struct(pl.all()).n_unique().over(cols) > 1
        else:
            failing = pl.len().over(cols) > 1
        # only rows whose columns' hash repeats can share their columns: the windows run
        # over those alone (every view's run checks this by default; over 10M rows the
        # windows took 1.3 s, the hash, its sort and the few candidates about 0.25)
        candidates = _repeated_hash(frame, cols)
        mask = pl.repeat(False, frame.height, dtype=pl.Boolean, eager=True)
        if candidates.any():
            where = candidates.arg_true()
            found = frame.gather(where).select(failing).to_series().fill_null(False)
            mask = mask.scatter(where, found)
        return _row_outcome(frame, mask, f"rows share ({', '.join(cols)})")


def _repeated_hash(frame: pl.DataFrame, cols: Sequence[str]) -> pl.Series:
    """True on rows whose ``cols``' hash another row has too: every row that shares its
    ``cols`` with another (and, rarely, rows whose hashes merely collide)."""
    hashes = frame.select(pl.struct(cols).hash(_UNIQUE_SEED)).to_series()
    ordered = hashes.sort()
    repeated = ordered.filter(ordered == ordered.shift(1)).unique()
    return hashes.is_in(repeated.implode())


#: the seed of the hash :class:`UniqueRule` narrows its candidates with (any fixed value)
_UNIQUE_SEED = 0x0F1


@dataclass(frozen=True)
class BetweenRule:
    """``low <= column <= high`` (either bound may be None: open on that side)."""

    column: str
    low: Any = None
    high: Any = None

    def describe(self) -> str:
        low = "" if self.low is None else f"{self.low!r} <= "
        high = "" if self.high is None else f" <= {self.high!r}"
        return f"{low}{self.column}{high}"

    def evaluate(self, frame: pl.DataFrame, ctx: _Context) -> _Outcome:
        col = pl.col(self.column)
        good = pl.lit(True)
        if self.low is not None:
            good = good & (col >= self.low)
        if self.high is not None:
            good = good & (col <= self.high)
        return _row_outcome(frame, frame.select(~good).to_series(), self.describe())


@dataclass(frozen=True)
class RowCountRule:
    """The frame holds between ``min`` and ``max`` rows (inclusive; None: unbounded)."""

    min: int | None = None
    max: int | None = None

    def describe(self) -> str:
        parts = [f">= {self.min}"] if self.min is not None else []
        parts += [f"<= {self.max}"] if self.max is not None else []
        return "row count " + " and ".join(parts)

    def evaluate(self, frame: pl.DataFrame, ctx: _Context) -> _Outcome:
        rows = frame.height
        if self.min is not None and rows < self.min:
            return _Outcome(False, f"{rows} rows, fewer than the minimum {self.min}")
        if self.max is not None and rows > self.max:
            return _Outcome(False, f"{rows} rows, more than the maximum {self.max}")
        return _Outcome(True, f"{rows} rows")


@dataclass(frozen=True)
class FreshRule:
    """The latest event time is at most ``max_age`` before the evaluation time ``now``.

    A frame without event times fails: nothing shows the data is fresh.
    """

    max_age: timedelta

    def describe(self) -> str:
        return f"latest event time within {self.max_age} of now"

    def evaluate(self, frame: pl.DataFrame, ctx: _Context) -> _Outcome:
        dtype = frame.schema[ctx.timestamp]
        expr = to_utc_expr(ctx.timestamp, dtype, what="event time").max()
        latest = frame.select(expr).item()
        if latest is None:
            return _Outcome(False, f"no event times in {ctx.timestamp!r} to judge freshness")
        age = ctx.now - latest
        stamp = latest.isoformat()
        if age > self.max_age:
            return _Outcome(False, f"latest event time {stamp} is {age} old, over {self.max_age}")
        return _Outcome(True, f"latest event time {stamp} is {age} old")


@dataclass(frozen=True)
class PanderaRule:
    """A pandera polars ``DataFrameSchema``; failing rows are those pandera names by index."""

    schema: Any

    def describe(self) -> str:
        return f"pandera schema {getattr(self.schema, 'name', None) or ''}".rstrip()

    def evaluate(self, frame: pl.DataFrame, ctx: _Context) -> _Outcome:
        errors = _import_pandera_errors()
        try:
            self.schema.validate(frame, lazy=True)
        except errors.SchemaErrors as err:
            cases: pl.DataFrame = err.failure_cases
        else:
            return _Outcome(True, f"0 of {frame.height} rows fail ({self.describe()})")
        index = cases.get_column("index").drop_nulls().unique()
        mask = pl.Series("failing", [False] * frame.height, pl.Boolean).scatter(index, True)
        what = sorted(
            {f"{c}: {k}" for c, k in cases.select("column", "check").unique().iter_rows()}
        )
        listed = "; ".join(what[:3]) + (f"; and {len(what) - 3} more" if len(what) > 3 else "")
        return _Outcome(
            passed=False,
            detail=f"{int(mask.sum())} of {frame.height} rows fail ({listed})",
            mask=mask,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PanderaRule) and self.schema is other.schema

    def __hash__(self) -> int:
        return id(self.schema)


def _import_pandera_errors() -> Any:
    try:
        import pandera.errors as errors
        import pandera.polars  # noqa: F401  (the polars backend registers itself on import)
    except ImportError as err:  # pragma: no cover - only without the extra
        raise DefinitionError(
            "pandera schemas as checks need the optional extra: pip install 'featurekit[pandera]'."
        ) from err
    return errors


def _is_pandera(obj: object) -> bool:
    """A pandera schema or DataFrameModel class, recognised without importing pandera."""
    classes = obj.__mro__ if isinstance(obj, type) else type(obj).__mro__
    return any(c.__module__.partition(".")[0] == "pandera" for c in classes)


def _pandera_schema(obj: Any) -> Any:
    _import_pandera_errors()
    schema: Any = obj.to_schema() if isinstance(obj, type) else obj  # type: ignore[attr-defined]
    if type(schema).__module__.partition(".")[2].split(".")[:2] != ["api", "polars"]:
        raise DefinitionError(
            f"check: {type(schema).__name__} from {type(schema).__module__} is not a pandera "
            "*polars* schema; use pandera.polars.DataFrameSchema or pandera.polars.DataFrameModel."
        )
    return schema


def _slug(text: str) -> str:
    return _SLUG.sub("_", text).strip("_")[:100] or "check"


@dataclass(frozen=True, eq=False, init=False)
class Check:
    """A named data-quality rule on a view's output, with a severity.

    ``severity="error"`` (default) blocks the write when it fails; ``"warn"`` lets it
    through and reports. A polars boolean expression, true on good rows, is the native form;
    the constructors below build the common rules.

    Example:
        >>> fk.Check(pl.col("fare") >= 0, name="fare_non_negative")
        Check('fare_non_negative', [(col("fare")) >= (dyn int: 0)], severity='error')
        >>> fk.Check.between("rating", 1, 5, severity="warn").name
        'rating_between'

    Args:
        expr: a polars boolean expression, or a pandera polars ``DataFrameSchema`` /
            ``DataFrameModel`` (optional extra ``featurekit[pandera]``).
        name: how reports and the quarantine table name the check; required for an
            expression, defaults to the schema's name for pandera.
        severity: ``"error"`` or ``"warn"``.
    """

    rule: Rule
    name: str
    severity: Severity

    def __init__(self, expr: Any, *, name: str | None = None, severity: Severity = "error"):
        if isinstance(expr, pl.Expr):
            if name is None:
                raise DefinitionError(
                    f"check {shown(str(expr))} needs a name: fk.Check(expr, "
                    "name='fare_non_negative')."
                )
            rule: Rule = ExprRule(expr)
        elif _is_pandera(expr):
            schema = _pandera_schema(expr)
            rule = PanderaRule(schema)
            name = name or _slug(str(getattr(schema, "name", None) or "pandera_schema"))
        else:
            raise DefinitionError(
                f"fk.Check takes a polars expression or a pandera polars schema, got "
                f"{type(expr).__name__}: {shown(expr)}. Example: "
                "fk.Check(pl.col('fare') >= 0, name='fare_non_negative')."
            )
        self._set(rule, name, severity)

    def _set(self, rule: Rule, name: str, severity: str) -> None:
        validate_name(name, "check")
        if severity not in get_args(Severity):
            raise DefinitionError(
                f"check {name!r}: severity must be 'error' or 'warn', got {shown(severity)}."
            )
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "severity", severity)

    @classmethod
    def _of(cls, rule: Rule, name: str, severity: Severity) -> Check:
        check = cls.__new__(cls)
        check._set(rule, name, severity)
        return check

    @classmethod
    def not_null(
        cls, column: str, *, name: str | None = None, severity: Severity = "error"
    ) -> Check:
        """No null in ``column``. Example: ``fk.Check.not_null("fare")``."""
        return cls._of(NotNullRule(column), name or f"{_slug(column)}_not_null", severity)

    @classmethod
    def unique(
        cls,
        cols: Sequence[str] | str | None = None,
        *,
        ignore_identical: bool = True,
        name: str | None = None,
        severity: Severity = "error",
    ) -> Check:
        """One row per ``cols`` (default: the view's keys and event time).

        Rows identical in every column are not counted unless ``ignore_identical=False``;
        rows that share the key and differ in values are (a lookup would pick one of them
        silently). Example: ``fk.Check.unique()``, ``fk.Check.unique(["trip_id"])``.
        """
        columns = (cols,) if isinstance(cols, str) else tuple(cols) if cols else None
        default = "unique" if columns is None else "unique_" + "_".join(map(_slug, columns))
        return cls._of(UniqueRule(columns, ignore_identical), name or default, severity)

    @classmethod
    def between(
        cls,
        column: str,
        low: Any = None,
        high: Any = None,
        *,
        name: str | None = None,
        severity: Severity = "error",
    ) -> Check:
        """``low <= column <= high``, inclusive; None leaves that side open.

        Example: ``fk.Check.between("rating", 1, 5)``.
        """
        if low is None and high is None:
            raise DefinitionError(f"Check.between({column!r}) needs a low or a high bound.")
        return cls._of(BetweenRule(column, low, high), name or f"{_slug(column)}_between", severity)

    @classmethod
    def row_count(
        cls,
        min: int | None = None,
        max: int | None = None,
        *,
        name: str | None = None,
        severity: Severity = "error",
    ) -> Check:
        """The output holds between ``min`` and ``max`` rows. Example: ``row_count(min=1)``."""
        if min is None and max is None:
            raise DefinitionError("Check.row_count() needs min= or max=.")
        if min is not None and max is not None and min > max:
            raise DefinitionError(f"Check.row_count(min={min}, max={max}): min is above max.")
        return cls._of(RowCountRule(min, max), name or "row_count", severity)

    @classmethod
    def fresh(
        cls, max_age: str | timedelta, *, name: str | None = None, severity: Severity = "error"
    ) -> Check:
        """The latest event time is at most ``max_age`` old when checked.

        Example: ``fk.Check.fresh("2h")``.
        """
        age = parse_duration(max_age, what="Check.fresh max_age")
        assert age is not None
        return cls._of(FreshRule(age), name or "fresh", severity)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Check):
            return NotImplemented
        return (self.name, self.severity, self.rule) == (other.name, other.severity, other.rule)

    def __hash__(self) -> int:
        return hash((self.name, self.severity, self.rule))

    def __repr__(self) -> str:
        return f"Check({self.name!r}, {self.rule.describe()}, severity={self.severity!r})"


def as_checks(items: Iterable[Check | Any] | None) -> tuple[Check, ...]:
    """Checks as declared on a view: ``Check`` objects or pandera schemas; names unique."""
    checks = tuple(item if isinstance(item, Check) else Check(item) for item in items or ())
    names = [c.name for c in checks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DefinitionError(
            f"check names {twice} are used twice; pass name= to tell the checks apart."
        )
    return checks


def with_default_checks(checks: Iterable[Check | Any] | None) -> tuple[Check, ...]:
    """A view's checks plus the ones every view gets: today, duplicate detection.

    Rows sharing (keys, event time) but differing in values silently resolve to one of
    them in a lookup, so every view reports them at least as a warning: unless the view
    declares its own ``Check.unique()`` on the default columns (at any severity), a
    ``Check.unique(severity="warn")`` is added, named ``unique`` (``default_unique`` if
    the view already uses that name).
    """
    declared = as_checks(checks)
    if any(isinstance(c.rule, UniqueRule) and not c.rule.columns for c in declared):
        return declared
    name = "default_unique" if any(c.name == "unique" for c in declared) else "unique"
    return (*declared, Check.unique(name=name, severity="warn"))


@dataclass(frozen=True, eq=False)
class CheckResult:
    """One check's verdict on one frame.

    Attributes:
        name: the check's name.
        severity: ``"error"`` or ``"warn"``.
        passed: whether the check held.
        failing: failing rows (0 for frame-level rules such as ``row_count``).
        detail: what was measured, in words.
        samples: up to :data:`SAMPLE_ROWS` failing rows.
        mask: True on failing rows, one entry per row of the frame (None: frame-level rule).
    """

    name: str
    severity: Severity
    passed: bool
    failing: int
    detail: str
    samples: pl.DataFrame
    mask: pl.Series | None = None


@dataclass(frozen=True, eq=False)
class CheckReport:
    """Every check's result on one frame, in declaration order."""

    results: tuple[CheckResult, ...]
    rows: int

    @property
    def passed(self) -> bool:
        """No error-level check failed (warnings do not block)."""
        return not self.errors

    @property
    def errors(self) -> tuple[CheckResult, ...]:
        """Failed checks with severity ``"error"``."""
        return tuple(r for r in self.results if not r.passed and r.severity == "error")

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        """Failed checks with severity ``"warn"``."""
        return tuple(r for r in self.results if not r.passed and r.severity == "warn")

    def to_polars(self) -> pl.DataFrame:
        """One row per check: name, severity, passed, failing, detail."""
        return pl.DataFrame(
            {
                "name": [r.name for r in self.results],
                "severity": [r.severity for r in self.results],
                "passed": [r.passed for r in self.results],
                "failing": [r.failing for r in self.results],
                "detail": [r.detail for r in self.results],
            },
            schema={
                "name": pl.String,
                "severity": pl.String,
                "passed": pl.Boolean,
                "failing": pl.Int64,
                "detail": pl.String,
            },
        )

    def failing_rows(
        self,
        frame: pl.DataFrame,
        *,
        limit: int = QUARANTINE_LIMIT,
        severity: Severity | Literal["all"] = "error",
    ) -> pl.DataFrame:
        """The rows of ``frame`` that failed a row-level check, capped at ``limit`` rows.

        ``frame`` is the frame the report was computed on. The added column
        :data:`FAILED_CHECKS_COLUMN` lists, per row, every check (of any severity) the row
        failed. With ``severity="error"`` only rows failing an error-level check are kept:
        the quarantine of a refused write.
        """
        masked = [r for r in self.results if r.mask is not None and not r.passed]
        keep = [r for r in masked if severity == "all" or r.severity == severity]
        if frame.height != self.rows:
            raise SchemaError(
                f"failing_rows: the frame has {frame.height} rows, the report was computed on "
                f"{self.rows}; pass the frame the checks ran on."
            )
        names = [pl.when(pl.lit(r.mask)).then(pl.lit(r.name)) for r in masked]
        selected = pl.any_horizontal([pl.lit(r.mask) for r in keep]) if keep else pl.lit(False)
        listed = (
            pl.concat_list(names).list.drop_nulls() if names else pl.lit([], pl.List(pl.String))
        )
        return (
            frame.lazy()
            .with_columns(listed.alias(FAILED_CHECKS_COLUMN))
            .filter(selected)
            .head(limit)
            .collect()
        )

    def error(self, view: str) -> ValidationError | None:
        """The :class:`ValidationError` for the failed error-level checks (None: all held)."""
        if not self.errors:
            return None
        message = (
            f"view {view!r} failed {len(self.errors)} of {len(self.results)} checks:\n"
            + _listing(self.errors)
            + "\nFix the data or the view; a check declared with severity='warn' reports "
            "without blocking."
        )
        return ValidationError(message, failures=self.errors)

    def warning_text(self, view: str) -> str | None:
        """Text of the warning for failed warn-level checks (None: none failed)."""
        if not self.warnings:
            return None
        return f"view {view!r}: {len(self.warnings)} warn-level checks failed:\n" + _listing(
            self.warnings
        )

    def raise_or_warn(self, view: str) -> None:
        """Raise :class:`ValidationError` on an error-level failure, else warn on warn-level."""
        import warnings

        error = self.error(view)
        if error is not None:
            raise error
        text = self.warning_text(view)
        if text is not None:
            warnings.warn(text, FeatureKitWarning, stacklevel=2)


def _listing(results: Iterable[CheckResult]) -> str:
    lines = []
    for r in results:
        lines.append(f"- {r.name!r} ({r.severity}): {r.detail}.")
        if r.samples.height:
            lines.append("  Sample failing rows:")
            lines.extend(f"    {shown(row, 240)}" for row in r.samples.iter_rows(named=True))
    return "\n".join(lines)


def evaluate_checks(
    frame: pl.DataFrame | pl.LazyFrame,
    checks: Iterable[Check | Any],
    *,
    keys: Sequence[str],
    timestamp: str,
    now: datetime | None = None,
) -> CheckReport:
    """Run ``checks`` on ``frame`` (a view's output) and report each verdict.

    Args:
        frame: the rows to check (a LazyFrame is collected once).
        checks: :class:`Check` objects or pandera polars schemas.
        keys: the view's entity keys (the default of :meth:`Check.unique`).
        timestamp: the view's event-time column (:meth:`Check.unique`, :meth:`Check.fresh`).
        now: the evaluation instant for :meth:`Check.fresh` (naive means UTC; default: now).

    Raises:
        SchemaError: a check names a column the frame does not hold.
        DefinitionError: an expression does not give booleans, or two checks share a name.
    """
    data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    ctx = _Context(tuple(keys), timestamp, to_utc_datetime(now) if now else utcnow())
    results = []
    for check in as_checks(checks):
        outcome = _run(check, data, ctx)
        mask = outcome.mask
        samples = data.filter(mask).head(SAMPLE_ROWS) if mask is not None else data.clear()
        results.append(
            CheckResult(
                name=check.name,
                severity=check.severity,
                passed=outcome.passed,
                failing=int(mask.sum()) if mask is not None else 0,
                detail=outcome.detail,
                samples=samples,
                mask=mask,
            )
        )
    return CheckReport(results=tuple(results), rows=data.height)


def _run(check: Check, frame: pl.DataFrame, ctx: _Context) -> _Outcome:
    """One boundary around each rule: polars errors become errors that name the check."""
    try:
        return check.rule.evaluate(frame, ctx)
    except DefinitionError as err:
        raise DefinitionError(f"check {check.name!r} ({check.rule.describe()}) {err}") from err
    except (pl.exceptions.ColumnNotFoundError, KeyError) as err:
        raise SchemaError(
            f"check {check.name!r} ({check.rule.describe()}) names a column the view's output "
            f"does not hold: {_first_line(err)}. Output columns: {frame.columns}."
        ) from err
    except pl.exceptions.PolarsError as err:
        raise SchemaError(
            f"check {check.name!r} ({check.rule.describe()}) cannot be evaluated on the view's "
            f"output (columns {frame.columns}): {_first_line(err)}"
        ) from err


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
