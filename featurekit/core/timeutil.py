"""Durations and UTC instants: one place decides how time is read.

featurekit compares timestamps as UTC instants. Naive timestamps are read as UTC
(never as machine-local time), whatever ``TZ`` says.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Literal

import polars as pl

from featurekit.core.errors import DefinitionError, SchemaError
from featurekit.core.names import shown

#: The one dtype every timestamp is normalized to before comparison and storage.
UTC_US = pl.Datetime("us", "UTC")

_UNITS = {
    "us": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "sec": timedelta(seconds=1),
    "second": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "minute": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "hour": timedelta(hours=1),
    "d": timedelta(days=1),
    "day": timedelta(days=1),
    "w": timedelta(weeks=1),
    "week": timedelta(weeks=1),
    "y": timedelta(days=365),
    "year": timedelta(days=365),
}
#: A number and its unit; "ms" and "us" are tried first, or "ms" would read as a plural of "m".
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|us|[a-z]+?)s?\s*(?=\d|$)")
ACCEPTED_DURATIONS = (
    "'30s', '15m', '1h', '7d', '2w', '1y', '1h30m', '7 days' or a datetime.timedelta"
)


#: The longest duration featurekit accepts (a TTL or window of 100 years). Longer spans
#: reach past the instants timestamps can hold (``label - ttl`` before year 1, a window
#: wider than nanosecond timestamps' 292 years), so they are refused when the view is
#: defined, not found by an overflow after a commit. No limit is spelled ``None``.
MAX_DURATION = timedelta(days=365 * 100)


def parse_duration(value: str | timedelta | None, *, what: str = "duration") -> timedelta | None:
    """Read a positive duration such as ``"7d"``, ``"1h30m"`` or ``"7 days"``.

    Durations longer than :data:`MAX_DURATION` (100 years) are refused: use ``None``
    (no TTL, or a lifetime window) for "no limit".

    Example:
        >>> parse_duration("1h30m")
        datetime.timedelta(seconds=5400)
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("-"):
            raise DefinitionError(f"{what} must be positive, got {shown(value)}.")
        pos, seconds = 0, 0.0
        while pos < len(text):
            match = _PART.match(text, pos)
            if not match or match.group(2) not in _UNITS:
                raise DefinitionError(
                    f"{what} {shown(value)} does not parse. Accepted forms: {ACCEPTED_DURATIONS}."
                )
            # summed as float seconds first: a timedelta overflows (OverflowError) long
            # before the bound below would have refused the value with a clear message
            seconds += float(match.group(1)) * _UNITS[match.group(2)].total_seconds()
            pos = match.end()
        if not text:
            raise DefinitionError(f"{what} is empty. Accepted forms: {ACCEPTED_DURATIONS}.")
        _check_bound(seconds > MAX_DURATION.total_seconds(), value, what)
        result = _exact(text)
    else:
        raise DefinitionError(
            f"{what} must be a string or timedelta, got {type(value).__name__}. "
            f"Accepted forms: {ACCEPTED_DURATIONS}."
        )
    if result <= timedelta(0):
        raise DefinitionError(f"{what} must be positive, got {shown(value)}.")
    _check_bound(result > MAX_DURATION, value, what)
    return result


def _exact(text: str) -> timedelta:
    """The exact sum of a duration text's parts (bounded already, so it cannot overflow)."""
    total = timedelta()
    for match in _PART.finditer(text):
        total += float(match.group(1)) * _UNITS[match.group(2)]
    return total


def _check_bound(too_long: bool, value: str | timedelta, what: str) -> None:
    if too_long:
        raise DefinitionError(
            f"{what} {shown(str(value))} is longer than 100 years, the longest duration "
            "featurekit accepts. For no limit, pass None instead (no TTL: values never "
            "expire; no window: the aggregate covers the entity's whole history)."
        )


def format_duration(value: timedelta | None) -> str | None:
    """Canonical text for a duration (stable across equal inputs: ``"1d"`` == ``"24h"``)."""
    if value is None:
        return None
    return f"{int(value / timedelta(microseconds=1))}us"


#: Display units, largest first, in microseconds (the notation :func:`parse_duration` reads).
_LABEL_UNITS: tuple[tuple[str, int], ...] = (
    ("d", 86_400_000_000),
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
)


def duration_label(span: timedelta) -> str:
    """A TTL or window as people write it: the largest unit that divides it evenly.

    The one formatter for durations shown to people (CLI, notebook cards, explanations) and
    for the window part of aggregate names, so ``7d`` reads the same everywhere.

    Example:
        >>> duration_label(timedelta(days=7)), duration_label(timedelta(minutes=90))
        ('7d', '90m')
    """
    micros = int(span / timedelta(microseconds=1))
    for unit, size in _LABEL_UNITS:
        if micros % size == 0:
            return f"{micros // size}{unit}"
    return f"{micros}us"


def to_utc_expr(
    column: str,
    dtype: pl.DataType,
    *,
    what: str,
    time_unit: Literal["us", "ns"] = "us",
    rounding: Literal["up", "down"] = "up",
) -> pl.Expr:
    """Expression turning a datetime column into ``Datetime(time_unit, 'UTC')``; naive means UTC.

    Nanoseconds narrowed to microseconds (Delta Lake keeps microseconds) round ``"up"`` by
    default: an event or created time becomes the first microsecond at or after it, so a
    row stored at microseconds is never known earlier than it really was, and a value that
    arrives 800 ns after a label can never leak into it. A label time must round
    ``"down"`` for the same reason. Either way the rounding is exact (floor/ceil of the
    integer nanoseconds), before 1970 too.
    """
    if not isinstance(dtype, pl.Datetime):
        raise SchemaError(
            f"{what} column {column!r} must be a datetime, got {dtype}. {_hint(column, dtype)}"
        )
    expr = pl.col(column)
    if dtype.time_zone is None:
        expr = expr.dt.replace_time_zone("UTC")
    elif dtype.time_zone != "UTC":
        expr = expr.dt.convert_time_zone("UTC")
    if time_unit == "ns" and dtype.time_unit != "ns":
        # nanoseconds only reach 1677..2262: clamp "end of time" values (9999-12-31) there.
        # They stay later than every nanosecond label, so they are never picked, and a
        # clamped early value only shortens an age that no TTL in this range can reach.
        expr = expr.clip(NS_MIN, NS_MAX)
    if time_unit == "us" and dtype.time_unit == "ns":
        return narrow_ns(expr, rounding)
    return expr.cast(pl.Datetime(time_unit, "UTC"))


def _hint(column: str, dtype: pl.DataType) -> str:
    """How to turn a column of ``dtype`` into a datetime."""
    if dtype == pl.Date:
        return (
            f"Cast it, e.g. pl.col({column!r}).cast(pl.Datetime('us')) (midnight UTC); if a "
            "value is only complete at the end of its day, add pl.duration(days=1)."
        )
    if dtype.is_integer():
        return f"Convert it, e.g. pl.from_epoch({column!r}, time_unit='s') for epoch seconds."
    return f"Parse it first, e.g. pl.col({column!r}).str.to_datetime()."


def narrow_ns(expr: pl.Expr, rounding: Literal["up", "down"] = "up") -> pl.Expr:
    """A UTC nanosecond datetime expression as microseconds, rounded up or down exactly."""
    ns = expr.to_physical()
    us = ns // 1000  # floor division, also for instants before 1970
    if rounding == "up":
        us = us + (ns % 1000 != 0).cast(pl.Int64)
    return us.cast(UTC_US)


def iso_datetime_expr(column: str, *, what: str) -> pl.Expr:
    """Parse an ISO 8601 string column into ``Datetime('us', 'UTC')``, failing by name.

    A value that does not parse raises :class:`SchemaError` naming ``what`` and the column
    (with a few of the values), when the plan runs, instead of a bare polars error. Strings
    with more than six fractional digits round up to the next microsecond, like every
    nanosecond time featurekit stores (see :func:`to_utc_expr`).
    """
    return (
        pl.col(column)
        .map_batches(partial(_parse_iso, column=column, what=what), return_dtype=UTC_US)
        .alias(column)
    )


def _parse_iso(values: pl.Series, *, column: str, what: str) -> pl.Series:
    parsed = values.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    bad = parsed.is_null() & values.is_not_null()
    if bad.any():
        samples = values.filter(bad).unique(maintain_order=True).head(3).to_list()
        raise SchemaError(
            f"{what} column {column!r} has {bad.sum()} value(s) that are not ISO 8601 "
            f"date-times, e.g. {shown(samples)}. Fix those rows, or parse the column "
            f"yourself with a format, e.g. pl.col({column!r}).str.to_datetime('%d/%m/%Y %H:%M')."
        )
    if values.str.contains(r"[.,]\d{7}").any():  # sub-microsecond digits: round them up
        # the digits past the sixth, when any is not 0, add one microsecond to the
        # (truncating) microsecond parse
        finer = values.str.extract(r"[.,]\d{6}(\d+)").str.contains("[1-9]").fill_null(False)
        parsed = (
            pl.DataFrame({"us": parsed, "finer": finer})
            .select(
                pl.when("finer").then(pl.col("us") + pl.duration(microseconds=1)).otherwise("us")
            )
            .to_series()
        )
    return parsed.alias(values.name)


#: The instants nanosecond datetimes can hold (with a margin of a day).
NS_MIN = datetime(1677, 9, 23, tzinfo=UTC)
NS_MAX = datetime(2262, 4, 10, tzinfo=UTC)


def to_utc_datetime(value: datetime | date | str, *, what: str = "time") -> datetime:
    """An instant as an aware UTC datetime; naive means UTC.

    Accepts a ``datetime``, a ``date`` (its midnight, UTC) or an ISO 8601 string such as
    ``"2026-03-01"``, ``"2026-03-01T12:30:00"`` or ``"2026-03-01T12:30:00+01:00"``.

    Raises:
        DefinitionError: ``value`` is none of these; the message names ``what``.

    Example:
        >>> to_utc_datetime("2026-03-01T12:00:00+01:00")
        datetime.datetime(2026, 3, 1, 11, 0, tzinfo=datetime.timezone.utc)
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise DefinitionError(
                f"{what} {shown(value)} is not an ISO 8601 date or time. Pass a datetime or "
                "a string such as '2026-03-01', '2026-03-01T12:30:00' or "
                "'2026-03-01T12:30:00+01:00' (no zone means UTC)."
            ) from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif not isinstance(value, datetime):
        raise DefinitionError(
            f"{what} must be a datetime, a date or an ISO 8601 string, got "
            f"{type(value).__name__} {shown(value)}."
        )
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def before(when: datetime, span: timedelta) -> datetime | None:
    """``when - span``, or None when that is before year 1 (no instant is that early).

    Label times near ``datetime.min`` are legal; a lower bound computed from them must not
    raise OverflowError: None means "no lower bound".
    """
    try:
        return when - span
    except OverflowError:
        return None


def utcnow() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)
