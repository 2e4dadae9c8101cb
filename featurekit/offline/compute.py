"""Run a view: bind inputs, call user code behind one error boundary, shape its output.

Every view's stored rows have the same shape: entity keys, the event timestamp and the
optional created timestamp (both UTC ``Datetime('us')``), then the features. Rows with a
null key or event time are dropped (with a warning); exact duplicates of (keys, event
time, created time) keep the last row the view produced, which is what the
point-in-time tie-break would pick anyway; rows are sorted by (keys, event time).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from featurekit.core.authoring import FeatureView
from featurekit.core.definitions import Aggregation, Source
from featurekit.core.errors import (
    FeatureKitError,
    FeatureKitWarning,
    SchemaError,
    StorageError,
    UserCodeError,
    did_you_mean,
    is_rust_panic,
)
from featurekit.core.timeutil import UTC_US, to_utc_expr
from featurekit.kernels.aggregate import result_dtype
from featurekit.kernels.frames import in_order, last_of_runs, sort_rows
from featurekit.storage.sources import SourceSnapshot, TimeBound, scan_source


@dataclass(frozen=True)
class Window:
    """Half-open event-time window ``[start, end)``; None means unbounded."""

    start: datetime | None = None
    end: datetime | None = None

    def filter(self, column: str) -> pl.Expr | None:
        """Filter expression on a UTC timestamp column, or None when unbounded."""
        parts = []
        if self.start is not None:
            parts.append(pl.col(column) >= pl.lit(self.start).cast(UTC_US))
        if self.end is not None:
            parts.append(pl.col(column) < pl.lit(self.end).cast(UTC_US))
        if not parts:
            return None
        return pl.all_horizontal(parts)

    def bounds(self, column: str) -> list[TimeBound]:
        """The window as source scan bounds (pushed into the scan where possible)."""
        out: list[TimeBound] = []
        if self.start is not None:
            out.append((column, ">=", self.start))
        if self.end is not None:
            out.append((column, "<", self.end))
        return out


@dataclass(frozen=True)
class Layout:
    """Which output column plays which role, and the stored schema."""

    keys: tuple[str, ...]
    timestamp: str
    created_timestamp: str | None
    features: tuple[str, ...]
    schema: tuple[tuple[str, pl.DataType], ...]
    #: aggregation views: the aggregates (their names are ``features``) and the event
    #: columns stored to compute them; plain views store their features as they are
    aggregations: tuple[Aggregation, ...] = ()
    event_columns: tuple[str, ...] = ()
    feature_dtypes: tuple[tuple[str, pl.DataType], ...] = ()

    @property
    def dtypes(self) -> dict[str, str]:
        """Stored schema as text (for the registry and fingerprints)."""
        return {name: str(dtype) for name, dtype in self.schema}

    @property
    def stored_values(self) -> tuple[str, ...]:
        """Columns stored besides keys and timestamps."""
        return self.event_columns if self.aggregations else self.features

    @property
    def columns(self) -> list[str]:
        """Stored column order."""
        created = [self.created_timestamp] if self.created_timestamp else []
        return [*self.keys, self.timestamp, *created, *self.stored_values]


def describe(view: FeatureView, version: int | None) -> str:
    """``view 'x' (version 3)`` for messages."""
    return f"view {view.name!r}" + (f" (version {version})" if version else "")


def call_view(
    view: FeatureView, inputs: Mapping[str, pl.LazyFrame], version: int | None = None
) -> pl.LazyFrame:
    """Call the user's function or SQL; any failure becomes a :class:`UserCodeError`."""
    if view.sql is not None:
        from featurekit.core.sqlview import run_sql

        try:
            return run_sql(view.sql, inputs)
        except Exception as err:
            raise UserCodeError(f"SQL of {describe(view, version)} failed: {err}") from err
    try:
        result = view.fn(**{k: v for k, v in inputs.items() if k in _params(view)})
    except FeatureKitError:
        raise
    except Exception as err:
        raise UserCodeError(
            f"{describe(view, version)} raised {type(err).__name__}: {err}"
        ) from err
    except BaseException as err:  # a view that collects its inputs may meet a reader panic
        if not is_rust_panic(err):
            raise
        raise reader_panic(view, version, err) from err
    if isinstance(result, pl.DataFrame):
        return result.lazy()
    if isinstance(result, pl.LazyFrame):
        return result
    raise SchemaError(
        f"{describe(view, version)} returned {type(result).__name__}; a view must return a "
        "polars LazyFrame or DataFrame."
    )


def _params(view: FeatureView) -> set[str]:
    params = inspect.signature(view.fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return {s.name for s in view.sources}
    return set(params)


def output_layout(view: FeatureView, schema: pl.Schema, version: int | None = None) -> Layout:
    """Check the output schema and name each column's role."""
    what = describe(view, version)
    names = schema.names()
    for key in view.keys:
        if key not in schema:
            raise SchemaError(
                f"{what} output has no key column {key!r} of entity {view.entity.name!r}; "
                f"output columns are {names}."
            )
        dtype = schema[key]
        if not (
            dtype.is_integer() or dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
        ):
            raise SchemaError(
                f"{what}: key column {key!r} is {dtype}; keys must be integers or strings. "
                f"Cast it, e.g. pl.col({key!r}).cast(pl.Int64)."
            )
    if view.timestamp not in schema:
        raise SchemaError(
            f"{what} output has no timestamp column {view.timestamp!r}; output columns are "
            f"{names}. Keep it in the output or pass timestamp= to the decorator."
        )
    to_utc_expr(view.timestamp, schema[view.timestamp], what=f"{what} timestamp")
    created = next((c for c in view.created_timestamp_candidates if c in schema), None)
    if created is not None:
        to_utc_expr(created, schema[created], what=f"{what} created timestamp")
    taken = {*view.keys, view.timestamp, created}
    values = tuple(n for n in names if n not in taken)
    for column in values:
        if column.startswith("__fk_"):
            raise SchemaError(f"{what}: column {column!r} uses the reserved prefix '__fk_'.")
    stored = {n: schema[n] for n in names}
    stored[view.timestamp] = UTC_US
    if created:
        stored[created] = UTC_US
    specs = _aggregation_specs(view, schema, what)
    if specs:
        used = sorted({s.column for s in specs})
        values = tuple(c for c in used if c not in taken)
        features = tuple(s.name for s in specs)
        feature_dtypes = tuple((s.name, result_dtype(s.function, schema[s.column])) for s in specs)
    else:
        if not values:
            raise SchemaError(f"{what} output has no feature columns besides keys and timestamps.")
        features = values
        feature_dtypes = tuple((f, stored[f]) for f in features)
    layout_cols = [*view.keys, view.timestamp, *([created] if created else []), *values]
    return Layout(
        keys=view.keys,
        timestamp=view.timestamp,
        created_timestamp=created,
        features=features,
        schema=tuple((n, stored[n]) for n in layout_cols),
        aggregations=specs,
        event_columns=values if specs else (),
        feature_dtypes=feature_dtypes,
    )


_NUMERIC_ONLY = {"sum", "mean", "stddev"}
_WIDER_THAN_INT64 = (pl.UInt64, pl.Int128, pl.UInt128)


def _aggregation_specs(view: FeatureView, schema: pl.Schema, what: str) -> tuple[Aggregation, ...]:
    """Check each aggregation against the output schema."""
    specs = []
    for agg in view.aggregations:
        if agg.column not in schema:
            raise SchemaError(
                f"{what}: aggregation {agg.name!r} reads column {agg.column!r}, which the view "
                f"does not output.{did_you_mean(agg.column, schema.names())}"
            )
        dtype = schema[agg.column]
        if agg.function in _NUMERIC_ONLY and not (dtype.is_numeric() or dtype == pl.Boolean):
            raise SchemaError(
                f"{what}: aggregation {agg.name!r} needs a numeric column, but {agg.column!r} "
                f"is {dtype}. Use count, min, max or last, or cast the column."
            )
        if agg.function in _NUMERIC_ONLY and dtype in _WIDER_THAN_INT64:
            # Integer sums are exact Int64 prefix sums, and values at or above 2**63 fit
            # neither those nor a Float64 exactly: refuse the schema before any commit
            # rather than fail (or round) on whichever value first crosses the line.
            raise SchemaError(
                f"{what}: aggregation {agg.name!r} cannot {agg.function} {agg.column!r}, "
                f"which is {dtype}: its values may not fit Int64. Cast the column in the "
                f"view: pl.col({agg.column!r}).cast(pl.Int64) when every value is below "
                f"2**63, or .cast(pl.Float64) to accept rounding."
            )
        specs.append(agg)
    return tuple(specs)


def shaped(lf: pl.LazyFrame, layout: Layout) -> pl.LazyFrame:
    """Output in stored order with UTC timestamps."""
    exprs: list[pl.Expr] = [pl.col(k) for k in layout.keys]
    schema = lf.collect_schema()
    for col in (layout.timestamp, layout.created_timestamp):
        if col is not None:
            exprs.append(to_utc_expr(col, schema[col], what=col).alias(col))
    exprs.extend(pl.col(f) for f in layout.stored_values)
    return lf.select(exprs)


def view_inputs(
    view: FeatureView,
    window: Window,
    upstream_rows: Mapping[str, tuple[pl.LazyFrame, Layout]],
    snapshots: Mapping[str, SourceSnapshot] | None = None,
) -> dict[str, pl.LazyFrame]:
    """Input frames for a run, each limited to the window by its event time.

    A raw source is read from its snapshot in ``snapshots`` when there is one, so every
    question a run asks of it sees the same rows.
    """
    frames: dict[str, pl.LazyFrame] = {}
    for src in view.sources:
        if isinstance(src, Source):
            pinned = (snapshots or {}).get(src.name, src)
            frame, column = scan_source(pinned, bounds=window.bounds(src.timestamp)), src.timestamp
        else:
            frame, layout = upstream_rows[src.name]
            column = layout.timestamp
        condition = window.filter(column)
        frames[src.name] = frame.filter(condition) if condition is not None else frame
    return frames


def collect_output(
    view: FeatureView, lf: pl.LazyFrame, layout: Layout, version: int | None = None
) -> pl.DataFrame:
    """A view's output as it produced it, in ``layout``'s shape; its failures named as the
    view's (or its inputs'). Checks see it so, before :func:`tidy_rows` resolves the
    duplicates they must report."""
    try:
        return shaped(lf, layout).collect()
    except FeatureKitError:
        raise
    except Exception as err:
        what = describe(view, version)
        raise UserCodeError(f"{what} failed while computing: {type(err).__name__}: {err}") from err
    except BaseException as err:  # Rust panics derive from BaseException
        if not is_rust_panic(err):
            raise
        raise reader_panic(view, version, err) from err


def reader_panic(view: FeatureView, version: int | None, err: BaseException) -> StorageError:
    """A Rust panic while a view's inputs were read, as a StorageError naming the inputs.

    Readers panic on files they cannot make sense of (a data file garbled in place, at
    its recorded size, passes the checks made before the scan), so the inputs are what to
    look at, not the view's code.
    """
    inputs = ", ".join(
        f"{'source' if isinstance(src, Source) else 'view'} {src.name!r}" for src in view.sources
    )
    lines = str(err).strip().splitlines()
    detail = lines[0] if lines else type(err).__name__
    return StorageError(
        f"{describe(view, version)} failed while reading its inputs ({inputs}): the reader "
        f"panicked ({detail}). A file of one of them was probably damaged or changed "
        "outside featurekit: check it, or restore it from a backup."
    )


def tidy_rows(
    frame: pl.DataFrame, layout: Layout, what: str, lead: str | None = None
) -> pl.DataFrame:
    """Drop rows that can never match, keep the last of exact duplicates, sort by key/time.

    ``lead`` (a bucket column, see :func:`~featurekit.kernels.frames.sort_rows`) leads the
    order when the rows need sorting; rows already in key order are left so.
    """
    required = [*layout.keys, layout.timestamp]
    kept = frame.drop_nulls(required)
    if kept.height < frame.height:
        warnings.warn(
            f"{what}: dropped {frame.height - kept.height} row(s) with a null key or event time.",
            FeatureKitWarning,
            stacklevel=3,
        )
    identity = [*required, *([layout.created_timestamp] if layout.created_timestamp else [])]
    unique = not layout.aggregations  # events (aggregation views) all count
    order = [*([lead] if lead else []), *identity]
    if not in_order(kept, order, strict=False):
        if lead is None or not in_order(kept, identity, strict=False):
            keys, ts, created = list(layout.keys), layout.timestamp, layout.created_timestamp
            return sort_rows(kept, keys, ts, created, unique=unique, lead=lead)
        order = identity  # in key order already: the writer gathers each bucket, not a sort
    if unique and not in_order(kept, order, strict=True):
        kept = kept.filter(last_of_runs(identity))
    return kept


def empty_frame(schema: Mapping[str, Any]) -> pl.LazyFrame:
    """A zero-row frame with a schema: used to learn a view's output schema cheaply."""
    return pl.LazyFrame(schema=dict(schema))
