"""Idle CPU priority for background processes, and the way back when they fall behind.

The serving log's writer does its work (rows, JSON, parquet, commits) on the cores the
lookups run on, and that work is what costs them: with a writer that only drains its
socket, 8 threads looking up 50 entities at once on 2 cores had the p99 of no logging;
with the real writer, 1.1-1.3x. Niced (19) the writer changed nothing measurable (a
niced task still preempts on wakeup and shares each core by weight). Under Linux's
``SCHED_IDLE`` policy it runs only where a core has nothing else to run; in alternating
A/B runs on the same machine that took a little off the lookups' p99 (1.13 -> 1.12 and
1.12 -> 1.07 of no logging, 50 and 100 entities), not all of the writer's cost.

An idle process can starve on cores that never idle, and an unprivileged process may
not leave ``SCHED_IDLE`` again (leaving it needs the right to set nice 0: root,
``CAP_SYS_NICE`` or ``RLIMIT_NICE``). So a process goes idle only when
:func:`idle_is_reversible` says it can come back, and :func:`hurry` brings it back to
normal priority when it is behind (its queue half full, its socket full) or someone waits
for it (a flush, a close). Where any of this is unavailable (not Linux, the calls refused
by a sandbox), the process simply keeps normal priority.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

__all__ = ["hurry", "idle_is_reversible", "is_idle", "relax"]

_IDLE = getattr(os, "SCHED_IDLE", None)
_NORMAL = getattr(os, "SCHED_OTHER", None)


def _set(tid: int, policy: int) -> None:
    os.sched_setscheduler(tid, policy, os.sched_param(0))


def idle_is_reversible() -> bool:
    """True when a thread of this process can go idle and come back to normal priority
    (probed on a thread of its own, so that a refusal leaves no thread stuck idle)."""
    if _IDLE is None or _NORMAL is None or not hasattr(os, "sched_setscheduler"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            _set(0, _IDLE)
            _set(0, _NORMAL)
        except OSError:
            result.append(False)
        else:
            result.append(True)

    thread = threading.Thread(target=probe, name="featurekit-priority-probe", daemon=True)
    thread.start()
    thread.join()
    return bool(result and result[0])


def _threads(pid: int) -> list[int]:
    """Every thread of process ``pid`` (empty when it is gone or /proc is not there)."""
    with contextlib.suppress(OSError, ValueError):
        return [int(p.name) for p in Path(f"/proc/{pid}/task").iterdir()]
    return []


def _apply(pid: int, policy: int | None) -> bool:
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return False
    done = False
    for tid in _threads(pid):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile, or refused
            _set(tid, policy)
            done = True
    return done


def relax(pid: int | None = None) -> bool:
    """Put every thread of process ``pid`` (default: this one) under ``SCHED_IDLE``;
    threads started later by those threads inherit it. Call it only when
    :func:`idle_is_reversible`. Returns False when nothing was changed."""
    return _apply(os.getpid() if pid is None else pid, _IDLE)


def hurry(pid: int | None = None) -> bool:
    """Bring every thread of process ``pid`` (default: this one) back to normal priority.
    Returns False when nothing was changed (gone, or refused)."""
    return _apply(os.getpid() if pid is None else pid, _NORMAL)


def is_idle(pid: int | None = None) -> bool:
    """True when process ``pid``'s main thread (default: this one's) is under ``SCHED_IDLE``."""
    if _IDLE is None or not hasattr(os, "sched_getscheduler"):
        return False
    try:
        policy: int = os.sched_getscheduler(os.getpid() if pid is None else pid)
    except OSError:
        return False
    return bool(policy == _IDLE)
