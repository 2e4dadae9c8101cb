"""Entities, sources and feature references: frozen, validated, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from featurekit.core.config import RESERVED_PREFIX
from featurekit.core.errors import DefinitionError, did_you_mean
from featurekit.core.names import MAX_NAME_LENGTH, NameKind, is_valid_name, shown
from featurekit.core.redact import redact_url

SourceKind = Literal["parquet", "csv", "delta", "frame"]


def check_name(name: object, what: str) -> str:
    """Names become folder names and SQL table names; see :mod:`featurekit.core.names`."""
    kind = what if what in _KINDS else "view"
    if is_valid_name(name, kind):  # type: ignore[arg-type]
        return name  # type: ignore[return-value]
    raise DefinitionError(
        f"{what} name {shown(name)} is not valid: use letters, digits and underscores, "
        f"starting with a letter (at most {MAX_NAME_LENGTH} characters, and not the reserved "
        f"prefix {RESERVED_PREFIX!r})."
    )


_KINDS = frozenset(get_args(NameKind))


def _validation_message(what: str, err: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in err.errors()]
    return f"{what} is not valid: " + "; ".join(parts)


class Entity(BaseModel):
    """What features describe, with its join keys.

    Example:
        >>> driver = fk.Entity("driver", keys=["driver_id"])
    """

    model_config = ConfigDict(frozen=True)

    name: str
    keys: tuple[str, ...]
    description: str = ""

    def __init__(self, name: str, keys: Sequence[str] | str, description: str = "") -> None:
        check_name(name, "entity")
        key_list = [keys] if isinstance(keys, str) else list(keys)
        if not key_list:
            raise DefinitionError(f"entity {name!r} needs at least one key column.")
        if len(set(key_list)) != len(key_list):
            raise DefinitionError(f"entity {name!r} lists a key twice: {key_list}.")
        for key in key_list:
            if not isinstance(key, str) or not key or key.startswith(RESERVED_PREFIX):
                raise DefinitionError(f"entity {name!r} has an invalid key column {key!r}.")
        try:
            super().__init__(name=name, keys=tuple(key_list), description=description)
        except ValidationError as err:
            raise DefinitionError(_validation_message(f"entity {name!r}", err)) from None


class Source(BaseModel):
    """Raw data with an event-time column.

    ``data`` is a parquet or CSV path (globs allowed) or a list of them, a Delta table
    folder or URI, or an in-memory polars/pyarrow frame. ``created_timestamp`` names the column that says when a
    row became known; with it, late rows can never leak into earlier labels.

    Example:
        >>> trips = fk.Source("trips", "data/trips.parquet", timestamp="event_ts",
        ...                   created_timestamp="ingested_at")
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    location: str | tuple[str, ...] | None
    frame: Any = None
    timestamp: str
    created_timestamp: str | None = None
    kind: SourceKind
    storage_options: tuple[tuple[str, str], ...] = ()
    description: str = ""

    def __init__(
        self,
        name: str,
        data: str | Path | Sequence[str | Path] | pl.DataFrame | pl.LazyFrame | Any,
        *,
        timestamp: str,
        created_timestamp: str | None = None,
        kind: SourceKind | None = None,
        storage_options: Mapping[str, str] | None = None,
        description: str = "",
    ) -> None:
        check_name(name, "source")
        location, frame = _split_data(name, data)
        resolved = kind or _guess_kind(name, location)
        if resolved == "frame" and frame is None:
            raise DefinitionError(f"source {name!r}: kind='frame' needs an in-memory frame.")
        if frame is not None:
            _check_frame_columns(name, frame, timestamp, created_timestamp)
        try:
            super().__init__(
                name=name,
                location=location,
                frame=frame,
                timestamp=timestamp,
                created_timestamp=created_timestamp,
                kind=resolved,
                storage_options=tuple(sorted((storage_options or {}).items())),
                description=description,
            )
        except ValidationError as err:
            raise DefinitionError(_validation_message(f"source {name!r}", err)) from None

    @field_validator("timestamp")
    @classmethod
    def _timestamp_named(cls, value: str) -> str:
        if not value:
            raise ValueError("timestamp column name is empty")
        return value

    def identity(self) -> dict[str, Any]:
        """What identifies this source in a fingerprint: name, kind and location.

        The location is credential-free (:func:`~featurekit.core.redact.redact_url`): the
        identity is stored in registry records and shown in lineage, and a rotated token
        is not a new data source. Plain paths are unchanged.
        """
        return {
            "name": self.name,
            "kind": self.kind,
            "location": _shown_location(self.location),
            "timestamp": self.timestamp,
            "created_timestamp": self.created_timestamp,
        }

    def __repr__(self) -> str:
        where = _shown_location(self.location)
        where = where if where is not None else "<in-memory frame>"
        return f"Source({self.name!r}, {where!r}, timestamp={self.timestamp!r})"

    def __str__(self) -> str:  # pydantic's default lists every field, storage_options too
        return repr(self)


def _shown_location(location: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
    if isinstance(location, tuple):
        return tuple(redact_url(p) for p in location)
    return None if location is None else redact_url(location)


def _split_data(name: str, data: Any) -> tuple[str | tuple[str, ...] | None, pl.LazyFrame | None]:
    if isinstance(data, str | Path):
        return str(data), None
    if isinstance(data, list | tuple) and data and all(isinstance(d, str | Path) for d in data):
        return tuple(str(d) for d in data), None
    if isinstance(data, pl.DataFrame):
        return None, data.lazy()
    if isinstance(data, pl.LazyFrame):
        return None, data
    if hasattr(data, "__arrow_c_stream__") or type(data).__module__.startswith("pyarrow"):
        try:
            converted = pl.DataFrame(data)
        except Exception as err:  # pragma: no cover - depends on the foreign object
            raise DefinitionError(
                f"source {name!r}: cannot read {type(data).__name__}: {err}"
            ) from err
        return None, converted.lazy()
    raise DefinitionError(
        f"source {name!r}: data must be a path, a URI, or a polars/pyarrow frame, "
        f"got {type(data).__name__}."
    )


def _guess_kind(name: str, location: str | tuple[str, ...] | None) -> SourceKind:
    if location is None:
        return "frame"
    if isinstance(location, tuple):
        kinds = {_guess_kind(name, one) for one in location}
        if len(kinds) != 1 or kinds & {"delta"}:
            raise DefinitionError(
                f"source {name!r}: a list of paths must be all parquet or all CSV files, "
                f"got {sorted(kinds)}."
            )
        return kinds.pop()
    lowered = location.lower().rstrip("/")
    if lowered.endswith((".parquet", ".pq")) or lowered.endswith("*.parquet"):
        return "parquet"
    if lowered.endswith((".csv", ".csv.gz", ".tsv")):
        return "csv"
    if "://" in location or Path(location).is_dir() or not Path(location).suffix:
        return "delta"
    raise DefinitionError(
        f"source {name!r}: cannot tell the format of {location!r}; "
        "pass kind='parquet', 'csv' or 'delta'."
    )


def _check_frame_columns(
    name: str, frame: pl.LazyFrame, timestamp: str, created: str | None
) -> None:
    columns = frame.collect_schema().names()
    for col, role in ((timestamp, "timestamp"), (created, "created_timestamp")):
        if col is not None and col not in columns:
            raise DefinitionError(
                f"source {name!r}: {role} column {col!r} is not in the frame; "
                f"columns are {columns}."
            )


class FeatureRef(BaseModel):
    """A parsed feature reference: ``view:feature``, ``view@3:feature`` or ``view:*``."""

    model_config = ConfigDict(frozen=True)

    view: str
    version: int | None
    feature: str

    @classmethod
    def parse(cls, text: str) -> FeatureRef:
        """Parse ``"view:feature"`` / ``"view@3:feature"``; errors show the accepted forms."""
        match = re.fullmatch(r"\s*([A-Za-z_]\w*)(?:@(\d+))?:(\*|[^:@\s]+)\s*", text)
        if not match:
            raise DefinitionError(
                f"feature reference {text!r} does not parse; use 'view:feature', "
                "'view@3:feature' (pinned version) or 'view:*'."
            )
        version = int(match.group(2)) if match.group(2) else None
        if version is not None and version < 1:
            raise DefinitionError(f"feature reference {text!r}: versions start at 1.")
        return cls(view=match.group(1), version=version, feature=match.group(3))

    def __str__(self) -> str:
        pin = f"@{self.version}" if self.version is not None else ""
        return f"{self.view}{pin}:{self.feature}"


AGGREGATE_FUNCTIONS = ("count", "sum", "mean", "min", "max", "last", "stddev")


class Aggregation(BaseModel):
    """A windowed aggregate of one column, evaluated exactly at each label's own time.

    For a label at t it covers the entity's events with ``t - window < event_ts <= t``
    (``window=None``: all events up to t) that were known by t. Nulls are ignored, like
    SQL aggregates; with no events, ``count`` is 0 and the others are null.

    Example:
        >>> fk.Aggregation("fare", "sum", window="7d")          # feature fare_sum_7d
        >>> fk.Aggregation("fare", "max", window="7d", name="max_fare_7d")
    """

    model_config = ConfigDict(frozen=True)

    column: str
    function: str
    window: timedelta | None
    name: str

    def __init__(
        self,
        column: str,
        function: str,
        window: str | timedelta | None = None,
        name: str | None = None,
    ) -> None:
        from featurekit.core.timeutil import duration_label, parse_duration

        if function not in AGGREGATE_FUNCTIONS:
            raise DefinitionError(
                f"aggregation of {column!r}: unknown function {function!r}.{did_you_mean(function, AGGREGATE_FUNCTIONS)} "
                f"Accepted: {', '.join(AGGREGATE_FUNCTIONS)}."
            )
        if not isinstance(column, str) or not column:
            raise DefinitionError(f"aggregation column must be a column name, got {column!r}.")
        span = parse_duration(window, what=f"window of {column} {function}")
        label = "lifetime" if span is None else duration_label(span)
        super().__init__(
            column=column,
            function=function,
            window=span,
            name=name or f"{column}_{function}_{label}",
        )

    def spec(self) -> dict[str, object]:
        """Canonical form, part of the view's fingerprint."""
        micros = None if self.window is None else int(self.window / timedelta(microseconds=1))
        return {
            "column": self.column,
            "function": self.function,
            "window_us": micros,
            "name": self.name,
        }
