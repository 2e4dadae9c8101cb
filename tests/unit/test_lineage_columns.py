"""Column lineage of single views (SQL via sqlglot, polars via its plan) and the graph model."""

from __future__ import annotations

import polars as pl
import pytest

import featurekit as fk
from featurekit.lineage.columns import ColumnDep, view_column_lineage
from featurekit.lineage.graph import Edge, LineageGraph, Node, Run
from featurekit.lineage.sql import sql_column_lineage

TABLES = {
    "trips": {
        "driver_id": "BIGINT",
        "event_ts": "TIMESTAMP",
        "fare": "DOUBLE",
        "status": "VARCHAR",
    },
    "drivers": {"driver_id": "BIGINT", "rating": "DOUBLE"},
}
SCHEMA = pl.Schema(
    {
        "driver_id": pl.Int64,
        "event_ts": pl.Datetime("us", "UTC"),
        "fare": pl.Float64,
        "status": pl.String,
    }
)
driver = fk.Entity("driver", keys=["driver_id"])


def deps(
    found: dict[str, list[ColumnDep]], output: str
) -> set[tuple[str, str | None, str, str | None]]:
    return {(d.input, d.column, d.transformation, d.subtype) for d in found[output]}


def test_sql_windows_counts_literals_and_ctes() -> None:
    sql = (
        "WITH ok AS (SELECT driver_id, event_ts, fare FROM trips WHERE status = 'ok') "
        "SELECT driver_id, event_ts, fare * 2 AS f2, "
        "SUM(fare) OVER (PARTITION BY driver_id ORDER BY event_ts) AS running, "
        "1 AS one, COUNT(*) OVER (PARTITION BY driver_id) AS n FROM ok"
    )
    found = sql_column_lineage(sql, view="v", tables=TABLES)
    assert deps(found, "f2") == {
        ("trips", "fare", "DIRECT", "TRANSFORMATION"),
        ("trips", "status", "INDIRECT", "FILTER"),
    }
    assert deps(found, "running") == {
        ("trips", "fare", "DIRECT", "AGGREGATION"),
        ("trips", "driver_id", "INDIRECT", "WINDOW"),
        ("trips", "event_ts", "INDIRECT", "WINDOW"),
        ("trips", "status", "INDIRECT", "FILTER"),
    }
    assert deps(found, "one") == {
        ("trips", None, "DIRECT", "TRANSFORMATION"),
        ("trips", "status", "INDIRECT", "FILTER"),
    }
    assert deps(found, "n") == {
        ("trips", None, "DIRECT", "AGGREGATION"),
        ("trips", "driver_id", "INDIRECT", "WINDOW"),
        ("trips", "status", "INDIRECT", "FILTER"),
    }


def test_sql_group_by_and_joins() -> None:
    sql = (
        "SELECT t.driver_id, MAX(t.event_ts) AS event_ts, SUM(t.fare) AS total, "
        "AVG(d.rating) AS rating FROM trips t JOIN drivers d ON t.driver_id = d.driver_id "
        "GROUP BY t.driver_id"
    )
    found = sql_column_lineage(sql, view="v", tables=TABLES)
    assert deps(found, "total") == {
        ("trips", "fare", "DIRECT", "AGGREGATION"),
        ("trips", "driver_id", "INDIRECT", "GROUP_BY"),  # also a join key: first reason kept
        ("drivers", "driver_id", "INDIRECT", "JOIN"),
    }
    assert ("drivers", "rating", "DIRECT", "AGGREGATION") in deps(found, "rating")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT driver_id, fair FROM trips", "Column 'fair' could not be resolved"),
        (
            "SELECT driver_id FROM trips JOIN drivers ON trips.driver_id = drivers.driver_id",
            "Column 'driver_id' could not be resolved",  # ambiguous: in both tables
        ),
    ],
)
def test_sql_unknown_or_ambiguous_columns_are_errors(sql: str, message: str) -> None:
    with pytest.raises(fk.SqlError, match=message):
        sql_column_lineage(sql, view="v", tables=TABLES)


def aggregated(trips: pl.LazyFrame) -> pl.LazyFrame:
    return (
        trips.filter(pl.col("status") == "ok")
        .group_by("driver_id", pl.col("event_ts").dt.truncate("1d"))
        .agg(pl.col("fare").sum().alias("fare_sum"), pl.len().alias("n"))
    )


def windowed(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select(
        "driver_id",
        "event_ts",
        (pl.col("fare") * 2).alias("f2"),
        pl.col("fare").rolling_sum(2).over("driver_id", order_by="event_ts").alias("roll"),
    )


def everything(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.map_batches(lambda df: df)  # a Python UDF: polars cannot push projections


def polars_deps(fn: object, outputs: list[str]) -> dict[str, list[ColumnDep]]:
    src = fk.Source("trips", pl.DataFrame(schema=SCHEMA), timestamp="event_ts")
    view = fk.feature_view(entity=driver, sources=[src])(fn)  # type: ignore[call-overload]
    found, method = view_column_lineage(view, {"trips": SCHEMA}, outputs, ["driver_id", "event_ts"])
    assert method == "polars-plan"
    return found


def test_polars_aggregation_direct_and_indirect() -> None:
    found = polars_deps(aggregated, ["fare_sum", "n"])
    assert deps(found, "fare_sum") == {
        ("trips", "fare", "DIRECT", None),
        ("trips", "driver_id", "INDIRECT", None),
        ("trips", "event_ts", "INDIRECT", None),
        ("trips", "status", "INDIRECT", None),
    }
    assert ("trips", None, "DIRECT", None) in deps(found, "n")


def test_polars_window_partition_and_order_are_indirect() -> None:
    found = polars_deps(windowed, ["f2", "roll"])
    assert deps(found, "f2") == {("trips", "fare", "DIRECT", None)}
    assert deps(found, "roll") == {
        ("trips", "fare", "DIRECT", None),
        ("trips", "driver_id", "INDIRECT", None),
        ("trips", "event_ts", "INDIRECT", None),
    }


def test_polars_all_columns_is_all_inputs_not_a_guess() -> None:
    found = polars_deps(everything, ["fare"])
    assert {d.transformation for d in found["fare"]} == {"UNKNOWN"}
    assert {d.column for d in found["fare"]} == set(SCHEMA.names())


def tiny_graph() -> LineageGraph:
    nodes = [
        Node("source:t@v1", "source", "t", "v1"),
        Node("column:t@v1:a", "column", "t", "v1", "a"),
        Node("view:x@1", "view", "x", "1"),
        Node("view:x@2", "view", "x", "2", attrs={"reason": ["code"]}),
        Node("feature:x@1:f", "feature", "x", "1", "f"),
        Node("training_set:abc", "training_set", "abc", attrs={"pinned": {"view:x@1": 0}}),
        Node("model:m@1", "model", "m", "1"),
    ]
    edges = [
        Edge("source:t@v1", "column:t@v1:a", "contains"),
        Edge("source:t@v1", "view:x@1", "reads"),
        Edge("view:x@1", "feature:x@1:f", "contains"),
        Edge("column:t@v1:a", "feature:x@1:f", "derives", "DIRECT", None, None, "r1", "2026-01-01"),
        Edge("column:t@v1:a", "feature:x@1:f", "derives", "DIRECT", None, None, "r2", "2026-01-02"),
        Edge("view:x@1", "training_set:abc", "reads"),
        Edge("feature:x@1:f", "training_set:abc", "selects", description="f"),
        Edge("training_set:abc", "model:m@1", "reads"),
    ]
    runs = [Run("r1", "materialize", "2026-01-01", "job", ("source:t@v1",), ("view:x@1",))]
    return LineageGraph(nodes, edges, runs)


def test_graph_queries_and_round_trip() -> None:
    graph = tiny_graph()
    (derive,) = [e for e in graph.edges if e.kind == "derives"]
    assert derive.run_id == "r2"  # the latest run that recorded an edge is kept
    assert graph.raw_columns("model:m@1") == ["column:t@v1:a"]
    assert graph.upstream("model:m@1", depth=1) == ["training_set:abc"]
    assert graph.impact("column:t@v1:a") == {
        "view": [],
        "feature": ["feature:x@1:f"],
        "training_set": ["training_set:abc"],
        "model": ["model:m@1"],
    }
    assert graph.stale_models() == {
        "model:m@1": ["code: training_set:abc used view:x@1; view:x@2 is newer (changed: code)"]
    }
    again = LineageGraph.from_dict(graph.to_dict())
    assert again.to_dict() == graph.to_dict()
    sub = graph.subgraph("feature:x@1:f", downstream=False)
    assert sorted(sub.nodes) == ["column:t@v1:a", "feature:x@1:f", "source:t@v1", "view:x@1"]
    with pytest.raises(fk.NotFoundError, match="Did you mean 'model:m@1'"):
        graph.node("model:m@2")
