"""The Ray engine: a training set's per-bucket joins, and a materialization's map and
per-bucket stages (:mod:`featurekit.offline.distribute`), run as Ray tasks on a cluster.

``fk.Store(root, engine="ray")`` connects to the cluster ``RAY_ADDRESS`` names (or starts
a local one), ``engine="ray://host:port"`` to that address. Each bucket of each bucketed
view is one task: it reads that bucket's files of the pinned Delta version (every node
must see the store's root at the same path, e.g. a shared mount) and runs the one polars
kernel (:func:`~featurekit.kernels.pit.pit_join`); the driver puts the results back in
label order. A task is a pure function of its inputs, so Ray may retry it after a worker
dies (``max_retries``) and the answer cannot change: the training set has the same id
and the same rows as on the local engine. A materialization task writes its files under
names no other attempt uses and the driver commits only the files of results it
received, so a retried task leaves no duplicate row. Ray is imported only here, on first
use (``pip install 'featurekit[ray]'``).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import polars as pl

from featurekit.core.errors import DefinitionError, FeatureKitError
from featurekit.offline.engine import Task

__all__ = ["RayRunner", "runner_for"]

#: tasks in flight at once: enough to keep a small cluster busy, few enough that the
#: driver never holds many buckets' results it cannot yet hand over in label order
IN_FLIGHT = 8
#: a task whose worker died is run again this many times
MAX_RETRIES = 3
#: how long a failed run waits for its other tasks in flight to stop
SETTLE_SECONDS = 60.0


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise DefinitionError(
            "engine='ray' needs Ray, which is not installed. Install it with "
            "pip install 'featurekit[ray]', or use the default engine='local'."
        ) from err
    return ray


def _run(task: Task) -> pl.DataFrame:
    return task()


class RayRunner:
    """Runs tasks as Ray tasks, a bounded number in flight, results in task order."""

    def __init__(self, address: str | None) -> None:
        self.address = address

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False)
        return ray

    def map(self, tasks: Iterable[Task]) -> Iterator[pl.DataFrame]:
        """Each task's result, in the order the tasks were given."""
        ray = self._connect()
        remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_run)
        pending: deque[Any] = deque()
        try:
            for task in tasks:
                pending.append(remote.remote(task))
                if len(pending) >= IN_FLIGHT:
                    yield _get(ray, pending.popleft())
            while pending:
                yield _get(ray, pending.popleft())
        finally:
            if pending:  # a task failed, or the caller stopped early
                _settle(ray, list(pending))


def _settle(ray: Any, refs: list[Any]) -> None:
    """Cancel tasks still in flight and wait until they have stopped.

    A task still running after its run failed could otherwise write files into a staging
    folder after the caller has removed it.
    """
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref)
    with contextlib.suppress(Exception):
        ray.wait(refs, num_returns=len(refs), timeout=SETTLE_SECONDS)


def _get(ray: Any, ref: Any) -> pl.DataFrame:
    """A task's result; a featurekit error the task raised (a view's code failing, say)
    is raised as itself, as the local engine raises it, not wrapped in Ray's error."""
    try:
        result: pl.DataFrame = ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, FeatureKitError):
            raise err.cause from None
        raise
    return result


def runner_for(engine: str) -> RayRunner:
    """The runner of ``engine="ray"`` or ``"ray://host:port"``."""
    if engine == "ray":
        return RayRunner(None)  # ray.init finds RAY_ADDRESS, or starts a local cluster
    if engine.startswith("ray://"):
        return RayRunner(engine)
    raise DefinitionError(
        f"engine={engine!r} is not an engine; use 'local' (the default), 'ray' or "
        "'ray://host:port'."
    )
