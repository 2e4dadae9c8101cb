"""The ``featurekit`` command line: a demo, and read-only views of a store.

Heavy modules (polars, deltalake, the store) are imported inside commands, so
``featurekit --help`` stays fast. Every :class:`~featurekit.core.errors.FeatureKitError` becomes
a one-line red message on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from featurekit.store import Store

__all__ = ["app", "main"]

app = typer.Typer(
    name="featurekit",
    help="featurekit: a notebook-first feature store. Try `featurekit demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StoreOption = Annotated[
    Path,
    typer.Option("--store", "-s", help="Store root folder (the one holding _featurekit/)."),
]


@app.command()
def demo(
    root: Annotated[
        Path,
        typer.Option(
            "--root",
            help="Folder for the demo's data and store; wiped only if an earlier demo made it.",
        ),
    ] = Path("./featurekit-demo"),
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
) -> None:
    """Generate a rideshare dataset, build a feature store from it and a reproducible training set."""
    with _errors():
        from featurekit.demo import run_demo

        run_demo(root, progress=progress, echo=typer.echo)


@app.command()
def views(store: StoreOption) -> None:
    """List the feature views a store holds."""
    with _errors():
        opened = _open(store)
        table = _table(title=f"feature views in {opened.root}")
        for column in ("view", "latest", "entity", "keys", "features", "ttl"):
            table.add_column(column, no_wrap=column in ("view", "latest"), overflow="fold")
        for name in opened.views():
            latest = opened.versions(name)[-1]
            table.add_row(
                name,
                f"v{latest.version}",
                latest.entity,
                ", ".join(latest.keys),
                "\n".join(latest.features),
                _ttl(latest.ttl_us),
            )
        _show(table, empty=not opened.views(), what="feature views")


@app.command()
def versions(
    name: Annotated[str, typer.Argument(help="View name.")],
    store: StoreOption,
) -> None:
    """List every version of a view: fingerprint, when it was created and why it changed."""
    with _errors():
        opened = _open(store)
        table = _table(title=f"versions of {name}")
        table.add_column("version", no_wrap=True)
        table.add_column("fingerprint", no_wrap=True)
        table.add_column("created (UTC)", no_wrap=True)
        table.add_column("why changed", overflow="fold")
        for record in opened.versions(name):
            table.add_row(
                f"v{record.version}",
                record.fingerprint[:12],
                _when(record.created_at.isoformat()),
                ", ".join(record.reason),
            )
        _show(table)


@app.command("training-sets")
def training_sets(store: StoreOption) -> None:
    """List the training sets recorded in a store."""
    with _errors():
        opened = _open(store)
        recorded = opened.training_sets()
        table = _table(title=f"training sets in {opened.root}")
        table.add_column("id", no_wrap=True)
        table.add_column("names", overflow="fold")
        table.add_column("rows", justify="right", no_wrap=True)
        table.add_column("views", overflow="fold")
        table.add_column("created (UTC)", no_wrap=True)
        for info in sorted(recorded, key=lambda i: str(i["created_at"])):
            table.add_row(
                str(info["id"]),
                "\n".join(info["names"]),
                f"{info['rows']:,}",
                "\n".join(info["views"]),
                _when(str(info["created_at"])),
            )
        _show(table, empty=not recorded, what="training sets")


@app.command()
def lineage(
    node: Annotated[
        str,
        typer.Argument(help="Node id, e.g. model:churn, view:driver_stats@3, training_set:<id>."),
    ],
    store: StoreOption,
    format: Annotated[
        str, typer.Option("--format", "-f", help="text, json, openlineage or dot.")
    ] = "text",
    upstream: Annotated[bool, typer.Option("--upstream/--no-upstream")] = True,
    downstream: Annotated[bool, typer.Option("--downstream/--no-downstream")] = True,
    depth: Annotated[int | None, typer.Option("--depth", help="Hops to follow.")] = None,
) -> None:
    """Show the lineage of a node: what it was built from and what uses it."""
    with _errors():
        import json

        from featurekit.core.errors import DefinitionError

        if format not in ("text", "json", "openlineage", "dot"):
            raise DefinitionError(
                f"--format {format!r} is not one of text, json, openlineage, dot."
            )
        graph = _open(store).lineage(node, upstream=upstream, downstream=downstream, depth=depth)
        if format == "json":
            typer.echo(graph.to_json())
        elif format == "openlineage":
            typer.echo(json.dumps(graph.to_openlineage(), indent=2))
        elif format == "dot":
            typer.echo(graph.to_dot())
        else:
            typer.echo(graph.to_text())


@app.command()
def optimize(
    store: StoreOption,
    view: Annotated[
        list[str] | None,
        typer.Argument(help="View name(s); default: every view's latest version."),
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", help="Version to optimize (default: latest).")
    ] = None,
) -> None:
    """Compact feature tables into globally sorted files (after many incremental runs)."""
    with _errors():
        opened = _open(store)
        for name in view or opened.views():
            result = opened.optimize(name, version)
            if result.changed:
                typer.echo(
                    f"{name} v{result.version}: {result.rows:,} rows, {result.files_before} -> "
                    f"{result.files_after} files (Delta version {result.delta_version_after})"
                )
            else:
                typer.echo(f"{name} v{result.version}: already compact ({result.files_after} file)")


@app.command()
def vacuum(
    store: StoreOption,
    retain: Annotated[
        str, typer.Option(help="Keep unreferenced files younger than this (e.g. 7d, 12h, 0s).")
    ] = "7d",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed, and why; remove nothing.")
    ] = False,
) -> None:
    """Remove data files no table version or kept training set needs (and deleted rows' files)."""
    with _errors():
        report = _open(store).vacuum(retain, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        for item in report.items:
            typer.echo(f"{verb} {item.key} ({item.size:,} bytes): {item.reason}")
        typer.echo(f"{verb} {len(report.items)} files, {report.bytes:,} bytes")


@app.command()
def delete(
    store: StoreOption,
    entity: Annotated[str, typer.Argument(help="Entity whose keys are deleted, e.g. driver.")],
    key: Annotated[
        list[str],
        typer.Option("--key", "-k", help="COLUMN=VALUE of one key to delete; repeat for more."),
    ],
    reason: Annotated[str, typer.Option(help="Why (recorded in the deletion event).")],
) -> None:
    """Delete an entity's keys from every view of it, offline and online; record the event."""
    with _errors():
        from featurekit.core.errors import DefinitionError

        keys: dict[str, list[Any]] = {}
        for pair in key:
            column, sep, value = pair.partition("=")
            if not sep or not column:
                raise DefinitionError(f"--key {pair!r}: expected COLUMN=VALUE, e.g. driver_id=42.")
            keys.setdefault(column.strip(), []).append(_scalar(value.strip()))
        event = _open(store).delete(entity, keys, reason=reason)
        rows = sum(t.rows_deleted for t in event.tables)
        typer.echo(
            f"deletion {event.id}: {rows:,} rows from {len(event.tables)} tables; run "
            "`featurekit vacuum` to remove the files that still hold them"
        )


def _scalar(text: str) -> int | float | str:
    """A key value typed on the command line: an integer, a float, or text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@app.command()
def serve(
    store: StoreOption,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    online: Annotated[
        str | None,
        typer.Option(help="Online store: 'sqlite' (default), or a Redis URL redis://host:port/db."),
    ] = None,
    definitions: Annotated[
        list[str] | None,
        typer.Option(
            "--definitions",
            "-d",
            help="A .py file or module with on-demand features / feature services (repeatable).",
        ),
    ] = None,
    max_entities: Annotated[
        int, typer.Option(help="Most entities one request may ask for (more: HTTP 413).")
    ] = 10_000,
    max_features: Annotated[
        int, typer.Option(help="Most feature references in one request (more: HTTP 413).")
    ] = 1_000,
    max_columns: Annotated[
        int, typer.Option(help="Most entity columns in one request (more: HTTP 413).")
    ] = 256,
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body in bytes (more: HTTP 413).")
    ] = 4 * 1024 * 1024,
    max_name_length: Annotated[
        int, typer.Option(help="Longest name in a request, at most 128 (more: HTTP 422).")
    ] = 128,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve online features over HTTP (FastAPI): POST /v1/features, /metrics, /openapi.json."""
    with _errors():
        import uvicorn

        from featurekit.core.redact import redact
        from featurekit.serving.app import Limits, create_app, load_definitions
        from featurekit.store import Store

        limits = Limits(
            max_body_bytes=max_body_bytes,
            max_features=max_features,
            max_entities=max_entities,
            max_columns=max_columns,
            max_name_length=max_name_length,
        )
        _open(store)  # refuses a path that is not a store
        opened = Store(store, progress=False, online=online)
        server = create_app(opened, limits=limits, definitions=load_definitions(definitions or []))
        where = redact(opened.online.url)  # the Redis password stays out of terminals and logs
        typer.echo(f"featurekit: serving {opened.root} on http://{host}:{port} ({where})")
        uvicorn.run(server, host=host, port=port, log_level=log_level, access_log=False)


def main() -> None:
    """Entry point of the ``featurekit`` console script."""
    app()


# ---- helpers --------------------------------------------------------------------------------
@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """FeatureKitError -> one red line on stderr and exit code 1."""
    from featurekit.core.errors import FeatureKitError

    try:
        yield
    except FeatureKitError as err:
        from rich.markup import escape

        message = " ".join(str(err).split()) or type(err).__name__
        _console(stderr=True).print(f"[bold red]error:[/bold red] [red]{escape(message)}[/red]")
        raise typer.Exit(1) from None


def _open(root: Path) -> Store:
    """Open an existing store; never create one by accident from a mistyped path."""
    from featurekit.core.errors import StorageError
    from featurekit.storage.layout import StoreLayout
    from featurekit.store import Store

    layout = StoreLayout(root.expanduser())
    if not layout.has_store():
        raise StorageError(
            f"{str(root)!r} is not a featurekit store (no {layout.marker_key}). "
            "Pass the store root with --store, e.g. --store ./featurekit-demo/store."
        )
    return Store(root, progress=False)


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=stderr, highlight=False)


def _table(title: str) -> Table:
    from rich import box
    from rich.table import Table

    return Table(
        title=title,
        box=box.SIMPLE_HEAVY,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        title_justify="left",
    )


def _show(table: Any, *, empty: bool = False, what: str = "") -> None:
    console = _console()
    if empty:
        console.print(f"no {what} yet.")
        return
    console.print(table)


def _when(iso: str) -> str:
    """``2024-03-04T10:11:12.345+00:00`` -> ``2024-03-04 10:11``."""
    return iso.replace("T", " ")[:16]


def _ttl(ttl_us: int | None) -> str:
    if ttl_us is None:
        return "-"
    seconds = ttl_us // 1_000_000
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s" if seconds else f"{ttl_us}us"


if __name__ == "__main__":  # pragma: no cover
    main()
