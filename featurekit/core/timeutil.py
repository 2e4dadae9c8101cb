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
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*(?=\d|$)")
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
