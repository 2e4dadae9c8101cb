"""The ``@fk.feature_view`` decorator and the frozen definition it returns.

A decorated view is a plain, callable object: defining one touches no disk and registers
nothing, so a notebook cell can be re-run freely. A :class:`~featurekit.Store` sees it
only when asked (``store.register`` / ``store.materialize`` / ``store.training_set``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, overload

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from featurekit.core import display
from featurekit.core.checks import as_checks
from featurekit.core.definitions import Aggregation, Entity, Source, check_name
from featurekit.core.errors import DefinitionError, did_you_mean
from featurekit.core.fingerprint import code_fingerprint
from featurekit.core.names import shown
from featurekit.core.timeutil import format_duration, parse_duration

#: ``leakage=`` on a view: ``"warn"`` runs the leakage lint, ``"ignore"`` opts out.
LeakageMode = Literal["warn", "ignore"]

ViewFunction = Callable[..., pl.LazyFrame | pl.DataFrame]


class FeatureView(BaseModel):
    """A versionable transformation from sources (or upstream views) to feature rows.

    Calling it runs the function (or SQL) on the frames you pass, like the plain function
    it decorates, so it can be unit-tested with a DataFrame.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    entity: Entity
    sources: tuple[Any, ...]
    fn: Any = None
    sql: str | None = None
    sql_normalized: str | None = None
    ttl: timedelta | None = None
    timestamp: str
    tags: tuple[tuple[str, str], ...] = ()
    description: str = ""
    version: str | None = None
    aggregations: tuple[Aggregation, ...] = ()
    #: ``inputs=``: declared input columns per output (lineage only; not in the fingerprint)
    column_inputs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: ``checks=``: ``fk.Check`` rules on the output; they change no data, so they stay out
    #: of the fingerprint (not in :meth:`options`) and out of dumps
    checks: tuple[Any, ...] = Field(default=(), exclude=True)
    #: ``leakage="ignore"``: no leakage lint for this view (a reviewed exception); it
    #: changes no data, so it stays out of the fingerprint and out of dumps too
    leakage: LeakageMode = Field(default="warn", exclude=True)
    #: ``entity_local=True``: each entity's rows come from its own input rows, so the view
    #: may run bucket by bucket; where rows are computed is not which rows, so it stays out
    #: of the fingerprint and out of dumps
    entity_local: bool = Field(default=False, exclude=True)

    # ---- derived, pure ------------------------------------------------------------------
    @property
    def keys(self) -> tuple[str, ...]:
        """The entity's join keys."""
        return self.entity.keys

    @property
    def inputs(self) -> dict[str, Source | FeatureView]:
        """Inputs by the name they are bound to."""
        return {s.name: s for s in self.sources}

    @property
    def created_timestamp_candidates(self) -> tuple[str, ...]:
        """Created-time column names of the inputs; the first one the output holds is used."""
        names: list[str] = []
        for src in self.sources:
            created = src.created_timestamp if isinstance(src, Source) else None
            if isinstance(src, FeatureView):
                created = next(iter(src.created_timestamp_candidates), None)
            if created and created not in names:
                names.append(created)
        return tuple(names)

    def code_fingerprint(self) -> str:
        """Hash of the code as it is now: the explicit version, the SQL, or the function."""
        if self.version is not None:
            return f"version:{self.version}"
        if self.sql_normalized is not None:
            return f"sql:{self.sql_normalized}"
        return code_fingerprint(self.fn)

    def options(self) -> dict[str, Any]:
        """Decorator arguments that change the data (part of the fingerprint)."""
        return {
            "entity": self.entity.name,
            "keys": list(self.entity.keys),
            "timestamp": self.timestamp,
            "ttl": format_duration(self.ttl),
            "inputs": [s.name for s in self.sources],
            "version": self.version,
            **(
                {"aggregations": [a.spec() for a in self.aggregations]} if self.aggregations else {}
            ),
        }

    def __call__(self, *args: Any, **kwargs: Any) -> pl.LazyFrame | pl.DataFrame:
        """Run the view on frames you pass, exactly as the store would (no store needed)."""
        if self.fn is not None and self.sql is None:
            result: pl.LazyFrame | pl.DataFrame = self.fn(*args, **kwargs)
            return result
        from featurekit.core.sqlview import run_sql

        bound = inspect.signature(_sql_signature(self)).bind(*args, **kwargs).arguments
        return run_sql(self.sql or "", {k: _lazy(v) for k, v in bound.items()})

    def __repr__(self) -> str:
        kind = "sql" if self.sql else "polars"
        return (
            f"FeatureView({self.name!r}, entity={self.entity.name!r}, keys={list(self.keys)}, "
            f"inputs={[s.name for s in self.sources]}, ttl={self.ttl}, kind={kind!r})"
        )

    def _repr_html_(self) -> str | None:
        return display.html_for(self)

    def __hash__(self) -> int:
        return hash((self.name, id(self.fn), self.sql, repr(self.options())))


def _lazy(frame: Any) -> pl.LazyFrame:
    if isinstance(frame, pl.LazyFrame):
        return frame
    return pl.DataFrame(frame).lazy()


def _sql_signature(view: FeatureView) -> Callable[..., None]:
    params = [
        inspect.Parameter(s.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for s in view.sources
    ]

    def signature_only(*args: Any, **kwargs: Any) -> None:  # pragma: no cover - never called
        return None

    signature_only.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return signature_only


@overload
def feature_view(
    fn: ViewFunction,
    *,
    entity: Entity,
    sources: Sequence[Source | FeatureView],
    ttl: str | timedelta | None = None,
    timestamp: str | None = None,
    tags: Mapping[str, str] | None = None,
    sql: str | None = None,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
    inputs: Mapping[str, Sequence[str]] | None = None,
    aggregations: Sequence[Aggregation] | None = None,
    checks: Sequence[Any] | None = None,
    leakage: LeakageMode = "warn",
    entity_local: bool = False,
) -> FeatureView: ...


@overload
def feature_view(  # type: ignore[overload-overlap]  # sql + name: the view itself
    fn: None = None,
    *,
    entity: Entity,
    sources: Sequence[Source | FeatureView],
    ttl: str | timedelta | None = None,
    timestamp: str | None = None,
    tags: Mapping[str, str] | None = None,
    sql: str,
    name: str,
    version: str | None = None,
    description: str | None = None,
    inputs: Mapping[str, Sequence[str]] | None = None,
    aggregations: Sequence[Aggregation] | None = None,
    checks: Sequence[Any] | None = None,
    leakage: LeakageMode = "warn",
    entity_local: bool = False,
) -> FeatureView: ...


@overload
def feature_view(
    fn: None = None,
    *,
    entity: Entity,
    sources: Sequence[Source | FeatureView],
    ttl: str | timedelta | None = None,
    timestamp: str | None = None,
    tags: Mapping[str, str] | None = None,
    sql: str | None = None,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
    inputs: Mapping[str, Sequence[str]] | None = None,
    aggregations: Sequence[Aggregation] | None = None,
    checks: Sequence[Any] | None = None,
    leakage: LeakageMode = "warn",
    entity_local: bool = False,
) -> Callable[[ViewFunction], FeatureView]: ...


def feature_view(
    fn: ViewFunction | None = None,
    *,
    entity: Entity,
    sources: Sequence[Source | FeatureView],
    ttl: str | timedelta | None = None,
    timestamp: str | None = None,
    tags: Mapping[str, str] | None = None,
    sql: str | None = None,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
    inputs: Mapping[str, Sequence[str]] | None = None,
    aggregations: Sequence[Aggregation] | None = None,
    checks: Sequence[Any] | None = None,
    leakage: LeakageMode = "warn",
    entity_local: bool = False,
) -> FeatureView | Callable[[ViewFunction], FeatureView]:
    """Declare a feature view from a polars function (or SQL).

    Parameters are bound to ``sources`` (or upstream views) by name. The output must hold
    the entity keys and the timestamp column (default: the first source's); every other
    column is a feature, except a source's created-timestamp column, which becomes the
    row's knowledge time.

    Example:
        >>> @fk.feature_view(entity=driver, sources=[trips], ttl="7d")
        ... def driver_stats(trips: pl.LazyFrame) -> pl.LazyFrame:
        ...     return trips.select("driver_id", "event_ts", (pl.col("fare") * 2).alias("f2"))

    ``inputs={"feature": ["fare", "trips.status"]}`` declares which input columns feed a
    feature, for column lineage where featurekit cannot trace it (it changes no data, so
    not the version either).

    ``checks=[fk.Check.not_null("fare"), ...]`` declares data-quality rules on the output
    (see :class:`~featurekit.core.checks.Check`); they are not part of the version.

    ``leakage="ignore"`` turns off the leakage lint (an event time stamped before the data
    behind it, e.g. ``dt.truncate("1d")`` without ``.dt.offset_by("1d")``) for a view whose
    stamp was reviewed; it is not part of the version either.

    ``entity_local=True`` declares that each entity's output rows depend only on that
    entity's input rows (no rank or mean across entities), so the view may run bucket by
    bucket on a cluster (``engine="ray"``, see docs/scale.md). featurekit checks the
    declaration on a sample before relying on it and refuses a false one. It changes where
    the rows are computed, not which rows, so it is not part of the version either.

    SQL views need no function body: ``fk.feature_view(name="x", entity=..., sources=[...],
    sql="SELECT ...")`` returns the view directly.
    """

    def build(func: ViewFunction | None) -> FeatureView:
        return _build_view(
            func,
            entity=entity,
            sources=sources,
            ttl=ttl,
            timestamp=timestamp,
            tags=tags,
            sql=sql,
            name=name,
            version=version,
            description=description,
            column_inputs=inputs,
            aggregations=aggregations,
            checks=checks,
            leakage=leakage,
            entity_local=entity_local,
        )

    if fn is not None:
        return build(fn)
    if sql is not None and name is not None:
        return build(None)
    return build


def _build_view(
    fn: ViewFunction | None,
    *,
    entity: Entity,
    sources: Sequence[Source | FeatureView],
    ttl: str | timedelta | None,
    timestamp: str | None,
    tags: Mapping[str, str] | None,
    sql: str | None,
    name: str | None,
    version: str | None,
    description: str | None,
    column_inputs: Mapping[str, Sequence[str]] | None = None,
    aggregations: Sequence[Aggregation] | None = None,
    checks: Sequence[Any] | None = None,
    leakage: LeakageMode = "warn",
    entity_local: bool = False,
) -> FeatureView:
    view_name = check_name(name or getattr(fn, "__name__", None), "feature view")
    if not isinstance(entity, Entity):
        raise DefinitionError(
            f"view {view_name!r}: entity must be an fk.Entity, got {type(entity).__name__}."
        )
    inputs = _check_inputs(view_name, sources)
    if fn is None and sql is None:
        raise DefinitionError(f"view {view_name!r} needs a function or sql=.")
    if fn is not None and not callable(fn):
        raise DefinitionError(f"view {view_name!r}: the decorated object is not callable.")
    ts = timestamp or inputs[0].timestamp
    doc = description if description is not None else inspect.getdoc(fn) if fn else None
    sql_normalized = None
    if sql is not None:
        sql_normalized = _check_sql(view_name, sql, inputs)
    else:
        assert fn is not None
        _check_parameters(view_name, fn, inputs)
        if version is None:
            # fail now if the source cannot be read; the fingerprint itself is taken when a
            # store resolves the view, once helpers defined later in the module exist
            code_fingerprint(fn)
    return FeatureView(
        name=view_name,
        entity=entity,
        sources=tuple(inputs),
        fn=fn,
        sql=sql,
        sql_normalized=sql_normalized,
        ttl=parse_duration(ttl, what=f"view {view_name!r} ttl"),
        timestamp=ts,
        tags=tuple(sorted((str(k), str(v)) for k, v in (tags or {}).items())),
        description=doc or "",
        version=version,
        column_inputs=_check_column_inputs(view_name, inputs, column_inputs),
        aggregations=_check_aggregations(view_name, aggregations, ttl),
        checks=as_checks(checks),
        leakage=_check_leakage_mode(view_name, leakage),
        entity_local=_check_entity_local(view_name, entity_local),
    )


def _check_entity_local(view: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise DefinitionError(
            f"view {view!r}: entity_local must be True or False, got {shown(value)}."
        )
    return value


def _check_leakage_mode(view: str, mode: object) -> LeakageMode:
    if mode not in ("warn", "ignore"):
        raise DefinitionError(
            f"view {view!r}: leakage must be 'warn' (default) or 'ignore', got {shown(mode)}."
        )
    return mode  # type: ignore[return-value]


def _check_aggregations(
    view: str, aggregations: Sequence[Aggregation] | None, ttl: object
) -> tuple[Aggregation, ...]:
    """Aggregations are checked for shape here; their columns when a store resolves them."""
    found = tuple(aggregations or ())
    for agg in found:
        if not isinstance(agg, Aggregation):
            raise DefinitionError(
                f"view {view!r}: aggregations must be fk.Aggregation objects, got "
                f"{type(agg).__name__}."
            )
    names = [a.name for a in found]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise DefinitionError(
            f"view {view!r}: aggregation names {clashes} are used twice; pass name= to tell "
            "them apart."
        )
    if found and ttl is not None:
        raise DefinitionError(
            f"view {view!r}: ttl= does not apply to aggregations (each has its own window)."
        )
    return found


def _check_column_inputs(
    view: str, inputs: list[Source | FeatureView], declared: Mapping[str, Sequence[str]] | None
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``inputs={"feature": ["col", "source.col"]}``: lineage hints, checked for shape."""
    if not declared:
        return ()
    names = [s.name for s in inputs]
    out = []
    for output, refs in dict(declared).items():
        if isinstance(refs, str) or not all(isinstance(r, str) for r in refs):
            raise DefinitionError(
                f"view {view!r}: inputs[{output!r}] must be a list of column names such as "
                f"['fare'] or ['{names[0]}.fare'], got {refs!r}."
            )
        for ref in refs:
            table = ref.rpartition(".")[0]
            if (table and table not in names) or (not table and len(names) > 1):
                raise DefinitionError(
                    f"view {view!r}: inputs[{output!r}] names {ref!r}; with inputs {names} "
                    f"write '<input>.<column>'.{did_you_mean(table, names) if table else ''}"
                )
        out.append((str(output), tuple(refs)))
    return tuple(sorted(out))


def _check_inputs(view: str, sources: Sequence[Source | FeatureView]) -> list[Source | FeatureView]:
    if isinstance(sources, Source | FeatureView):
        sources = [sources]
    inputs = list(sources or [])
    if not inputs:
        raise DefinitionError(f"view {view!r} needs at least one source in sources=[...].")
    seen: set[str] = set()
    for src in inputs:
        if not isinstance(src, Source | FeatureView):
            raise DefinitionError(
                f"view {view!r}: sources must be fk.Source or feature views, "
                f"got {type(src).__name__}."
            )
        if src.name in seen:
            raise DefinitionError(f"view {view!r} lists input {src.name!r} twice.")
        if src.name == view:
            raise DefinitionError(f"view {view!r} cannot read itself.")
        seen.add(src.name)
    return inputs


def _check_parameters(view: str, fn: ViewFunction, inputs: list[Source | FeatureView]) -> None:
    names = [s.name for s in inputs]
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError) as err:
        raise DefinitionError(
            f"view {view!r}: cannot read the function's signature: {err}"
        ) from err
    for param in params.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name not in names and param.default is inspect.Parameter.empty:
            raise DefinitionError(
                f"view {view!r}: parameter {param.name!r} is not bound to any input "
                f"(inputs are {names}).{did_you_mean(param.name, names)} Parameters bind "
                "to sources and upstream views by name."
            )


def _check_sql(view: str, sql: str, inputs: list[Source | FeatureView]) -> str:
    from featurekit.core.sqlview import parse_sql, sql_schema

    tables: dict[str, dict[str, str] | None] = {}
    for src in inputs:
        if isinstance(src, Source) and src.frame is not None:
            tables[src.name] = sql_schema(src.frame.collect_schema())
        else:
            tables[src.name] = None  # checked when a store resolves the schema
    return parse_sql(sql, view=view, tables=tables).normalized
