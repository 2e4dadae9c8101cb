"""One Dagster asset per featurekit view, materialized by the project's definitions.

Point ``FEATUREKIT_PROJECT`` at a featurekit project (the folder with featurekit.toml)
and load this file with ``dagster dev -f examples/orchestration/dagster_assets.py``.
Each view of the project's ``fk.Definitions`` becomes the asset ``featurekit/<view>``,
depending on the assets of the views it reads, so Dagster runs upstream views first.
Each run is ``featurekit materialize <view>``: incremental, a no-op when nothing is new,
and refused (the asset fails) when the view's definition was not applied.

Needs ``pip install 'featurekit[dagster]'``.
"""

# no `from __future__ import annotations`: Dagster reads the context annotation at runtime
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

import featurekit as fk
from featurekit.project.apply import materialize_views
from featurekit.project.config import Project, load_project


@contextlib.contextmanager
def in_project(project: Project) -> Iterator[None]:
    """Run inside the project folder: sources name paths relative to it."""
    before = Path.cwd()
    os.chdir(project.folder)
    try:
        yield
    finally:
        os.chdir(before)


def view_assets(folder: str | Path) -> list[dg.AssetsDefinition]:
    """The assets of every view of the project in ``folder``, upstream views first."""
    project = load_project(cwd=Path(folder))
    return [_asset(project, view) for view in project.definitions.all_views]


def _asset(project: Project, view: fk.FeatureView) -> dg.AssetsDefinition:
    upstream = [
        dg.AssetKey(["featurekit", s.name]) for s in view.sources if isinstance(s, fk.FeatureView)
    ]

    @dg.asset(
        name=view.name,
        key_prefix=["featurekit"],
        deps=upstream,
        description=view.description or f"featurekit view {view.name}",
        kinds={"featurekit"},
    )
    def materialize(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        with in_project(project):
            store = fk.Store(project.store, definitions=project.definitions, progress=False)
            (run,) = materialize_views(store, project.definitions, [view.name])
        context.log.info(f"{run.view} v{run.version}: {run.mode}, {run.rows_written} rows")
        return dg.MaterializeResult(
            metadata={
                "version": run.version,
                "mode": run.mode,
                "rows_written": run.rows_written,
                "delta_version": run.delta_version,
            }
        )

    return materialize


defs = dg.Definitions(assets=view_assets(os.environ.get("FEATUREKIT_PROJECT", ".")))
