"""The ``featurekit`` command line: a demo, views of a store, its integrity check, the server.

Heavy modules (polars, deltalake, the store) are imported inside commands, so
``featurekit --help`` stays fast. Every :class:`~featurekit.core.errors.FeatureKitError` becomes
a one-line red message on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from featurekit.core.on_demand import OnDemandFeature
    from featurekit.offline.services import FeatureService
    from featurekit.project.definitions import Definitions
    from featurekit.store import Store

__all__ = ["app", "main"]


# ---- help rendering -------------------------------------------------------------------------
# Recent typer releases print a Python type after every parameter in --help, flags included:
# `--help <bool>`, `--progress/--no-progress <bool>`, `view... <list[str]>`. These classes
# restore the usual shape: flags show no value, options show their METAVAR, and arguments
# show only their name (already in the first column). Older typer releases never call
# display_type_rich, so the overrides are harmless there.
_CLICK_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH"}


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        # typer's label, e.g. "<int>" or "<list[str]>" (repeatable), in click's words: INTEGER
        shown = super().display_type_rich(ctx) or ""
        label = re.sub(r"^list\[(.*)\]$", r"\1", shown.strip("<>.").lower())
        return _CLICK_WORDS.get(label, label.upper()) or None


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _plain(param: Any) -> Any:
    """``param`` with the help display above (its class swapped in place; nothing else changes)."""
    if type(param) is TyperOption:
        param.__class__ = _Option
    elif type(param) is TyperArgument:
        param.__class__ = _Argument
    return param


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return [_plain(param) for param in super().get_params(ctx)]


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return [_plain(param) for param in super().get_params(ctx)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        # Every subcommand gets the same help display, without each one naming a class.
        command = super().get_command(ctx, cmd_name)
        if type(command) is TyperCommand:
            command.__class__ = _Command
        return command


app = typer.Typer(
    name="featurekit",
    cls=_Group,
    help="featurekit: a notebook-first feature store. Try `featurekit demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        metavar="ROOT",
        help="Store root: the folder holding _featurekit/, or an s3://, gs://, az:// URI "
        "(storage options and credentials from FEATUREKIT_STORAGE_OPTIONS, a JSON object).",
    ),
]


@app.command()
def demo(
    root: Annotated[
        Path,
        typer.Option(
            "--root",
            metavar="PATH",
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
        from datetime import timedelta

        from featurekit.core.timeutil import duration_label

        opened = _open(store)
        table = _table(title=f"feature views in {opened.registry.layout.shown_root}")
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
                "-"
                if latest.ttl_us is None
                else duration_label(timedelta(microseconds=latest.ttl_us)),
            )
        _show(table, empty=not opened.views(), what="feature views")


@app.command()
def versions(
    name: Annotated[str, typer.Argument(metavar="VIEW", help="View name.")],
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
        table = _table(title=f"training sets in {opened.registry.layout.shown_root}")
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
        typer.Argument(
            metavar="NODE",
            help=(
                "Node id; on the demo store, e.g. model:churn, view:driver_trip_stats@1, "
                "training_set:rideshare_churn (a name or an id)."
            ),
        ),
    ],
    store: StoreOption,
    format: Annotated[
        str,
        typer.Option("--format", "-f", metavar="FORMAT", help="text, json, openlineage or dot."),
    ] = "text",
    upstream: Annotated[bool, typer.Option("--upstream/--no-upstream")] = True,
    downstream: Annotated[bool, typer.Option("--downstream/--no-downstream")] = True,
    depth: Annotated[
        int | None, typer.Option("--depth", metavar="N", help="Hops to follow.")
    ] = None,
) -> None:
    """Show the lineage of a node: what it was built from and what uses it.

    Example (after `featurekit demo`): featurekit lineage model:churn --store ./featurekit-demo/store
    """
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
        typer.Argument(
            metavar="VIEW...", help="View name(s); default: every view's latest version."
        ),
    ] = None,
    version: Annotated[
        int | None,
        typer.Option("--version", metavar="N", help="Version to optimize (default: latest)."),
    ] = None,
    buckets: Annotated[
        int | None,
        typer.Option(
            "--buckets",
            metavar="N",
            help="Also split the table into N buckets of entity keys (a power of two).",
        ),
    ] = None,
) -> None:
    """Compact feature tables into sorted files (after many incremental runs); with
    --buckets, re-bucket them (docs/scale.md)."""
    with _errors():
        opened = _open(store)
        for name in view or opened.views():
            result = opened.optimize(name, version, buckets=buckets)
            if result.changed:
                moved = (
                    f", {result.buckets_before} -> {result.buckets_after} buckets"
                    if result.buckets_after != result.buckets_before
                    else ""
                )
                typer.echo(
                    f"{name} v{result.version}: {result.rows:,} rows, {result.files_before} -> "
                    f"{result.files_after} files{moved} (Delta version "
                    f"{result.delta_version_after})"
                )
            else:
                typer.echo(f"{name} v{result.version}: already compact ({result.files_after} file)")


@app.command()
def doctor(store: StoreOption) -> None:
    """Check a store's integrity: registry records parse, tables and pinned versions read.

    Reads every view version's Delta table and every Delta version a training set pinned,
    in full, and changes nothing. Exit code 0: healthy; 1: problems (each on its own line).
    """
    with _errors():
        from featurekit.doctor import check_store

        # a mistyped path is a plain error, not a report of problems
        report = check_store(_open_marker(store))
        for line in report.lines():
            typer.echo(line)
        if not report.healthy:
            raise typer.Exit(1)


keys_app = typer.Typer(
    help="API keys for `featurekit serve --api-keys FILE` (the file holds hashes, never keys).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")

KeyFileOption = Annotated[
    Path,
    typer.Option(
        "--file",
        "-f",
        envvar="FEATUREKIT_API_KEYS",
        help="The key file (created if missing; written readable by its owner only).",
    ),
]


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="Who the key is for, e.g. ranker-prod.")],
    grant: Annotated[
        list[str],
        typer.Option(
            "--grant",
            "-g",
            help="view:NAME or service:NAME ('*' for every name); repeatable.",
        ),
    ],
    file: KeyFileOption = Path("api-keys.json"),
) -> None:
    """Make a new API key: print it once (only its hash is stored) and add it to the file."""
    with _errors():
        from featurekit.serving.auth import add_key

        key = add_key(file, name, grant)
        _console(stderr=True).print(
            f"added API key {name!r} to {file}; it is shown once, store it now:"
        )
        typer.echo(key)


@keys_app.command("list")
def keys_list(file: KeyFileOption = Path("api-keys.json")) -> None:
    """List the keys in a key file by name, with their grants (never a hash)."""
    with _errors():
        from featurekit.serving.auth import ApiKeys

        for entry in ApiKeys.load(file).keys:
            typer.echo(f"{entry.name}\t{', '.join(str(g) for g in entry.grants)}")


@keys_app.command("remove")
def keys_remove(
    name: Annotated[str, typer.Argument(help="Name of the key to revoke.")],
    file: KeyFileOption = Path("api-keys.json"),
) -> None:
    """Revoke a key (a running server reading this file stops accepting it within seconds)."""
    with _errors():
        from featurekit.serving.auth import remove_key

        remove_key(file, name)
        typer.echo(f"removed API key {name!r} from {file}")


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
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            "-s",
            metavar="ROOT",
            envvar="FEATUREKIT_STORE",
            help="Store root: a folder or an s3://, gs://, az:// URI (default: `store` in "
            "featurekit.toml / pyproject.toml; storage options from FEATUREKIT_STORAGE_OPTIONS).",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            envvar="FEATUREKIT_HOST",
            help="Address to bind. Anything but loopback needs --api-keys (or --insecure).",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="FEATUREKIT_PORT", help="Port to bind.")] = 8000,
    online: Annotated[
        str | None,
        typer.Option(
            envvar="FEATUREKIT_ONLINE",
            help="Online store: 'sqlite' (default), or a Redis URL redis://host:port/db.",
        ),
    ] = None,
    definitions: Annotated[
        list[str] | None,
        typer.Option(
            "--definitions",
            "-d",
            envvar="FEATUREKIT_DEFINITIONS",
            help="A .py file, module or module:attr with fk.Definitions, on-demand features "
            "or feature services (repeatable; default: `definitions` in featurekit.toml).",
        ),
    ] = None,
    api_keys: Annotated[
        Path | None,
        typer.Option(
            "--api-keys",
            envvar="FEATUREKIT_API_KEYS",
            help="File of hashed API keys (featurekit keys add); requests then need "
            "'Authorization: Bearer <key>'.",
        ),
    ] = None,
    metrics_auth: Annotated[
        bool,
        typer.Option(
            "--metrics-auth", help="/metrics needs an API key too (default: open to scrapers)."
        ),
    ] = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            envvar="FEATUREKIT_CORS_ORIGIN",
            help="Origin browsers may call from, e.g. https://app.example.com (repeatable); "
            "default: no CORS.",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Allow a non-loopback --host without --api-keys (anyone who reaches it reads "
            "every feature).",
        ),
    ] = False,
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
    # serving log (monitoring): lookups appended to the store in the background
    log_features: Annotated[
        bool, typer.Option(help="Append every lookup to the store's serving log (Delta).")
    ] = False,
    log_sample: Annotated[
        float, typer.Option(help="With --log-features: the share of lookups logged, in (0, 1].")
    ] = 1.0,
) -> None:
    """Serve online features over HTTP (FastAPI): POST /v1/features, /metrics, /openapi.json."""
    with _errors():
        import uvicorn

        from featurekit.core.errors import DefinitionError
        from featurekit.core.redact import redact
        from featurekit.server import create_server
        from featurekit.serving.app import Limits
        from featurekit.serving.auth import ApiKeys, is_loopback
        from featurekit.store import Store

        # security by default: a server others can reach must ask for keys
        if api_keys is None and not insecure and not is_loopback(host):
            raise DefinitionError(
                f"refusing to serve on {host!r} without API keys: anyone who can reach it "
                "could read every feature. Pass --api-keys FILE (or set FEATUREKIT_API_KEYS; "
                "make keys with `featurekit keys add`), bind --host 127.0.0.1, or pass "
                "--insecure if something in front of the server already authenticates."
            )
        if metrics_auth and api_keys is None:
            raise DefinitionError("--metrics-auth needs --api-keys FILE (the keys it accepts).")
        if api_keys is not None and log_level.lower() == "trace":
            raise DefinitionError(
                "--log-level trace logs every request header, API keys included; use debug."
            )
        keys = None if api_keys is None else ApiKeys.load(api_keys)

        limits = Limits(
            max_body_bytes=max_body_bytes,
            max_features=max_features,
            max_entities=max_entities,
            max_columns=max_columns,
            max_name_length=max_name_length,
        )
        root, loaded = _serve_project(store, definitions or [])
        _open_marker(root)  # refuses a path that is not a store
        opened = Store(
            root, progress=False, online=online, log_serving=log_sample if log_features else False
        )
        server = create_server(
            opened,
            limits=limits,
            definitions=loaded,
            api_keys=keys,
            metrics_auth=metrics_auth,
            cors_origins=cors_origin or (),
        )
        where = redact(opened.online.url)  # the Redis password stays out of terminals and logs
        auth = "without API keys" if keys is None else f"with {len(keys.keys)} API key(s)"
        if keys is None and not is_loopback(host):
            _console(stderr=True).print(
                f"[bold yellow]warning:[/bold yellow] serving on {host} without API keys "
                "(--insecure): every feature is readable by anyone who can reach it."
            )
        typer.echo(
            f"featurekit: serving {opened.registry.layout.shown_root} on http://{host}:{port} ({where}), {auth}"
        )
        # the serving log's last batch is written while the server shuts down (uvicorn
        # re-raises SIGTERM once it has stopped, so nothing after run() would get to it)
        app_ = _closing(server, opened.close)
        uvicorn.run(app_, host=host, port=port, log_level=log_level, access_log=False)


def _closing(app_: Any, close: Callable[[], None]) -> Any:
    """An ASGI app that runs ``close`` when the server's lifespan shuts down."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await app_(scope, receive, send)  # type: ignore[no-any-return]

        async def sending(message: Any) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                close()
            await send(message)

        return await app_(scope, receive, sending)  # type: ignore[no-any-return]

    return wrapped


# ---- monitoring: drift of the views, as a one-shot run for cron or CI ----------------------
@app.command()
def monitor(
    store: StoreOption,
    views_: Annotated[
        list[str] | None, typer.Argument(metavar="[VIEW]...", help="Views (default: all).")
    ] = None,
    window: Annotated[
        str, typer.Option(help="Current window: the last WINDOW of event time, e.g. 1d.")
    ] = "1d",
    reference: Annotated[
        str | None,
        typer.Option(help="Training set id or name to compare with (default: the window before)."),
    ] = None,
    serving: Annotated[
        bool, typer.Option("--serving", help="Compare the serving log instead of the window.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Compute drift for views; exit 1 when a feature drifted (for cron and CI).

    The current sample is the view's last WINDOW of event time (ending at its newest row),
    or the serving log with --serving; the reference is the WINDOW before it, or a
    training set. Results are logged for the server's drift gauges.
    """
    with _errors():
        import json

        opened = _open(store)
        results = _monitor(opened, views_ or opened.views(), window, reference, serving)
        drifted = [r for r in results if r["drifted"]]
        if as_json:
            typer.echo(json.dumps(results, indent=2, default=str))
        else:
            table = _table(title=f"drift in {opened.registry.layout.shown_root}")
            for column in ("view", "feature", "metric", "value", "threshold", "drifted"):
                table.add_column(column, no_wrap=True)
            for r in results:
                table.add_row(
                    r["view"],
                    r["feature"],
                    r["metric"],
                    f"{r['value']:.4g}",
                    f"{r['threshold']:.4g}",
                    "[red]yes[/red]" if r["drifted"] else "no",
                )
            _console().print(table)
        if drifted:
            raise typer.Exit(1)


def _monitor(
    opened: Store, names: list[str], window: str, reference: str | None, serving: bool
) -> list[dict[str, Any]]:
    """Drift results of each view, one dict per (view, feature, metric)."""
    from datetime import timedelta

    from featurekit.core.errors import FeatureKitError
    from featurekit.core.timeutil import parse_duration
    from featurekit.storage import delta

    span = parse_duration(window, what="--window")
    assert span is not None
    out: list[dict[str, Any]] = []
    for name in names:
        record = opened.registry.version(name)
        uri = opened.registry.layout.table_uri(name, record.version)
        current = delta.current_version(uri)
        if current is None:
            typer.echo(f"{name}: skipped, no data yet", err=True)
            continue
        rows = delta.read_rows(uri, version=current, columns=[record.timestamp])
        newest = rows.get_column(record.timestamp).max()
        end = newest + timedelta(microseconds=1)  # type: ignore[operator]
        try:
            report = opened.drift(
                name,
                reference=reference or (end - 2 * span, end - span),
                current="serving" if serving else (end - span, end),
            )
        except FeatureKitError as err:
            typer.echo(f"{name}: skipped, {err}", err=True)
            continue
        out += [{"view": name, **row} for row in report.to_polars().to_dicts()]
    return out


@app.command()
def ui(
    store: StoreOption,
    host: Annotated[
        str,
        typer.Option(help="Address to bind. Anything but loopback needs --insecure."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8001,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Allow a non-loopback --host (this command has no API keys: anyone who "
            "reaches it reads every view, its code and lineage).",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Open the catalog: a read-only web page to find and understand features (offline)."""
    with _errors():
        import uvicorn

        from featurekit.core.errors import DefinitionError
        from featurekit.serving.auth import is_loopback
        from featurekit.ui.routes import create_ui_app

        # the same default as serve: a page others can reach must ask for keys, and only
        # the feature server has them
        if not insecure and not is_loopback(host):
            raise DefinitionError(
                f"refusing to serve the catalog on {host!r} without API keys: anyone who can "
                "reach it could read every view, its code and lineage. Bind --host 127.0.0.1, "
                "use `featurekit serve --api-keys FILE` (the catalog is at /ui/ there), or "
                "pass --insecure if something in front already authenticates."
            )
        opened = _open(store)  # refuses a path that is not a store; never creates one
        server = create_ui_app(opened)
        typer.echo(
            f"featurekit: the catalog of {opened.registry.layout.shown_root} is at http://{host}:{port}/ui/"
        )
        uvicorn.run(server, host=host, port=port, log_level=log_level, access_log=False)


# ---- project commands (init, plan, apply, materialize, ls, show) live in featurekit.project ----
from featurekit.project.commands import add_commands  # noqa: E402  (after the app exists)

add_commands(app)


def _serve_project(
    store: str | None, targets: list[str]
) -> tuple[Path | str, list[OnDemandFeature | FeatureService]]:
    """The store and the definitions to serve: the flags, else the project's config file.

    A target may hold an ``fk.Definitions`` (its services and on-demand features are
    served) or plain module-level services and on-demand features, as before projects.
    """
    from featurekit.core.errors import NotFoundError
    from featurekit.project.config import find_config
    from featurekit.project.config import load_definitions as load_project_definitions
    from featurekit.project.definitions import Definitions
    from featurekit.serving.app import definitions_in, import_definitions
    from featurekit.storage.roots import parse_root

    here = Path.cwd()
    config = find_config(here)
    root = parse_root(store) if store is not None else config.store
    if root is None:
        raise NotFoundError(
            "no store given: pass --store ROOT (or set FEATUREKIT_STORE), or run in a project "
            "folder whose featurekit.toml names one (featurekit init DIR makes one)."
        )
    base = here
    if not targets and config.definitions is not None:
        targets = [config.definitions]
        base = config.path.parent if config.path is not None else here
    values: list[object] = []
    for target in targets:
        if ":" in target and not Path(target).exists():  # module:attr names one Definitions
            values.extend(_served(load_project_definitions(target, base=base)))
            continue
        path = Path(target)
        if path.suffix == ".py" and not path.is_absolute():
            target = str(base / path)
        elif path.suffix != ".py" and str(base) not in sys.path:
            sys.path.insert(0, str(base))  # a project's module, as the other commands find it
        for module in import_definitions([target]):
            for value in vars(module).values():
                values.extend(_served(value) if isinstance(value, Definitions) else [value])
    return root, definitions_in(values)


def _served(defs: Definitions) -> list[OnDemandFeature | FeatureService]:
    """What a server needs of an ``fk.Definitions``: its on-demand features and services."""
    return [*defs.on_demand, *defs.services]


def main() -> None:
    """Entry point of the ``featurekit`` console script."""
    app()


# ---- helpers --------------------------------------------------------------------------------
@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """FeatureKitError -> one red line on stderr and exit code 1 (credentials masked)."""
    from featurekit.core.errors import FeatureKitError

    try:
        yield
    except FeatureKitError as err:
        from rich.markup import escape

        from featurekit.core.redact import redact

        # a message may quote user code's or a library's error text holding a URL with a
        # password; terminals end up in CI logs and tickets
        message = redact(" ".join(str(err).split())) or type(err).__name__
        _console(stderr=True).print(f"[bold red]error:[/bold red] [red]{escape(message)}[/red]")
        raise typer.Exit(1) from None


def _open(root: str | Path) -> Store:
    """Open an existing store; never create one by accident from a mistyped path."""
    from featurekit.store import Store

    return Store(_open_marker(root), progress=False)


def _open_marker(root: str | Path) -> Path | str:
    """The parsed root; refused when it holds no store marker (nothing is created by accident)."""
    from featurekit.core.errors import StorageError
    from featurekit.storage.layout import StoreLayout
    from featurekit.storage.roots import parse_root

    layout = StoreLayout(parse_root(root))
    if not layout.has_store():
        raise StorageError(
            f"{layout.shown_root!r} is not a featurekit store (no {layout.marker_key}). "
            "Pass the store root with --store, e.g. --store ./featurekit-demo/store."
        )
    return layout.root


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


if __name__ == "__main__":  # pragma: no cover
    main()
