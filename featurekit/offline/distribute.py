"""Materialization bucket by bucket, as tasks a runner (here, or a Ray cluster) runs.

A view is **entity-local** when each entity's output rows come from that entity's input
rows alone: then splitting the input by a hash of the entity keys and running the view on
each part gives, together, the rows the whole input gives. Which views are:

- SQL views whose every SELECT is row by row, groups by columns that include the keys,
  or computes windows partitioned by them (:func:`~featurekit.core.sqlview.sql_entity_local`);
- aggregation views (their aggregates are per entity), when their function passes the
  sample check below (else they run as one task, as before);
- polars views declared ``entity_local=True``; the declaration is checked on a sample
  (:func:`verify`) and a false one is refused.

A distributed run (:func:`bucket_parts`) has two stages, each a list of tasks:

1. map: one task per few source files reads them (inside the run's window), hashes each
   row's keys into the table's ``B`` buckets and writes one parquet part per bucket;
2. per bucket: one task reads its bucket's parts (in file order, so the view sees its
   rows in the order a whole scan gives them), runs the view, and writes its output
   stably sorted by (keys, event time, created time).

Every file a task writes has a name no other attempt uses (a fresh uuid), and only the
files named by the results the driver collected are used, so a task that died and was
retried leaves at most an unused file. The driver then checks, tidies and writes the
buckets' rows through the one writer of :mod:`featurekit.offline.materialize`, in one
Delta commit, and deletes the staging folder.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from featurekit.core.authoring import FeatureView
from featurekit.core.definitions import Source
from featurekit.core.errors import DefinitionError, FeatureKitError, UserCodeError
from featurekit.core.sqlview import sql_entity_local
from featurekit.kernels.bucketing import BUCKET, bucket_ids, hash_class
from featurekit.kernels.frames import sort_rows
from featurekit.offline.compute import Layout, Window, call_view, describe, shaped, tidy_rows
from featurekit.offline.engine import Runner, Task
from featurekit.offline.resolve import ResolvedView
from featurekit.storage.sources import SourceSnapshot, scan_source

__all__ = ["bucket_parts", "distributable", "entity_local", "verify"]

#: source files one map task reads
FILES_PER_TASK = 2
#: the sample a declaration is checked on: this many entities, at most this many rows each input
SAMPLE_KEYS = 64
SAMPLE_ROWS = 20_000
#: the sample is split into this many buckets (at least 2, so the split can show a difference)
SAMPLE_BUCKETS = 4


def entity_local(view: FeatureView) -> bool:
    """Whether ``view`` may run bucket by bucket (see the module docstring)."""
    if view.sql is not None:
        return sql_entity_local(view.sql, view.keys)
    return view.entity_local or bool(view.aggregations)


def distributable(resolved: ResolvedView, snaps: Mapping[str, SourceSnapshot]) -> bool:
    """Whether a run of ``resolved`` can be split by bucket: an entity-local view whose
    inputs are all sources holding every key column with a hashable dtype."""
    view = resolved.view
    if resolved.upstream or not entity_local(view):
        return False
    for src in view.sources:
        if not isinstance(src, Source) or src.name not in snaps:
            return False
        schema = scan_source(snaps[src.name]).collect_schema()
        if any(k not in schema or hash_class(schema[k]) is None for k in view.keys):
            return False
    return True


def verify(resolved: ResolvedView, snaps: Mapping[str, SourceSnapshot], window: Window) -> bool:
    """Check on a sample that the view is entity-local; False when it is not.

    A sample of entities' input rows is split into buckets by key; the view is run on each
    bucket and on the whole sample, and the outputs must be the same rows. A view declared
    ``entity_local=True`` that fails is refused with a :class:`DefinitionError` saying what
    to do; any other view that fails (an aggregation view whose function looks across
    entities) is simply not distributed.
    """
    view = resolved.view
    if view.sql is not None or not all(isinstance(s, Source) for s in view.sources):
        return True  # SQL is checked by its text; views over views are never split
    inputs = _sample(view, snaps, window)
    if inputs is None:
        return True
    layout = resolved.layout
    what = describe(view, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropped null keys are reported by the real run
        whole = _sorted(tidy_rows(_collect(view, inputs, layout), layout, what), layout)
        parts = []
        for b in range(SAMPLE_BUCKETS):
            part = {
                n: f.filter(bucket_ids(f, view.keys, SAMPLE_BUCKETS) == b)
                for n, f in inputs.items()
            }
            parts.append(tidy_rows(_collect(view, part, layout), layout, what))
    split = _sorted(pl.concat(parts, how="vertical_relaxed"), layout)
    difference = _difference(whole, split)
    if difference is None:
        return True
    if not view.entity_local:
        return False
    entities = next(iter(inputs.values())).select(view.keys).unique().height
    raise DefinitionError(
        f"view {view.name!r} is declared entity_local=True, but on a sample of {entities} "
        f"entities, run bucket by bucket (split by a hash of {list(view.keys)}) it gives "
        f"{difference} than run on the whole sample: its rows depend on other entities' rows "
        "(a rank, a mean or a filter across entities). Remove entity_local=True (the view "
        f"then runs as one task), or compute per entity (group_by or .over({list(view.keys)}))."
    )


def _sample(
    view: FeatureView, snaps: Mapping[str, SourceSnapshot], window: Window
) -> dict[str, pl.DataFrame] | None:
    """A few entities' input rows of every source, or None when there are fewer than 2."""
    frames = {s.name: _windowed(snaps[s.name], window) for s in view.sources}
    first = next(iter(frames.values()))
    keys = list(view.keys)
    try:
        chosen = (
            first.select(keys).head(SAMPLE_ROWS).unique(maintain_order=True).head(SAMPLE_KEYS)
        ).collect()
        if chosen.height < 2:
            return None
        return {
            name: frame.join(chosen.lazy(), on=keys, how="semi").head(SAMPLE_ROWS).collect()
            for name, frame in frames.items()
        }
    except Exception:  # a sample that cannot be drawn (odd key dtypes): the run decides
        return None


def _collect(view: FeatureView, inputs: Mapping[str, pl.DataFrame], layout: Layout) -> pl.DataFrame:
    lf = call_view(view, {n: f.lazy() for n, f in inputs.items()})
    try:
        return shaped(lf, layout).collect()
    except FeatureKitError:
        raise
    except Exception as err:
        raise UserCodeError(
            f"{describe(view, None)} failed while computing: {type(err).__name__}: {err}"
        ) from err


def _sorted(frame: pl.DataFrame, layout: Layout) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True, maintain_order=True)


def _difference(whole: pl.DataFrame, split: pl.DataFrame) -> str | None:
    if whole.height != split.height:
        return f"{split.height} rows instead of {whole.height}"
    for name in whole.columns:
        try:
            assert_frame_equal(whole.select(name), split.select(name), check_exact=False)
        except AssertionError:
            return f"other values of {name!r}"
    return None


def _windowed(snap: SourceSnapshot, window: Window) -> pl.LazyFrame:
    """One source's rows inside ``window``, as :func:`~.compute.view_inputs` reads them."""
    column = snap.source.timestamp
    frame = scan_source(snap, bounds=window.bounds(column))
    condition = window.filter(column)
    return frame.filter(condition) if condition is not None else frame


def bucket_parts(
    resolved: ResolvedView,
    snaps: Mapping[str, SourceSnapshot],
    window: Window,
    *,
    version: int,
    buckets: int,
    staging: str,
    runner: Runner,
) -> list[str]:
    """Run the two stages (see the module docstring); the per-bucket output files, in
    bucket order (buckets without input rows have none)."""
    view, keys = resolved.view, resolved.view.keys
    folder = Path(staging)
    schemas = {s.name: _windowed(snaps[s.name], window).collect_schema() for s in view.sources}
    maps: list[tuple[str, Task]] = []
    for src in view.sources:
        snap = snaps[src.name]
        chunks: Sequence[SourceSnapshot] = [snap]
        if snap.files:
            files = snap.files
            chunks = [
                SourceSnapshot(snap.source, files=files[i : i + FILES_PER_TASK])
                for i in range(0, len(files), FILES_PER_TASK)
            ]
        for chunk in chunks:
            task = partial(
                _map,
                chunk,
                window,
                keys,
                buckets,
                schemas[src.name],
                str(folder / "map" / src.name),
            )
            maps.append((src.name, task))
    inputs: dict[int, dict[str, list[str]]] = {}
    for (name, _), written in zip(maps, runner.map(t for _, t in maps), strict=True):
        for bucket, path in written.iter_rows():
            inputs.setdefault(bucket, {n: [] for n in schemas})[name].append(path)
    order = sorted(inputs)

    def tasks() -> Iterator[Task]:
        for bucket in order:
            yield partial(
                _reduce,
                view,
                resolved.layout,
                version,
                inputs[bucket],
                schemas,
                bucket,
                str(folder / "buckets"),
            )

    return [str(out.item(0, "path")) for out in runner.map(tasks())]


def _map(
    snap: SourceSnapshot,
    window: Window,
    keys: Sequence[str],
    buckets: int,
    schema: pl.Schema,
    folder: str,
) -> pl.DataFrame:
    """Map task: these files' rows, split into one new parquet file per bucket."""
    rows = _windowed(snap, window).collect().select(schema.names()).cast(schema)
    rows = rows.with_columns(bucket_ids(rows, keys, buckets))
    Path(folder).mkdir(parents=True, exist_ok=True)
    written: list[tuple[int, str]] = []
    for (bucket,), part in rows.partition_by(BUCKET, as_dict=True, maintain_order=True).items():
        path = str(Path(folder) / f"b{int(bucket):05d}-{uuid.uuid4().hex}.parquet")
        part.drop(BUCKET).write_parquet(path)
        written.append((int(bucket), path))
    written.sort()
    return pl.DataFrame(written, schema={"bucket": pl.Int64, "path": pl.String}, orient="row")


def _reduce(
    view: FeatureView,
    layout: Layout,
    version: int,
    parts: Mapping[str, list[str]],
    schemas: Mapping[str, pl.Schema],
    bucket: int,
    folder: str,
) -> pl.DataFrame:
    """Bucket task: the view over one bucket's input rows, stably sorted, in a new file."""
    inputs = {
        name: pl.scan_parquet(paths) if paths else pl.LazyFrame(schema=schemas[name])
        for name, paths in parts.items()
    }
    lf = call_view(view, inputs, version)
    try:
        rows = shaped(lf, layout).collect()
    except FeatureKitError:
        raise
    except Exception as err:
        raise UserCodeError(
            f"{describe(view, version)} failed while computing: {type(err).__name__}: {err}"
        ) from err
    keys, ts, created = list(layout.keys), layout.timestamp, layout.created_timestamp
    rows = sort_rows(rows, keys, ts, created)  # stable: duplicates keep the view's order
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = str(Path(folder) / f"b{bucket:05d}-{uuid.uuid4().hex}.parquet")
    rows.write_parquet(path)
    return pl.DataFrame({"bucket": [bucket], "path": [path], "rows": [rows.height]})
