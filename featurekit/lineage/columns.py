"""Column-level lineage of one view definition: which input columns feed each output column.

Three ways, most trusted first:

1. ``inputs=`` declared on the decorator: taken as given (``DIRECT``, "declared").
2. SQL views: sqlglot lineage over the real schemas (:mod:`featurekit.lineage.sql`).
3. polars views: polars' own projection pushdown. Each input is handed to the view as an
   empty IO-plugin source that records the columns polars asks it for; collecting
   ``view(...).select(o)`` for one output ``o`` at a time yields exactly the input columns
   that output needs, from the optimized plan (filters, keys, group-by and window columns
   included). Columns that every row needs (those read for the keys and timestamps alone)
   are ``INDIRECT``; the rest are ``DIRECT``, and a column that keeps its name in the output
   is ``DIRECT`` too. When polars cannot push a projection down (a Python UDF, a collect in
   the view), the output honestly depends on *all inputs* (transformation ``UNKNOWN``).

Known limit: a column that both shapes rows (e.g. is filtered on) and feeds a renamed
output (``pl.col("fare") * 2`` after ``fare > 0``) is reported ``INDIRECT``; impact
analysis is unaffected, and ``inputs=`` refines it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from featurekit.core.authoring import FeatureView
from featurekit.core.errors import FeatureKitError
from featurekit.lineage.model import ColumnDep

_PROBE = "__fk_lineage_probe"
ViewColumns = dict[str, list[ColumnDep]]


def view_column_lineage(
    view: FeatureView,
    schemas: Mapping[str, pl.Schema],
    outputs: Sequence[str],
    row_columns: Sequence[str],
) -> tuple[ViewColumns, str]:
    """Output column -> its input dependencies, and the method used (``sql``/``polars-plan``).

    ``schemas`` maps each input name to its schema as the view sees it; ``row_columns`` are
    the outputs every row needs (keys, timestamps); ``outputs`` are all output columns.
    """
    if view.sql is not None:
        from featurekit.core.sqlview import sql_schema
        from featurekit.lineage.sql import sql_column_lineage

        tables = {name: sql_schema(schema) for name, schema in schemas.items()}
        found = sql_column_lineage(view.sql, view=view.name, tables=tables)
        method = "sql"
    else:
        found = _polars_lineage(view, schemas, outputs, row_columns)
        method = "polars-plan"
    declared = declared_inputs(view, schemas)
    for output, deps in declared.items():
        found[output] = deps
    return {o: found.get(o, _all_inputs(schemas, "not traced")) for o in outputs}, method


def declared_inputs(view: FeatureView, schemas: Mapping[str, pl.Schema]) -> ViewColumns:
    """``inputs=`` from the decorator as dependencies (``"col"`` or ``"input.col"``)."""
    declared: Mapping[str, Sequence[str]] = dict(getattr(view, "column_inputs", ()) or ())
    out: ViewColumns = {}
    only = next(iter(schemas)) if len(schemas) == 1 else None
    for output, refs in declared.items():
        deps = []
        for ref in refs:
            name, _, column = ref.rpartition(".")
            table = name or only
            if table is None or table not in schemas or column not in schemas[table]:
                continue  # checked (with a suggestion) when the view is declared and resolved
            deps.append(ColumnDep(table, column, "DIRECT", None, "declared by inputs="))
        out[output] = deps
    return out


def _all_inputs(schemas: Mapping[str, pl.Schema], why: str) -> list[ColumnDep]:
    return [
        ColumnDep(name, column, "UNKNOWN", None, f"all inputs ({why})")
        for name, schema in schemas.items()
        for column in schema.names()
    ]


def _polars_lineage(
    view: FeatureView,
    schemas: Mapping[str, pl.Schema],
    outputs: Sequence[str],
    row_columns: Sequence[str],
) -> ViewColumns:
    rows = _reads(view, schemas, list(row_columns))
    out: ViewColumns = {}
    for output in outputs:
        reads = _reads(view, schemas, [output])
        if reads is None or rows is None:
            out[output] = _all_inputs(schemas, "polars could not trace this output's columns")
            continue
        deps: list[ColumnDep] = []
        for name in schemas:
            for column in sorted(reads.get(name, set())):
                shaping = column in rows.get(name, set()) and column != output
                deps.append(
                    ColumnDep(
                        name,
                        column,
                        "INDIRECT" if shaping else "DIRECT",
                        None,
                        "shapes rows (key, time, filter, group or window)"
                        if shaping
                        else "read by this output (polars plan)",
                    )
                )
        if not any(d.transformation == "DIRECT" for d in deps):
            touched = [n for n in schemas if reads.get(n)] or list(schemas)
            deps.extend(
                ColumnDep(n, None, "DIRECT", None, "reads no column directly (a count or literal)")
                for n in touched
            )
        out[output] = deps
    return out


def _reads(
    view: FeatureView, schemas: Mapping[str, pl.Schema], columns: list[str]
) -> dict[str, set[str]] | None:
    """Input columns polars reads to compute ``columns`` of the view; None if it cannot tell."""
    from polars.io.plugins import register_io_source

    from featurekit.offline.compute import call_view

    log: dict[str, list[list[str] | None]] = {}

    def probe(name: str, given: pl.Schema) -> pl.LazyFrame:
        # an extra column no view reads: polars asks for no projection (None) when it needs
        # every column, so without it "all columns" and "cannot push down" look the same
        fields: dict[str, Any] = dict(given)
        fields[_PROBE] = pl.Int8
        schema = pl.Schema(fields)

        def source(
            with_columns: list[str] | None, predicate: Any, n_rows: Any, batch_size: Any
        ) -> Any:
            log.setdefault(name, []).append(None if with_columns is None else list(with_columns))
            wanted = schema if with_columns is None else {c: schema[c] for c in with_columns}
            yield pl.DataFrame(schema=wanted)

        return register_io_source(source, schema=schema)

    try:
        frames = {name: probe(name, schema) for name, schema in schemas.items()}
        call_view(view, frames).select(columns).collect()
    except (FeatureKitError, Exception):
        return None
    out: dict[str, set[str]] = {}
    for name, calls in log.items():
        found: set[str] = set()
        for call in calls:
            if call is None:
                return None
            found.update(call)
        if _PROBE in found:  # the view reads every column (e.g. pl.all()): no precision
            return None
        out[name] = found
    return out
