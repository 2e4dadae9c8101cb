"""Column lineage of SQL views with sqlglot (imported lazily: ``import featurekit`` stays light).

Per output column, :func:`sqlglot.lineage.lineage` runs over the real input schemas with
column validation on, so an unknown or ambiguous column is a :class:`~featurekit.SqlError`,
never a guess. On top of what sqlglot reports:

- a column referenced only inside a window's ``PARTITION BY``/``ORDER BY`` is ``INDIRECT``
  (subtype ``WINDOW``); inside an aggregate it is ``DIRECT`` (``AGGREGATION``); a bare
  column is ``IDENTITY``, anything else ``TRANSFORMATION``;
- an output that reads no column (``COUNT(*)``, a literal) is attributed to the tables its
  ``FROM`` reads (a dataset-level dependency);
- columns in ``WHERE``, ``GROUP BY``, ``HAVING``, ``QUALIFY`` and join conditions of any
  scope (CTEs and subqueries included) shape every output row: ``INDIRECT`` dependencies
  (``FILTER``, ``GROUP_BY``, ``JOIN``) of every output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from featurekit.core.errors import SqlError
from featurekit.lineage.model import ColumnDep, strongest

DIALECT = "duckdb"
_WHY = {"FILTER": "filters rows", "GROUP_BY": "groups rows", "JOIN": "joins rows"}


def sql_column_lineage(
    sql: str, *, view: str, tables: Mapping[str, Mapping[str, str]]
) -> dict[str, list[ColumnDep]]:
    """Output column -> the input (table, column) dependencies, raw tables only."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.lineage import lineage
    from sqlglot.optimizer.qualify import qualify
    from sqlglot.optimizer.scope import build_scope

    schema: dict[str, object] = {name: dict(cols) for name, cols in tables.items()}
    folded = {t: {c.lower(): c for c in cols} for t, cols in tables.items()}
    real_table = {t.lower(): t for t in schema}
    try:
        tree = sqlglot.parse_one(sql, read=DIALECT)
        qualified = qualify(
            tree, schema=schema, dialect=DIALECT, validate_qualify_columns=True, identify=False
        )
        nodes = lineage(None, qualified, schema, dialect=DIALECT, validate_qualify_columns=True)
        root = build_scope(qualified)
    except sqlglot.errors.SqlglotError as err:
        raise SqlError(f"column lineage of SQL view {view!r}: {err}") from None
    if root is None:
        raise SqlError(f"column lineage of SQL view {view!r}: the SQL is not a query.")

    def raw(table: str, column: str) -> tuple[str, str]:
        name = real_table.get(table.lower(), table)
        return name, folded.get(name, {}).get(column.lower(), column)

    shaping = _shaping_columns(root, exp, raw)
    out: dict[str, list[ColumnDep]] = {}
    for output, node in nodes.items():
        deps: dict[tuple[str, str | None], ColumnDep] = {}
        for leaf, transformation, subtype in _leaves(node, exp):
            table = leaf.source.name if isinstance(leaf.source, exp.Table) else ""
            key = raw(table, leaf.name.split(".")[-1])
            dep = ColumnDep(key[0], key[1], transformation, subtype, "sqlglot lineage")
            deps[(key[0], key[1])] = strongest(deps.get((key[0], key[1])), dep)
        if not any(d.transformation == "DIRECT" for d in deps.values()):
            expression = node.expression.this if isinstance(node.expression, exp.Alias) else None
            what = expression.sql(dialect=DIALECT) if expression is not None else output
            for table in _from_tables(root, exp):
                name = real_table.get(table.lower(), table)
                deps[(name, None)] = ColumnDep(
                    name, None, "DIRECT", "AGGREGATION" if "(" in what else "TRANSFORMATION", what
                )
        for dep in shaping:
            key2 = (dep.input, dep.column)
            deps[key2] = strongest(deps.get(key2), dep)
        real_output = output
        out[real_output] = sorted(deps.values(), key=lambda d: (d.input, d.column or ""))
    return out


def _leaves(node: Any, exp: Any) -> list[tuple[Any, str, str]]:
    """(leaf node, DIRECT/INDIRECT, subtype) for every raw column under ``node``."""
    found: list[tuple[Any, str, str]] = []

    def walk(current: Any, path: list[tuple[str, str]]) -> None:
        if not current.downstream:
            if isinstance(current.expression, exp.Table):
                found.append((current, *_combine(path)))
            return
        for child in current.downstream:
            walk(child, [*path, _role(current.expression, child.name, exp)])

    walk(node, [])
    return found


def _combine(path: list[tuple[str, str]]) -> tuple[str, str]:
    """A chain of uses through CTEs/subqueries: DIRECT only if every step is."""
    indirect = [sub for kind, sub in path if kind == "INDIRECT"]
    if indirect:
        return "INDIRECT", indirect[0]
    subs = {sub for _, sub in path}
    if "AGGREGATION" in subs:
        return "DIRECT", "AGGREGATION"
    return "DIRECT", "IDENTITY" if subs <= {"IDENTITY"} else "TRANSFORMATION"


def _role(expression: Any, child: str, exp: Any) -> tuple[str, str]:
    """How ``expression`` (a projection) uses the column named ``child`` (``table.col``)."""
    body = expression.this if isinstance(expression, exp.Alias) else expression
    if isinstance(expression, exp.Table):
        return "DIRECT", "IDENTITY"
    refs = [c for c in body.find_all(exp.Column) if _ref_name(c) == child.lower()]
    if isinstance(body, exp.Column):
        return "DIRECT", "IDENTITY"
    roles = [_column_role(c, body, exp) for c in refs] or [("DIRECT", "TRANSFORMATION")]
    direct = [r for r in roles if r[0] == "DIRECT"]
    return direct[0] if direct else roles[0]


def _ref_name(column: Any) -> str:
    table = column.table
    return f"{table}.{column.name}".lower() if table else str(column.name).lower()


def _column_role(column: Any, body: Any, exp: Any) -> tuple[str, str]:
    node = column
    while node is not None:
        if isinstance(node, exp.AggFunc):
            return "DIRECT", "AGGREGATION"
        if node is body:
            break
        parent = node.parent
        if isinstance(parent, exp.Window) and node.arg_key in ("partition_by", "order"):
            return "INDIRECT", "WINDOW"
        if isinstance(parent, exp.WindowSpec):
            return "INDIRECT", "WINDOW"
        node = parent
    return "DIRECT", "TRANSFORMATION"


def _from_tables(root: Any, exp: Any) -> list[str]:
    """Raw tables the top-level query reads (through CTEs, subqueries and UNION branches)."""
    found = _scope_tables(root, exp)
    for branch in getattr(root, "union_scopes", None) or []:
        found |= set(_from_tables(branch, exp))
    return sorted(found)


def _scope_tables(scope: Any, exp: Any) -> set[str]:
    found: set[str] = set()
    for source in scope.sources.values():
        if isinstance(source, exp.Table):
            found.add(source.name)
        else:
            found |= _scope_tables(source, exp)
    return found


def _shaping_columns(root: Any, exp: Any, raw: Any) -> list[ColumnDep]:
    """INDIRECT dependencies from filters, grouping and joins in every scope."""
    deps: dict[tuple[str, str | None], ColumnDep] = {}
    clauses = [("where", "FILTER"), ("group", "GROUP_BY"), ("having", "FILTER")]
    clauses.append(("qualify", "FILTER"))
    for scope in root.traverse():
        select = scope.expression
        if not isinstance(select, exp.Select):
            continue
        parts: list[tuple[Any, str]] = [
            (select.args[key], sub) for key, sub in clauses if select.args.get(key) is not None
        ]
        parts += [
            (j.args["on"], "JOIN") for j in select.args.get("joins") or [] if j.args.get("on")
        ]
        for clause, subtype in parts:
            for column in clause.find_all(exp.Column):
                for table, name in _resolve(scope, column.table, column.name, exp):
                    key = raw(table, name)
                    dep = ColumnDep(key[0], key[1], "INDIRECT", subtype, _WHY[subtype])
                    deps.setdefault((key[0], key[1]), dep)
    return list(deps.values())


def _resolve(scope: Any, table: str, column: str, exp: Any) -> set[tuple[str, str]]:
    """Raw (table, column) pairs a qualified column of ``scope`` reads."""
    source = scope.sources.get(table)
    if source is None:
        return set()
    if isinstance(source, exp.Table):
        return {(source.name, column)}
    found: set[tuple[str, str]] = set()
    for projection in source.expression.selects if hasattr(source.expression, "selects") else []:
        if projection.alias_or_name.lower() != column.lower():
            continue
        for ref in projection.find_all(exp.Column):
            found |= _resolve(source, ref.table, ref.name, exp)
    return found
