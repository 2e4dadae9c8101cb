"""Lineage recorded through the store: raw events → SQL view → polars view → aggregation view
→ training set → two models, with exact column-level edges, queries and bad input."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import polars as pl
import pytest
from conftest import at
from typer.testing import CliRunner

import featurekit as fk
from featurekit.cli import app

driver = fk.Entity("driver", keys=["driver_id"])


def events_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "driver_id": [1, 1, 2, 2, 1],
            "event_ts": [at(0), at(5), at(1), at(30), at(26)],
            "ingested_at": [at(0.1), at(5.1), at(1.1), at(30.1), at(26.1)],
            "fare": [10.0, 20.0, 30.0, 40.0, 50.0],
            "status": ["ok", "ok", "cancelled", "ok", "ok"],
            "city": ["a", "a", "b", "b", "a"],
        }
    )


def events_source(folder: Path) -> fk.Source:
    return fk.Source(
        "events", folder / "events.parquet", timestamp="event_ts", created_timestamp="ingested_at"
    )


CLEAN_SQL = (
    "SELECT driver_id, event_ts, ingested_at, fare, fare * 0.1 AS tip, "
    "SUM(fare) OVER (PARTITION BY driver_id ORDER BY event_ts) AS running "
    "FROM events WHERE status = 'ok'"
)


def enriched(clean: pl.LazyFrame) -> pl.LazyFrame:
    return clean.select(
        "driver_id", "event_ts", "ingested_at", (pl.col("fare") + pl.col("tip")).alias("total")
    )


def daily(enriched: pl.LazyFrame) -> pl.LazyFrame:
    return enriched.group_by("driver_id", pl.col("event_ts").dt.truncate("1d")).agg(
        pl.col("total").sum().alias("total_sum"),
        pl.len().alias("trips"),
        pl.col("ingested_at").max(),
    )


def untraceable(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.map_batches(lambda df: df).select("driver_id", "event_ts", "fare")


def declared(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.map_batches(lambda df: df).select(
        "driver_id", "event_ts", (pl.col("fare") * 2).alias("fare2")
    )


def views(folder: Path) -> tuple[fk.FeatureView, fk.FeatureView, fk.FeatureView]:
    clean = fk.feature_view(
        name="clean", entity=driver, sources=[events_source(folder)], sql=CLEAN_SQL
    )
    rich = fk.feature_view(entity=driver, sources=[clean])(enriched)
    day = fk.feature_view(entity=driver, sources=[rich])(daily)
    return clean, rich, day


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    events_frame().write_parquet(data / "events.parquet")
    return data


@pytest.fixture
def built(store: fk.Store, folder: Path) -> dict[str, object]:
    clean, rich, day = views(folder)
    for view in (clean, rich, day):
        store.materialize(view)
    labels = pl.DataFrame({"driver_id": [1, 2], "ts": [at(48), at(48)], "y": [1, 0]})
    ts = store.training_set(
        labels, features=["daily:total_sum", "daily:trips", "clean:tip"], timestamp="ts"
    )
    first = store.log_model("churn", training_set=ts, model={"w": [1, 2]}, metrics={"auc": 0.9})
    second = store.log_model("churn", training_set=ts.id, model="s3://models/churn.pkl")
    return {"ts": ts, "first": first, "second": second, "views": (clean, rich, day)}


def derives(graph: fk.LineageGraph) -> set[tuple[str, str, str | None, str | None]]:
    src = next(n.version for n in graph.of_kind("source"))
    return {
        (
            e.source.replace(f"@{src}", "@S"),
            e.target,
            e.transformation,
            e.subtype,
        )
        for e in graph.edges
        if e.kind == "derives"
    }


def test_multi_step_example_records_exact_column_edges(
    store: fk.Store, built: dict[str, object]
) -> None:
    graph = store.lineage()
    assert derives(graph) == {
        # SQL view: sqlglot lineage; WHERE columns indirect; window PARTITION/ORDER indirect
        ("column:events@S:fare", "feature:clean@1:fare", "DIRECT", "IDENTITY"),
        ("column:events@S:status", "feature:clean@1:fare", "INDIRECT", "FILTER"),
        ("column:events@S:fare", "feature:clean@1:tip", "DIRECT", "TRANSFORMATION"),
        ("column:events@S:status", "feature:clean@1:tip", "INDIRECT", "FILTER"),
        ("column:events@S:fare", "feature:clean@1:running", "DIRECT", "AGGREGATION"),
        ("column:events@S:driver_id", "feature:clean@1:running", "INDIRECT", "WINDOW"),
        ("column:events@S:event_ts", "feature:clean@1:running", "INDIRECT", "WINDOW"),
        ("column:events@S:status", "feature:clean@1:running", "INDIRECT", "FILTER"),
        # polars view chained on the SQL view: reads the upstream features
        ("feature:clean@1:fare", "feature:enriched@1:total", "DIRECT", None),
        ("feature:clean@1:tip", "feature:enriched@1:total", "DIRECT", None),
        # aggregation: the aggregated column direct; keys/time resolved to raw columns, indirect
        ("feature:enriched@1:total", "feature:daily@1:total_sum", "DIRECT", None),
        ("column:events@S:driver_id", "feature:daily@1:total_sum", "INDIRECT", None),
        ("column:events@S:event_ts", "feature:daily@1:total_sum", "INDIRECT", None),
        ("column:events@S:status", "feature:daily@1:total_sum", "INDIRECT", None),
        # a count reads no column: attributed to its table, plus the grouping columns
        ("view:enriched@1", "feature:daily@1:trips", "DIRECT", None),
        ("column:events@S:driver_id", "feature:daily@1:trips", "INDIRECT", None),
        ("column:events@S:event_ts", "feature:daily@1:trips", "INDIRECT", None),
        ("column:events@S:status", "feature:daily@1:trips", "INDIRECT", None),
    }
    ts = built["ts"]
    assert isinstance(ts, fk.TrainingSet)
    selects = {(e.source, e.target) for e in graph.edges if e.kind == "selects"}
    assert selects == {
        (f, f"training_set:{ts.id}")
        for f in ("feature:daily@1:total_sum", "feature:daily@1:trips", "feature:clean@1:tip")
    }
    reads = {(e.source, e.target) for e in graph.edges if e.kind == "reads"}
    assert (f"training_set:{ts.id}", "model:churn@1") in reads
    assert (f"training_set:{ts.id}", "model:churn@2") in reads
    assert ("view:clean@1", "view:enriched@1") in reads
    assert ("view:enriched@1", "view:daily@1") in reads


def test_node_ids_and_source_fingerprint(store: fk.Store, built: dict[str, object]) -> None:
    graph = store.lineage()
    (source,) = graph.of_kind("source")
    assert source.id == f"source:events@{source.version}"
    assert len(source.version or "") == 12 and source.attrs["fingerprint_of"] == "contents"
    assert {n.id for n in graph.of_kind("model")} == {"model:churn@1", "model:churn@2"}
    assert "feature:daily@1:total_sum" in graph
    ts = built["ts"]
    assert isinstance(ts, fk.TrainingSet)
    assert graph.node(f"training_set:{ts.id}").attrs["pinned"] == {
        "view:daily@1": 0,
        "view:clean@1": 0,
    }
    runs = [r for r in graph.runs.values() if r.kind == "materialize"]
    assert [r.job for r in runs] == [
        "featurekit.materialize.clean",
        "featurekit.materialize.enriched",
        "featurekit.materialize.daily",
    ]
    for edge in graph.edges:
        if edge.kind == "derives":
            assert edge.run_id and edge.time


def test_queries_raw_columns_impact_depth(store: fk.Store, built: dict[str, object]) -> None:
    graph = store.lineage("model:churn")  # latest version
    assert graph.focus == "model:churn@2"
    src = next(n.version for n in graph.of_kind("source"))
    col = f"column:events@{src}"
    assert graph.raw_columns("model:churn@2") == [
        f"{col}:driver_id",
        f"{col}:event_ts",
        f"{col}:fare",
        f"{col}:status",
    ]
    assert graph.raw_columns("model:churn@2", direct_only=True) == [f"{col}:fare"]
    impact = store.lineage().impact(f"{col}:fare")
    assert impact["model"] == ["model:churn@1", "model:churn@2"]
    assert "feature:daily@1:total_sum" in impact["feature"]
    # `city` is read by no view: nothing depends on it, so it is not even a node
    with pytest.raises(fk.NotFoundError, match="Did you mean"):
        store.lineage(f"{col}:cty")
    near = store.lineage("feature:daily:total_sum", downstream=False, depth=1)
    assert near.focus == "feature:daily@1:total_sum"
    assert sorted(near.nodes) == sorted(
        [
            "feature:daily@1:total_sum",
            "feature:enriched@1:total",
            "view:daily@1",
            f"{col}:driver_id",
            f"{col}:event_ts",
            f"{col}:status",
        ]
    )
    down = store.lineage("feature:clean@1:tip", upstream=False)
    assert {n.kind for n in down.nodes.values()} == {"feature", "training_set", "model"}


def test_stale_models_say_why(store: fk.Store, built: dict[str, object], folder: Path) -> None:
    assert store.lineage().stale_models() == {}
    # more raw data: clean's table gets a new commit after the pinned version
    pl.concat(
        [
            events_frame(),
            pl.DataFrame(
                {
                    "driver_id": [1],
                    "event_ts": [at(40)],
                    "ingested_at": [at(40.1)],
                    "fare": [5.0],
                    "status": ["ok"],
                    "city": ["a"],
                }
            ),
        ]
    ).write_parquet(folder / "events.parquet")
    clean, _, _ = views(folder)
    store.materialize(clean)
    # and a new definition of daily (version 2)
    changed = fk.feature_view(entity=driver, sources=[views(folder)[1]], ttl="3d")(daily)
    store.register(changed)
    stale = store.lineage().stale_models()
    ts = built["ts"]
    assert isinstance(ts, fk.TrainingSet)
    reasons = stale["model:churn@1"]
    assert stale["model:churn@2"] == reasons
    assert (
        f"code: training_set:{ts.id} used view:daily@1; view:daily@2 is newer (changed: options)"
        in reasons
    )
    assert (
        f"data: training_set:{ts.id} used view:clean@1 at Delta version 0; its table is now "
        "at version 1" in reasons
    )
    sources = store.lineage().of_kind("source")
    assert len(sources) == 2  # the file changed: a new fingerprint, a new source node


def test_delta_source_node_carries_the_delta_version(store: fk.Store, tmp_path: Path) -> None:
    from deltalake import write_deltalake

    table = tmp_path / "events_delta"
    write_deltalake(str(table), events_frame().to_arrow())
    source = fk.Source("events", table, timestamp="event_ts", created_timestamp="ingested_at")
    view = fk.feature_view(entity=driver, sources=[source])(untraceable)
    store.materialize(view)
    write_deltalake(str(table), events_frame().head(1).to_arrow(), mode="append")
    store.materialize(view, full_refresh=True)
    ids = [n.id for n in store.lineage().of_kind("source")]
    assert ids == ["source:events@v0", "source:events@v1"]
    graph = store.lineage("source:events")  # the most recently read
    assert graph.focus == "source:events@v1"


def test_untraceable_polars_view_says_all_inputs_and_inputs_refines(
    store: fk.Store, folder: Path
) -> None:
    view = fk.feature_view(entity=driver, sources=[events_source(folder)])(untraceable)
    store.materialize(view)
    edges = [
        e
        for e in store.lineage().edges
        if e.target == "feature:untraceable@1:fare" and e.kind == "derives"
    ]
    assert {e.transformation for e in edges} == {"UNKNOWN"}
    assert {e.source.rsplit(":", 1)[1] for e in edges} == set(events_frame().columns)
    hinted = fk.feature_view(
        entity=driver, sources=[events_source(folder)], inputs={"fare2": ["fare"]}
    )(declared)
    plain = fk.feature_view(entity=driver, sources=[events_source(folder)])(declared)
    assert store.register(hinted).fingerprint == store.register(plain).fingerprint
    store.materialize(hinted)
    edges = [
        e
        for e in store.lineage().edges
        if e.target == "feature:declared@1:fare2" and e.kind == "derives"
    ]
    assert [(e.source.rsplit(":", 1)[1], e.transformation, e.description) for e in edges] == [
        ("fare", "DIRECT", "declared by inputs=")
    ]


def test_declared_inputs_are_checked(folder: Path) -> None:
    with pytest.raises(fk.DefinitionError, match="must be a list of column names"):
        fk.feature_view(entity=driver, sources=[events_source(folder)], inputs={"f": "fare"})(
            declared
        )
    with pytest.raises(fk.DefinitionError, match="Did you mean 'events'"):
        fk.feature_view(
            entity=driver, sources=[events_source(folder)], inputs={"f": ["event.fare"]}
        )(declared)


def test_unregistered_upstream_gets_a_fingerprint_id_until_registered(
    store: fk.Store, folder: Path
) -> None:
    clean, rich, _ = views(folder)
    store.materialize(rich)  # clean is computed in the same plan but never registered
    ids = sorted(n.id for n in store.lineage().of_kind("view"))
    assert ids[0].startswith("view:clean@fp-") and ids[1] == "view:enriched@1"
    store.register(clean)
    assert sorted(n.id for n in store.lineage().of_kind("view")) == [
        "view:clean@1",
        "view:enriched@1",
    ]
    assert "feature:clean@1:tip" in store.lineage()


def test_records_are_immutable_files_and_concurrent_writers_lose_nothing(
    store: fk.Store, built: dict[str, object]
) -> None:
    folder = store.root / "_featurekit" / "lineage"
    kinds = sorted(p.name for p in folder.iterdir())
    assert kinds == ["columns", "materialize", "model", "training_set"]
    for path in folder.rglob("*.json"):
        json.loads(path.read_text())
    ts = built["ts"]
    assert isinstance(ts, fk.TrainingSet)
    errors: list[BaseException] = []

    def log(i: int) -> None:
        try:
            other = fk.Store(store.root, progress=False)
            other.log_model("race", training_set=ts, model=f"uri://{i}")
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=log, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entries = store.models("race")
    assert [e.version for e in entries] == list(range(1, 9))
    assert sorted(e.model["uri"] for e in entries) == sorted(f"uri://{i}" for i in range(8))
    assert len(list((folder / "model").glob("race-v*.json"))) == 8


def test_models_listing_and_entries(store: fk.Store, built: dict[str, object]) -> None:
    first, second = built["first"], built["second"]
    assert isinstance(first, fk.ModelRecord) and isinstance(second, fk.ModelRecord)
    assert (first.id, second.id) == ("model:churn@1", "model:churn@2")
    assert first.model["kind"] == "object" and first.model["type"] == "builtins.dict"
    assert len(first.model["digest"]) == 16
    assert second.model == {"kind": "uri", "uri": "s3://models/churn.pkl"}
    assert [m.id for m in store.models()] == ["model:churn@1", "model:churn@2"]
    with pytest.raises(fk.NotFoundError, match="Did you mean 'churn'"):
        store.models("chrun")
    with pytest.raises(fk.NotFoundError, match="no training set"):
        store.log_model("churn", training_set="nope", model=None)
    with pytest.raises(fk.DefinitionError, match="metric 'auc' must be a number"):
        store.log_model("churn", training_set=first.training_set, metrics={"auc": "high"})
    assert len(store.models("churn")) == 2
    mlflow_ref = store.log_model("churn", training_set=first.training_set, model="runs:/abc123/m")
    assert mlflow_ref.mlflow_run_id == "abc123"


def test_unknown_node_is_an_error_with_suggestions(
    store: fk.Store, built: dict[str, object]
) -> None:
    with pytest.raises(fk.NotFoundError, match=r"no lineage node 'model:chrun'.*Did you mean"):
        store.lineage("model:chrun")
    with pytest.raises(fk.FeatureKitError, match="Did you mean 'view:daily@1'"):
        store.lineage("view:daily@7")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_records_from_a_newer_format_are_refused_and_nothing_changes(
    store: fk.Store, built: dict[str, object]
) -> None:
    path = store.root / "_featurekit" / "models" / "churn" / "v3.json"
    path.write_text(json.dumps({"format_version": 99, "version": 3, "name": "churn"}))
    before = snapshot(store.root)
    with pytest.raises(
        fk.StorageError, match=r"newer featurekit \(format 99.*Nothing was modified"
    ):
        store.lineage()
    ts = built["ts"]
    assert isinstance(ts, fk.TrainingSet)
    with pytest.raises(fk.StorageError, match="newer featurekit"):
        store.log_model("churn", training_set=ts)
    assert snapshot(store.root) == before
    path.unlink()
    record = store.root / "_featurekit" / "lineage" / "materialize" / "zzzz.json"
    record.write_text(json.dumps({"format_version": 2}))
    with pytest.raises(fk.StorageError, match="newer featurekit"):
        store.lineage("model:churn")


def test_renderings(store: fk.Store, built: dict[str, object]) -> None:
    graph = store.lineage("model:churn@1", downstream=False)
    text = graph.to_text()
    assert text.splitlines()[0] == "model:churn@1"
    assert "└── training_set:" in text and "[indirect filter]" in text
    dot = graph.to_dot()
    assert dot.startswith("digraph lineage {") and 'style="dashed"' in dot
    html = graph._repr_html_()
    assert "<svg" in html and "model:churn@1" in html
    again = fk.LineageGraph.from_dict(json.loads(graph.to_json()))
    assert again.to_dict() == graph.to_dict()
    assert repr(graph).startswith("LineageGraph(focus='model:churn@1'")


def test_cli_lineage_formats(store: fk.Store, built: dict[str, object]) -> None:
    runner = CliRunner()
    root = str(store.root)
    out = runner.invoke(app, ["lineage", "model:churn", "--store", root])
    assert out.exit_code == 0 and out.stdout.startswith("model:churn@2")
    out = runner.invoke(app, ["lineage", "model:churn", "--store", root, "--format", "json"])
    assert json.loads(out.stdout)["focus"] == "model:churn@2"
    out = runner.invoke(app, ["lineage", "view:daily", "-s", root, "-f", "openlineage"])
    events = json.loads(out.stdout)
    assert {e["job"]["name"] for e in events} >= {"featurekit.materialize.daily"}
    out = runner.invoke(app, ["lineage", "view:daily", "-s", root, "-f", "dot", "--depth", "1"])
    assert out.stdout.startswith("digraph")
    out = runner.invoke(app, ["lineage", "model:nope", "-s", root])
    assert out.exit_code == 1 and "no lineage node" in out.stderr
    out = runner.invoke(app, ["lineage", "model:churn", "-s", root, "-f", "yaml"])
    assert out.exit_code == 1 and "--format 'yaml'" in out.stderr
