"""Version numbers stay dense and unique with several real processes appending at once.

The registry hands out numbers under a per-name lock, but its correctness must rest on the
create-only write alone (object storage offers conditional puts, not locks): the
"lock-free" runs replace the lock with a no-op in every process and must give the same
guarantees.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from featurekit.core.timeutil import utcnow
from featurekit.storage.objectstore import LocalObjectStore
from featurekit.storage.registry import ModelRecord, OnDemandRecord, Registry

WORKERS = 4
APPENDS = 6


def _registry(root: str, lock_free: bool) -> Registry:
    registry = Registry(Path(root), create=False)
    if lock_free:

        @contextlib.contextmanager
        def no_lock(*_: Any, **__: Any) -> Iterator[None]:
            yield

        registry.lock = no_lock  # type: ignore[method-assign]
    return registry


def _append_models(root: str, worker: int, lock_free: bool, start: Any) -> None:
    """Append APPENDS model entries, each tagged with who wrote it."""
    registry = _registry(root, lock_free)
    start.wait()
    for i in range(APPENDS):
        registry.append_version(
            "model",
            "churn",
            lambda number, i=i: ModelRecord(
                name="churn", version=number, training_set=f"w{worker}-{i}", created_at=utcnow()
            ),
        )


def _append_same_definition(root: str, worker: int, lock_free: bool, start: Any) -> None:
    """Every worker records the same two definitions, in the same order."""
    registry = _registry(root, lock_free)
    start.wait()
    for fingerprint in ("first", "second"):
        registry.append_version(
            "on_demand",
            "ratio",
            lambda number, fp=fingerprint: OnDemandRecord(
                name="ratio",
                version=number,
                fingerprint=fp,
                inputs=[],
                request=[],
                outputs=["ratio"],
                parts={"written_by": worker},
                created_at=utcnow(),
            ),
            reuse=lambda records, fp=fingerprint: next(
                (r for r in records if r.fingerprint == fp), None
            ),
        )


def _claim(root: str, worker: int, start: Any) -> None:
    start.wait()
    LocalObjectStore(Path(root)).write_if_absent("claims/one.json", f"{worker}".encode() * 4096)


def _run(target: Any, root: Path, *args: Any) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WORKERS)
    procs = [
        ctx.Process(target=target, args=(str(root), worker, *args, start))
        for worker in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=180)
    assert [p.exitcode for p in procs] == [0] * WORKERS


@pytest.mark.parametrize("lock_free", [False, True], ids=["locked", "lock-free"])
def test_concurrent_appends_get_dense_unique_numbers(tmp_path: Path, lock_free: bool) -> None:
    Registry(tmp_path / "store")
    _run(_append_models, tmp_path / "store", lock_free)
    records = Registry(tmp_path / "store").model_versions("churn")
    assert [r.version for r in records] == list(range(1, WORKERS * APPENDS + 1))
    tags = Counter(r.training_set for r in records)
    assert tags == Counter(f"w{w}-{i}" for w in range(WORKERS) for i in range(APPENDS))
    for worker in range(WORKERS):  # each worker's entries in the order it appended them
        mine = [r for r in records if r.training_set.startswith(f"w{worker}-")]
        assert [r.training_set for r in mine] == [f"w{worker}-{i}" for i in range(APPENDS)]
    leftovers = [p for p in (tmp_path / "store").rglob(".tmp-*")]
    assert leftovers == []


@pytest.mark.parametrize("lock_free", [False, True], ids=["locked", "lock-free"])
def test_concurrent_appends_of_one_definition_record_it_once(
    tmp_path: Path, lock_free: bool
) -> None:
    Registry(tmp_path / "store")
    _run(_append_same_definition, tmp_path / "store", lock_free)
    records = Registry(tmp_path / "store").on_demand_versions("ratio")
    assert [(r.version, r.fingerprint) for r in records] == [(1, "first"), (2, "second")]


def test_create_only_write_has_exactly_one_winner(tmp_path: Path) -> None:
    _run(_claim, tmp_path)
    objects = LocalObjectStore(tmp_path)
    data = objects.read("claims/one.json")
    assert data is not None and len(data) == 4096 and len(set(data)) == 1  # one whole write
    assert objects.list("claims/") == ["claims/one.json"]


def test_local_object_store_operations(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path)
    assert objects.read("a/b.json") is None
    assert not objects.exists("a/b.json")
    assert objects.write_if_absent("a/b.json", b"1") is True
    assert objects.write_if_absent("a/b.json", b"2") is False
    assert objects.read("a/b.json") == b"1"
    assert objects.write_if_absent("a/c/d.json", b"3") is True
    (tmp_path / "a" / ".tmp-half-written").write_bytes(b"")
    assert objects.list("a/") == ["a/b.json", "a/c/d.json"]
    assert objects.list("nothing/") == []
    objects.delete("a/b.json")
    objects.delete("a/b.json")  # already gone: fine
    assert objects.list("a/") == ["a/c/d.json"]
