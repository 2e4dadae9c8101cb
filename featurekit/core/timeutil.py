"""Durations and UTC instants: one place decides how time is read.

featurekit compares timestamps as UTC instants. Naive timestamps are read as UTC
(never as machine-local time), whatever ``TZ`` says.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal

import polars as pl

from featurekit.core.errors import DefinitionError, SchemaError

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


def parse_duration(value: str | timedelta | None, *, what: str = "duration") -> timedelta | None:
    """Read a positive duration such as ``"7d"``, ``"1h30m"`` or ``"7 days"``.

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
            raise DefinitionError(f"{what} must be positive, got {value!r}.")
        pos, total = 0, timedelta()
        while pos < len(text):
            match = _PART.match(text, pos)
            if not match or match.group(2) not in _UNITS:
                raise DefinitionError(
                    f"{what} {value!r} does not parse. Accepted forms: {ACCEPTED_DURATIONS}."
                )
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not text:
            raise DefinitionError(f"{what} is empty. Accepted forms: {ACCEPTED_DURATIONS}.")
        result = total
    else:
        raise DefinitionError(
            f"{what} must be a string or timedelta, got {type(value).__name__}. "
            f"Accepted forms: {ACCEPTED_DURATIONS}."
        )
    if result <= timedelta(0):
        raise DefinitionError(f"{what} must be positive, got {value!r}.")
    return result


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
    column: str, dtype: pl.DataType, *, what: str, time_unit: Literal["us", "ns"] = "us"
) -> pl.Expr:
    """Expression turning a datetime column into ``Datetime(time_unit, 'UTC')``; naive means UTC."""
    if not isinstance(dtype, pl.Datetime):
        raise SchemaError(
            f"{what} column {column!r} must be a datetime, got {dtype}. "
            f"Parse it first, e.g. pl.col({column!r}).str.to_datetime()."
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
    return expr.cast(pl.Datetime(time_unit, "UTC"))


#: The instants nanosecond datetimes can hold (with a margin of a day).
NS_MIN = datetime(1677, 9, 23, tzinfo=UTC)
NS_MAX = datetime(2262, 4, 10, tzinfo=UTC)


def to_utc_datetime(value: datetime) -> datetime:
    """A Python datetime as an aware UTC instant; naive means UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)
