"""Which label column dtypes a training set can store and rebuild exactly.

A training set stores its labels (as a Delta table, their schema as Arrow) and must
rebuild them bit for bit, forever. A label column whose values have no stable stored form
would make a set that can be built once and never rebuilt, so it is refused when the set
is built, with the column named, rather than when someone rebuilds it.

Accepted: integers (signed and unsigned, up to 64 bits), floats, booleans, strings,
binary, Date, Datetime, Duration, Time, Decimal, Null, Categorical and Enum, and List,
Array and Struct of those. Refused: Object (arbitrary Python objects) and 128-bit
integers (Arrow has none), also inside nested types.
"""

from __future__ import annotations

import polars as pl
from polars.datatypes import DataTypeClass

from featurekit.core.errors import SchemaError

_KEPT = (
    pl.Boolean,
    pl.String,
    pl.Binary,
    pl.Date,
    pl.Time,
    pl.Null,
    pl.Datetime,
    pl.Duration,
    pl.Categorical,
    pl.Enum,
)


def check_label_columns(labels: pl.DataFrame) -> None:
    """Raise :class:`SchemaError` naming the first label column a training set cannot keep.

    Example:
        >>> check_label_columns(pl.DataFrame({"driver_id": [1], "y": [object()]}))
        Traceback (most recent call last):
        featurekit.core.errors.SchemaError: label column 'y' has dtype Object: ...
    """
    for name, dtype in labels.schema.items():
        reason = _unkeepable(dtype)
        if reason is not None:
            raise SchemaError(
                f"label column {name!r} has dtype {dtype}: {reason}, so a training set "
                f"built from these labels could not be stored and rebuilt exactly. {_fix(name, dtype)}"
            )


def _unkeepable(dtype: pl.DataType | DataTypeClass) -> str | None:
    """Why a label column of ``dtype`` cannot be kept, or None when it can."""
    dtype = dtype() if isinstance(dtype, type) else dtype
    if dtype == pl.Object:
        return "arbitrary Python objects have no stable stored form"
    if dtype in (pl.Int128, pl.UInt128):
        return "Arrow, which stores the labels, has no 128-bit integers"
    if isinstance(dtype, pl.List | pl.Array):
        return _inner(_unkeepable(dtype.inner))
    if isinstance(dtype, pl.Struct):
        for field in dtype.fields:
            reason = _unkeepable(field.dtype)
            if reason is not None:
                return f"its field {field.name!r}: {reason}"
        return None
    if dtype.is_numeric() or isinstance(dtype, _KEPT):
        return None
    return "featurekit does not know how to store it"


def _inner(reason: str | None) -> str | None:
    return None if reason is None else f"its items: {reason}"


def _fix(name: str, dtype: pl.DataType) -> str:
    if dtype in (pl.Int128, pl.UInt128):
        return f"Cast it first, e.g. pl.col({name!r}).cast(pl.Decimal(38, 0)) or .cast(pl.String)."
    return "Convert it to a plain dtype first (e.g. String), or leave it out of the labels."
