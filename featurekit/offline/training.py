"""Training sets: point-in-time joins recorded so they can be rebuilt bit for bit.

A training set's id hashes what defines it: the labels' content, every view version and
fingerprint, the pinned Delta version of every feature table, TTLs and PIT options. Its
manifest and labels are stored under ``<root>/training_sets/<id>/``; rebuilding reads the
same labels and the same table versions, runs the same kernel and must reproduce the
recorded content hash, or raises :class:`~featurekit.core.errors.ReproducibilityError`.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl
import pyarrow as pa

from featurekit.core import display
from featurekit.core.config import __version__
from featurekit.core.definitions import Aggregation
from featurekit.core.errors import ReproducibilityError, SchemaError
from featurekit.core.hashing import (
    AHEAD_ROWS,
    Algorithm,
    ColumnsDigest,
    frame_hash,
    stable_hash,
)
from featurekit.core.names import validate_name
from featurekit.core.redact import redact_url
from featurekit.core.timeutil import before, to_utc_expr, utcnow
from featurekit.kernels.bucketing import BUCKET
from featurekit.kernels.pit import PointInTime, ViewFrame
from featurekit.offline import engine
from featurekit.offline.batching import rows_bytes
from featurekit.offline.damage import damaged_data_is_irreproducible
from featurekit.offline.dtypes import check_label_columns
from featurekit.storage import delta
from featurekit.storage.manifest import LabelsInfo, Manifest, ManifestView, OnDemandEntry
from featurekit.storage.registry import Registry, VersionRecord
from featurekit.storage.remote import is_remote

if TYPE_CHECKING:
    from featurekit.notebook.explain import Explanation

_ROW = "__fk_row"


@dataclass(frozen=True)
class ViewRequest:
    """One view version and the features wanted from it.

    ``qualifier`` prefixes the view's clashing output columns (see :func:`qualifiers`);
    empty means the view's name.
    """

    record: VersionRecord
    features: tuple[str, ...]
    ttl: timedelta | None
    table: str
    delta_version: int | None
    qualifier: str = ""


def qualifiers(views: Sequence[tuple[str, int]]) -> list[str]:
    """The prefix of each view version's clashing output columns, ``view`` or ``view@N``.

    A request that reads one version of a view qualifies its clashing features with the
    view's name (``view__feature``); one that reads several versions of the same view needs
    the version too (``view@1__feature``, ``view@2__feature``), or their columns would
    collide. Rebuilds call this on the manifest's views, so a set is named as it was built.
    """
    counts = Counter(view for view, _ in views)
    return [view if counts[view] == 1 else f"{view}@{version}" for view, version in views]


class TrainingSet:
    """Labels joined point-in-time to features, with the manifest that can rebuild them.

    Example:
        >>> ts = store.training_set(labels, features=["driver_stats:conv_rate"], timestamp="ts")
        >>> ts.id, ts.to_polars().shape
    """

    def __init__(
        self,
        registry: Registry,
        manifest: Manifest,
        frame: pl.DataFrame | tuple[engine.Spilled, str],
    ) -> None:
        self._registry = registry
        self.manifest = manifest
        # in memory, or (larger than the memory budget) files in label order, read lazily
        self._frame = frame if isinstance(frame, pl.DataFrame) else None
        self._stored = None if isinstance(frame, pl.DataFrame) else frame

    @property
    def id(self) -> str:
        """Stable id: the same inputs always give the same id."""
        return self.manifest.id

    @property
    def registry(self) -> Registry:
        """The registry of the store that built this set (its views and tables)."""
        return self._registry

    def to_polars(self) -> pl.DataFrame:
        """The rows as a polars DataFrame (labels in their order, then features).

        A set built larger than the store's memory budget is read from its files here:
        use :meth:`scan` or :meth:`write_parquet` when it does not fit in memory.
        """
        if self._frame is not None:
            return self._frame.clone()
        return self.scan().collect()

    def scan(self) -> pl.LazyFrame:
        """The rows as a polars LazyFrame: read from the set's files when it was built
        larger than the memory budget (nothing is loaded until it is collected).

        Example:
            >>> ts.scan().filter(pl.col("label") == 1).sink_parquet("positives.parquet")
        """
        if self._frame is not None:
            return self._frame.lazy()
        assert self._stored is not None
        spilled, folder = self._stored
        return spilled.scan(folder, self._registry.storage_options)

    def write_parquet(self, path: str | Path) -> None:
        """Write the rows to one parquet file, streamed when the set is larger than memory."""
        if self._frame is not None:
            self._frame.write_parquet(path)
        else:
            self.scan().sink_parquet(path)

    def to_arrow(self) -> pa.Table:
        """The rows as a pyarrow Table."""
        return self.to_polars().to_arrow()

    def save(self, name: str) -> TrainingSet:
        """Name this training set and keep a materialized copy of its rows."""
        validate_name(name, "training set")
        data = self._registry.layout.training_set_uri(self.id, "data")
        options = self._registry.storage_options
        if not delta.table_exists(data, options):
            rows = self._frame if self._frame is not None else self._batches()
            delta.write_rows(
                data, rows, metadata={"training_set": self.id}, storage_options=options
            )
        self._registry.name_training_set(name, self.id)
        return self

    def _batches(self) -> Iterator[pl.DataFrame]:
        assert self._stored is not None
        spilled, folder = self._stored
        for part in spilled.parts:  # one file in memory at a time
            yield pl.read_parquet(
                f"{folder}/{part}", storage_options=self._registry.storage_options or None
            )

    def __len__(self) -> int:
        return self.manifest.result_rows

    def __repr__(self) -> str:
        views = ", ".join(v.ref for v in self.manifest.views)
        return f"TrainingSet(id={self.id!r}, rows={len(self)}, views=[{views}])"

    def explain(self, row: int) -> Explanation:
        """Why row ``row`` holds its feature values: every candidate row of every view on a
        timeline, which one the point-in-time join chose, and why the others were not
        (future, not yet known, outside TTL, lost a tie, older).

        Example:
            >>> ts.explain(0)  # a timeline per view in Jupyter; .to_polars() for the rows
        """
        explanation: Explanation = display.explain(self, row)
        return explanation

    def _repr_html_(self) -> str | None:
        return display.html_for(self)


class OnDemandHook(Protocol):
    """Adds on-demand features to a joined frame (see :mod:`featurekit.offline.services`)."""

    def manifest(self) -> list[OnDemandEntry]:
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
    memory_budget: int | None = None,
    runner: engine.Runner = engine.LOCAL,
) -> TrainingSet:
    """Join, record the manifest and labels, and return the training set.

    A result estimated larger than ``memory_budget`` (bytes) is written to the set's folder
    as it is produced and read lazily (:mod:`featurekit.offline.engine`).
    """
    _check_label_timestamp(labels, timestamp)
    check_label_columns(labels)
    result = _join(
        registry,
        labels,
        timestamp,
        requests,
        point_in_time,
        memory_budget,
        on_demand,
        runner,
        labels_hash=True,
        algorithm=RESULT_HASH,
    )
    joined = iter(result.joined)  # the kernel's names, view by view
    views: list[dict[str, Any]] = [
        {
            "view": r.record.view,
            "version": r.record.version,
            "fingerprint": r.record.fingerprint,
            "table": registry.layout.key_of(r.table),
            "delta_version": r.delta_version,
            "keys": r.record.keys,
            "timestamp": r.record.timestamp,
            "created_timestamp": r.record.created_timestamp,
            "features": list(r.features),
            "ttl_us": None if r.ttl is None else int(r.ttl / timedelta(microseconds=1)),
        }
        for r in requests
    ]
    identity: dict[str, Any] = {
        "labels": result.labels_hash or frame_hash(labels),
        "timestamp": timestamp,
        "views": views,
        "point_in_time": point_in_time,
        "as_of": as_of.isoformat() if as_of else None,
    }
    entries = on_demand.manifest() if on_demand is not None else []
    if on_demand is not None:  # only then: ids of sets without on-demand features are unchanged
        identity["on_demand"] = [e.model_dump(mode="json") for e in entries]
    ts_id = stable_hash(identity, 16)
    manifest = Manifest(
        id=ts_id,
        created_at=utcnow(),
        labels=LabelsInfo.model_validate(
            {
                "hash": identity["labels"],
                "rows": labels.height,
                "columns": labels.columns,
                "timestamp": timestamp,
                "schema": base64.b64encode(
                    labels.to_arrow().schema.serialize().to_pybytes()
                ).decode(),
            }
        ),
        views=[
            ManifestView.model_validate({**v, "columns": [next(joined) for _ in v["features"]]})
            for v in views
        ],
        columns=result.columns[labels.width :],
        point_in_time=point_in_time,
        as_of=as_of,
        result_hash=result.hash(registry),
        result_hash_algorithm=result.algorithm,
        result_rows=result.rows,
        library_versions=library_versions(),
        on_demand=entries,
    )
    _persist(registry, manifest, labels)
    return result.training_set(registry, manifest)


@damaged_data_is_irreproducible
def rebuild(
    registry: Registry,
    manifest: Manifest,
    on_demand: OnDemandHook | None = None,
    memory_budget: int | None = None,
    runner: engine.Runner = engine.LOCAL,
) -> TrainingSet:
    """Rebuild a training set from its manifest and verify its content hash."""
    labels_uri = registry.layout.training_set_uri(manifest.id, "labels")
    labels = _read_labels(labels_uri, manifest.labels.arrow_schema, registry.storage_options)
    timestamp = manifest.labels.timestamp
    requests = []
    labels_of = qualifiers([(v.view, v.version) for v in manifest.views])
    for v, qualifier in zip(manifest.views, labels_of, strict=True):
        record = registry.version(v.view, v.version)
        ttl = None if v.ttl_us is None else timedelta(microseconds=v.ttl_us)
        table = registry.layout.uri(v.table)
        requests.append(
            ViewRequest(record, tuple(v.features), ttl, table, v.delta_version, qualifier)
        )
    if manifest.on_demand and on_demand is None:
        raise ReproducibilityError(
            f"training set {manifest.id!r} has on-demand features; rebuild it through "
            "store.training_set_by_id(id, on_demand=[...])."
        )
    hook = on_demand if manifest.on_demand else None
    result = _join(
        registry,
        labels,
        timestamp,
        requests,
        manifest.point_in_time,
        memory_budget,
        hook,
        runner,
        algorithm=manifest.result_hash_algorithm,  # as recorded: older sets used SHA-256
    )
    got = result.hash(registry)
    if got != manifest.result_hash:
        raise ReproducibilityError(
            f"training set {manifest.id!r} rebuilt to different rows (hash {got[:16]} != "
            f"recorded {manifest.result_hash[:16]}). Built with {manifest.library_versions}, "
            f"now {library_versions()}. Were feature tables vacuumed or edited outside featurekit?"
        )
    return result.training_set(registry, manifest)


def _join(
    registry: Registry,
    labels: pl.DataFrame,
    timestamp: str,
    requests: Sequence[ViewRequest],
    point_in_time: PointInTime,
    memory_budget: int | None,
    hook: OnDemandHook | None,
    runner: engine.Runner,
    *,
    labels_hash: bool = False,
    algorithm: Algorithm,
) -> _Result:
    """The joined result of a build or a rebuild (the same join, so the same rows).

    Hashing runs on one core, so what can be hashed before the join ends is hashed while
    it runs, on another thread (hashlib, like polars, releases the GIL): the labels'
    own hash (``labels_hash``: a build's id needs it) and, for a result joined in memory
    without on-demand features, the result hash's label columns, which come first, then
    each feature column the engine has put in label order while it orders the next.
    """
    readers = [_bucketed_view(req, timestamp, registry.storage_options) for req in requests]
    scratch = registry.layout.training_set_scratch(uuid.uuid4().hex)
    features = sum(len(req.features) for req in requests)
    with ThreadPoolExecutor(1, thread_name_prefix="featurekit-hash") as pool:
        own = pool.submit(frame_hash, labels) if labels_hash else None
        digest: ColumnsDigest | None = None
        fed: list[Future[None]] = []
        if hook is None and engine.in_memory(labels, features, memory_budget):
            digest = ColumnsDigest(labels.height, labels.width + features, algorithm)
            ahead = labels.height >= AHEAD_ROWS
            fed.append(pool.submit(digest.update, labels.get_columns(), ahead=ahead))
        # one thread: the digest takes the columns in the order they were given
        sink = None if digest is None else partial(_feed_later, pool, digest, fed)
        out = engine.join_within(
            labels,
            timestamp=timestamp,
            views=readers,
            point_in_time=point_in_time,
            budget=memory_budget,
            scratch=lambda: scratch,
            finish=hook,
            runner=runner,
            storage_options=registry.storage_options,
            remove=registry.layout.remove_folder,
            sink=sink,
        )
        result = _Result.of(out, labels, hook, scratch, algorithm)
        result.labels_hash = None if own is None else own.result()
        for done in fed:
            done.result()
        result.prefix = digest
    return result


def _feed_later(
    pool: ThreadPoolExecutor, digest: ColumnsDigest, fed: list[Future[None]], column: pl.Series
) -> None:
    """Feed ``column`` to ``digest`` on ``pool``'s thread, after what it was given before."""
    fed.append(pool.submit(digest.update, [column]))


@dataclass
class _Result:
    """A joined result in memory, or written to files by the engine (larger than memory)."""

    frame: pl.DataFrame | None
    spilled: engine.Spilled | None
    folder: str
    joined: list[str]
    columns: list[str]
    rows: int
    labels: pl.DataFrame | None = None
    #: the labels' hash, when it was computed during the join
    labels_hash: str | None = None
    #: the result hash's digest of its first columns (the labels, then the feature
    #: columns the engine gave it), when computed during the join
    prefix: ColumnsDigest | None = None
    #: the digest the result hash is read with
    algorithm: Algorithm = "sha256"

    @classmethod
    def of(
        cls,
        out: pl.DataFrame | engine.Spilled,
        labels: pl.DataFrame,
        on_demand: OnDemandHook | None,
        folder: str,
        algorithm: Algorithm,
    ) -> _Result:
        if isinstance(out, engine.Spilled):
            columns = out.schema.names()
            return cls(None, out, folder, list(out.joined), columns, out.rows, algorithm=algorithm)
        joined = out.columns[labels.width :]
        frame = on_demand(out) if on_demand is not None else out
        return cls(
            frame, None, folder, joined, frame.columns, frame.height, labels, algorithm=algorithm
        )

    def hash(self, registry: Registry) -> str:
        if self.spilled is not None:
            return self.spilled.hash(self.folder, registry.storage_options, self.algorithm)
        assert self.frame is not None
        if self.prefix is None or not self._starts_with_labels(self.prefix):
            return frame_hash(self.frame, self.algorithm)
        digest = self.prefix.copy()
        rest = self.frame.get_columns()[len(self.prefix.names) :]
        if rest:
            digest.update(rest, ahead=True)
        return digest.hexdigest()

    def _starts_with_labels(self, prefix: ColumnsDigest) -> bool:
        """Whether the frame is the labels (names, dtypes, values) then the columns the
        engine gave ``prefix`` (names, dtypes), then others, as many as ``prefix`` was
        made for: only then does it continue the frame's hash.

        The fed feature columns' values are not compared: the frame is the engine's own
        ``hstack`` of those series. A step that changes the frame between the join and
        the hash (today only on-demand features) must leave ``prefix`` unset, as
        :func:`_join` does for them."""
        frame, labels = self.frame, self.labels
        assert frame is not None
        if labels is None or (frame.height, frame.width) != (prefix.height, prefix.width):
            return False
        fed = frame.get_columns()[: len(prefix.names)]
        first = fed[: labels.width]
        return [(s.name, s.dtype) for s in fed] == prefix.names and all(
            s.equals(labels.get_column(s.name), check_dtypes=True, null_equal=True) for s in first
        )

    def training_set(self, registry: Registry, manifest: Manifest) -> TrainingSet:
        """The training set; written rows move into its folder (``<id>/result``)."""
        if self.spilled is None:
            assert self.frame is not None
            return TrainingSet(registry, manifest, self.frame)
        layout = registry.layout
        home = layout.training_set_uri(manifest.id)
        # built before: the same rows (the hash says so); the newest replace them
        layout.move_folder(f"{self.folder}/result", layout.training_set_uri(manifest.id, "result"))
        layout.remove_folder(self.folder)
        if not is_remote(home):
            with contextlib.suppress(OSError):  # other builds may be using it
                Path(self.folder).parent.rmdir()
        return TrainingSet(registry, manifest, (self.spilled, home))


#: the digest of the result hash of training sets built now (see
#: :mod:`featurekit.core.hashing`); the labels' hash, part of the id, stays SHA-256
RESULT_HASH: Algorithm = "xxh3-128"


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


def _bucketed_view(
    req: ViewRequest, timestamp: str, options: Mapping[str, str]
) -> engine.BucketedView:
    """How the engine reads one view: its pinned table version's bucket count, and a reader."""
    count = (
        1
        if req.delta_version is None
        else delta.bucket_count(req.table, req.delta_version, options)
    )
    return engine.BucketedView(
        read=lambda labels, bucket: _read_view(req, labels, timestamp, options, bucket, count),
        buckets=count,
        keys=tuple(req.record.keys),
        stored=req.record.output,
        read_all=lambda labels, limit: _read_buckets(req, labels, timestamp, options, limit),
    )


def _stored_columns(req: ViewRequest) -> list[str]:
    """The stored columns a training set reads from the view's table."""
    record = req.record
    columns = [*record.keys, record.timestamp]
    if record.created_timestamp:
        columns.append(record.created_timestamp)
    stored = record.event_columns if aggregation_specs(record, req.features) else req.features
    columns.extend(f for f in stored if f not in columns)
    return columns


def _view_frame(req: ViewRequest, rows: pl.DataFrame | Callable[[], pl.DataFrame]) -> ViewFrame:
    """The kernel's view of ``req`` over ``rows`` (in memory, or a function loading them)."""
    record = req.record
    return ViewFrame(
        name=req.qualifier or record.view,
        frame=rows,
        keys=tuple(record.keys),
        timestamp=record.timestamp,
        created_timestamp=record.created_timestamp,
        features=req.features,
        ttl=req.ttl,
        aggregations=aggregation_specs(record, req.features),
    )


def _read_view(
    req: ViewRequest,
    labels: pl.DataFrame,
    timestamp: str,
    options: Mapping[str, str],
    bucket: int | None = None,
    buckets: int = 1,
) -> ViewFrame:
    """The view's rows that ``labels`` may pick, read lazily; one bucket's files only when
    ``bucket`` is given (Delta partition pruning skips the others; ``buckets`` is ``B``)."""
    columns = _stored_columns(req)
    version = 0 if req.delta_version is None else req.delta_version

    def load() -> pl.DataFrame:  # the kernel reads one view at a time: memory holds one table
        # as_of before the table's first commit: no rows yet (the schema still comes from v0)
        where = (
            pl.lit(False)
            if req.delta_version is None
            # one bucket holds a B-th of the entities: the key filter pays off below a B-th
            # of the limit (the same rows are picked either way)
            else _prune(
                labels,
                timestamp,
                req.record,
                req.ttl,
                KEY_PRUNE_LIMIT // (buckets if bucket is not None else 1),
            )
        )
        if bucket is None:
            return delta.read_rows(
                req.table, version=version, columns=columns, where=where, storage_options=options
            )
        return delta.read_rows(
            req.table,
            version=version,
            columns=[*columns, BUCKET],
            where=where & (pl.col(BUCKET) == bucket),
            storage_options=options,
        ).drop(BUCKET)

    return _view_frame(req, load)


def _read_buckets(
    req: ViewRequest,
    labels: pl.DataFrame,
    timestamp: str,
    options: Mapping[str, str],
    limit: int,
) -> Iterator[tuple[int, ViewFrame]] | None:
    """Every bucket of the view in one scan, each bucket's rows (as the kernel's view of
    them) as soon as the scan has read them, every bucket once; or None when the needed
    columns take more than ``limit`` bytes.

    Each bucket's part holds, in the table's order, every row of the bucket that one of
    ``labels`` may pick (those the whole-table read takes), and possibly rows none can
    pick: too new or too old for every label, they change no answer (the per-bucket reads
    already differ so, each pruned by its own labels' times), so they are only filtered
    out of a bucket when that drops at least :data:`FILTER_SHARE` of its rows.
    """
    if req.delta_version is None:
        return None
    parts = delta.read_buckets(
        req.table,
        version=req.delta_version,
        columns=_stored_columns(req),
        storage_options=options,
        fits=lambda schema, rows: rows_bytes(schema, rows) <= limit,
    )
    if parts is None:
        return None
    # filtered after the scan, and only when that pays: a filter copies every column, and
    # labels usually span the table's time range, so it would drop a few rows at its ends
    where = _prune(labels, timestamp, req.record, req.ttl, KEY_PRUNE_LIMIT)

    def frames(parts: Iterator[tuple[int, pl.DataFrame]]) -> Iterator[tuple[int, ViewFrame]]:
        for bucket, rows in parts:
            keep = rows.select(where.alias("keep")).to_series().fill_null(False)  # null: out
            if rows.height - keep.sum() >= rows.height * FILTER_SHARE:
                rows = rows.filter(keep)
            yield bucket, _view_frame(req, rows)

    return frames(parts)


#: A table read whole for a training set is filtered to the rows its labels may pick only
#: when that drops at least this share of its rows (else the filter costs more than it saves).
FILTER_SHARE = 0.25

#: Below this many distinct label entities, reads also filter on the keys (small training
#: sets from big stores read only what they need; above it, the filter costs more than it saves).
KEY_PRUNE_LIMIT = 50_000


def _prune(
    labels: pl.DataFrame,
    timestamp: str,
    record: VersionRecord,
    ttl: timedelta | None,
    limit: int = KEY_PRUNE_LIMIT,
) -> pl.Expr:
    """Only rows some label could pick: its entities, event time in [min t - ttl, max t]."""
    times = labels.select(to_utc_expr(timestamp, labels.schema[timestamp], what="label timestamp"))
    low, high = times.to_series().min(), times.to_series().max()
    if not isinstance(high, datetime):
        return pl.lit(False)
    condition = pl.col(record.timestamp) <= pl.lit(high)
    reach = ttl
    if record.aggregations:  # events count for labels up to the widest window after them
        windows = [a.window for a in record.aggregations]
        reach = (
            None if any(w is None for w in windows) else max(w for w in windows if w is not None)
        )
    floor = before(low, reach) if reach is not None and isinstance(low, datetime) else None
    if floor is not None:  # None: labels so early that nothing is too old for them
        condition = condition & (pl.col(record.timestamp) >= pl.lit(floor))
    for key in record.keys:
        if key not in labels.columns or str(labels.schema[key]) != record.output.get(key):
            continue  # the kernel aligns or rejects mismatched key dtypes, with a clear message
        values = labels.get_column(key).drop_nulls()
        # an estimate of the distinct count (a tenth of the cost; not for nested keys) rules
        # out the filter when it is clearly above the limit (its error is below 1%, and a
        # wrong call would change which rows are read, not the answers); near the limit,
        # the exact count decides
        if not values.dtype.is_nested() and _about_distinct(values) > limit + limit // 8:
            continue
        values = values.unique()
        if values.len() <= limit:
            condition = condition & pl.col(key).is_in(values.implode())
    return condition


def _about_distinct(values: pl.Series) -> int:
    """About how many distinct values (HyperLogLog; within a few percent)."""
    return int(values.to_frame().select(pl.first().approx_n_unique()).item())


def aggregation_specs(record: VersionRecord, features: Sequence[str]) -> tuple[Aggregation, ...]:
    """The requested aggregates of an aggregation view, in request order."""
    by_name = {a.name: a for a in record.aggregations}
    return tuple(by_name[f] for f in features if f in by_name)


def _persist(registry: Registry, manifest: Manifest, labels: pl.DataFrame) -> None:
    if registry.has_manifest(manifest.id):
        return
    stored = _storable(labels.with_row_index(_ROW))
    uri = registry.layout.training_set_uri(manifest.id, "labels")
    delta.write_rows(
        uri,
        stored,
        metadata={"training_set": manifest.id},
        storage_options=registry.storage_options,
    )
    registry.add_manifest(manifest)


def _storable(frame: pl.DataFrame) -> pl.DataFrame:
    """Delta keeps microsecond UTC timestamps only: store raw integers, restore from schema."""
    casts = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime | pl.Duration):
            casts.append(pl.col(name).to_physical())
        elif isinstance(dtype, pl.Categorical | pl.Enum):
            casts.append(pl.col(name).cast(pl.String))
    return frame.with_columns(casts) if casts else frame


def _read_labels(path: str, schema_b64: str, options: Mapping[str, str]) -> pl.DataFrame:
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(schema_b64)))
    version = delta.current_version(str(path), options)
    if version is None:
        raise ReproducibilityError(f"the stored labels at {redact_url(str(path))!r} are missing.")
    stored = delta.read_rows(str(path), version=0, storage_options=options).sort(_ROW).drop(_ROW)
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
