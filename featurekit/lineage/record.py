"""Record lineage as a side effect of materializations, training sets and model entries.

Records are immutable JSON files under ``<root>/_featurekit/lineage/``, written once and
atomically (so concurrent writers never lose each other's records):

- ``materialize/<run_id>.json``: one per materialization run that wrote rows;
- ``training_set/<id>.json``: one per training set;
- ``model/<name>-v<N>.json``: one per model entry;
- ``columns/<view>-<fingerprint>.json``: a view definition's column lineage (computed once).

Each run record holds the nodes, edges and run it contributes; :func:`load_graph` merges them
with what the registry knows (every view version, training-set manifests, model entries).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import xxhash

from featurekit.core.config import FORMAT_VERSION
from featurekit.core.definitions import Source
from featurekit.core.redact import redact_url
from featurekit.core.timeutil import utcnow
from featurekit.lineage.columns import view_column_lineage
from featurekit.lineage.graph import Edge, LineageGraph, Node, Run
from featurekit.lineage.model import ColumnDep, strongest
from featurekit.lineage.openlineage import dataset_naming
from featurekit.storage import delta
from featurekit.storage.manifest import Manifest
from featurekit.storage.records import ModelRecord
from featurekit.storage.registry import Registry
from featurekit.storage.sources import source_schema

if TYPE_CHECKING:
    from featurekit.offline.materialize import MaterializeResult
    from featurekit.offline.resolve import ResolvedView

#: (path, size, mtime_ns) -> xxh3-128 of the file, so unchanged files are hashed once.
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


# ---- sources ------------------------------------------------------------------------------
def source_node(src: Source, *, read_at: str) -> Node:
    """The node of a source as it is now: Delta version, or a content fingerprint."""
    attrs: dict[str, Any] = {
        "kind": src.kind,
        "location": redact_url(src.location)
        if isinstance(src.location, str)
        else [redact_url(p) for p in src.location or ()] or None,
        "timestamp": src.timestamp,
        "read_at": read_at,
    }
    location = src.location if isinstance(src.location, str) else None
    if isinstance(src.location, tuple):
        location = os.path.commonpath([str(Path(p).absolute()) for p in src.location])
    shown = None if location is None else redact_url(location)  # OpenLineage events leave us
    attrs["dataset"] = dataset_naming(shown, f"featurekit/{src.name}")
    try:
        attrs["schema"] = {k: str(v) for k, v in source_schema(src).items()}
    except Exception:
        attrs["schema"] = {}
    if src.kind == "delta" and isinstance(src.location, str):
        number = delta.current_version(src.location, dict(src.storage_options) or None)
        label = f"v{number}"
        attrs["delta_version"] = number
        attrs["dataset_version"] = str(number)
    else:
        label, how = _fingerprint(src)
        attrs["fingerprint"] = label
        attrs["fingerprint_of"] = how
        attrs["dataset_version"] = label
    return Node(f"source:{src.name}@{label}", "source", src.name, label, None, attrs)


def _fingerprint(src: Source) -> tuple[str, str]:
    """12 hex chars: file contents (local files), the location (remote), or frame values."""
    if src.frame is not None:
        from featurekit.core.hashing import frame_hash

        return frame_hash(src.frame.collect())[:12], "values"
    locations = list(src.location) if isinstance(src.location, tuple) else [src.location or ""]
    if any("://" in loc for loc in locations):
        return hashlib.sha256("\n".join(locations).encode()).hexdigest()[:12], "location"
    digest = hashlib.sha256()
    for loc in locations:
        for path in sorted(glob.glob(os.path.expanduser(loc))) or [loc]:
            digest.update(Path(path).name.encode() + b"\0" + _file_hash(path).encode())
    return digest.hexdigest()[:12], "contents"


def _file_hash(path: str) -> str:
    """xxh3-128 of the file's bytes: every byte counts, at memory speed (~10 GB/s; sha256
    took 0.35 s on a 0.5 GB source, a tenth of a 10M-row materialization)."""
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = xxhash.xxh3_128()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


# ---- materialization ----------------------------------------------------------------------
def view_id(registry: Registry, name: str, fingerprint: str) -> str:
    """``view:<name>@<N>``, or ``view:<name>@fp-<fingerprint>`` for an unregistered upstream."""
    for record in registry.versions(name):
        if record.fingerprint == fingerprint:
            return f"view:{name}@{record.version}"
    return f"view:{name}@fp-{fingerprint[:12]}"


def snapshot_sources(resolved: ResolvedView) -> dict[str, Node]:
    """Nodes of every raw source the view (and its upstream views) reads, as of now."""
    now = utcnow().isoformat()
    return {src.name: source_node(src, read_at=now) for src in resolved.leaf_sources()}


def record_materialization(
    registry: Registry,
    resolved: ResolvedView,
    result: MaterializeResult,
    sources: Mapping[str, Node],
) -> dict[str, Any] | None:
    """Write the lineage record of one materialization run; returns it (None for no-ops)."""
    if result.mode == "noop":
        return None
    time = utcnow().isoformat()
    builder = _Builder(registry, result.run_id, time, sources)
    output = builder.view(resolved)
    out_node = builder.nodes[output]
    builder.nodes[output] = Node(
        out_node.id,
        out_node.kind,
        out_node.name,
        out_node.version,
        None,
        {**out_node.attrs, "dataset_version": str(result.delta_version)},
    )
    inputs = sorted(n.id for n in sources.values())
    run = Run(
        result.run_id,
        "materialize",
        time,
        f"featurekit.materialize.{resolved.name}",
        tuple(inputs),
        (output,),
        {
            "mode": result.mode,
            "rows_written": result.rows_written,
            "delta_version": result.delta_version,
            "dataset_versions": {output: str(result.delta_version)},
        },
    )
    record = builder.record(run)
    registry.add_lineage_record("materialize", result.run_id, record)
    return record


class _Builder:
    def __init__(
        self, registry: Registry, run_id: str, time: str, sources: Mapping[str, Node]
    ) -> None:
        self.registry = registry
        self.run_id = run_id
        self.time = time
        self.sources = sources
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        # view id -> output column -> [(node id, transformation, subtype, description)]
        self.columns: dict[str, dict[str, list[tuple[str, str, str | None, str | None]]]] = {}

    def edge(
        self,
        source: str,
        target: str,
        kind: str,
        transformation: str | None = None,
        subtype: str | None = None,
        description: str | None = None,
    ) -> None:
        self.edges.append(
            Edge(source, target, kind, transformation, subtype, description, self.run_id, self.time)
        )

    def view(self, resolved: ResolvedView) -> str:
        vid = view_id(self.registry, resolved.name, resolved.fingerprint)
        if vid in self.nodes:
            return vid
        layout = resolved.layout
        upstream = {u.name: u for u in resolved.upstream}
        up_ids = {name: self.view(u) for name, u in upstream.items()}
        version = vid.split("@", 1)[1]
        # an upstream computed in the plan but never registered has no table of its own
        table = (
            self.registry.layout.table_uri(resolved.name, int(version))
            if version.isdigit()
            else None
        )
        self.nodes[vid] = Node(
            vid,
            "view",
            resolved.name,
            version,
            None,
            {
                "fingerprint": resolved.fingerprint,
                "kind": "sql" if resolved.view.sql is not None else "polars",
                "entity": resolved.view.entity.name,
                "keys": list(layout.keys),
                "timestamp": layout.timestamp,
                "schema": layout.dtypes,
                "dataset": dataset_naming(table, vid),
            },
        )
        schemas: dict[str, pl.Schema] = {}
        for src in resolved.view.sources:
            if isinstance(src, Source):
                node = self.sources[src.name]
                self.nodes.setdefault(node.id, node)
                schemas[src.name] = source_schema(src)
                self.edge(node.id, vid, "reads")
            else:
                schemas[src.name] = pl.Schema(dict(upstream[src.name].layout.schema))
                self.edge(up_ids[src.name], vid, "reads")
        deps, method = _column_lineage(self.registry, resolved, schemas)
        node = self.nodes[vid]
        self.nodes[vid] = Node(
            vid, "view", node.name, node.version, None, {**node.attrs, "column_lineage": method}
        )
        resolved_cols: dict[str, list[tuple[str, str, str | None, str | None]]] = {}
        for output in dict.fromkeys([*layout.columns, *layout.features]):
            routes: list[tuple[str, str, str | None, str | None]] = []
            for dep in deps.get(output, []):
                routes.extend(self._input_routes(dep, resolved, up_ids))
            resolved_cols[output] = routes
        self.columns[vid] = resolved_cols
        for feature in layout.features:
            fid = f"feature:{vid.split(':', 1)[1]}:{feature}"
            self.nodes[fid] = Node(
                fid,
                "feature",
                resolved.name,
                node.version,
                feature,
                {"dtype": str(dict(layout.feature_dtypes)[feature])},
            )
            self.edge(vid, fid, "contains")
            seen: set[tuple[str, str]] = set()
            for source_id, transformation, subtype, description in _strongest(
                resolved_cols[feature]
            ):
                if (source_id, transformation) in seen:
                    continue
                seen.add((source_id, transformation))
                self.edge(source_id, fid, "derives", transformation, subtype, description)
        return vid

    def _input_routes(
        self, dep: ColumnDep, resolved: ResolvedView, up_ids: Mapping[str, str]
    ) -> list[tuple[str, str, str | None, str | None]]:
        """A dependency on an input column, as graph nodes (expanding upstream non-features)."""
        if dep.input in self.sources and dep.input not in up_ids:
            src = self.sources[dep.input]
            if dep.column is None:
                return [(src.id, dep.transformation, dep.subtype, dep.description)]
            cid = f"column:{src.name}@{src.version}:{dep.column}"
            if cid not in self.nodes:
                dtype = (src.attrs.get("schema") or {}).get(dep.column)
                self.nodes[cid] = Node(
                    cid, "column", src.name, src.version, dep.column, {"dtype": dtype}
                )
                self.edge(src.id, cid, "contains")
            return [(cid, dep.transformation, dep.subtype, dep.description)]
        up = up_ids.get(dep.input)
        if up is None:
            return []
        if dep.column is None:
            return [(up, dep.transformation, dep.subtype, dep.description)]
        fid = f"feature:{up.split(':', 1)[1]}:{dep.column}"
        if fid in self.nodes:
            return [(fid, dep.transformation, dep.subtype, dep.description)]
        # a key or timestamp of the upstream view: resolve it to what it was built from
        out = []
        for node_id, transformation, subtype, description in self.columns[up].get(dep.column, []):
            combined = _combine(dep.transformation, transformation)
            out.append(
                (node_id, combined, dep.subtype if combined != "DIRECT" else subtype, description)
            )
        return out

    def record(self, run: Run) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "run": run.to_dict(),
            "nodes": [n.to_dict() for _, n in sorted(self.nodes.items())],
            "edges": [e.to_dict() for e in self.edges],
        }


def _combine(a: str, b: str) -> str:
    if "UNKNOWN" in (a, b):
        return "UNKNOWN"
    return "DIRECT" if a == b == "DIRECT" else "INDIRECT"


_RANK = {"DIRECT": 3, "INDIRECT": 2, "UNKNOWN": 1}


def _strongest(
    routes: Iterable[tuple[str, str, str | None, str | None]],
) -> list[tuple[str, str, str | None, str | None]]:
    best: dict[str, tuple[str, str, str | None, str | None]] = {}
    for route in routes:
        old = best.get(route[0])
        if old is None or _RANK[route[1]] > _RANK[old[1]]:
            best[route[0]] = route
    return [best[k] for k in sorted(best)]


def _column_lineage(
    registry: Registry, resolved: ResolvedView, schemas: Mapping[str, pl.Schema]
) -> tuple[dict[str, list[ColumnDep]], str]:
    key = f"{resolved.name}-{resolved.fingerprint}"
    cached = registry.lineage_record("columns", key)
    if cached is not None:
        deps = {
            out: [ColumnDep.from_dict(d) for d in items] for out, items in cached["columns"].items()
        }
        return deps, str(cached["method"])
    layout = resolved.layout
    rows = [*layout.keys, layout.timestamp]
    if layout.created_timestamp:
        rows.append(layout.created_timestamp)
    deps, method = view_column_lineage(resolved.view, schemas, layout.columns, rows)
    for spec in layout.aggregations:  # the aggregated column directly; keys and time indirectly
        routes = [
            ColumnDep(d.input, d.column, "DIRECT", "AGGREGATION", f"{spec.function} over window")
            if d.transformation == "DIRECT"
            else d  # a filter on the events stays an indirect input
            for d in deps.get(spec.column, [])
        ]
        for row_column, subtype in [(k, "GROUP_BY") for k in layout.keys] + [
            (layout.timestamp, "WINDOW")
        ]:
            routes.extend(
                ColumnDep(d.input, d.column, "INDIRECT", subtype, f"{spec.name} {subtype.lower()}")
                for d in deps.get(row_column, [])
            )
        merged: dict[tuple[str, str | None], ColumnDep] = {}
        for dep in routes:
            merged[(dep.input, dep.column)] = strongest(merged.get((dep.input, dep.column)), dep)
        deps[spec.name] = list(merged.values())
    registry.add_lineage_record(
        "columns",
        key,
        {
            "format_version": FORMAT_VERSION,
            "view": resolved.name,
            "fingerprint": resolved.fingerprint,
            "method": method,
            "columns": {out: [d.to_dict() for d in items] for out, items in deps.items()},
        },
    )
    return deps, method


# ---- training sets and models ---------------------------------------------------------------
def training_set_record(registry: Registry, manifest: Manifest) -> dict[str, Any]:
    """The lineage record of a training set, from its manifest alone."""
    ts_id = manifest.id
    tid = f"training_set:{ts_id}"
    time = manifest.created_at.isoformat()
    nodes: dict[str, Node] = {}
    edges: list[Edge] = []
    pinned: dict[str, int | None] = {}
    columns = list(manifest.columns)
    for v in manifest.views:
        vid = f"view:{v.ref}"
        pinned[vid] = v.delta_version
        nodes[vid] = Node(
            vid,
            "view",
            v.view,
            str(v.version),
            None,
            {
                "fingerprint": v.fingerprint,
                "dataset": dataset_naming(registry.layout.uri(v.table), vid),
            },
        )
        edges.append(
            Edge(
                vid,
                tid,
                "reads",
                None,
                None,
                f"Delta version {v.delta_version}",
                ts_id,
                time,
            )
        )
        for feature, name in zip(v.features, v.columns, strict=True):
            fid = f"feature:{v.ref}:{feature}"
            nodes[fid] = Node(fid, "feature", v.view, str(v.version), feature, {})
            edges.append(Edge(vid, fid, "contains", None, None, None, ts_id, time))
            edges.append(Edge(fid, tid, "selects", None, None, name, ts_id, time))
    labels = manifest.labels
    nodes[tid] = Node(
        tid,
        "training_set",
        ts_id,
        None,
        None,
        {
            "rows": manifest.result_rows,
            "labels": {
                "hash": labels.hash,
                "rows": labels.rows,
                "columns": labels.columns,
                "timestamp": labels.timestamp,
            },
            "columns": columns,
            "result_hash": manifest.result_hash,
            "point_in_time": manifest.point_in_time,
            "as_of": None if manifest.as_of is None else manifest.as_of.isoformat(),
            "pinned": pinned,
            "created_at": time,
            "dataset": dataset_naming(registry.layout.training_set_uri(ts_id), tid),
            "dataset_version": ts_id,
        },
    )
    run = Run(
        ts_id,
        "training_set",
        time,
        "featurekit.training_set",
        tuple(sorted(pinned)),
        (tid,),
        {"dataset_versions": {k: str(val) for k, val in pinned.items() if val is not None}},
    )
    return {
        "format_version": FORMAT_VERSION,
        "run": run.to_dict(),
        "nodes": [n.to_dict() for _, n in sorted(nodes.items())],
        "edges": [e.to_dict() for e in edges],
    }


def model_record(registry: Registry, entry: ModelRecord) -> dict[str, Any]:
    """The lineage record of a model entry."""
    name, version, mid = entry.name, entry.version, entry.id
    tid = f"training_set:{entry.training_set}"
    # the record holds the entry's JSON forms (times, parameters), as the registry stores them
    data = entry.model_dump(mode="json", include={"created_at", "metrics", "params", "model"})
    time = str(data["created_at"])
    run_id = f"model-{name}-v{version}"
    path = registry.layout.uri(registry.layout.record_key("model", name, version))
    nodes = [
        Node(
            mid,
            "model",
            name,
            str(version),
            None,
            {
                "metrics": data["metrics"],
                "params": data["params"],
                "model": data["model"],
                "mlflow_run_id": entry.mlflow_run_id,
                "created_at": time,
                "dataset": dataset_naming(path, mid),
                "dataset_version": str(version),
            },
        ),
        Node(tid, "training_set", entry.training_set, None, None, {}),
    ]
    run = Run(run_id, "model", time, f"featurekit.log_model.{name}", (tid,), (mid,), {})
    return {
        "format_version": FORMAT_VERSION,
        "run": run.to_dict(),
        "nodes": [n.to_dict() for n in nodes],
        "edges": [Edge(tid, mid, "reads", None, None, None, run_id, time).to_dict()],
    }


# ---- loading --------------------------------------------------------------------------------
def load_graph(registry: Registry, *, with_tables: bool = True) -> LineageGraph:
    """Everything the store knows, as one graph (records + registry + manifests + models)."""
    records = registry.lineage_records("materialize")
    seen_ts = set()
    for record in registry.lineage_records("training_set"):
        records.append(record)
        seen_ts.add(record["run"]["run_id"])
    for ts_id in registry.training_set_ids():
        if ts_id not in seen_ts:  # recorded before lineage existed: derive from its manifest
            records.append(training_set_record(registry, registry.manifest(ts_id)))
    seen_models = set()
    for record in registry.lineage_records("model"):
        records.append(record)
        seen_models.add(record["run"]["run_id"])
    for name in registry.model_names():
        for entry in registry.model_versions(name):
            if f"model-{name}-v{entry.version}" not in seen_models:
                records.append(model_record(registry, entry))
    nodes: list[Node] = []
    edges: list[Edge] = []
    runs: list[Run] = []
    for name in registry.view_names():
        for rec in registry.versions(name):
            vid = f"view:{name}@{rec.version}"
            table = registry.layout.table_uri(name, rec.version)
            attrs: dict[str, Any] = {
                "fingerprint": rec.fingerprint,
                "reason": rec.reason,
                "created_at": rec.created_at.isoformat(),
                "entity": rec.entity,
                "keys": rec.keys,
                "timestamp": rec.timestamp,
                "schema": rec.output,
                "dataset": dataset_naming(table, vid),
            }
            if with_tables:
                attrs["current_delta_version"] = delta.current_version(table)
            nodes.append(Node(vid, "view", name, str(rec.version), None, attrs))
            for feature, dtype in rec.features.items():
                fid = f"feature:{name}@{rec.version}:{feature}"
                nodes.append(
                    Node(fid, "feature", name, str(rec.version), feature, {"dtype": dtype})
                )
                edges.append(Edge(vid, fid, "contains"))
    for record in records:
        nodes.extend(Node.from_dict(n) for n in record["nodes"])
        edges.extend(Edge.from_dict(e) for e in record["edges"])
        runs.append(Run.from_dict(record["run"]))
    names: dict[str, list[str]] = {}
    for saved, ts_id in registry.training_set_names().items():
        names.setdefault(ts_id, []).append(saved)
    for ts_id, saved_names in names.items():
        nodes.append(
            Node(f"training_set:{ts_id}", "training_set", ts_id, None, None, {"names": saved_names})
        )
    return _rename_unregistered(registry, LineageGraph(nodes, edges, runs))


def _rename_unregistered(registry: Registry, graph: LineageGraph) -> LineageGraph:
    """``view:x@fp-<hash>`` ids become ``view:x@N`` once that definition is registered."""
    by_fp: dict[tuple[str, str], int] = {}
    for name in {n.name for n in graph.of_kind("view") if (n.version or "").startswith("fp-")}:
        for rec in registry.versions(name):
            by_fp[(name, rec.fingerprint[:12])] = rec.version
    if not by_fp:
        return graph
    rename: dict[str, str] = {}
    for node in graph.nodes.values():
        if node.kind in ("view", "feature") and (node.version or "").startswith("fp-"):
            number = by_fp.get((node.name, (node.version or "")[3:]))
            if number is not None:
                tail = f":{node.column}" if node.column else ""
                rename[node.id] = f"{node.kind}:{node.name}@{number}{tail}"

    def fix(node_id: str) -> str:
        return rename.get(node_id, node_id)

    nodes = [
        Node(
            fix(n.id),
            n.kind,
            n.name,
            fix(n.id).split("@", 1)[1].split(":")[0] if n.id in rename else n.version,
            n.column,
            n.attrs,
        )
        for n in graph.nodes.values()
    ]
    edges = [
        Edge(
            fix(e.source),
            fix(e.target),
            e.kind,
            e.transformation,
            e.subtype,
            e.description,
            e.run_id,
            e.time,
        )
        for e in graph.edges
    ]
    runs = [
        Run(
            r.run_id,
            r.kind,
            r.time,
            r.job,
            tuple(map(fix, r.inputs)),
            tuple(map(fix, r.outputs)),
            r.attrs,
        )
        for r in graph.runs.values()
    ]
    return LineageGraph(nodes, edges, runs)
