"""Running a training set's point-in-time join bucket by bucket.

A view whose pinned table version is bucketed (``B > 1``, see
:mod:`featurekit.offline.buckets`) is joined one bucket at a time: the labels are hashed
with the same key hash as the stored rows (:mod:`featurekit.kernels.bucketing`), and the
labels of bucket ``b`` are joined, by the one kernel (:func:`~featurekit.kernels.pit.
pit_join`), to the rows of bucket ``b`` alone, which Delta partition pruning reads without
touching the other buckets' files. A label can only match rows with its own keys, and
those all live in its bucket, so each bucket's answers are exactly the whole join's
answers for its labels; they are put back in label order, and the result (its columns,
dtypes, values, order, hence its hash and the training set's id) is the same for any
``B``. When every view has ``B = 1`` the join is the single kernel call it always was.

Views are joined one after another; each keeps only its feature columns, so memory holds
the labels, the finished columns, and one bucket of one view per worker thread
(:class:`LocalRunner`), or, when a view's table fits a :data:`PEAK_FACTOR`-th of the
budget, that table, read in one scan and split by bucket (see :func:`join`).

Out of core (:func:`join_within`): when the joined result is estimated not to fit the
memory budget, each view's features are written bucket by bucket to parquet files (with
each row's label position), then the result is assembled in label order, one range of
label rows at a time (parquet row-group statistics on the position skip what a range does
not need), and written as it is produced. Memory then holds the labels, one bucket of one
view, and one range of result rows. The files are the training set's rows, in order; the
result hash is computed from them one column at a time and equals the in-memory one.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from queue import SimpleQueue
from typing import Protocol

import numpy as np
import polars as pl

from featurekit.core.hashing import Algorithm, columns_hash
from featurekit.kernels.bucketing import bucket_ids, hash_class
from featurekit.kernels.frames import gather_rows
from featurekit.kernels.pit import (
    INTEGER_KEYS,
    PointInTime,
    ViewFrame,
    output_names,
    pit_join,
    pit_join_unordered,
)
from featurekit.kernels.reorder import Reorder
from featurekit.offline.batching import DEFAULT_BUDGET
from featurekit.storage.remote import is_remote

__all__ = [
    "LOCAL",
    "PEAK_FACTOR",
    "BucketedView",
    "LocalRunner",
    "Runner",
    "Spilled",
    "Task",
    "join",
    "join_within",
]

#: a join's peak memory, as a multiple of its result's size (sorts, copies, the result)
PEAK_FACTOR = 4
_ROW = "__fk_row"

#: one bucket's work: a kernel call over one bucket's labels and rows
Task = Callable[[], pl.DataFrame]


class Runner(Protocol):
    """Runs tasks (here, or on a cluster) and yields their results in task order."""

    def map(self, tasks: Iterable[Task]) -> Iterator[pl.DataFrame]:
        """Each task's result, in the order the tasks were given."""
        ...


class LocalRunner:
    """Runs tasks in this process (the default engine), ``workers`` at a time.

    A task is mostly polars work, which releases the GIL, so buckets joined on one thread
    per core keep the cores busy where one bucket's many small operations leave one idle
    (default: one worker per core, at most four). One task more than ``workers`` is given
    to the threads, so that a thread whose task ends before the one the caller waits for
    (results come in task order) takes the next at once instead of waiting: at most
    ``workers + 1`` results are held before the caller takes them.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)

    def map(self, tasks: Iterable[Task]) -> Iterator[pl.DataFrame]:
        """Each task's result, in the order the tasks were given."""
        if self.workers <= 1:
            for task in tasks:
                yield task()
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="featurekit-bucket") as pool:
            pending: deque[Future[pl.DataFrame]] = deque()
            for task in tasks:
                pending.append(pool.submit(task))
                if len(pending) > self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


LOCAL = LocalRunner()
#: one bucket at a time: what a result written out of core runs with on the local engine,
#: so that memory holds one bucket of one view
SERIAL = LocalRunner(workers=1)

#: reads one view for the given labels: all of it (bucket None) or one bucket's files
Reader = Callable[[pl.DataFrame, int | None], ViewFrame]
#: reads every bucket of one view in one scan for the given (whole) labels, when the
#: rows take at most the given bytes in memory: each bucket's rows as soon as they are
#: read, ``(bucket, rows)``, every bucket once in any order; or None (too large: each
#: bucket is then read on its own)
ReadAll = Callable[[pl.DataFrame, int], Iterable[tuple[int, ViewFrame]] | None]


@dataclass(frozen=True)
class BucketedView:
    """One view of a training set, as the engine reads it.

    Attributes:
        read: the view's rows for some labels, whole or one bucket (a lazy ViewFrame).
        buckets: ``B`` of the pinned table version (1: not bucketed).
        stored: the stored dtype name of each key column (``VersionRecord.output``).
        read_all: every bucket in one scan (see :data:`ReadAll`), or None.
    """

    read: Reader
    buckets: int
    keys: tuple[str, ...]
    stored: Mapping[str, str]
    read_all: ReadAll | None = None


def join(
    labels: pl.DataFrame,
    *,
    timestamp: str,
    views: Sequence[BucketedView],
    point_in_time: PointInTime,
    runner: Runner = LOCAL,
    budget: int | None = None,
    sink: Callable[[pl.Series], object] | None = None,
) -> pl.DataFrame:
    """``labels`` with every view's features attached, as :func:`pit_join` would attach them.

    On the local engine, a bucketed view whose rows fit a :data:`PEAK_FACTOR`-th of
    ``budget`` (bytes; default :data:`~featurekit.offline.batching.DEFAULT_BUDGET`) is read
    in one scan and split by bucket in memory: one read of the table costs much less than
    one per bucket (each opens the table and plans its own scan), with the same rows.

    ``sink`` is given each feature column of a view joined bucket by bucket, with its
    output name, as soon as it is in label order (and the columns of the views before
    it): the result hash can digest one column while the next is being put in order.
    Columns it was given are the result's columns after the labels, in order; the
    rest (after a view joined whole, and every column when no view is) it is not given.
    """
    whole = [v.read(labels, None) for v in views]
    if labels.height == 0 or not any(_splits(labels, v) for v in views):
        return pit_join(labels, timestamp=timestamp, views=whole, point_in_time=point_in_time)
    names = iter(output_names(labels.columns, whole))
    columns: list[pl.Series] = []
    # cluster tasks read their own bucket where they run: only the local engine reads whole
    limit = (budget or DEFAULT_BUDGET) // PEAK_FACTOR if isinstance(runner, LocalRunner) else None
    for view, frame in zip(views, whole, strict=True):
        if _splits(labels, view):
            features = _bucketed(labels, timestamp, view, frame, point_in_time, runner, limit)
        else:
            features = iter(_features(labels, timestamp, frame, point_in_time).get_columns())
            sink = None  # the columns after these are not given either: the sink's are a prefix
        for column in features:
            columns.append(column.alias(next(names)))
            if sink is not None:
                sink(columns[-1])
    return labels.hstack(columns)


def _splits(labels: pl.DataFrame, view: BucketedView) -> bool:
    """Whether this view is joined bucket by bucket: bucketed, and labels' keys hash alike.

    Otherwise the whole table is read and the kernel aligns (or refuses, with its own
    message) the key dtypes, exactly as without buckets.
    """
    if view.buckets <= 1:
        return False
    for key in view.keys:
        if key not in labels.columns:
            return False
        label = hash_class(labels.schema[key])
        if label is None or label != _stored_class(view.stored.get(key, "")):
            return False
    return True


def _stored_class(name: str) -> str | None:
    """:func:`hash_class` of a stored dtype, from its name as the version record keeps it."""
    if (name.startswith(("Int", "UInt")) and name[-1].isdigit()) or name == "Boolean":
        return "int" if name not in ("Int128", "UInt128") else None
    if name == "String" or name.startswith(("Categorical", "Enum")):
        return "str"
    return None


def _features(
    labels: pl.DataFrame, timestamp: str, view: ViewFrame, point_in_time: PointInTime
) -> pl.DataFrame:
    """One view's feature columns for ``labels`` (in their order), by one kernel call."""
    wanted = list(dict.fromkeys([*view.keys, timestamp]))
    # labels lacking a key go to the kernel whole: it refuses them, naming their columns
    base = labels.select(wanted) if set(wanted) <= set(labels.columns) else labels
    joined = pit_join(base, timestamp=timestamp, views=[view], point_in_time=point_in_time)
    return joined.select(joined.columns[base.width :])


def _unordered(
    labels: pl.DataFrame, timestamp: str, view: ViewFrame, point_in_time: PointInTime
) -> pl.DataFrame:
    """One view's feature columns for ``labels`` in the kernel's own order, with each row's
    label position in ``labels`` (column ``__fk_row``): the caller reorders all buckets at
    once, so no row is put in place twice."""
    values, where = pit_join_unordered(
        labels, timestamp=timestamp, view=view, point_in_time=point_in_time
    )
    if where is None:
        where = pl.int_range(0, values.height, dtype=pl.get_index_type(), eager=True)
    return values.insert_column(0, where.alias(_ROW))


def _bucketed(
    labels: pl.DataFrame,
    timestamp: str,
    view: BucketedView,
    frame: ViewFrame,
    point_in_time: PointInTime,
    runner: Runner,
    limit: int | None = None,
) -> Iterator[pl.Series]:
    """One view's feature columns, joined bucket by bucket and put back in label order
    (its buckets read in one scan when they take at most ``limit`` bytes), one column at
    a time: the caller may use one (hash it) while the next is put in order."""
    parts: list[pl.DataFrame] = []
    # every label is in exactly one bucket: the positions are a permutation, and its
    # inverse puts the rows back in label order without sorting them; it is filled in
    # as the buckets' results come (while the others are joined), in polars' index dtype
    # (no conversion after)
    index_type = pl.get_index_type()
    inverse = np.empty(labels.height, dtype=np.uint32 if index_type == pl.UInt32 else np.uint64)
    done = 0
    pieces = _view_parts(labels, timestamp, view, frame, point_in_time, runner, limit)
    for _, rows, values in pieces:
        parts.append(values)
        inverse[rows] = np.arange(done, done + len(rows), dtype=inverse.dtype)
        done += len(rows)
    stacked = pl.concat(parts, how="vertical")
    index = pl.Series(inverse, dtype=index_type)
    del parts, inverse
    yield from _in_order(stacked, index)


def _in_order(stacked: pl.DataFrame, index: pl.Series) -> Iterator[pl.Series]:
    """Each column of ``stacked`` gathered through ``index``, one at a time (each
    column's parts are let go once it is in order)."""
    columns = stacked.get_columns()
    del stacked
    reorder = Reorder(index)
    for k, column in enumerate(columns):
        columns[k] = column.clear()
        yield reorder.column(column)
        del column


@dataclass(frozen=True)
class Spilled:
    """A joined result written to parquet files, in label order (see the module docstring).

    Attributes:
        parts: the files' names in their folder, in label order.
        joined: the views' feature columns (before on-demand features were added).
        schema: the result's columns and dtypes.
        rows: the result's row count.
    """

    parts: tuple[str, ...]
    joined: tuple[str, ...]
    schema: pl.Schema
    rows: int

    def scan(self, folder: str, storage_options: Mapping[str, str] | None = None) -> pl.LazyFrame:
        """The rows, lazily, from the files in ``folder`` (a local path or an object-store
        URI, read with ``storage_options``)."""
        if not self.parts:
            return pl.DataFrame(schema=self.schema).lazy()
        return pl.scan_parquet(
            [_under(folder, p) for p in self.parts], storage_options=_options(storage_options)
        )

    def hash(
        self,
        folder: str,
        storage_options: Mapping[str, str] | None = None,
        algorithm: Algorithm = "sha256",
    ) -> str:
        """:func:`~featurekit.core.hashing.frame_hash` of the rows, one column in memory."""
        scan = self.scan(folder, storage_options)
        columns = (scan.select(name).collect().to_series() for name in self.schema.names())
        return columns_hash(self.rows, len(self.schema), columns, algorithm)


def estimated_bytes(labels: pl.DataFrame, features: int) -> int:
    """The joined result's size in memory: the labels plus about 16 bytes per value."""
    return int(labels.estimated_size()) + labels.height * 16 * features


def in_memory(labels: pl.DataFrame, features: int, budget: int | None) -> bool:
    """Whether :func:`join_within` joins in memory (else it writes the result to files)."""
    size = estimated_bytes(labels, features)
    return budget is None or labels.height == 0 or size * PEAK_FACTOR <= budget


def join_within(
    labels: pl.DataFrame,
    *,
    timestamp: str,
    views: Sequence[BucketedView],
    point_in_time: PointInTime,
    budget: int | None,
    scratch: Callable[[], str],
    finish: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    runner: Runner = LOCAL,
    storage_options: Mapping[str, str] | None = None,
    remove: Callable[[str], None] | None = None,
    sink: Callable[[pl.Series], object] | None = None,
) -> pl.DataFrame | Spilled:
    """:func:`join`, or, when the result does not fit ``budget`` (bytes), the result
    written under the folder ``scratch()`` gives (see the module docstring).

    The folder is a local path or an object-store URI under the store's root (files are
    written and read there with ``storage_options``); ``remove`` deletes a folder there
    (by default, a local one).

    ``finish`` (on-demand features) is applied to each range of rows of a written result;
    an in-memory result is returned without it (the caller applies it to the whole frame).
    ``sink`` is :func:`join`'s, for a result joined in memory (a written one never calls it).
    """
    whole = [v.read(labels, None) for v in views]
    features = sum(len(w.features) for w in whole)
    size = estimated_bytes(labels, features)
    if budget is None or in_memory(labels, features, budget):
        return join(
            labels,
            timestamp=timestamp,
            views=views,
            point_in_time=point_in_time,
            runner=runner,
            budget=budget,
            sink=sink,
        )
    folder = scratch()
    options = _options(storage_options)
    names = output_names(labels.columns, whole)
    start = 0
    folders = []
    for i, (view, frame) in enumerate(zip(views, whole, strict=True)):
        own = names[start : start + len(frame.features)]
        start += len(frame.features)
        target = _under(folder, f"view-{i}")
        folders.append(target)
        pieces = _view_parts(
            labels, timestamp, view, frame, point_in_time, SERIAL if runner is LOCAL else runner
        )
        for k, (_, rows, values) in enumerate(pieces):  # a bucket may come in pieces
            values.columns = own
            values = values.insert_column(0, pl.Series(_ROW, rows, dtype=pl.UInt64))
            _write(values, _under(target, f"{k:05d}.parquet"), options, 64 * 1024)
    per_row = max(1, size // labels.height)
    chunk = max(1, budget // (PEAK_FACTOR * per_row))
    parts: list[str] = []
    schema = pl.Schema()
    for k, first in enumerate(range(0, labels.height, chunk)):
        piece = labels.slice(first, chunk)
        last = first + piece.height - 1
        for target in folders:
            picked = (
                pl.scan_parquet(_under(target, "*.parquet"), storage_options=options)
                .filter(pl.col(_ROW).is_between(first, last))
                .collect()
                .sort(_ROW)
                .drop(_ROW)
            )
            piece = piece.hstack(picked.get_columns())
        if finish is not None:
            piece = finish(piece)
        name = f"result/part-{k:06d}.parquet"
        _write(piece, _under(folder, name), options)
        parts.append(name)
        schema = piece.schema
    for target in folders:
        (remove or _remove_local)(target)
    return Spilled(tuple(parts), tuple(names), schema, labels.height)


def _under(folder: str, name: str) -> str:
    """A file or folder in ``folder`` (a local path or an object-store URI: both use ``/``)."""
    return f"{folder.rstrip('/')}/{name}"


def _options(storage_options: Mapping[str, str] | None) -> dict[str, str] | None:
    """``storage_options`` for polars, which takes object_store's option names (those of
    the store's root); None for a local root."""
    return dict(storage_options) if storage_options else None


def _write(
    frame: pl.DataFrame, uri: str, options: dict[str, str] | None, row_group: int | None = None
) -> None:
    """Write one parquet file at ``uri``: in object storage with ``options`` for a remote
    root (a local path's folder is made first; object stores have none to make)."""
    if not is_remote(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(uri, row_group_size=row_group, storage_options=options)


def _remove_local(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _view_parts(
    labels: pl.DataFrame,
    timestamp: str,
    view: BucketedView,
    frame: ViewFrame,
    point_in_time: PointInTime,
    runner: Runner,
    limit: int | None = None,
) -> Iterator[tuple[int, np.ndarray, pl.DataFrame]]:
    """(bucket, label positions, feature columns) of one view, a bucket at a time; the
    buckets run as ``runner`` runs tasks (here, or on a cluster), their results in the
    order of the tasks.

    With a ``limit`` (bytes), a view that can read all its buckets at once
    (:attr:`BucketedView.read_all`) and whose rows fit it is read in one scan on another
    thread, and its buckets are joined in the order the scan reads them, each as soon as
    its rows are read (the order of buckets changes no answer: each row's label position
    comes with it).
    """
    if not _splits(labels, view):
        yield 0, np.arange(labels.height), _features(labels, timestamp, frame, point_in_time)
        return
    arrivals: SimpleQueue[object] | None = None
    stop = threading.Event()
    if limit is not None and view.read_all is not None:
        # the table is read on a thread of its own while the labels are grouped by
        # bucket here (the scan keeps about one core busy, the grouping the other), and
        # each bucket's rows are joined as soon as they are read, while the scan goes on
        arrivals = SimpleQueue()
        threading.Thread(
            target=_read_ahead,
            args=(view.read_all, labels, limit, arrivals, stop),
            name="featurekit-read",
            daemon=True,  # exit never waits for it
        ).start()
    try:
        ids = bucket_ids(labels, view.keys, view.buckets).to_numpy()
        # one stable counting sort groups the labels by bucket (keeping label order within
        # each): a bucket's labels are then one slice, gathered once for all buckets
        order = np.argsort(ids.astype(np.uint16) if view.buckets <= 1 << 16 else ids, kind="stable")
        counts = np.bincount(ids, minlength=view.buckets)
        starts = np.concatenate([[0], np.cumsum(counts)])
        buckets = [int(b) for b in np.flatnonzero(counts).tolist()]
        wanted = list(dict.fromkeys([*view.keys, timestamp]))
        # only the columns the kernel reads travel to the tasks (a missing timestamp column is
        # left for the kernel to refuse with its own message)
        narrow = labels.select(wanted) if timestamp in labels.columns else labels
        grouped = gather_rows(narrow, pl.Series(order, dtype=pl.get_index_type()))

        made: deque[tuple[int, np.ndarray]] = deque()  # each task's bucket and label positions

        def tasks() -> Iterator[Task]:  # made as the runner takes them: one bucket's labels each
            for bucket, rows in _arrived(buckets, arrivals):
                where = order[starts[bucket] : starts[bucket + 1]]
                sub = grouped.slice(int(starts[bucket]), int(counts[bucket]))
                frame = rows if rows is not None else view.read(sub, bucket)
                for index, piece, part in _pieces(sub, frame, view.keys):
                    made.append((bucket, where if index is None else where[index]))
                    yield partial(_unordered, piece, timestamp, part, point_in_time)

        for result in runner.map(tasks()):
            bucket, where = made.popleft()
            # the kernel's rows name their label within the task: map them to label rows
            local = result.get_column(_ROW).to_numpy()
            yield bucket, where[local], result.drop(_ROW)
    finally:
        stop.set()  # a failed join: the reading thread stops at its next bucket


#: what the reading thread gives after the last bucket (see :func:`_read_ahead`)
_END = object()


def _read_ahead(
    read_all: ReadAll,
    labels: pl.DataFrame,
    limit: int,
    out: SimpleQueue[object],
    stop: threading.Event,
) -> None:
    """Put each bucket's rows that ``read_all`` gives into ``out`` as they come, then
    :data:`_END` (at once when the rows do not fit ``limit``); or the error reading
    raised, which the joining thread raises in its turn. Stops when ``stop`` is set."""
    try:
        parts = read_all(labels, limit)
        for part in parts or ():
            if stop.is_set():
                return
            out.put(part)
    except BaseException as err:  # raised again where the buckets are joined
        out.put(err)
        return
    out.put(_END)


def _arrived(
    buckets: Sequence[int], arrivals: SimpleQueue[object] | None
) -> Iterator[tuple[int, ViewFrame | None]]:
    """Each of ``buckets`` with its rows as the reading thread gives them, in the order
    they come; then those it did not give (all, without a reading thread), with None:
    each such bucket is read on its own."""
    left = dict.fromkeys(buckets)
    while arrivals is not None:
        item = arrivals.get()
        if item is _END:
            break
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, tuple)
        bucket: int = item[0]
        rows: ViewFrame = item[1]
        if bucket in left:
            del left[bucket]
            yield bucket, rows
    for bucket in left:
        yield bucket, None


#: a bucket in memory with at least twice this many rows is joined in pieces of about
#: this many rows (see :func:`_pieces`): the size of B = 16's buckets at 10M rows, whose
#: kernel calls cost the least per row in the measurements of docs/scale.md
PIECE_ROWS = 625_000


def _pieces(
    labels: pl.DataFrame, view: ViewFrame, keys: tuple[str, ...]
) -> Iterator[tuple[np.ndarray | None, pl.DataFrame, ViewFrame]]:
    """One bucket's work as tasks: (label rows of ``labels``, or None for all; those
    labels; the view over the rows they can match).

    A large bucket in memory, with one integer key and rows stored in key order, is cut
    into pieces of whole entities at key values (the rows of a piece are a zero-copy
    slice; each label goes with its key's piece): entities are joined independently, so
    the pieces' answers are the bucket's. Pieces of about :data:`PIECE_ROWS` rows keep a
    kernel call's arrays small (a 5M-row bucket costs more per row than a 625k-row one)
    and give the threads more, shorter tasks. Anything else is one task.
    """
    frame = view.frame
    whole = (None, labels, view)
    if (
        not isinstance(frame, pl.DataFrame)
        or frame.height < 2 * PIECE_ROWS
        or len(keys) != 1
        or view.aggregations
        or keys[0] not in frame.columns
        or keys[0] not in labels.columns
    ):
        yield whole
        return
    key, label_key = frame.get_column(keys[0]), labels.get_column(keys[0])
    if not (
        key.dtype in INTEGER_KEYS
        and key.dtype == label_key.dtype
        and key.null_count() == 0
        and label_key.null_count() == 0
        and key.is_sorted()
    ):
        yield whole
        return
    count = -(-frame.height // PIECE_ROWS)
    cuts = key.gather([frame.height * i // count for i in range(1, count)]).unique(
        maintain_order=True
    )
    bounds = [0, *key.search_sorted(cuts, side="left").to_list(), frame.height]
    # a label's piece: how many cut values its key reaches
    piece = np.searchsorted(cuts.to_numpy(), label_key.to_numpy(), side="right")
    order = np.argsort(piece.astype(np.uint16), kind="stable")
    sizes = np.bincount(piece, minlength=len(bounds) - 1)
    firsts = np.concatenate([[0], np.cumsum(sizes)])
    grouped = gather_rows(labels, pl.Series(order, dtype=pl.get_index_type()))
    for i in range(len(bounds) - 1):
        if sizes[i]:
            rows = frame.slice(bounds[i], bounds[i + 1] - bounds[i])
            yield (
                order[firsts[i] : firsts[i + 1]],
                grouped.slice(int(firsts[i]), int(sizes[i])),
                replace(view, frame=rows),
            )
