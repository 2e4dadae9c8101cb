"""OpenLineage export (spec 2-0-2) and emitters. openlineage-python is optional, imported lazily.

Each recorded run becomes one ``COMPLETE`` RunEvent:

- materialization: job ``featurekit.materialize.<view>``; inputs are the raw sources read
  (``version`` facet: Delta version, or the content fingerprint of file/in-memory sources);
  the output is the view version's Delta table (``version``: the Delta version written) with
  ``schema`` and ``columnLineage`` facets (chained views resolved to the raw columns read);
- training set: job ``featurekit.training_set``; inputs are the feature tables at their
  pinned Delta versions; the output is ``<root>/training_sets/<id>`` with column lineage;
- model entry: job ``featurekit.log_model.<name>``; input the training set, output the model.

Dataset names follow the OpenLineage naming spec: local paths are namespace ``file`` with
the absolute path as name; ``s3://b/k`` is namespace ``s3://b`` with name ``k`` (likewise for
other schemes; a user or password in the URL is left out); in-memory frames (no naming rule
exists) use namespace ``memory``.
OpenLineage run ids must be UUIDs: featurekit's run ids map to UUIDv5 deterministically.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from featurekit.core.errors import DefinitionError, FeatureKitError

if TYPE_CHECKING:
    from featurekit.lineage.model import GraphModel, Run

SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
PRODUCER = "https://pypi.org/project/featurekit/"
JOB_NAMESPACE = "featurekit"
_FACET_URLS = {
    "schema": "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
    "version": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
    "columnLineage": "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet",
    "processing_engine": "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet",
    "jobType": "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
}
_RUN_NS = uuid.UUID("6f1c2b9e-5d1a-4c8e-9b7a-0e3f2d4c5b6a")


def dataset_naming(location: str | None, fallback: str) -> dict[str, str]:
    """OpenLineage ``{"namespace", "name"}`` of a location (path or URI)."""
    if location is None:
        return {"namespace": "memory", "name": fallback}
    parsed = urlparse(location)
    if parsed.scheme and parsed.scheme != "file" and len(parsed.scheme) > 1:
        # the namespace names the place, not who reads it: no user, no (masked) password
        host = parsed.netloc.rpartition("@")[2]
        return {"namespace": f"{parsed.scheme}://{host}", "name": parsed.path.lstrip("/")}
    path = parsed.path if parsed.scheme == "file" else location
    return {"namespace": "file", "name": str(Path(path).expanduser().absolute())}


def run_uuid(run_id: str) -> str:
    """featurekit run id -> a stable UUID (OpenLineage requires one)."""
    return str(uuid.uuid5(_RUN_NS, run_id))


def _facet(kind: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": _FACET_URLS[kind], **fields}


def graph_events(graph: GraphModel) -> list[dict[str, Any]]:
    """One RunEvent dict per run in ``graph``, oldest first."""
    return [run_event(graph, run) for run in graph.runs.values()]


def run_event(graph: GraphModel, run: Run) -> dict[str, Any]:
    """The RunEvent of one run (a plain dict in the spec's shape)."""
    from featurekit.core.config import __version__

    versions = run.attrs.get("dataset_versions") or {}
    inputs = [
        {**_dataset(graph, i, versions.get(i)), "inputFacets": {}}
        for i in run.inputs
        if i in graph.nodes
    ]
    outputs = []
    for o in run.outputs:
        if o not in graph.nodes:
            continue
        data = _dataset(graph, o, versions.get(o))
        fields = _column_lineage(graph, o, set(run.inputs))
        if fields:
            data["facets"]["columnLineage"] = _facet("columnLineage", fields=fields, dataset=[])
        outputs.append({**data, "outputFacets": {}})
    return {
        "eventTime": run.time,
        "producer": PRODUCER,
        "schemaURL": f"{SPEC}#/$defs/RunEvent",
        "eventType": "COMPLETE",
        "run": {
            "runId": run_uuid(run.run_id),
            "facets": {
                "processing_engine": _facet(
                    "processing_engine", version=__version__, name="featurekit"
                )
            },
        },
        "job": {
            "namespace": JOB_NAMESPACE,
            "name": run.job,
            "facets": {
                "jobType": _facet(
                    "jobType",
                    processingType="BATCH",
                    integration="FEATUREKIT",
                    jobType=run.kind.upper(),
                )
            },
        },
        "inputs": inputs,
        "outputs": outputs,
    }


def _dataset(graph: GraphModel, node_id: str, version: Any) -> dict[str, Any]:
    node = graph.nodes[node_id]
    naming = node.attrs.get("dataset") or {"namespace": "featurekit", "name": node_id}
    facets: dict[str, Any] = {}
    schema = node.attrs.get("schema") or {}
    if schema:
        facets["schema"] = _facet(
            "schema", fields=[{"name": k, "type": str(v)} for k, v in schema.items()]
        )
    if version is None:
        version = node.attrs.get("dataset_version")
    if version is not None:
        facets["version"] = _facet("version", datasetVersion=str(version))
    return {"namespace": naming["namespace"], "name": naming["name"], "facets": facets}


def _column_lineage(graph: GraphModel, output: str, inputs: set[str]) -> dict[str, Any]:
    """Output dataset's fields -> input fields of the run's input datasets."""
    node = graph.nodes[output]
    fields: dict[str, Any] = {}
    for edge in graph.outputs_of(output):
        if edge.kind != "contains":
            continue
        column = graph.nodes[edge.target].column or ""
        found = _field_inputs(graph, edge.target, inputs, ("DIRECT", None), set())
        if found:
            fields[column] = {"inputFields": found}
    if node.kind == "training_set":
        for edge in graph.inputs_of(output):
            if edge.kind != "selects":
                continue
            feature = graph.nodes[edge.source]
            view = _parent(feature.id)
            naming = graph.nodes[view].attrs.get("dataset") if view in graph.nodes else None
            if naming is None:
                continue
            fields[edge.description or feature.column or ""] = {
                "inputFields": [
                    {
                        **naming,
                        "field": feature.column,
                        "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}],
                    }
                ]
            }
    return dict(sorted(fields.items()))


def _field_inputs(
    graph: GraphModel,
    target: str,
    inputs: set[str],
    via: tuple[str, str | None],
    seen: set[str],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for edge in graph.inputs_of(target):
        if edge.kind != "derives" or edge.source in seen:
            continue
        source = graph.nodes.get(edge.source)
        if source is None:
            continue
        kind = _combine(via[0], edge.transformation or "UNKNOWN")
        subtype = via[1] if via[0] != "DIRECT" else edge.subtype
        parent = _parent(source.id) if source.kind in ("column", "feature") else None
        if parent in inputs and source.column is not None:
            naming = graph.nodes[parent].attrs.get("dataset") or {}
            transformation = {"type": "DIRECT" if kind == "DIRECT" else "INDIRECT"}
            if subtype:
                transformation["subtype"] = subtype
            desc = edge.description if kind != "UNKNOWN" else "all inputs (not traceable)"
            if desc:
                transformation["description"] = desc
            out.append({**naming, "field": source.column, "transformations": [transformation]})
        elif source.kind == "feature":  # an upstream view computed in the same run
            out.extend(_field_inputs(graph, source.id, inputs, (kind, subtype), seen | {target}))
    return sorted(out, key=lambda f: (f["namespace"], f["name"], f["field"]))


def _combine(a: str, b: str) -> str:
    if "UNKNOWN" in (a, b):
        return "UNKNOWN"
    return "DIRECT" if a == b == "DIRECT" else "INDIRECT"


def _parent(node_id: str) -> str:
    """``column:trips@v1:fare`` -> ``source:trips@v1``; ``feature:v@2:f`` -> ``view:v@2``."""
    kind, rest = node_id.split(":", 1)
    dataset = rest.rsplit(":", 1)[0]
    return f"{'source' if kind == 'column' else 'view'}:{dataset}"


# ---- openlineage-python ---------------------------------------------------------------------
def _require() -> None:
    try:
        import openlineage.client  # noqa: F401
    except ImportError as err:
        raise FeatureKitError(
            "this needs openlineage-python: pip install 'featurekit[openlineage]'."
        ) from err


def to_client_event(event: Mapping[str, Any]) -> Any:
    """A RunEvent dict -> openlineage-python's ``RunEvent`` (its validators run on the way)."""
    _require()
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.generated import (
        column_lineage_dataset as cl,
    )
    from openlineage.client.generated import (
        dataset_version_dataset,
        job_type_job,
        processing_engine_run,
        schema_dataset,
    )

    def facets(raw: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, f in raw.items():
            producer = f.get("_producer", PRODUCER)
            if key == "schema":
                out[key] = schema_dataset.SchemaDatasetFacet(
                    fields=[
                        schema_dataset.SchemaDatasetFacetFields(name=x["name"], type=x.get("type"))
                        for x in f.get("fields", [])
                    ],
                    producer=producer,
                )
            elif key == "version":
                out[key] = dataset_version_dataset.DatasetVersionDatasetFacet(
                    datasetVersion=f["datasetVersion"], producer=producer
                )
            elif key == "columnLineage":
                out[key] = cl.ColumnLineageDatasetFacet(
                    fields={
                        name: cl.Fields(inputFields=[_input_field(cl, i) for i in v["inputFields"]])
                        for name, v in f["fields"].items()
                    },
                    dataset=[_input_field(cl, i) for i in f.get("dataset", [])],
                    producer=producer,
                )
            elif key == "processing_engine":
                out[key] = processing_engine_run.ProcessingEngineRunFacet(
                    version=f["version"], name=f.get("name"), producer=producer
                )
            elif key == "jobType":
                out[key] = job_type_job.JobTypeJobFacet(
                    processingType=f["processingType"],
                    integration=f["integration"],
                    jobType=f.get("jobType"),
                    producer=producer,
                )
            else:
                raise DefinitionError(f"OpenLineage facet {key!r} is not one featurekit emits.")
        return out

    return RunEvent(
        eventType=RunState(event["eventType"]),
        eventTime=event["eventTime"],
        producer=event["producer"],
        run=Run(runId=event["run"]["runId"], facets=facets(event["run"].get("facets", {}))),
        job=Job(
            namespace=event["job"]["namespace"],
            name=event["job"]["name"],
            facets=facets(event["job"].get("facets", {})),
        ),
        inputs=[
            InputDataset(namespace=d["namespace"], name=d["name"], facets=facets(d["facets"]))
            for d in event.get("inputs", [])
        ],
        outputs=[
            OutputDataset(namespace=d["namespace"], name=d["name"], facets=facets(d["facets"]))
            for d in event.get("outputs", [])
        ],
    )


def _input_field(cl: Any, raw: Mapping[str, Any]) -> Any:
    return cl.InputField(
        namespace=raw["namespace"],
        name=raw["name"],
        field=raw["field"],
        transformations=[
            cl.Transformation(
                type=t["type"], subtype=t.get("subtype"), description=t.get("description")
            )
            for t in raw.get("transformations", [])
        ],
    )


def validate_event(event: Mapping[str, Any]) -> None:
    """Check one RunEvent dict against openlineage-python's models; round-trips or raises.

    Raises:
        FeatureKitError: openlineage-python is missing, or the event does not fit the spec.
    """
    from openlineage.client.serde import Serde

    try:
        obj = to_client_event(event)
        back = Serde.to_dict(obj)
    except FeatureKitError:
        raise
    except Exception as err:
        raise FeatureKitError(f"OpenLineage event does not fit the spec: {err}") from err
    if _normalized(back) != _normalized(dict(event)):
        raise FeatureKitError("OpenLineage event does not round-trip through openlineage-python.")


def _normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            # facet schema versions move with openlineage-python releases; the facet must match
            k: v.rsplit("/", 1)[-1] if k == "_schemaURL" else _normalized(v)
            for k, v in value.items()
            if v not in (None, {}, [])
        }
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value


# ---- emitters -------------------------------------------------------------------------------
Emitter = Callable[[dict[str, Any]], None]


def make_emitter(spec: Any) -> Emitter | None:
    """``lineage_emitter=`` -> a function that sends one RunEvent dict, or None (off).

    Accepted: None/False (off); a callable taking the event dict; an object with ``emit``
    (e.g. an ``OpenLineageClient``); ``"http://host:port"`` (HTTP transport, endpoint
    ``api/v1/lineage`` as Marquez expects); ``"file:///path/events.jsonl"`` or a
    ``pathlib.Path`` (file transport, one JSON event per line).
    """
    if spec is None or spec is False:
        return None
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.startswith("file://")):
        path = str(spec).removeprefix("file://")
        return _client_emitter({"type": "file", "log_file_path": path, "append": True})
    if isinstance(spec, str) and spec.startswith(("http://", "https://")):
        return _client_emitter({"type": "http", "url": spec})
    if hasattr(spec, "emit"):
        client = spec

        def emit_to(event: dict[str, Any]) -> None:
            client.emit(to_client_event(event))

        return emit_to
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    raise DefinitionError(
        f"lineage_emitter={spec!r} is not understood; pass 'http://host:port', "
        "'file:///path/events.jsonl', an OpenLineageClient or a function taking an event dict."
    )


def _client_emitter(transport: dict[str, Any]) -> Emitter:
    _require()
    from openlineage.client import OpenLineageClient

    client = OpenLineageClient(config={"transport": transport})

    def emit(event: dict[str, Any]) -> None:
        client.emit(to_client_event(event))

    return emit
