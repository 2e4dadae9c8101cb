"""The project commands of the ``featurekit`` CLI: init, plan, apply, materialize, ls, show.

They live here, not in :mod:`featurekit.cli`, which adds them with :func:`add_commands`.
Like the rest of the CLI, heavy modules are imported inside the commands so
``featurekit --help`` stays fast, and a :class:`~featurekit.core.errors.FeatureKitError`
becomes one red line on stderr and exit code 1.

Exit codes of ``plan`` follow ``terraform plan -detailed-exitcode``: 0 no changes,
2 changes, 1 error. With ``--check`` it is a CI gate instead: 1 when a change is breaking
for a service or a logged model, else 0.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from featurekit.project.config import Project
    from featurekit.project.plan import Change, Plan
    from featurekit.store import Store

__all__ = ["PLAN_FILE", "add_commands"]

#: Where ``plan`` leaves the digest ``apply`` checks, relative to the project folder.
PLAN_FILE = Path(".featurekit") / "plan.json"

ProjectStore = Annotated[
    str | None,
    typer.Option(
        "--store",
        "-s",
        metavar="ROOT",
        help="Store root: a folder or an s3://, gs://, az:// URI (default: `store` in "
        "featurekit.toml / pyproject.toml; storage options from FEATUREKIT_STORAGE_OPTIONS).",
    ),
]
ProjectDefinitions = Annotated[
    str | None,
    typer.Option(
        "--definitions",
        "-d",
        help="Module, module:attr or path/to/features.py holding fk.Definitions "
        "(default: `definitions` in featurekit.toml / pyproject.toml).",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def add_commands(app: typer.Typer) -> None:
    """Register the project commands on the ``featurekit`` app."""
    app.command("init")(init)
    app.command("plan")(plan)
    app.command("apply")(apply)
    app.command("materialize")(materialize)
    app.command("ls")(ls)
    app.command("show")(show)


# ---- commands -------------------------------------------------------------------------------
def init(
    folder: Annotated[Path, typer.Argument(help="New (or empty) folder for the project.")],
) -> None:
    """Create a project: features.py, example data, a test, featurekit.toml, CI, README."""
    with _errors():
        from featurekit.project.scaffold import scaffold

        written = scaffold(folder)
        for path in written:
            typer.echo(f"  created {path.relative_to(folder.expanduser())}")
        typer.echo(
            f"next: cd {folder} && featurekit plan; featurekit apply && featurekit materialize"
        )


def plan(
    store: ProjectStore = None,
    definitions: ProjectDefinitions = None,
    as_json: JsonFlag = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="CI gate: exit 1 if a change removes or retypes a column a service or a "
            "logged model reads, else 0.",
        ),
    ] = False,
) -> None:
    """Show what `apply` would change: new / unchanged / new version, why, and what breaks."""
    with _errors():
        from featurekit.project.plan import make_plan

        project = _project(store, definitions)
        with _registry(project) as registry:
            result = make_plan(registry, project.definitions)
        saved = project.folder / PLAN_FILE
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(
            json.dumps({"digest": result.digest, "store": result.store}) + "\n", encoding="utf-8"
        )
        if as_json:
            typer.echo(result.to_json())
        else:
            _print_plan(result)
        blocking = result.blocking()
        if check:
            if blocking:
                names = ", ".join(f"{c.kind} {c.name}" for c in blocking)
                _fail(
                    f"plan --check: breaking change to what services or models use ({names}); "
                    "keep the columns, or pin the users to the current version."
                )
            raise typer.Exit(0)
        raise typer.Exit(2 if result.has_changes else 0)


def apply(
    store: ProjectStore = None,
    definitions: ProjectDefinitions = None,
    as_json: JsonFlag = False,
) -> None:
    """Register exactly what the last `featurekit plan` showed (refused if anything moved)."""
    with _errors():
        from featurekit.core.errors import NotFoundError
        from featurekit.project.apply import apply_plan
        from featurekit.store import Store

        project = _project(store, definitions)
        saved = project.folder / PLAN_FILE
        if not saved.is_file():
            raise NotFoundError(
                f"no plan to apply ({saved} does not exist); run `featurekit plan` first."
            )
        digest = str(json.loads(saved.read_text(encoding="utf-8"))["digest"])
        opened = Store(project.store, progress=False, definitions=project.definitions)
        result = apply_plan(opened, project.definitions, digest)
        saved.unlink()
        changed = [c for c in result.changes if c.changed]
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "digest": result.digest,
                        "applied": [
                            {"kind": c.kind, "name": c.name, "version": c.version} for c in changed
                        ],
                    },
                    indent=2,
                )
            )
            return
        for change in changed:
            typer.echo(f"registered {change.kind} {change.name} v{change.version}")
        typer.echo(f"applied {len(changed)} change(s) to {opened.registry.layout.shown_root}")


def materialize(
    views: Annotated[
        list[str] | None, typer.Argument(help="View name(s); default: every view, upstream first.")
    ] = None,
    store: ProjectStore = None,
    definitions: ProjectDefinitions = None,
    start: Annotated[
        str | None, typer.Option(help="Backfill from this instant (ISO 8601; naive = UTC).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Backfill up to this instant (exclusive).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Compute the project's views (incremental; a re-run with nothing new writes nothing)."""
    with _errors(unexpected=True):
        from featurekit.project.apply import materialize_views
        from featurekit.store import Store

        project = _project(store, definitions)
        opened = Store(project.store, progress=False, definitions=project.definitions)
        runs = materialize_views(
            opened,
            project.definitions,
            views or [],
            start=_instant(start, "--start"),
            end=_instant(end, "--end"),
        )
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "store": opened.registry.layout.shown_root,
                        "runs": [r.as_dict() for r in runs],
                    },
                    indent=2,
                )
            )
            return
        for run in runs:
            window = f"[{run.window_start or '-inf'}, {run.window_end or 'now'})"
            typer.echo(
                f"{run.view} v{run.version}: {run.mode}, {run.rows_written:,} rows {window} "
                f"in {run.seconds:.2f}s"
            )


def ls(
    store: ProjectStore = None,
    search: Annotated[
        str | None,
        typer.Option("--search", help="Find features by name, view, description or tags."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List views, on-demand features, services and models (or search features)."""
    with _errors():
        from featurekit.project.describe import list_entries, search_features

        opened = _open_store(store)
        if search is not None:
            found = search_features(opened.registry, search)
            if as_json:
                typer.echo(json.dumps([f.__dict__ for f in found], indent=2))
                return
            if not found:
                typer.echo(f"no feature matches {search!r}.")
            for feature in found:
                owner = f"  owner: {feature.owner}" if feature.owner else ""
                typer.echo(f"{feature.ref} ({feature.dtype}) v{feature.version}{owner}")
                if feature.description:
                    typer.echo(f"    {feature.description.splitlines()[0]}")
            return
        entries = list_entries(opened.registry)
        if as_json:
            typer.echo(json.dumps([e.as_dict() for e in entries], indent=2))
            return
        if not entries:
            typer.echo("nothing registered yet; run `featurekit apply`.")
        for entry in entries:
            owner = f"  owner: {entry.owner}" if entry.owner else ""
            summary = entry.description.splitlines()[0] if entry.description else ""
            typer.echo(
                f"{entry.kind:<10} {entry.name} v{entry.version}  "
                f"({len(entry.items)} {'items' if entry.kind != 'view' else 'features'}){owner}"
                + (f"  {summary}" if summary else "")
            )


def show(
    name: Annotated[str, typer.Argument(help="A view, on-demand feature, service or model name.")],
    store: ProjectStore = None,
    as_json: JsonFlag = False,
) -> None:
    """Describe one view, on-demand feature, service or model."""
    with _errors():
        from featurekit.project.describe import describe

        opened = _open_store(store)
        entries = describe(opened.registry, name)
        if as_json:
            typer.echo(json.dumps([e.as_dict() for e in entries], indent=2))
            return
        for entry in entries:
            typer.echo(f"{entry.kind} {entry.name} (latest v{entry.version})")
            if entry.description:
                typer.echo(f"  description: {entry.description}")
            if entry.owner:
                typer.echo(f"  owner: {entry.owner}")
            if entry.tags:
                typer.echo(f"  tags: {', '.join(f'{k}={v}' for k, v in entry.tags.items())}")
            label = {"view": "features", "on_demand": "outputs", "service": "features"}
            typer.echo(f"  {label.get(entry.kind, 'metrics')}:")
            for item in entry.items:
                typer.echo(f"    {item}")
            for key, value in entry.details.items():
                if isinstance(value, list):
                    typer.echo(f"  {key}:")
                    for line in value:
                        typer.echo(f"    {line}")
                else:
                    typer.echo(f"  {key}: {value}")


# ---- helpers --------------------------------------------------------------------------------
def _print_plan(result: Plan) -> None:
    counts = {"new": 0, "new_version": 0, "unchanged": 0}
    for change in result.changes:
        counts[change.status] += 1
    typer.echo(
        f"featurekit plan for {result.store}: {counts['new']} new, "
        f"{counts['new_version']} new version(s), {counts['unchanged']} unchanged"
    )
    for change in result.changes:
        typer.echo(_headline(change))
        for line in change.added:
            typer.echo(f"    + {line}")
        for line in change.removed:
            typer.echo(f"    - {line}")
        for line in change.retyped:
            typer.echo(f"    ~ {line}")
        if change.note:
            typer.echo(f"    note: {change.note}")
        if change.diff:
            for line in change.diff.splitlines():
                typer.echo(f"    {line}")
        if change.stale:
            typer.echo(f"    stale downstream: {', '.join(change.stale)}")
        if change.used_by:
            typer.echo(f"    used by: {', '.join(change.used_by)}")
    typer.echo(f"plan digest: {result.digest}")
    if result.has_changes:
        typer.echo("run `featurekit apply` to register these changes.")
    else:
        typer.echo("no changes: the store matches the definitions.")


def _headline(change: Change) -> str:
    mark = {"new": "+", "new_version": "~", "unchanged": "="}[change.status]
    kind = change.kind.replace("_", "-")
    if change.status == "new":
        return f"{mark} {kind} {change.name}: new (v{change.version}), {change.impact}"
    if change.status == "unchanged":
        return f"{mark} {kind} {change.name}: unchanged (v{change.version})"
    return (
        f"{mark} {kind} {change.name}: new version v{change.version} (was v{change.previous}), "
        f"reason: {', '.join(change.reason)}, {change.impact}"
    )


def _project(store: str | None, definitions: str | None) -> Project:
    from featurekit.project.config import load_project

    project = load_project(store=store, definitions=definitions)
    # sources in definitions name paths relative to the project folder, in CI and cron alike
    os.chdir(project.folder)
    return project


@contextlib.contextmanager
def _registry(project: Project) -> Iterator[Any]:
    """The project's registry; an empty stand-in when the store does not exist yet.

    Planning writes nothing, so it must not create the store folder either.
    """
    import tempfile

    from featurekit.storage.layout import StoreLayout
    from featurekit.storage.registry import Registry

    if StoreLayout(project.store).has_store():
        yield Registry(project.store, create=False)
        return
    with tempfile.TemporaryDirectory(prefix="featurekit-plan-") as empty:
        registry = Registry(Path(empty) / "store", create=True)
        registry.root = project.store  # the plan names the real store
        yield registry


def _open_store(store: str | None) -> Store:
    from featurekit.core.errors import NotFoundError
    from featurekit.project.config import find_config
    from featurekit.storage.roots import parse_root
    from featurekit.store import Store

    root = parse_root(store) if store is not None else find_config(Path.cwd().resolve()).store
    if root is None:
        raise NotFoundError(
            "no store given: pass --store ROOT, or run inside a project (featurekit.toml)."
        )
    return Store(root, create=False, progress=False)


def _instant(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    from featurekit.core.errors import DefinitionError
    from featurekit.core.timeutil import to_utc_datetime

    try:
        return to_utc_datetime(datetime.fromisoformat(text))
    except ValueError:
        raise DefinitionError(
            f"{flag} {text!r} is not an ISO 8601 instant, e.g. 2026-11-01 or 2026-11-01T06:00."
        ) from None


def _fail(message: str) -> None:
    """One red line on stderr, credentials masked, exit code 1."""
    from rich.console import Console
    from rich.markup import escape

    from featurekit.core.redact import redact

    # a message may quote user code's or a library's error text holding a URL with a
    # password; cron and CI logs keep what is printed here
    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"[bold red]error:[/bold red] [red]{escape(redact(message))}[/red]"
    )
    raise typer.Exit(1)


@contextlib.contextmanager
def _errors(*, unexpected: bool = False) -> Iterator[None]:
    """FeatureKitError (and, for scheduled commands, any error) -> one masked red line, exit 1."""
    from featurekit.core.errors import FeatureKitError

    try:
        yield
    except typer.Exit:
        raise
    except FeatureKitError as err:
        _fail(" ".join(str(err).split()) or type(err).__name__)
    except Exception as err:
        if not unexpected:
            raise
        # a cron job's log shows one line it can alert on, not a traceback
        _fail(f"{type(err).__name__}: {' '.join(str(err).split())}")
