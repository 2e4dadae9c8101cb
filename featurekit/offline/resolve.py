"""Resolve a view against its real sources: output layout and fingerprint.

A fingerprint hashes five parts; a new version records which of them changed (the *why*):

- ``code``: normalized function source and reachable helpers (or normalized SQL, or the
  user's explicit ``version=``);
- ``options``: decorator arguments that change data (entity keys, timestamp, TTL, inputs);
- ``source_schema``: each source's identity and the dtypes of the columns the view reads,
  plus the output schema. A new, unused source column changes nothing; a removed or
  retyped column the view reads gives a new version (or an error if the code breaks);
- ``upstream``: fingerprints of upstream views;
- ``format``: featurekit's fingerprint recipe version.

Which source columns a view reads is learned by calling it on empty frames with one
column left out: cheap, and honest for polars and SQL views alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from featurekit.core.authoring import FeatureView
from featurekit.core.config import FORMAT_VERSION
from featurekit.core.definitions import Source
from featurekit.core.errors import FeatureKitError
from featurekit.core.hashing import stable_hash
from featurekit.offline.compute import Layout, call_view, empty_frame, output_layout
from featurekit.storage.sources import source_schema

#: Sources wider than this are hashed whole instead of probed column by column.
MAX_PROBED_COLUMNS = 200


@dataclass(frozen=True)
class ResolvedView:
    """A view bound to real source schemas: what it outputs and its fingerprint."""

    view: FeatureView
    fingerprint: str
    parts: dict[str, Any]
    layout: Layout
    upstream: tuple[ResolvedView, ...] = field(default=())

    @property
    def name(self) -> str:
        """The view's name."""
        return self.view.name

    @property
    def knowledge_time_dropped(self) -> list[str]:
        """Created-time columns of the inputs that the output does not use as knowledge time.

        A view's rows know when they became known only through a created-time column it
        keeps in its output (see :attr:`FeatureView.created_timestamp_candidates`). Every
        other input created-time column is lost: late values from that input are not
        guarded against in training sets.
        """
        used = self.layout.created_timestamp
        return [c for c in self.view.created_timestamp_candidates if c != used]

    def knowledge_time_warning(self, version: int | None = None) -> str | None:
        """What to tell the user when :attr:`knowledge_time_dropped` is not empty, else None."""
        dropped = self.knowledge_time_dropped
        if not dropped:
            return None
        what = f"view {self.name!r}" + (f" version {version}" if version else "")
        names = ", ".join(repr(c) for c in dropped)
        keep = dropped[0]
        if self.layout.created_timestamp is None:
            head = (
                f"{what} has no knowledge time: its output drops the created-time column(s) "
                f"{names} of its inputs. Training sets cannot tell when its values became "
                "known, so a value that arrived after a label's time can leak into that "
                "label, even with point_in_time='knowledge'."
            )
            return (
                f"{head} Keep {keep!r} in the output (in a group_by, aggregate it as "
                f"pl.col({keep!r}).max()) to have the guard."
            )
        used = self.layout.created_timestamp
        every = ", ".join(repr(c) for c in [used, *dropped])
        return (
            f"{what} uses only {used!r} as its knowledge time, not the created-time "
            f"column(s) {names} of its other inputs, so late values from those inputs are "
            "not guarded against in training sets. Output one created-time column that is "
            f"the latest of them, e.g. pl.max_horizontal({every}).alias({used!r})."
        )

    def leaf_sources(self) -> list[Source]:
        """Raw sources read by this view and its upstream views, first seen first."""
        found: dict[str, Source] = {}
        for src in self.view.sources:
            if isinstance(src, Source):
                found.setdefault(src.name, src)
        for up in self.upstream:
            for src in up.leaf_sources():
                found.setdefault(src.name, src)
        return list(found.values())


def resolve(view: FeatureView) -> ResolvedView:
    """Resolve ``view`` (and its upstream views) against the current source schemas."""
    upstream = tuple(resolve(s) for s in view.sources if isinstance(s, FeatureView))
    up_by_name = {u.name: u for u in upstream}
    schemas: dict[str, pl.Schema] = {}
    for src in view.sources:
        if isinstance(src, Source):
            schemas[src.name] = source_schema(src)
        else:
            schemas[src.name] = _layout_schema(up_by_name[src.name].layout)
    if view.sql is not None:
        _recheck_sql(view, schemas)
    out_schema = _output_schema(view, schemas)
    layout = output_layout(view, out_schema)
    source_parts = {}
    for src in view.sources:
        if isinstance(src, Source):
            used = _used_columns(view, schemas, src, out_schema)
            source_parts[src.name] = {
                "identity": src.identity(),
                "columns": {c: str(schemas[src.name][c]) for c in used},
            }
    parts = {
        "code": view.code_fingerprint(),
        "options": view.options(),
        "source_schema": {"sources": source_parts, "output": layout.dtypes},
        "upstream": {u.name: u.fingerprint for u in upstream},
        "format": FORMAT_VERSION,
    }
    return ResolvedView(
        view=view, fingerprint=stable_hash(parts), parts=parts, layout=layout, upstream=upstream
    )


def changed_parts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Which fingerprint parts differ: the reason a new version exists."""
    return [
        k
        for k in ("code", "options", "source_schema", "upstream", "format")
        if old.get(k) != new.get(k)
    ]


def _layout_schema(layout: Layout) -> pl.Schema:
    return pl.Schema(dict(layout.schema))


def _output_schema(view: FeatureView, schemas: Mapping[str, pl.Schema]) -> pl.Schema:
    frames = {name: empty_frame(schema) for name, schema in schemas.items()}
    result = call_view(view, frames)
    try:
        return result.collect_schema()
    except FeatureKitError:
        raise
    except Exception as err:
        from featurekit.core.errors import UserCodeError

        raise UserCodeError(
            f"view {view.name!r} does not fit its inputs' schemas: {type(err).__name__}: {err}"
        ) from err


def _used_columns(
    view: FeatureView, schemas: Mapping[str, pl.Schema], src: Source, baseline: pl.Schema
) -> list[str]:
    """Columns of ``src`` the view reads: leaving one out breaks or changes the output."""
    schema = schemas[src.name]
    always = [c for c in (src.timestamp, src.created_timestamp) if c is not None]
    names = schema.names()
    if len(names) > MAX_PROBED_COLUMNS:
        return names
    used = list(always)
    for column in names:
        if column in always:
            continue
        probe = dict(schemas)
        probe[src.name] = pl.Schema({n: d for n, d in schema.items() if n != column})
        try:
            changed = _output_schema(view, probe) != baseline
        except FeatureKitError:
            changed = True
        if changed:
            used.append(column)
    return sorted(used)


def _recheck_sql(view: FeatureView, schemas: Mapping[str, pl.Schema]) -> None:
    from featurekit.core.sqlview import parse_sql, sql_schema

    parse_sql(
        view.sql or "",
        view=view.name,
        tables={name: sql_schema(schema) for name, schema in schemas.items()},
    )
