"""Online lookups: the same answer as a training set with labels at the lookup instant.

A lookup plans once per feature list (which view versions, which columns, which
on-demand steps) and caches the plan; a plan is re-made only when a registry folder it
depends on changes (a new version of a view it reads as "latest"), so the per-request cost
depends on the views requested, not on how many views the store holds. Each request is
then one read of the online store, a decode of a few small JSON values, and one polars
DataFrame.

Per view and entity, the value is the snapshot entry valid at the lookup instant ``t``
(see :mod:`featurekit.online.snapshot`), then the TTL rule of the point-in-time join:
``t - event_ts > ttl`` means ``expired`` and null values, no candidate means
``not_found``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from featurekit.core.authoring import FeatureView
from featurekit.core.errors import DefinitionError, NotFoundError, SchemaError, StorageError
from featurekit.core.names import shown
from featurekit.core.on_demand import OnDemandFeature, OnDemandStep, apply_on_demand
from featurekit.core.timeutil import to_utc_datetime
from featurekit.offline.planner import Planner, ServiceName
from featurekit.offline.services import FeatureService
from featurekit.online.aggregates import decode_aggregates
from featurekit.online.errors import EntityError
from featurekit.online.serving_log import LoggedView, ServingLog
from featurekit.online.snapshot import (
    SnapshotMeta,
    construct_dtype,
    encode_key,
    pick_entry,
    restore_values,
    to_us,
)
from featurekit.storage.registry import VersionRecord

if TYPE_CHECKING:
    from featurekit.online.stores import OnlineStore

__all__ = ["LookupResult", "OnlineService", "ServiceName", "ViewStats"]

PRESENT, EXPIRED, NOT_FOUND = "present", "expired", "not_found"
_INT_RANGES = {
    "Int8": (-(2**7), 2**7 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "Int128": (-(2**127), 2**127 - 1),
    "UInt8": (0, 2**8 - 1),
    "UInt16": (0, 2**16 - 1),
    "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1),
    "UInt128": (0, 2**128 - 1),
}
_EVENT_DTYPE = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class ViewStats:
    """What one request found in one view version (feeds the server's metrics)."""

    view: str
    version: int
    present: int
    expired: int
    not_found: int
    taken_us: int


@dataclass(frozen=True)
class LookupResult:
    """A lookup's rows (in request order) and what it found per view."""

    frame: pl.DataFrame
    at_us: int
    stats: tuple[ViewStats, ...]


@dataclass
class _ViewPlan:
    record: VersionRecord
    features: tuple[str, ...]
    names: tuple[str, ...]
    key_kinds: tuple[tuple[str, int, int] | None, ...]  # (dtype, low, high) for integer keys
    event_name: str
    status_name: str


@dataclass
class _Plan:
    views: list[_ViewPlan]
    key_columns: tuple[str, ...]
    request_columns: tuple[str, ...]
    steps: list[OnDemandStep]
    drop: list[str]
    watch: list[tuple[str, int]]
    refs: list[str] = field(default_factory=list)


class OnlineService:
    """Answers ``get_online_features`` for one store, with plans and snapshot metadata cached.

    Requests are planned by the store's :class:`~featurekit.offline.planner.Planner`, the
    one that plans training sets, so both name and order columns alike.
    """

    def __init__(self, planner: Planner, online: OnlineStore) -> None:
        self.planner = planner
        self.online = online
        self._plans: dict[Any, _Plan] = {}
        self._metas: dict[str, SnapshotMeta] = {}
        self._lock = threading.Lock()
        #: where lookups are logged (``Store(log_serving=...)``); None: not logged
        self.serving_log: ServingLog | None = None

    # ---- planning ---------------------------------------------------------------------------
    def _plan(self, features: Any, columns: tuple[str, ...]) -> _Plan:
        try:
            key = (_spec_key(features), columns)
            plan = self._plans.get(key)
        except TypeError:
            key, plan = None, None
        if plan is not None and all(_mtime(path) == seen for path, seen in plan.watch):
            return plan
        plan = self._make_plan(features, columns)
        if key is not None:
            with self._lock:
                if len(self._plans) > 1024:
                    self._plans.clear()
                self._plans[key] = plan
        return plan

    def _make_plan(self, features: Any, columns: tuple[str, ...]) -> _Plan:
        planned = self.planner.plan(features, columns=columns)
        views = [(r.record, r.features) for r in planned.views]
        _check_columns(
            columns,
            planned.key_columns,
            planned.request_columns,
            [(r.view, r.version) for r, _ in views],
        )
        plans = []
        for request in planned.views:
            record = request.record
            tag = request.qualifier or record.view
            plans.append(
                _ViewPlan(
                    record=record,
                    features=request.features,
                    names=planned.names(request),
                    key_kinds=tuple(_key_kind(record, k) for k in record.keys),
                    event_name=f"{tag}__event_ts",
                    status_name=f"{tag}__status",
                )
            )
        registry = self.planner.registry
        paths = dict.fromkeys(
            str(registry.layout.watch_path(kind, name)) for kind, name in planned.watch
        )
        watch = [(p, _mtime(p)) for p in paths]
        return _Plan(
            plans,
            planned.key_columns,
            planned.request_columns,
            list(planned.steps),
            list(planned.drop),
            watch,
        )

    def _meta(self, sid: str, raw: bytes) -> SnapshotMeta:
        meta = self._metas.get(sid)
        if meta is None:
            meta = SnapshotMeta.from_bytes(raw)
            with self._lock:
                if len(self._metas) > 4096:
                    self._metas.clear()
                self._metas[sid] = meta
        return meta

    # ---- lookups ----------------------------------------------------------------------------
    def lookup(
        self,
        features: Any,
        entities: Mapping[str, Sequence[Any]] | pl.DataFrame,
        *,
        with_metadata: bool = False,
        at: datetime | None = None,
    ) -> LookupResult:
        """Feature values for each entity row, in request order (see the module docstring)."""
        data = _columns(entities)
        plan = self._plan(features, tuple(data))
        n = _height(data)
        explicit = at is not None
        t_us = to_us(to_utc_datetime(at)) if at is not None else time.time_ns() // 1000
        encoded = [_encode_keys(v, data, n) for v in plan.views]
        results = self.online.read(
            [
                (v.record.view, v.record.version, keys)
                for v, (keys, _) in zip(plan.views, encoded, strict=True)
            ]
        )
        metas = []
        for view, (sid, raw, _) in zip(plan.views, results, strict=True):
            if sid is None or raw is None:
                raise NotFoundError(
                    f"view {view.record.view!r} version {view.record.version} has no online "
                    f"data in {self.online.url}; run store.materialize({view.record.view}) "
                    "with this online store (a no-op offline run still fills it)."
                )
            meta = self._meta(sid, raw)
            check_fingerprint(meta, view.record)
            metas.append(meta)
        order = list(data)  # entity columns in the caller's order, then features, metadata
        columns: _Columns = _Columns()
        extra: list[pl.Series] = []
        for column, values in data.items():
            if column in plan.key_columns:
                dtype = next(m.schema[column] for m in metas if column in m.keys)
                columns.add(column, values, dtype)
            else:  # request and pass-through columns, as a training set keeps label columns
                extra.append(_series(column, values))
        meta_cols = _Columns()
        stats = []
        logged: list[LoggedView] = []
        for view, meta, (keys, rows), (_, _, values) in zip(
            plan.views, metas, encoded, results, strict=True
        ):
            if explicit and t_us < meta.taken_us:
                raise DefinitionError(
                    f"at={at} is before the online snapshot of view {meta.view!r} version "
                    f"{meta.version} (taken {meta.taken.isoformat()}); online stores keep no "
                    "history. Use store.training_set for past instants."
                )
            t_view = max(t_us, meta.taken_us)  # a clock behind the writer's: serve as of T
            if view.record.aggregations:  # computed now, by the training sets' kernel
                stored_keys = [orjson.loads(k) for k in keys]
                cols, statuses = decode_aggregates(
                    view.record, view.features, meta, stored_keys, rows, values, t_view
                )
                events: list[int | None] = [None] * n
                present = statuses.count(PRESENT)
                counts = (present, 0, n - present)
            else:
                cols, events, statuses, counts = _decode(view, meta, keys, rows, values, t_view, n)
            for name, feature in zip(view.names, view.features, strict=True):
                columns.add(name, cols[feature], meta.schema[feature])
                order.append(name)
            if with_metadata:
                meta_cols.add(view.event_name, events, _EVENT_DTYPE)
                meta_cols.add(view.status_name, statuses, pl.String())
            stats.append(ViewStats(meta.view, meta.version, *counts, meta.taken_us))
            if self.serving_log is not None:  # references only: the log's thread builds rows
                logged.append(
                    LoggedView(meta.view, meta.version, view.features, cols, statuses, events)
                )
        frame = columns.frame(n)
        if extra:
            frame = frame.hstack(extra).select(order)
        if plan.steps:
            frame = apply_on_demand(frame, plan.steps, drop=plan.drop)
        if with_metadata:
            frame = frame.hstack(meta_cols.frame(n).get_columns())
        if self.serving_log is not None:
            self.serving_log.record(t_us, data, plan.key_columns, logged)
        return LookupResult(frame, t_us, tuple(stats))


class _Columns:
    """Columns of python values built into one DataFrame the fastest way for their size.

    Few rows: one row-oriented construction (one call into polars); many rows: one Series
    per column. Temporal and categorical values arrive physical and are cast at the end.
    """

    _ROW_LIMIT = 32

    def __init__(self) -> None:
        self.names: list[str] = []
        self.values: list[list[Any]] = []
        self.build: dict[str, pl.DataType] = {}
        self.casts: dict[str, pl.DataType] = {}

    def add(self, name: str, values: list[Any], dtype: pl.DataType) -> None:
        built = construct_dtype(dtype)
        self.names.append(name)
        self.values.append(values)
        self.build[name] = built
        if built is not dtype and built != dtype:
            self.casts[name] = dtype

    def frame(self, n: int) -> pl.DataFrame:
        if n <= self._ROW_LIMIT:
            rows = list(zip(*self.values, strict=True)) if self.values else []
            frame = pl.DataFrame(rows, schema=self.build, orient="row")
        else:
            frame = pl.DataFrame(
                [
                    pl.Series(name, values, dtype=self.build[name])
                    for name, values in zip(self.names, self.values, strict=True)
                ]
            )
        if self.casts:
            frame = frame.with_columns(pl.col(c).cast(d) for c, d in self.casts.items())
        return frame


def _spec_key(features: Any) -> Any:
    if isinstance(features, str | FeatureView | OnDemandFeature | FeatureService | ServiceName):
        return (features,)
    return tuple(features)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _columns(entities: Any) -> dict[str, list[Any]]:
    if isinstance(entities, pl.DataFrame):
        return entities.to_dict(as_series=False)
    if not isinstance(entities, Mapping):
        raise SchemaError(
            f"entities must be a mapping of column -> list of values (e.g. "
            f"{{'driver_id': [1, 2]}}) or a polars DataFrame, got {type(entities).__name__}."
        )
    out: dict[str, list[Any]] = {}
    for name, values in entities.items():
        if not isinstance(name, str):
            raise EntityError(f"entity column names must be strings, got {name!r}.", field=None)
        if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
            raise EntityError(
                f"entities[{name!r}] must be a list of values, got {type(values).__name__}; "
                f"e.g. {{{name!r}: [{values!r}]}}.",
                field=name,
            )
        out[name] = values.to_list() if hasattr(values, "to_list") else list(values)
    return out


def _height(data: Mapping[str, list[Any]]) -> int:
    lengths = {name: len(values) for name, values in data.items()}
    if len(set(lengths.values())) > 1:
        raise SchemaError(f"entity columns must have the same length, got {lengths}.")
    return next(iter(lengths.values()), 0)


def _check_columns(
    given: Sequence[str],
    keys: Sequence[str],
    request: Sequence[str],
    views: Sequence[tuple[str, int]],
) -> None:
    names = ", ".join(f"{v}@{n}" for v, n in views)
    for key in keys:
        if key not in given:
            raise EntityError(
                f"entities are missing key column {key!r} (needed by {names}); pass "
                f"entities={{{key!r}: [...], ...}}. Expected keys {list(keys)}"
                + (f" and request columns {list(request)}." if request else "."),
                field=key,
            )
    for column in request:
        if column not in given:
            raise EntityError(
                f"entities are missing request column {column!r}, read by an on-demand "
                f"feature; pass it next to the keys, e.g. {{{column!r}: [...]}}.",
                field=column,
            )


def _series(name: str, values: list[Any]) -> pl.Series:
    try:
        return pl.Series(name, values)
    except Exception as err:
        raise EntityError(
            f"entity column {name!r} mixes value types ({type(err).__name__}: {err}); "
            "give each column one type.",
            field=name,
        ) from err


def _key_kind(record: VersionRecord, key: str) -> tuple[str, int, int] | None:
    dtype = record.output.get(key, "Int64")
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        return dtype, low, high
    return None


def _encode_keys(
    view: _ViewPlan, data: Mapping[str, list[Any]], n: int
) -> tuple[list[bytes], list[int]]:
    """Unique encoded keys of one view, and each row's index into them (-1: null key)."""
    columns = [data[k] for k in view.record.keys]
    for key, kind, values in zip(view.record.keys, view.key_kinds, columns, strict=True):
        _check_key_values(view.record, key, kind, values)
    unique: dict[bytes, int] = {}
    rows: list[int] = []
    if len(columns) == 1:
        only = columns[0]
        for value in only:
            if value is None:
                rows.append(-1)
                continue
            encoded = encode_key((value,))
            rows.append(unique.setdefault(encoded, len(unique)))
    else:
        for i in range(n):
            row = tuple(c[i] for c in columns)
            if any(v is None for v in row):
                rows.append(-1)
                continue
            encoded = encode_key(row)
            rows.append(unique.setdefault(encoded, len(unique)))
    return list(unique), rows


def _check_key_values(
    record: VersionRecord, key: str, kind: tuple[str, int, int] | None, values: list[Any]
) -> None:
    if kind is None:
        for i, value in enumerate(values):
            if value is not None and type(value) is not str:
                raise EntityError(
                    f"entity key {key!r} must be strings (view {record.view!r} keys are "
                    f"strings); got {shown(value)} ({type(value).__name__}) at position {i}.",
                    field=key,
                )
        return
    dtype, low, high = kind
    for i, value in enumerate(values):
        if value is None:
            continue
        if type(value) is not int:
            raise EntityError(
                f"entity key {key!r} must be integers (view {record.view!r} stores {dtype}); "
                f"got {shown(value)} ({type(value).__name__}) at position {i}.",
                field=key,
            )
        if not low <= value <= high:
            raise EntityError(
                f"entity key {key!r}: {value} at position {i} is out of range for {dtype}.",
                field=key,
            )


def _decode(
    view: _ViewPlan,
    meta: SnapshotMeta,
    keys: list[bytes],
    rows: list[int],
    values: list[bytes | None],
    t_us: int,
    n: int,
) -> tuple[dict[str, list[Any]], list[int | None], list[str], tuple[int, int, int]]:
    index = meta.feature_index
    positions = [index[f] for f in view.features]
    ttl = meta.ttl_us
    decoded: list[tuple[str, int | None, list[Any] | None]] = []
    for raw in values:
        if raw is None:
            decoded.append((NOT_FOUND, None, None))
            continue
        entry = pick_entry(orjson.loads(raw), t_us)
        event = entry[1]
        if event is None:
            decoded.append((NOT_FOUND, None, None))
        elif ttl is not None and t_us - event > ttl:
            decoded.append((EXPIRED, event, None))
        else:
            decoded.append((PRESENT, event, restore_values(entry)))
    missing: tuple[str, int | None, list[Any] | None] = (NOT_FOUND, None, None)
    picked = [decoded[r] if r >= 0 else missing for r in rows]
    cols: dict[str, list[Any]] = {}
    for feature, pos in zip(view.features, positions, strict=True):
        cols[feature] = [None if v is None else v[pos] for _, _, v in picked]
    statuses = [s for s, _, _ in picked]
    events = [e for _, e, _ in picked]
    present = statuses.count(PRESENT)
    expired = statuses.count(EXPIRED)
    return cols, events, statuses, (present, expired, n - present - expired)


def check_fingerprint(meta: SnapshotMeta, record: VersionRecord) -> None:
    """A snapshot must belong to the registry's version (guards a reused store root)."""
    if meta.fingerprint != record.fingerprint:
        raise StorageError(
            f"the online snapshot of view {record.view!r} version {record.version} has "
            f"fingerprint {meta.fingerprint}, the registry says {record.fingerprint}; "
            "re-materialize the view to refresh it."
        )
