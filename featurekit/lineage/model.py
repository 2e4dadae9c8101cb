"""The lineage model: nodes, edges, runs, column dependencies and the queries over them. No I/O.

Node ids are readable strings, ``<kind>:<name>@<version>[:<column>]``:

=================  ======================================  ==========================================
kind               id                                      what
=================  ======================================  ==========================================
``source``         ``source:trips@v12``                    a raw source as read: ``v12`` is its Delta
                                                           version; file and in-memory sources carry
                                                           a 12-hex content fingerprint instead
``column``         ``column:trips@v12:fare``               one column of that source
``view``           ``view:driver_stats@3``                 a feature view version (its Delta table)
``feature``        ``feature:driver_stats@3:conv``         one feature (output column) of a version
``training_set``   ``training_set:<id>``                   a recorded training set
``model``          ``model:churn@2``                       a model entry (versioned per name)
=================  ======================================  ==========================================

Edges point from input to output (data flows along them). ``kind`` is one of:

- ``reads``: dataset to dataset (source→view, view→view, view→training set, training set→model);
- ``contains``: a dataset to its columns (source→column, view→feature);
- ``derives``: column-level lineage (column or feature → feature; a source → feature when an
  output reads no column, e.g. ``COUNT(*)`` or a literal), with ``transformation``
  ``DIRECT`` (values flow into the output) or ``INDIRECT`` (the input shapes which rows exist:
  filters, keys, group-by, window partition/order), an OpenLineage ``subtype`` and a
  ``description``;
- ``selects``: a feature → a training set that holds it.

Every edge carries the ``run_id`` and ``time`` of the latest run that recorded it. This model is
the stable contract for renderers and notebook widgets: ``to_dict()`` is its serialized form.
Renderers and exporters (:mod:`~featurekit.lineage.render`, :mod:`~featurekit.lineage.openlineage`)
take a :class:`GraphModel`; :class:`~featurekit.lineage.graph.LineageGraph` adds them as methods.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Self

from featurekit.core.errors import NotFoundError, did_you_mean

NODE_KINDS: tuple[str, ...] = ("source", "column", "view", "feature", "training_set", "model")
#: Version of :meth:`GraphModel.to_dict`'s layout.
GRAPH_FORMAT = 1


@dataclass(frozen=True)
class Node:
    """One node: ``id`` is ``kind:name@version[:column]``; ``attrs`` holds JSON-able details."""

    id: str
    kind: str
    name: str
    version: str | None = None
    column: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "column": self.column,
            "attrs": self.attrs,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=str(data["id"]),
            kind=str(data["kind"]),
            name=str(data["name"]),
            version=None if data.get("version") is None else str(data["version"]),
            column=data.get("column"),
            attrs=dict(data.get("attrs") or {}),
        )


@dataclass(frozen=True)
class Edge:
    """A directed edge from ``source`` (input) to ``target`` (output)."""

    source: str
    target: str
    kind: str
    transformation: str | None = None
    subtype: str | None = None
    description: str | None = None
    run_id: str | None = None
    time: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str | None, str | None]:
        """Identity of the edge (runs that re-record it update ``run_id``/``time``)."""
        return (self.source, self.target, self.kind, self.transformation, self.subtype)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (None fields left out)."""
        full = {
            "source": self.source,
            "target": self.target,
            "kind": self.kind,
            "transformation": self.transformation,
            "subtype": self.subtype,
            "description": self.description,
            "run_id": self.run_id,
            "time": self.time,
        }
        return {k: v for k, v in full.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Edge:
        """Inverse of :meth:`to_dict`."""
        return cls(
            source=str(data["source"]),
            target=str(data["target"]),
            kind=str(data["kind"]),
            transformation=data.get("transformation"),
            subtype=data.get("subtype"),
            description=data.get("description"),
            run_id=data.get("run_id"),
            time=data.get("time"),
        )


@dataclass(frozen=True)
class Run:
    """One recorded run: a materialization, a training set build or a model entry."""

    run_id: str
    kind: str
    time: str
    job: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "time": self.time,
            "job": self.job,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "attrs": self.attrs,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        """Inverse of :meth:`to_dict`."""
        return cls(
            run_id=str(data["run_id"]),
            kind=str(data["kind"]),
            time=str(data["time"]),
            job=str(data["job"]),
            inputs=tuple(data.get("inputs") or ()),
            outputs=tuple(data.get("outputs") or ()),
            attrs=dict(data.get("attrs") or {}),
        )


#: Transformation strength, for merging two routes to the same input.
_STRENGTH = {"DIRECT": 3, "INDIRECT": 2, "UNKNOWN": 1}


@dataclass(frozen=True)
class ColumnDep:
    """One input of an output column: ``column`` None means the input table as a whole."""

    input: str
    column: str | None
    transformation: str  # DIRECT | INDIRECT | UNKNOWN
    subtype: str | None = None
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "input": self.input,
            "column": self.column,
            "transformation": self.transformation,
            "subtype": self.subtype,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnDep:
        """Inverse of :meth:`to_dict`."""
        return cls(
            str(data["input"]),
            data.get("column"),
            str(data["transformation"]),
            data.get("subtype"),
            data.get("description"),
        )


def strongest(old: ColumnDep | None, new: ColumnDep) -> ColumnDep:
    """Of two routes to the same input column, keep the stronger (DIRECT beats INDIRECT)."""
    if old is None or _STRENGTH[new.transformation] > _STRENGTH[old.transformation]:
        return new
    return old


class GraphModel:
    """Nodes, edges and runs with the lineage questions (traversal, raw columns, impact,
    staleness) and the serialized form; :class:`~featurekit.lineage.graph.LineageGraph`
    adds rendering and export on top.
    """

    def __init__(
        self,
        nodes: Iterable[Node] = (),
        edges: Iterable[Edge] = (),
        runs: Iterable[Run] = (),
        *,
        focus: str | None = None,
    ) -> None:
        self.nodes: dict[str, Node] = {}
        for node in nodes:
            self._add_node(node)
        merged: dict[tuple[str, str, str, str | None, str | None], Edge] = {}
        for edge in edges:
            old = merged.get(edge.key)
            if old is None or (edge.time or "") >= (old.time or ""):
                merged[edge.key] = edge
        self.edges: list[Edge] = sorted(merged.values(), key=lambda e: (*e.key[:3], e.key[3] or ""))
        self.runs: dict[str, Run] = {}
        for run in sorted(runs, key=lambda r: (r.time, r.run_id)):
            self.runs[run.run_id] = run
        self.focus = focus
        self._out: dict[str, list[Edge]] = {}
        self._in: dict[str, list[Edge]] = {}
        for edge in self.edges:
            self._out.setdefault(edge.source, []).append(edge)
            self._in.setdefault(edge.target, []).append(edge)

    def _add_node(self, node: Node) -> None:
        old = self.nodes.get(node.id)
        if old is None:
            self.nodes[node.id] = node
        else:  # later records add detail (e.g. a Delta version seen later); never drop any
            self.nodes[node.id] = replace(old, attrs={**old.attrs, **node.attrs})

    # ---- lookups ----------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        """The node with this id, or a :class:`~featurekit.NotFoundError` with suggestions."""
        found = self.nodes.get(node_id)
        if found is None:
            raise NotFoundError(
                f"no lineage node {node_id!r}.{did_you_mean(node_id, self.nodes)} Node ids look "
                "like 'source:trips@v12', 'view:driver_stats@3', 'feature:driver_stats@3:conv', "
                "'training_set:<id>' or 'model:churn@2'."
            )
        return found

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def of_kind(self, kind: str) -> list[Node]:
        """Nodes of one kind, sorted by id."""
        return [n for _, n in sorted(self.nodes.items()) if n.kind == kind]

    def inputs_of(self, node_id: str) -> list[Edge]:
        """Edges into ``node_id``."""
        return list(self._in.get(node_id, []))

    def outputs_of(self, node_id: str) -> list[Edge]:
        """Edges out of ``node_id``."""
        return list(self._out.get(node_id, []))

    # ---- traversal --------------------------------------------------------------------------
    def _walk(self, start: str, *, up: bool, depth: int | None) -> dict[str, int]:
        self.node(start)
        seen = {start: 0}
        queue = deque([start])
        while queue:
            current = queue.popleft()
            if depth is not None and seen[current] >= depth:
                continue
            edges = self._in.get(current, []) if up else self._out.get(current, [])
            for edge in edges:
                nxt = edge.source if up else edge.target
                if nxt not in seen:
                    seen[nxt] = seen[current] + 1
                    queue.append(nxt)
        return seen

    def upstream(self, node_id: str, depth: int | None = None) -> list[str]:
        """Ids of everything ``node_id`` was derived from (within ``depth`` hops), sorted."""
        return sorted(n for n in self._walk(node_id, up=True, depth=depth) if n != node_id)

    def downstream(self, node_id: str, depth: int | None = None) -> list[str]:
        """Ids of everything derived from ``node_id`` (within ``depth`` hops), sorted."""
        return sorted(n for n in self._walk(node_id, up=False, depth=depth) if n != node_id)

    def subgraph(
        self,
        node_id: str,
        *,
        upstream: bool = True,
        downstream: bool = True,
        depth: int | None = None,
    ) -> Self:
        """The part of the graph around ``node_id``; the result's ``focus`` is ``node_id``."""
        keep = {node_id}
        if upstream:
            keep.update(self._walk(node_id, up=True, depth=depth))
        if downstream:
            keep.update(self._walk(node_id, up=False, depth=depth))
        # induced subgraph: every edge between kept nodes, so no path is invented or hidden
        edges = [e for e in self.edges if e.source in keep and e.target in keep]
        run_ids = {e.run_id for e in edges}
        runs = [r for r in self.runs.values() if r.run_id in run_ids]
        return type(self)((self.nodes[n] for n in keep), edges, runs, focus=node_id)

    # ---- questions --------------------------------------------------------------------------
    def raw_columns(self, node_id: str, *, direct_only: bool = False) -> list[str]:
        """Source columns that feed ``node_id`` (``direct_only``: only through DIRECT edges).

        Example:
            >>> graph.raw_columns("model:churn@1")
        """
        if not direct_only:
            return [n for n in self.upstream(node_id) if self.nodes[n].kind == "column"]
        found: set[str] = set()
        targets = self._feature_targets(node_id)
        queue = deque(targets)
        seen = set(targets)
        while queue:
            current = queue.popleft()
            for edge in self._in.get(current, []):
                if edge.kind != "derives" or edge.transformation != "DIRECT":
                    continue
                if self.nodes[edge.source].kind == "column":
                    found.add(edge.source)
                elif edge.source not in seen:
                    seen.add(edge.source)
                    queue.append(edge.source)
        return sorted(found)

    def _feature_targets(self, node_id: str) -> list[str]:
        """Features a node stands on: itself, a view's features, or the features selected
        into a training set (for a model: into its training sets)."""
        kind = self.node(node_id).kind
        if kind == "feature":
            return [node_id]
        if kind == "view":
            return [e.target for e in self._out.get(node_id, []) if e.kind == "contains"]
        sets = [node_id] if kind == "training_set" else []
        if kind == "model":
            sets = [e.source for e in self._in.get(node_id, []) if e.kind == "reads"]
        return sorted(
            {e.source for ts in sets for e in self._in.get(ts, []) if e.kind == "selects"}
        )

    def impact(self, node_id: str) -> dict[str, list[str]]:
        """What would be affected if ``node_id`` changed: downstream ids grouped by kind.

        Example:
            >>> graph.impact("column:trips@v3:fare")["model"]
            ['model:churn@1', 'model:churn@2']
        """
        out: dict[str, list[str]] = {k: [] for k in ("view", "feature", "training_set", "model")}
        for n in self.downstream(node_id):
            kind = self.nodes[n].kind
            if kind in out:
                out[kind].append(n)
        return out

    def stale_models(self) -> dict[str, list[str]]:
        """Models whose training set used a view version that is no longer current, and why.

        A reason is ``code`` (a newer version of the view exists: which fingerprint parts
        changed) or ``data`` (the feature table has commits after the version pinned).
        """
        latest: dict[str, Node] = {}
        for node in self.of_kind("view"):
            if node.version is None or not node.version.isdigit():
                continue
            best = latest.get(node.name)
            if best is None or int(node.version) > int(best.version or 0):
                latest[node.name] = node
        out: dict[str, list[str]] = {}
        for model in self.of_kind("model"):
            reasons: list[str] = []
            for ts in (e.source for e in self._in.get(model.id, []) if e.kind == "reads"):
                for edge in self._in.get(ts, []):
                    view = self.nodes.get(edge.source)
                    if edge.kind != "reads" or view is None or view.kind != "view":
                        continue
                    reasons.extend(_staleness(self.nodes[ts], view, latest.get(view.name)))
            if reasons:
                out[model.id] = reasons
        return out

    # ---- serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"format", "focus", "nodes", "edges", "runs"}``; stable order; JSON-able."""
        return {
            "format": GRAPH_FORMAT,
            "focus": self.focus,
            "nodes": [self.nodes[k].to_dict() for k in sorted(self.nodes)],
            "edges": [e.to_dict() for e in self.edges],
            "runs": [r.to_dict() for r in self.runs.values()],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`."""
        return cls(
            (Node.from_dict(n) for n in data.get("nodes", [])),
            (Edge.from_dict(e) for e in data.get("edges", [])),
            (Run.from_dict(r) for r in data.get("runs", [])),
            focus=data.get("focus"),
        )

    def __repr__(self) -> str:
        counts = {k: len(self.of_kind(k)) for k in NODE_KINDS}
        shown = ", ".join(f"{k}s={v}" for k, v in counts.items() if v)
        focus = f"focus={self.focus!r}, " if self.focus else ""
        return f"{type(self).__name__}({focus}{shown or 'empty'}, edges={len(self.edges)})"


def _staleness(ts: Node, used: Node, newest: Node | None) -> list[str]:
    reasons = []
    label = f"{ts.id} used {used.id}"
    numbers = [n.version or "" for n in (newest, used) if n is not None]
    comparable = len(numbers) == 2 and all(v.isdigit() for v in numbers)
    if newest is not None and comparable and int(numbers[0]) > int(numbers[1]):
        why = newest.attrs.get("reason") or []
        detail = f" (changed: {', '.join(why)})" if why else ""
        reasons.append(f"code: {label}; {newest.id} is newer{detail}")
    pins = ts.attrs.get("pinned") or {}
    pinned = pins.get(used.id) if isinstance(pins, dict) else None
    current = used.attrs.get("current_delta_version")
    if isinstance(pinned, int) and isinstance(current, int) and current > pinned:
        reasons.append(
            f"data: {label} at Delta version {pinned}; its table is now at version {current}"
        )
    return reasons
