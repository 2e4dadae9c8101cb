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
the labels, the finished columns, and one bucket of one view at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from featurekit.kernels.bucketing import bucket_ids, hash_class
from featurekit.kernels.pit import PointInTime, ViewFrame, output_names, pit_join

__all__ = ["BucketedView", "join"]

#: reads one view for the given labels: all of it (bucket None) or one bucket's files
Reader = Callable[[pl.DataFrame, int | None], ViewFrame]


@dataclass(frozen=True)
class BucketedView:
    """One view of a training set, as the engine reads it.

    Attributes:
        read: the view's rows for some labels, whole or one bucket (a lazy ViewFrame).
        buckets: ``B`` of the pinned table version (1: not bucketed).
        stored: the stored dtype name of each key column (``VersionRecord.output``).
    """

    read: Reader
    buckets: int
    keys: tuple[str, ...]
    stored: Mapping[str, str]


def join(
    labels: pl.DataFrame,
    *,
    timestamp: str,
    views: Sequence[BucketedView],
    point_in_time: PointInTime,
) -> pl.DataFrame:
    """``labels`` with every view's features attached, as :func:`pit_join` would attach them."""
    whole = [v.read(labels, None) for v in views]
    if labels.height == 0 or not any(_splits(labels, v) for v in views):
        return pit_join(labels, timestamp=timestamp, views=whole, point_in_time=point_in_time)
    names = output_names(labels.columns, whole)
    columns: list[pl.Series] = []
    for view, frame in zip(views, whole, strict=True):
        if _splits(labels, view):
            features = _bucketed(labels, timestamp, view, point_in_time)
        else:
            features = _features(labels, timestamp, frame, point_in_time)
        columns.extend(features.get_columns())
    return labels.hstack([s.alias(n) for s, n in zip(columns, names, strict=True)])


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
    base = labels.select([*dict.fromkeys([*view.keys, timestamp])])
    joined = pit_join(base, timestamp=timestamp, views=[view], point_in_time=point_in_time)
    return joined.select(joined.columns[base.width :])


def _bucketed(
    labels: pl.DataFrame, timestamp: str, view: BucketedView, point_in_time: PointInTime
) -> pl.DataFrame:
    """One view's feature columns, joined bucket by bucket and put back in label order."""
    ids = bucket_ids(labels, view.keys, view.buckets).to_numpy()
    parts: list[pl.DataFrame] = []
    positions: list[np.ndarray] = []
    for bucket in np.unique(ids).tolist():
        rows = np.flatnonzero(ids == bucket)
        sub = labels[rows]
        parts.append(_features(sub, timestamp, view.read(sub, int(bucket)), point_in_time))
        positions.append(rows)
    stacked = pl.concat(parts, how="vertical")
    order = np.argsort(np.concatenate(positions), kind="stable")
    return stacked[order]
