"""The local engine's runner: buckets joined on threads, results in task order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import polars as pl

from featurekit.offline.engine import LocalRunner


def test_results_come_in_task_order_with_at_most_workers_in_flight() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def task(i: int) -> Callable[[], pl.DataFrame]:
        def run() -> pl.DataFrame:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.02 if i % 2 == 0 else 0.001)  # even tasks finish last
            with lock:
                running -= 1
            return pl.DataFrame({"i": [i]})

        return run

    got = [df.item() for df in LocalRunner(workers=2).map(task(i) for i in range(8))]
    assert got == list(range(8))
    assert most == 2  # two buckets at once, never more
    assert [df.item() for df in LocalRunner(workers=1).map(task(i) for i in range(3))] == [0, 1, 2]


def test_a_thread_whose_task_ended_takes_the_next_while_the_first_still_runs() -> None:
    """Results come in task order, but the threads do not wait for it: the task after
    two running ones is already given, so it runs while a slow first task still does."""
    third_started = threading.Event()
    seen: list[bool] = []

    def slow() -> pl.DataFrame:
        seen.append(third_started.wait(timeout=10))  # False: the third never ran beside it
        return pl.DataFrame({"i": [0]})

    def fast(i: int) -> Callable[[], pl.DataFrame]:
        def run() -> pl.DataFrame:
            if i == 2:
                third_started.set()
            return pl.DataFrame({"i": [i]})

        return run

    tasks = [slow, fast(1), fast(2), fast(3)]
    got = [df.item() for df in LocalRunner(workers=2).map(tasks)]
    assert got == [0, 1, 2, 3]
    assert seen == [True]


def test_a_failing_task_raises_its_own_error() -> None:
    def boom() -> pl.DataFrame:
        raise ValueError("bucket 3 failed")

    runner = LocalRunner(workers=2)
    try:
        list(runner.map([lambda: pl.DataFrame({"i": [0]}), boom]))
    except ValueError as err:
        assert str(err) == "bucket 3 failed"
    else:
        raise AssertionError("the task's error was swallowed")
