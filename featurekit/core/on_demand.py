"""On-demand features: a polars function over request data and looked-up features.

Some features only exist at request time (``fare / amount`` where ``amount`` is in the
request). An on-demand feature is a plain polars function, decorated, that receives one
DataFrame (its input features under their feature names, then its request columns) and
returns the new columns. The same :func:`apply_on_demand` runs it on a training set's
joined label frame and on an online lookup's frame, so training and serving cannot
disagree about what it computes.

Example:
    >>> @fk.on_demand(inputs=["driver_stats:avg_fare"], request=["amount"])
    ... def fare_ratio(df: pl.DataFrame) -> pl.DataFrame:
    ...     return df.select((pl.col("amount") / pl.col("avg_fare")).alias("ratio"))
    >>> store.training_set(labels, features=[fare_ratio], timestamp="ts")
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict

from featurekit.core.config import RESERVED_PREFIX
from featurekit.core.definitions import FeatureRef, check_name
from featurekit.core.errors import DefinitionError, FeatureKitError, SchemaError, UserCodeError
from featurekit.core.fingerprint import code_fingerprint

__all__ = ["OnDemandFeature", "OnDemandStep", "apply_on_demand", "on_demand", "parse_dtype"]

OnDemandFunction = Callable[[pl.DataFrame], pl.DataFrame | pl.LazyFrame]


class OnDemandFeature(BaseModel):
    """A versionable polars function over request data and looked-up features.

    Calling it runs the plain function on the frame you pass, so it can be unit-tested
    without a store.

    Attributes:
        name: how features are addressed: ``"name:output"``.
        inputs: feature references it reads (``"view:feature"``, ``"view@2:feature"``).
        request: request columns it reads, each with a dtype (``None``: taken as given).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    fn: Any
    inputs: tuple[str, ...]
    request: tuple[tuple[str, Any], ...] = ()
    description: str = ""
    version: str | None = None

    @property
    def input_refs(self) -> tuple[FeatureRef, ...]:
        """The parsed input references, in declared order."""
        return tuple(FeatureRef.parse(ref) for ref in self.inputs)

    @property
    def request_columns(self) -> tuple[str, ...]:
        """Names of the request columns the function reads."""
        return tuple(name for name, _ in self.request)

    def code_fingerprint(self) -> str:
        """Hash of the code as it is now (or of the explicit ``version=``)."""
        if self.version is not None:
            return f"version:{self.version}"
        return code_fingerprint(self.fn)

    def options(self) -> dict[str, Any]:
        """Decorator arguments that change the data (part of the fingerprint)."""
        return {
            "inputs": list(self.inputs),
            "request": [[n, None if d is None else str(d)] for n, d in self.request],
            "version": self.version,
        }

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame | pl.LazyFrame:
        """Run the plain function on ``frame`` (no store needed)."""
        result: pl.DataFrame | pl.LazyFrame = self.fn(frame)
        return result

    def __hash__(self) -> int:
        return hash((self.name, id(self.fn), self.inputs, repr(self.request), self.version))

    def __repr__(self) -> str:
        return (
            f"OnDemandFeature({self.name!r}, inputs={list(self.inputs)}, "
            f"request={list(self.request_columns)})"
        )


def on_demand(
    *,
    inputs: Sequence[str],
    request: Sequence[str] | Mapping[str, pl.DataType | type[pl.DataType]] = (),
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
) -> Callable[[OnDemandFunction], OnDemandFeature]:
    """Decorate a polars function ``(df) -> df`` as an on-demand feature.

    The function receives a DataFrame holding its ``inputs`` (named by their feature
    names) and its ``request`` columns, and returns a DataFrame of the same height whose
    columns are the new features. Declaring request dtypes (``request={"amount":
    pl.Float64}``) makes bad request data a clear error instead of a surprise.

    Example:
        >>> @fk.on_demand(inputs=["driver_stats:avg_fare"], request={"amount": pl.Float64})
        ... def fare_ratio(df):
        ...     return df.select((pl.col("amount") / pl.col("avg_fare")).alias("ratio"))
    """

    def build(fn: OnDemandFunction) -> OnDemandFeature:
        feature_name = check_name(name or getattr(fn, "__name__", None), "on-demand feature")
        if not callable(fn):
            raise DefinitionError(f"on-demand feature {feature_name!r} is not callable.")
        refs = _check_inputs(feature_name, inputs)
        spec = _check_request(feature_name, request, [r.feature for r in refs])
        if version is None:
            code_fingerprint(fn)  # fail now, not at serving time, if the code is unreadable
        doc = description if description is not None else (fn.__doc__ or "").strip()
        return OnDemandFeature(
            name=feature_name,
            fn=fn,
            inputs=tuple(str(r) for r in refs),
            request=spec,
            description=doc,
            version=version,
        )

    return build


def _check_inputs(name: str, inputs: Sequence[str]) -> list[FeatureRef]:
    if isinstance(inputs, str) or not inputs:
        raise DefinitionError(
            f"on-demand feature {name!r} needs inputs=[...] as a list of 'view:feature' "
            "references (at least one)."
        )
    refs = []
    for ref in inputs:
        if not isinstance(ref, str):
            raise DefinitionError(
                f"on-demand feature {name!r}: inputs must be 'view:feature' strings, got "
                f"{type(ref).__name__}."
            )
        parsed = FeatureRef.parse(ref)
        if parsed.feature == "*":
            raise DefinitionError(
                f"on-demand feature {name!r}: input {ref!r} must name one feature, not '*'."
            )
        refs.append(parsed)
    counts = Counter(r.feature for r in refs)
    twice = sorted(f for f, n in counts.items() if n > 1)
    if twice:
        raise DefinitionError(
            f"on-demand feature {name!r} reads feature name(s) {twice} from two views; the "
            "function sees inputs by feature name, so each must be unique. Derive one of "
            "them in its view under another name."
        )
    return refs


def _check_request(
    name: str,
    request: Sequence[str] | Mapping[str, pl.DataType | type[pl.DataType]],
    features: list[str],
) -> tuple[tuple[str, Any], ...]:
    if isinstance(request, str):
        request = [request]
    items: list[tuple[str, Any]]
    if isinstance(request, Mapping):
        items = []
        for column, dtype in request.items():
            resolved = dtype() if isinstance(dtype, type) else dtype
            if not isinstance(resolved, pl.DataType):
                raise DefinitionError(
                    f"on-demand feature {name!r}: request column {column!r} needs a polars "
                    f"dtype such as pl.Float64, got {dtype!r}."
                )
            items.append((column, resolved))
    else:
        items = [(column, None) for column in request]
    for column, _ in items:
        if not isinstance(column, str) or not column or column.startswith(RESERVED_PREFIX):
            raise DefinitionError(
                f"on-demand feature {name!r}: request column {column!r} is not a valid name."
            )
        if column in features:
            raise DefinitionError(
                f"on-demand feature {name!r}: request column {column!r} has the same name as "
                "an input feature; rename one of them."
            )
    if len({c for c, _ in items}) != len(items):
        raise DefinitionError(f"on-demand feature {name!r} lists a request column twice.")
    return tuple(items)


@dataclass(frozen=True)
class OnDemandStep:
    """One on-demand feature version applied to a frame.

    Attributes:
        feature: the definition whose function runs.
        version: its version number in the store.
        fingerprint: its fingerprint in the store.
        inputs: feature name the function sees -> column of the frame holding it.
        outputs: outputs to keep, in order.
    """

    feature: OnDemandFeature
    version: int
    fingerprint: str
    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...]


def output_names(columns: Sequence[str], steps: Sequence[OnDemandStep]) -> list[str]:
    """Column name per output: ``output``, or ``name__output`` on a clash (like views)."""
    counts = Counter(o for s in steps for o in s.outputs)
    taken = set(columns)
    return [
        f"{s.feature.name}__{o}" if counts[o] > 1 or o in taken else o
        for s in steps
        for o in s.outputs
    ]


def apply_on_demand(
    frame: pl.DataFrame, steps: Sequence[OnDemandStep], *, drop: Sequence[str] = ()
) -> pl.DataFrame:
    """Append every step's outputs to ``frame``, then drop helper columns.

    This is the one code path for on-demand values: training sets call it on the joined
    label frame, online lookups on the looked-up frame.
    """
    names = output_names(frame.columns, steps)
    added: list[pl.Series] = []
    pos = 0
    for step in steps:
        outputs = _run_step(frame, step)
        for output in step.outputs:
            added.append(outputs[output].alias(names[pos]))
            pos += 1
    out = frame.hstack(added) if added else frame
    return out.drop(list(drop)) if drop else out


def _run_step(frame: pl.DataFrame, step: OnDemandStep) -> pl.DataFrame:
    feature = step.feature
    what = f"on-demand feature {feature.name!r} (version {step.version})"
    exprs: list[pl.Expr] = [pl.col(column).alias(name) for name, column in step.inputs]
    for column, dtype in feature.request:
        if column not in frame.columns:
            raise SchemaError(
                f"{what} needs request column {column!r}, which is missing; pass it with the "
                f"labels (training sets) or the entities (online). Columns are {frame.columns}."
            )
        exprs.append(pl.col(column) if dtype is None else pl.col(column).cast(dtype, strict=True))
    try:
        args = frame.select(exprs)
    except Exception as err:
        raise SchemaError(
            f"{what}: request columns do not have the declared dtypes "
            f"({[(c, str(d)) for c, d in feature.request]}): {err}"
        ) from err
    try:
        result = feature.fn(args)
        if isinstance(result, pl.LazyFrame):
            result = result.collect()
    except FeatureKitError:
        raise
    except Exception as err:
        raise UserCodeError(f"{what} raised {type(err).__name__}: {err}") from err
    if not isinstance(result, pl.DataFrame):
        raise SchemaError(
            f"{what} returned {type(result).__name__}; it must return a polars DataFrame "
            "(e.g. df.select(...)) with one column per output."
        )
    if result.height != frame.height:
        raise SchemaError(
            f"{what} returned {result.height} rows for {frame.height} input rows; it must "
            "return one row per input row (use df.select / with_columns, not filter)."
        )
    missing = [o for o in step.outputs if o not in result.columns]
    if missing:
        raise SchemaError(
            f"{what} no longer returns {missing}; it returned {result.columns}. "
            "Its code changed without a new version?"
        )
    return result


_SIMPLE = re.compile(r"^[A-Za-z0-9]+$")
_DATETIME = re.compile(r"^Datetime\(time_unit='(ms|us|ns)', time_zone=(None|'[^']*')\)$")
_DURATION = re.compile(r"^Duration\(time_unit='(ms|us|ns)'\)$")
_LIST = re.compile(r"^List\((.*)\)$")


def parse_dtype(text: str) -> pl.DataType:
    """A polars dtype from its ``str()`` (registry records keep dtypes as text); Null if unknown."""
    if _SIMPLE.match(text):
        found = getattr(pl, text, None)
        if isinstance(found, type) and issubclass(found, pl.DataType):
            try:
                return found()
            except TypeError:
                return pl.Null()
        return pl.Null()
    if match := _DATETIME.match(text):
        zone = match.group(2)
        unit: Any = match.group(1)
        return pl.Datetime(unit, None if zone == "None" else zone.strip("'"))
    if match := _DURATION.match(text):
        du: Any = match.group(1)
        return pl.Duration(du)
    if match := _LIST.match(text):
        return pl.List(parse_dtype(match.group(1)))
    return pl.Null()
