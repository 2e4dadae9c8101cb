"""What a :class:`~featurekit.Store` does for lineage: record, emit and query.

Recording is a side effect of normal use and never breaks it: the data is already
committed when lineage is written, so a failure to record becomes a
:class:`~featurekit.FeatureKitWarning`, not an error.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from featurekit.core.errors import (
    DefinitionError,
    FeatureKitError,
    FeatureKitWarning,
    NotFoundError,
    did_you_mean,
)
from featurekit.core.redact import redact
from featurekit.lineage.graph import Edge, LineageGraph, Node, Run
from featurekit.lineage.openlineage import Emitter, make_emitter, run_event
from featurekit.lineage.record import (
    load_graph,
    model_record,
    record_materialization,
    snapshot_sources,
    training_set_record,
)
from featurekit.offline.models import ModelRecord
from featurekit.storage.layout import LineageKind
from featurekit.storage.registry import Registry

if TYPE_CHECKING:
    from featurekit.offline.materialize import MaterializeResult
    from featurekit.offline.resolve import ResolvedView
    from featurekit.offline.training import TrainingSet

#: Environment setting for an emitter when ``Store(lineage_emitter=...)`` is not given.
EMITTER_ENV = "FEATUREKIT_LINEAGE_EMITTER"


class StoreLineage:
    """Lineage bookkeeping of one store."""

    def __init__(self, registry: Registry, emitter: Any = None) -> None:
        self.registry = registry
        spec = emitter if emitter is not None else os.environ.get(EMITTER_ENV) or None
        self.emit: Emitter | None = make_emitter(spec)

    # ---- recording --------------------------------------------------------------------------
    def before_materialize(self, resolved: ResolvedView) -> dict[str, Node] | None:
        """Snapshot the sources' versions/fingerprints just before they are read."""
        try:
            return snapshot_sources(resolved)
        except Exception as err:
            _warn(f"view {resolved.name!r}: source versions not captured", err)
            return None

    def after_materialize(
        self, resolved: ResolvedView, result: MaterializeResult, sources: dict[str, Node] | None
    ) -> None:
        """Record (and emit) the lineage of one materialization run."""
        if sources is None:
            return
        try:
            record = record_materialization(self.registry, resolved, result, sources)
        except Exception as err:
            _warn(f"view {resolved.name!r} run {result.run_id}: lineage not recorded", err)
            return
        if record is not None:
            self._emit(record)

    def after_training_set(self, ts: TrainingSet) -> None:
        """Record (and emit) the lineage of a training set, once per id."""
        self._record(
            "training_set",
            ts.id,
            lambda: training_set_record(self.registry, ts.manifest),
            f"training set {ts.id!r}",
        )

    def after_log_model(self, entry: ModelRecord) -> None:
        """Record (and emit) the lineage of a model entry."""
        self._record(
            "model",
            f"{entry.name}-v{entry.version}",
            lambda: model_record(self.registry, entry),
            f"model {entry.id!r}",
        )

    def _record(
        self, kind: LineageKind, key: str, build: Callable[[], dict[str, Any]], what: str
    ) -> None:
        """Build a record and write it once; emit it when it was new. Failures only warn."""
        try:
            record = build()
            written = self.registry.add_lineage_record(kind, key, record)
        except Exception as err:
            _warn(f"{what}: lineage not recorded", err)
            return
        if written:
            self._emit(record)

    def _emit(self, record: Mapping[str, Any]) -> None:
        if self.emit is None:
            return
        try:
            graph = record_graph(record)
            self.emit(run_event(graph, graph.runs[record["run"]["run_id"]]))
        except Exception as err:
            _warn(f"OpenLineage event for run {record['run']['run_id']} not emitted", err)

    # ---- queries ------------------------------------------------------------------------------
    def graph(
        self,
        node: str | None,
        *,
        upstream: bool,
        downstream: bool,
        depth: int | None,
    ) -> LineageGraph:
        """The whole store's lineage, or the part around ``node``."""
        full = load_graph(self.registry)
        if node is None:
            return full
        node_id = resolve_id(full, node, self.registry)
        return full.subgraph(node_id, upstream=upstream, downstream=downstream, depth=depth)


def record_graph(record: Mapping[str, Any]) -> LineageGraph:
    """The graph of one record alone (each record is self-contained)."""
    return LineageGraph(
        (Node.from_dict(n) for n in record["nodes"]),
        (Edge.from_dict(e) for e in record["edges"]),
        (Run.from_dict(record["run"]),),
    )


def resolve_id(graph: LineageGraph, text: str, registry: Registry) -> str:
    """A node id, with the version optional (latest), or NotFoundError with suggestions.

    ``model:churn`` → latest version; ``view:driver_stats`` and
    ``feature:driver_stats:conv`` → latest view version; ``source:trips`` and
    ``column:trips:fare`` → the most recently read; ``training_set:<saved name>`` → its id.
    """
    if not isinstance(text, str):
        raise DefinitionError(f"a lineage node id must be a string, got {type(text).__name__}.")
    text = text.strip()
    if text in graph.nodes:
        return text
    kind, _, rest = text.partition(":")
    candidates: list[Node] = []
    if kind == "training_set":
        ts_id = registry.training_set_names().get(rest)
        if ts_id and f"training_set:{ts_id}" in graph.nodes:
            return f"training_set:{ts_id}"
    elif kind in ("model", "view", "source") and "@" not in rest:
        candidates = [n for n in graph.of_kind(kind) if n.name == rest]
    elif kind in ("feature", "column") and re.fullmatch(r"[^@:]+:[^@:]+", rest):
        name, column = rest.split(":")
        candidates = [n for n in graph.of_kind(kind) if n.name == name and n.column == column]
    if candidates:
        return max(candidates, key=_recency).id
    raise NotFoundError(
        f"no lineage node {text!r} in this store.{did_you_mean(text, graph.nodes)} Node ids look "
        "like 'source:trips@v12', 'column:trips@v12:fare', 'view:driver_stats@3', "
        "'feature:driver_stats@3:conv', 'training_set:<id>' or 'model:churn@2' (the @version "
        "may be left out for the latest)."
    )


def _recency(node: Node) -> tuple[int, str]:
    version = node.version or ""
    number = int(version) if version.isdigit() else -1
    return number, str(node.attrs.get("read_at") or node.attrs.get("created_at") or "")


def _warn(what: str, err: Exception) -> None:
    known = isinstance(err, FeatureKitError)
    detail = str(err) if known else f"{type(err).__name__}: {err}"
    # an emitter's or a source's error text may hold a credentialed URL; warnings reach logs
    warnings.warn(redact(f"{what}: {detail}"), FeatureKitWarning, stacklevel=3)
