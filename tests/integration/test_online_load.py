"""Bounded concurrent load on 127.0.0.1 while materializations write: zero errors and no
torn reads (a response never mixes two materializations of one view), over HTTP on the
embedded store and in-process on Redis.

Every materialization writes generation g into both features of every entity, so a torn
read would show two different numbers in one response. Bounded for CI (8 threads x 150
requests); benchmarks/online.py --load runs the full 8 x 2,000.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from test_online_support import redis_server, served

import featurekit as fk

THREADS, REQUESTS, ENTITIES, MAX_GENERATIONS = 8, 150, 50, 60
item = fk.Entity("item", keys=["item_id"])


def generation_stats(gen: pl.LazyFrame) -> pl.LazyFrame:
    """Both features carry the generation that wrote them."""
    return gen.select("item_id", "event_ts", "a", "b")


def write_generation(folder: Path, g: int) -> None:
    when = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
    pl.DataFrame(
        {
            "item_id": list(range(ENTITIES)),
            "event_ts": [when] * ENTITIES,
            "a": [g] * ENTITIES,
            "b": [g] * ENTITIES,
        }
    ).write_parquet(folder / "gen.parquet")


def make_store(tmp_path: Path, online: str | None = None) -> tuple[fk.Store, fk.FeatureView]:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    write_generation(folder, 0)
    source = fk.Source("gen", folder / "gen.parquet", timestamp="event_ts")
    view = fk.feature_view(entity=item, sources=[source])(generation_stats)
    store = fk.Store(tmp_path / "store", progress=False, online=online)
    store.materialize(view)
    return store, view


def writer(
    store: fk.Store, view: fk.FeatureView, folder: Path, stop: threading.Event, written: list[int]
) -> None:
    for g in range(1, MAX_GENERATIONS + 1):
        if stop.is_set():
            break
        write_generation(folder, g)
        store.materialize(view, full_refresh=True)
        written.append(g)


def check(columns: dict[str, list[Any]], seen: set[int], errors: list[str]) -> None:
    values = set(columns["a"]) | set(columns["b"])
    if len(values) != 1 or None in values:
        errors.append(f"torn read: {sorted(values, key=str)}")
    seen.update(v for v in values if v is not None)


def run_clients(call: Any, written: list[int]) -> tuple[list[str], set[int]]:
    """THREADS clients: at least REQUESTS calls each, and on until 3 generations were written
    during the load (bounded: 60 s), so reads and writes really overlap."""
    errors: list[str] = []
    seen: set[int] = set()
    start = len(written)
    deadline = time.monotonic() + 60

    def client() -> None:
        done = 0
        while done < REQUESTS or (len(written) < start + 3 and time.monotonic() < deadline):
            done += 1
            try:
                check(call(), seen, errors)
            except Exception as err:
                errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=client) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return errors, seen


def reads_during_writes(
    store: fk.Store, view: fk.FeatureView, tmp_path: Path, call: Any
) -> tuple[list[str], set[int], list[int]]:
    """Client threads calling ``call`` while a writer thread keeps materializing."""
    stop = threading.Event()
    written: list[int] = []
    thread = threading.Thread(target=writer, args=(store, view, tmp_path / "data", stop, written))
    thread.start()
    try:
        errors, seen = run_clients(call, written)
    finally:
        stop.set()
        thread.join(120)
    return errors, seen, written


@pytest.mark.slow
def test_http_load_while_materializing(tmp_path: Path) -> None:
    store, view = make_store(tmp_path)
    with served(store.root) as base:
        body = {"features": ["generation_stats:*"], "entities": {"item_id": list(range(ENTITIES))}}
        local = threading.local()

        def call() -> dict[str, Any]:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=base, timeout=30)
            reply = client.post("/v1/features", json=body)
            if reply.status_code != 200:
                raise AssertionError(f"HTTP {reply.status_code}: {reply.text}")
            columns: dict[str, list[Any]] = reply.json()["columns"]
            return columns

        errors, seen, written = reads_during_writes(store, view, tmp_path, call)
    assert not errors, errors[:5]
    assert written, "no materialization ran during the load"
    assert len(seen) >= 2, f"the load saw only generations {seen}; writes did not overlap reads"


@pytest.mark.slow
def test_redis_reads_are_never_torn(tmp_path: Path) -> None:
    with redis_server() as url:
        store, view = make_store(tmp_path, online=url)
        reader = fk.Store(store.root, progress=False, online=url)
        entities = {"item_id": list(range(ENTITIES))}

        def call() -> dict[str, list[Any]]:
            frame = reader.get_online_features(
                ["generation_stats:a", "generation_stats:b"], entities
            )
            return frame.to_dict(as_series=False)

        errors, seen, _ = reads_during_writes(store, view, tmp_path, call)
    assert not errors, errors[:5]
    assert len(seen) >= 2, f"reads saw only generations {seen}"
