"""SQL feature views: parse and check with sqlglot, run with polars' SQL engine.

sqlglot is imported here only, and lazily, so ``import featurekit`` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from featurekit.core.errors import SqlError, did_you_mean

#: sqlglot dialect closest to polars' SQL.
DIALECT = "duckdb"


@dataclass(frozen=True)
class ParsedSql:
    """A checked SQL view: its normalized text (for fingerprints) and the tables it reads."""

    normalized: str
    tables: tuple[str, ...]


def _position(sql: str, word: str) -> tuple[int | None, int | None]:
    match = re.search(rf"\b{re.escape(word)}\b", sql)
    if not match:
        return None, None
    before = sql[: match.start()]
    return before.count("\n") + 1, match.start() - (before.rfind("\n") + 1) + 1


def parse_sql(sql: str, *, view: str, tables: Mapping[str, Mapping[str, str] | None]) -> ParsedSql:
    """Parse ``sql``; unknown tables always, unknown columns when schemas are given, are errors.

    ``tables`` maps each table the view may read to its schema (column -> SQL type), or to
    None when the schema is not known yet (checked again when the store sees the view).
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.qualify import qualify

    try:
        tree = sqlglot.parse_one(sql, read=DIALECT)
    except sqlglot.errors.ParseError as err:
        first: dict[str, Any] = err.errors[0] if err.errors else {}
        line, col = first.get("line"), first.get("col")
        raise SqlError(
            f"SQL of view {view!r} does not parse at line {line}, column {col}: "
            f"{first.get('description', err)} (near {first.get('highlight', '')!r}).",
            line=line,
            col=col,
        ) from None
    if not isinstance(tree, exp.Query):
        raise SqlError(f"SQL of view {view!r} must be a SELECT query, got {tree.key.upper()}.")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    read = sorted({t.name for t in tree.find_all(exp.Table) if t.name not in ctes})
    for table in read:
        if table not in tables:
            line, col = _position(sql, table)
            raise SqlError(
                f"SQL of view {view!r} reads table {table!r} at line {line}, column {col}, "
                f"which is not one of its sources.{did_you_mean(table, tables)} "
                "Add it to sources=[...].",
                line=line,
                col=col,
            )
    normalized = tree.sql(dialect=DIALECT, comments=False, normalize=True)
    schemas: dict[str, object] = {
        name: dict(schema) for name, schema in tables.items() if schema is not None
    }
    if len(schemas) == len(tables):
        try:
            qualify(tree.copy(), schema=schemas, validate_qualify_columns=True, dialect=DIALECT)
        except sqlglot.errors.OptimizeError as err:
            text = str(err)
            name = re.search(r"Column '([^']+)'", text)
            line, col = _position(sql, name.group(1)) if name else (None, None)
            known = [c for schema in tables.values() if schema is not None for c in schema]
            hint = did_you_mean(name.group(1), known) if name else ""
            raise SqlError(f"SQL of view {view!r}: {text}.{hint}", line=line, col=col) from None
    return ParsedSql(normalized=normalized, tables=tuple(read))


def sql_schema(schema: pl.Schema) -> dict[str, str]:
    """A polars schema as sqlglot types (only names matter for column checks)."""
    return {name: _sql_type(dtype) for name, dtype in schema.items()}


def _sql_type(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "BIGINT"
    if dtype.is_float():
        return "DOUBLE"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP"
    if dtype == pl.Boolean:
        return "BOOLEAN"
    if dtype == pl.Date:
        return "DATE"
    return "VARCHAR"


def run_sql(sql: str, frames: Mapping[str, pl.LazyFrame]) -> pl.LazyFrame:
    """Run a view's SQL over its inputs with polars' SQL engine (lazily)."""
    context = pl.SQLContext(frames=dict(frames), eager=False)
    return context.execute(sql, eager=False)


def sql_entity_local(sql: str, keys: tuple[str, ...]) -> bool:
    """Whether ``sql`` computes each entity's rows from that entity's input rows alone.

    Such a view gives the same rows when its input is split by entity keys and each part
    is run on its own, so it can run bucket by bucket (see docs/scale.md). It holds when
    every SELECT in the query is row by row (no aggregate, window, DISTINCT, LIMIT or
    join), groups by columns that include every key, or computes windows partitioned by
    columns that include every key. Anything else (a global aggregate, a rank across
    entities, a join whose rows could come from other entities) is answered False: the
    view then runs as one task, which is always correct.
    """
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read=DIALECT)
    except sqlglot.errors.ParseError:
        return False
    wanted = set(keys)

    def names(expressions: list[exp.Expression]) -> set[str]:
        return {e.name for e in expressions if isinstance(e, exp.Column)}

    for select in tree.find_all(exp.Select):
        if select.args.get("joins") or select.args.get("limit") or select.args.get("offset"):
            return False
        if select.args.get("distinct"):
            return False
        group = select.args.get("group")
        if group is not None and not wanted <= names(group.expressions):
            return False
        for window in select.find_all(exp.Window):
            if not wanted <= names(window.args.get("partition_by") or []):
                return False
        if group is None:
            outside = [
                agg
                for agg in select.find_all(exp.AggFunc)
                if not isinstance(agg.parent, exp.Window)
            ]
            if outside:  # an aggregate without GROUP BY: one row from every entity
                return False
    return True
