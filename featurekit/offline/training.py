"""Training sets: point-in-time joins recorded so they can be rebuilt bit for bit.

A training set's id hashes what defines it: the labels' content, every view version and
fingerprint, the pinned Delta version of every feature table, TTLs and PIT options. Its
manifest and labels are stored under ``<root>/training_sets/<id>/``; rebuilding reads the
same labels and the same table versions, runs the same kernel and must reproduce the
recorded content hash, or raises :class:`~featurekit.core.errors.ReproducibilityError`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl
import pyarrow as pa

from featurekit.core.config import __version__
from featurekit.core.errors import DefinitionError, ReproducibilityError, SchemaError
from featurekit.core.hashing import frame_hash, stable_hash
from featurekit.core.timeutil import before, to_utc_expr, utcnow
from featurekit.kernels.aggregate import AggSpec
from featurekit.kernels.pit import PointInTime, ViewFrame, pit_join
from featurekit.offline.damage import damaged_data_is_irreproducible
from featurekit.offline.dtypes import check_label_columns
from featurekit.storage import delta
from featurekit.storage.registry import Registry, VersionRecord, write_json_once

if TYPE_CHECKING:
    from featurekit.notebook.explain import Explanation

_ROW = "__fk_row"


@dataclass(frozen=True)
class ViewRequest:
    """One view version and the features wanted from it."""

    record: VersionRecord
    features: tuple[str, ...]
    ttl: timedelta | None
    table: str
    delta_version: int | None


class TrainingSet:
    """Labels joined point-in-time to features, with the manifest that can rebuild them.

    Example:
        >>> ts = store.training_set(labels, features=["driver_stats:conv_rate"], timestamp="ts")
        >>> ts.id, ts.to_polars().shape
    """

    def __init__(self, registry: Registry, manifest: dict[str, Any], frame: pl.DataFrame) -> None:
        self._registry = registry
        self.manifest = manifest
        self._frame = frame

    @property
    def id(self) -> str:
        """Stable id: the same inputs always give the same id."""
        return str(self.manifest["id"])

    def to_polars(self) -> pl.DataFrame:
        """The rows as a polars DataFrame (labels in their order, then features)."""
        return self._frame.clone()

    def to_arrow(self) -> pa.Table:
        """The rows as a pyarrow Table."""
        return self._frame.to_arrow()

    def save(self, name: str) -> TrainingSet:
        """Name this training set and keep a materialized copy of its rows."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name or ""):
            raise DefinitionError(
                f"training set name {name!r} is not valid: use letters, digits, '_', '-' "
                "and '.', starting with a letter or digit (e.g. 'churn-2026-11')."
            )
        data = self._registry.training_set_dir(self.id) / "data"
        if not delta.table_exists(str(data)):
            delta.write_rows(str(data), self._frame, metadata={"training_set": self.id})
        self._registry.name_training_set(name, self.id)
        return self

    def __len__(self) -> int:
        return self._frame.height

    def __repr__(self) -> str:
        views = ", ".join(f"{v['view']}@{v['version']}" for v in self.manifest["views"])
        return f"TrainingSet(id={self.id!r}, rows={self._frame.height}, views=[{views}])"

    def explain(self, row: int) -> Explanation:
        """Why row ``row`` holds its feature values: every candidate row of every view on a
        timeline, which one the point-in-time join chose, and why the others were not
        (future, not yet known, outside TTL, lost a tie, older).

        Example:
            >>> ts.explain(0)  # a timeline per view in Jupyter; .to_polars() for the rows
        """
        from featurekit.notebook.explain import explain

        return explain(self, row)

    def _repr_html_(self) -> str:
        from featurekit.notebook.reprs import training_set_html

        return training_set_html(self)


class OnDemandHook(Protocol):
    """Adds on-demand features to a joined frame (see :mod:`featurekit.offline.services`)."""

    def manifest(self) -> list[dict[str, Any]]:
        """What the manifest and the id record about the on-demand features."""
        ...

    def __call__(self, joined: pl.DataFrame) -> pl.DataFrame: ...


def build(
    registry: Registry,
    labels: pl.DataFrame,
    *,
    timestamp: str,
    requests: Sequence[ViewRequest],
    point_in_time: PointInTime,
    as_of: datetime | None,
    on_demand: OnDemandHook | None = None,
) -> TrainingSet:
    """Join, record the manifest and labels, and return the training set."""
    _check_label_timestamp(labels, timestamp)
    check_label_columns(labels)
    frames = [_read_view(req, labels, timestamp) for req in requests]
    result = pit_join(labels, timestamp=timestamp, views=frames, point_in_time=point_in_time)
    if on_demand is not None:
        result = on_demand(result)
    views = [
        {
            "view": r.record.view,
            "version": r.record.version,
            "fingerprint": r.record.fingerprint,
            "table": str(Path(r.table).relative_to(registry.root)),
            "delta_version": r.delta_version,
            "keys": r.record.keys,
            "timestamp": r.record.timestamp,
            "created_timestamp": r.record.created_timestamp,
            "features": list(r.features),
            "ttl_us": None if r.ttl is None else int(r.ttl / timedelta(microseconds=1)),
        }
        for r in requests
    ]
    identity = {
        "labels": frame_hash(labels),
        "timestamp": timestamp,
        "views": views,
        "point_in_time": point_in_time,
        "as_of": as_of.isoformat() if as_of else None,
    }
    if on_demand is not None:  # only then: ids of sets without on-demand features are unchanged
        identity["on_demand"] = on_demand.manifest()
    ts_id = stable_hash(identity, 16)
    manifest = {
        "id": ts_id,
        "format_version": 1,
        "created_at": utcnow().isoformat(),
        "labels": {
            "hash": identity["labels"],
            "rows": labels.height,
            "columns": labels.columns,
            "timestamp": timestamp,
            "schema": base64.b64encode(labels.to_arrow().schema.serialize().to_pybytes()).decode(),
        },
        "views": views,
        "columns": result.columns[labels.width :],
        "point_in_time": point_in_time,
        "as_of": identity["as_of"],
        "result_hash": frame_hash(result),
        "result_rows": result.height,
        "library_versions": library_versions(),
    }
    if on_demand is not None:
        manifest["on_demand"] = identity["on_demand"]
    _persist(registry, manifest, labels)
    return TrainingSet(registry, manifest, result)


@damaged_data_is_irreproducible
def rebuild(
    registry: Registry, manifest: dict[str, Any], on_demand: OnDemandHook | None = None
) -> TrainingSet:
    """Rebuild a training set from its manifest and verify its content hash."""
    folder = registry.training_set_dir(manifest["id"])
    labels = _read_labels(folder / "labels", manifest["labels"]["schema"])
    timestamp = manifest["labels"]["timestamp"]
    requests = []
    for v in manifest["views"]:
        record = registry.version(v["view"], v["version"])
        ttl = None if v["ttl_us"] is None else timedelta(microseconds=v["ttl_us"])
        requests.append(
            ViewRequest(
                record,
                tuple(v["features"]),
                ttl,
                str(registry.root / v["table"]),
                v["delta_version"],
            )
        )
    frames = [_read_view(req, labels, timestamp) for req in requests]
    result = pit_join(
        labels, timestamp=timestamp, views=frames, point_in_time=manifest["point_in_time"]
    )
    if manifest.get("on_demand"):
        if on_demand is None:
            raise ReproducibilityError(
                f"training set {manifest['id']!r} has on-demand features; rebuild it through "
                "store.training_set_by_id(id, on_demand=[...])."
            )
        result = on_demand(result)
    got = frame_hash(result)
    if got != manifest["result_hash"]:
        raise ReproducibilityError(
            f"training set {manifest['id']!r} rebuilt to different rows (hash {got[:16]} != "
            f"recorded {manifest['result_hash'][:16]}). Built with {manifest['library_versions']}, "
            f"now {library_versions()}. Were feature tables vacuumed or edited outside featurekit?"
        )
    return TrainingSet(registry, manifest, result)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that define a training set's values."""
    versions = {"featurekit": __version__}
    versions.update({name: metadata.version(name) for name in ("polars", "deltalake", "pyarrow")})
    return versions


def _check_label_timestamp(labels: pl.DataFrame, timestamp: str) -> None:
    if timestamp not in labels.columns:
        raise SchemaError(
            f"labels have no timestamp column {timestamp!r}; label columns are {labels.columns}. "
            "Pass timestamp='<your label time column>'."
        )
    to_utc_expr(timestamp, labels.schema[timestamp], what="label timestamp")


def _read_view(req: ViewRequest, labels: pl.DataFrame, timestamp: str) -> ViewFrame:
    record = req.record
    columns = [*record.keys, record.timestamp]
    if record.created_timestamp:
        columns.append(record.created_timestamp)
    specs = aggregation_specs(record, req.features)
    stored = record.event_columns if specs else req.features
    columns.extend(f for f in stored if f not in columns)
    version = 0 if req.delta_version is None else req.delta_version
    # as_of before the table's first commit: no rows yet (the schema still comes from v0)
    where = (
        pl.lit(False) if req.delta_version is None else _prune(labels, timestamp, record, req.ttl)
    )

    def load() -> pl.DataFrame:  # the kernel reads one view at a time (issue 7: memory)
        return delta.read_rows(req.table, version=version, columns=columns, where=where)

    return ViewFrame(
        name=record.view,
        frame=load,
        keys=tuple(record.keys),
        timestamp=record.timestamp,
        created_timestamp=record.created_timestamp,
        features=req.features,
        ttl=req.ttl,
        aggregations=specs,
    )


#: Below this many distinct label entities, reads also filter on the keys (small training
#: sets from big stores read only what they need; above it, the filter costs more than it saves).
KEY_PRUNE_LIMIT = 50_000


def _prune(
    labels: pl.DataFrame, timestamp: str, record: VersionRecord, ttl: timedelta | None
) -> pl.Expr:
    """Only rows some label could pick: its entities, event time in [min t - ttl, max t]."""
    times = labels.select(to_utc_expr(timestamp, labels.schema[timestamp], what="label timestamp"))
    low, high = times.to_series().min(), times.to_series().max()
    if not isinstance(high, datetime):
        return pl.lit(False)
    condition = pl.col(record.timestamp) <= pl.lit(high)
    reach = ttl
    if record.aggregations:  # events count for labels up to the widest window after them
        windows = [a["window_us"] for a in record.aggregations]
        reach = None if None in windows else timedelta(microseconds=max(windows))
    floor = before(low, reach) if reach is not None and isinstance(low, datetime) else None
    if floor is not None:  # None: labels so early that nothing is too old for them
        condition = condition & (pl.col(record.timestamp) >= pl.lit(floor))
    stored = record.parts.get("source_schema", {}).get("output", {})
    for key in record.keys:
        if key not in labels.columns or str(labels.schema[key]) != stored.get(key):
            continue  # the kernel aligns or rejects mismatched key dtypes, with a clear message
        values = labels.get_column(key).drop_nulls().unique()
        if values.len() <= KEY_PRUNE_LIMIT:
            condition = condition & pl.col(key).is_in(values.implode())
    return condition


def aggregation_specs(record: VersionRecord, features: Sequence[str]) -> tuple[AggSpec, ...]:
    """The requested aggregates of an aggregation view, in request order."""
    by_name = {a["name"]: a for a in record.aggregations}
    return tuple(
        AggSpec(
            a["column"],
            a["function"],
            None if a["window_us"] is None else timedelta(microseconds=a["window_us"]),
            a["name"],
        )
        for a in (by_name[f] for f in features if f in by_name)
    )


def _persist(registry: Registry, manifest: Mapping[str, Any], labels: pl.DataFrame) -> None:
    folder = registry.training_set_dir(manifest["id"])
    if (folder / "manifest.json").exists():
        return
    stored = _storable(labels.with_row_index(_ROW))
    delta.write_rows(str(folder / "labels"), stored, metadata={"training_set": manifest["id"]})
    write_json_once(folder / "manifest.json", dict(manifest))


def _storable(frame: pl.DataFrame) -> pl.DataFrame:
    """Delta keeps microsecond UTC timestamps only: store raw integers, restore from schema."""
    casts = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime | pl.Duration):
            casts.append(pl.col(name).to_physical())
        elif isinstance(dtype, pl.Categorical | pl.Enum):
            casts.append(pl.col(name).cast(pl.String))
    return frame.with_columns(casts) if casts else frame


def _read_labels(path: Path, schema_b64: str) -> pl.DataFrame:
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(schema_b64)))
    version = delta.current_version(str(path))
    if version is None:
        raise ReproducibilityError(f"the stored labels at {str(path)!r} are missing.")
    stored = delta.read_rows(str(path), version=0).sort(_ROW).drop(_ROW)
    table = stored.to_arrow()
    columns = []
    for field in schema:
        column = table.column(field.name)
        if pa.types.is_timestamp(field.type) or pa.types.is_duration(field.type):
            column = column.cast(pa.int64()).cast(field.type)
        else:
            column = column.cast(field.type)
        columns.append(column)
    restored = pl.from_arrow(pa.table(columns, schema=schema))
    assert isinstance(restored, pl.DataFrame)
    return restored
