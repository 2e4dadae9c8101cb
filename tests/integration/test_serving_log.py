"""Online lookups are logged to a Delta table in the background, in process and by the server."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest
from conftest import S3_BUCKET, at
from test_online_support import served
from views_trips import fare_view

import featurekit as fk
from featurekit.online import priority, serving_log
from featurekit.online.serving_log import LoggedView, ServingLog
from featurekit.storage import delta


def test_store_logs_every_lookup_once_with_values_and_statuses(
    tmp_path: Path, data_dir: Path
) -> None:
    root = tmp_path / "store"
    with fk.Store(root, progress=False, log_serving=True) as store:
        store.materialize(fare_view(data_dir, ttl=None))
        served_frames = [
            store.get_online_features(["fare_features:fare"], {"driver_id": [1, 2, 9]})
            for _ in range(3)
        ]
    log = fk.Store(root, progress=False).serving_log()
    assert log.height == 9
    assert log.group_by("request_id").len()["len"].to_list() == [3, 3, 3]
    first = log.filter(pl.col("request_id") == log["request_id"][0])
    assert [json.loads(e)["driver_id"] for e in first["entity"]] == [1, 2, 9]
    assert first["status"].to_list() == ["present", "present", "not_found"]
    fares = [json.loads(v)["fare"] for v in first["features"]]
    assert fares == served_frames[0]["fare"].to_list()
    assert set(log["view"]) == {"fare_features"} and set(log["version"]) == {1}


def test_one_entity_lookups_are_logged_as_batched_ones_are(tmp_path: Path, data_dir: Path) -> None:
    """A lookup of one entity takes a shorter path; its log rows are the batch path's rows."""
    root = tmp_path / "store"
    with fk.Store(root, progress=False, log_serving=True) as store:
        store.materialize(fare_view(data_dir, ttl=None))
        for driver in (1, 2, 9):  # present, present, not found
            store.get_online_features(["fare_features:fare"], {"driver_id": [driver]})
        store.get_online_features(["fare_features:fare"], {"driver_id": [1, 2, 9]})
    log = fk.Store(root, progress=False).serving_log().sort("lookup_at", maintain_order=True)
    columns = ["entity", "features", "status", "event_ts", "view", "version"]
    singles, batched = log.head(3).select(columns), log.tail(3).select(columns)
    assert singles.equals(batched), (singles, batched)
    assert singles["status"].to_list() == ["present", "present", "not_found"]
    assert log.head(3)["request_id"].n_unique() == 3


def test_serving_values_feed_drift(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "store"
    with fk.Store(root, progress=False, log_serving=True) as store:
        store.materialize(fare_view(data_dir, ttl=None))
        for _ in range(4):
            store.get_online_features(["fare_features:fare"], {"driver_id": [1, 2]})
        report = store.drift("fare_features", reference=(at(0), at(50)), current="serving")
    assert report.current_rows == 8
    assert report.current_label == "serving log"
    # lookups served only fare (not fare_x2): the features served are compared
    assert [(r.feature, r.metric) for r in report.results] == [
        ("fare", "psi"),
        ("fare", "ks_pvalue"),
    ]


def test_sample_rate_is_validated(tmp_path: Path) -> None:
    with pytest.raises(fk.DefinitionError, match=r"sample rate must be in \(0, 1\], got 1.5"):
        ServingLog(str(tmp_path / "log"), sample=1.5)


def test_serve_log_features_logs_each_request_exactly_once(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "store"
    store = fk.Store(root, progress=False)
    store.materialize(fare_view(data_dir, ttl=None))
    body = {"features": ["fare_features:fare"], "entities": {"driver_id": [1, 2]}}
    with served(root, "--log-features") as base:
        for _ in range(20):
            assert httpx.post(f"{base}/v1/features", json=body, timeout=10).status_code == 200
    log = fk.Store(root, progress=False).serving_log()  # flushed on shutdown
    assert log["request_id"].n_unique() == 20
    assert log.height == 40


def test_skew_is_zero_when_online_and_offline_agree(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "store"
    with fk.Store(root, progress=False, log_serving=True) as store:
        store.materialize(fare_view(data_dir, ttl=None))
        store.get_online_features(
            ["fare_features:fare", "fare_features:fare_x2"], {"driver_id": [1, 2, 9]}
        )
        report = store.skew()
    assert (report.values, report.count) == (6, 0)
    assert len(report.training_sets) == 1


def test_skew_names_a_stale_online_snapshot(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "store"
    view = fare_view(data_dir, ttl=None)
    fk.Store(root, progress=False).materialize(view)  # offline and online in sync
    newer = pl.DataFrame(
        {
            "driver_id": [1],
            "event_ts": [at(60)],
            "ingested_at": [at(60.5)],
            "fare": [99.0],
            "status": ["ok"],
        }
    )
    trips = pl.read_parquet(data_dir / "trips.parquet")
    pl.concat([trips, newer]).write_parquet(data_dir / "trips.parquet")
    fk.Store(root, progress=False, online=False).materialize(view)  # offline only: stale online
    with fk.Store(root, progress=False, log_serving=True) as store:
        served_rows = store.get_online_features(["fare_features:fare"], {"driver_id": [1, 2]})
        assert served_rows["fare"].to_list() == [50.0, 60.0]  # the stale snapshot
        report = store.skew()
    assert report.count == 1
    [diff] = report.to_polars().to_dicts()
    assert (diff["feature"], diff["served"], diff["offline"]) == ("fare", "50.0", "99.0")
    assert diff["reason"].startswith(
        "stale online snapshot: it served the row at 2026-01-02T16:00:00+00:00, the offline "
        "store has a row at 2026-01-03T12:00:00+00:00"
    )


def test_logged_rows_encode_values_as_orjson_does(tmp_path: Path) -> None:
    # the writer encodes plain values column-wise in polars and the rest one row at a time;
    # both must write what orjson writes (the readers parse it back with orjson)
    t0 = 1_767_225_600_123_457
    fare = LoggedView(
        "fare_features",
        2,
        ("fare", "city", "ok"),
        {"fare": [1.0, None, float("nan")], "city": ['"q"', "ü", None], "ok": [True, None, False]},
        ["present", "not_found", "present"],
        [t0 - 7, None, t0 - 1],
    )
    rating = LoggedView(
        "ratings", 1, ("rating",), {"rating": [4, 5, None]}, ["present"] * 3, [t0] * 3
    )
    one = LoggedView("ratings", 1, ("rating",), {"rating": [4]}, ["present"], [t0])
    log = ServingLog(str(tmp_path / "log"))
    log.record(t0, {"driver_id": [1, 2, 9]}, ("driver_id",), [fare, rating])
    log.record(t0 + 1, {"driver_id": [3, 4, 5]}, ("driver_id",), [rating])
    log.close()
    # a date key and mixed key types in one batch: not plain polars columns
    odd = ServingLog(str(tmp_path / "odd"))
    odd.record(t0, {"day": [date(2026, 1, 1)]}, ("day",), [one])
    odd.record(t0, {"day": ["2026-01-02"]}, ("day",), [one])
    odd.close()
    # ints in one lookup, floats in the next: one column of mixed types, encoded row by row
    mixed = ServingLog(str(tmp_path / "mixed"))
    half = LoggedView("ratings", 1, ("rating",), {"rating": [4.5]}, ["present"], [t0])
    for view in (one, half):
        mixed.record(t0, {"driver_id": [1]}, ("driver_id",), [view])
    mixed.close()

    rows = pl.read_delta(str(tmp_path / "log"))
    assert rows["request_id"].unique_counts().to_list() == [6, 3]  # in the order recorded
    assert rows["view"].to_list() == ["fare_features"] * 3 + ["ratings"] * 6
    assert rows["entity"].to_list() == [f'{{"driver_id":{i}}}' for i in (1, 2, 9, 1, 2, 9, 3, 4, 5)]
    expected = [
        orjson.dumps({f: view.values[f][i] for f in view.features}).decode()
        for view in (fare, rating, rating)
        for i in range(3)
    ]
    assert rows["features"].to_list() == expected
    assert expected[0] == '{"fare":1.0,"city":"\\"q\\"","ok":true}'
    assert expected[2] == '{"fare":null,"city":null,"ok":false}'
    assert (
        rows["lookup_at"].to_list()
        == [datetime(2026, 1, 1, 0, 0, 0, 123457, UTC)] * 6
        + [datetime(2026, 1, 1, 0, 0, 0, 123458, UTC)] * 3
    )
    assert rows["event_ts"][:3].to_list() == [
        datetime(2026, 1, 1, 0, 0, 0, 123450, UTC),
        None,
        datetime(2026, 1, 1, 0, 0, 0, 123456, UTC),
    ]
    assert rows["status"][:3].to_list() == ["present", "not_found", "present"]
    days = pl.read_delta(str(tmp_path / "odd"))["entity"].to_list()
    assert days == ['{"day":"2026-01-01"}', '{"day":"2026-01-02"}']
    ratings = pl.read_delta(str(tmp_path / "mixed"))["features"].to_list()
    assert ratings == ['{"rating":4}', '{"rating":4.5}']


ONE = LoggedView("ratings", 1, ("rating",), {"rating": [4]}, ["present"], [None])
T0 = 1_767_225_600_000_000


def _entities(uri: Path) -> list[int]:
    return [orjson.loads(e)["driver_id"] for e in pl.read_delta(str(uri))["entity"]]


def test_a_full_log_drops_lookups_and_counts_them(tmp_path: Path) -> None:
    # memory stays bounded: a writer that does not read (stopped) fills the socket buffer,
    # then record() drops instead of blocking or growing
    log = ServingLog(str(tmp_path / "log"))
    assert log.flush()  # the writer runs
    pid = log.writer_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        sent = 0
        while log.dropped == 0:
            log.record(T0, {"driver_id": [sent]}, ("driver_id",), [ONE])
            sent += 1
            assert sent < 1_000_000, "the socket buffer never filled"
        kept = sent - 1
        for i in range(5):
            log.record(T0, {"driver_id": [sent + i]}, ("driver_id",), [ONE])
        assert log.dropped == 6
    finally:
        os.kill(pid, signal.SIGCONT)
    log.close()  # writes what was kept
    assert log.written == kept
    assert _entities(tmp_path / "log") == list(range(kept))


def _idle_threads(pid: int) -> list[bool]:
    """Whether each thread of process ``pid`` runs under ``SCHED_IDLE``."""
    flags = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            flags.append(os.sched_getscheduler(int(task.name)) == os.SCHED_IDLE)
    return flags


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.skipif(not priority.idle_is_reversible(), reason="SCHED_IDLE is not reversible here")
def test_the_writer_runs_at_idle_priority_and_is_hurried_when_its_socket_is_full(
    tmp_path: Path,
) -> None:
    """Idle, the writer's work does not delay lookups; behind, it is brought back to normal
    priority (an idle writer on cores that never idle would starve and drop lookups)."""
    log = ServingLog(str(tmp_path / "log"))
    log.record(T0, {"driver_id": [0]}, ("driver_id",), [ONE])
    assert log.flush()  # the writer runs, its thread pools too
    pid = log.writer_pid
    assert pid is not None
    # idle again once the flush is answered: every thread, those of polars and delta-rs too
    assert _until(lambda: all(_idle_threads(pid)))
    assert len(_idle_threads(pid)) >= 2
    os.kill(pid, signal.SIGSTOP)
    many = LoggedView(
        "ratings", 1, ("rating",), {"rating": [4] * 600}, ["present"] * 600, [None] * 600
    )
    lookups = 1
    try:
        while any(_idle_threads(pid)):
            log.record(T0, {"driver_id": list(range(600))}, ("driver_id",), [many])
            lookups += 1
            assert lookups < 20_000, "the writer was never hurried"
            time.sleep(0.0005)
        assert log.dropped == 0  # hurried when the socket was full, long before a drop
    finally:
        os.kill(pid, signal.SIGCONT)
    assert log.flush(timeout=60)
    assert log.dropped == 0 and log.written == lookups
    assert _until(lambda: all(_idle_threads(pid)))  # caught up: idle again
    log.close()


UNPRIVILEGED = """
import os, sys
from featurekit.online import priority
from featurekit.online.serving_log import LoggedView, ServingLog
log = ServingLog(sys.argv[1])
log.record(1_767_225_600_000_000, {"driver_id": [0]}, ("driver_id",),
           [LoggedView("ratings", 1, ("rating",), {"rating": [4]}, ["present"], [None])])
assert log.flush()
idle = [os.sched_getscheduler(int(t)) == os.SCHED_IDLE for t in os.listdir(f"/proc/{log.writer_pid}/task")]
print(priority.idle_is_reversible(), any(idle), log.written)
log.close()
"""


@pytest.mark.skipif(not Path("/usr/bin/setpriv").exists(), reason="needs util-linux's setpriv")
def test_a_writer_that_could_not_leave_idle_priority_never_enters_it(tmp_path: Path) -> None:
    """Without the right to set nice 0 (root, CAP_SYS_NICE or RLIMIT_NICE), a process under
    SCHED_IDLE cannot leave it: the writer must then keep normal priority, or it could
    never be hurried and would starve on busy cores."""
    drop = ["--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice"]
    run = subprocess.run(
        ["setpriv", *drop, sys.executable, "-c", UNPRIVILEGED, str(tmp_path / "log")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False", "False", "1"]


def test_the_writer_is_another_process_and_the_append_happens_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the serving process never builds or appends log rows: the append here would fail
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the serving process appended to the log")

    monkeypatch.setattr(delta, "write_rows", refuse)
    # not imported here by the log (whatever other tests of this process imported)
    monkeypatch.delitem(sys.modules, "featurekit.online.serving_log_writer", raising=False)
    log = ServingLog(str(tmp_path / "log"))
    pid = log.writer_pid
    assert pid is not None and pid != os.getpid()
    for i in range(3):
        log.record(T0, {"driver_id": [i]}, ("driver_id",), [ONE])
    assert log.flush()
    assert log.written == 3
    assert _entities(tmp_path / "log") == [0, 1, 2]
    log.close()
    assert "featurekit.online.serving_log_writer" not in sys.modules


def _gone(pid: int) -> bool:
    """The process has exited, all its threads too (then its sockets are closed)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state == "Z" and os.listdir(f"/proc/{pid}/task") == [str(pid)]
    except FileNotFoundError:
        return True


def test_a_killed_writer_is_replaced_and_lookups_keep_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving_log, "RESTART_SECONDS", 0.2)
    log = ServingLog(str(tmp_path / "log"))
    log.record(T0, {"driver_id": [0]}, ("driver_id",), [ONE])
    assert log.flush()
    first = log.writer_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not _gone(first) and time.monotonic() < deadline:
        time.sleep(0.01)  # dead: what it had in its socket is lost with it
    i = 1
    # lookups go on (never raising); those sent while no writer runs are counted
    while log.writer_pid in (first, None) and time.monotonic() < deadline:
        log.record(T0, {"driver_id": [i]}, ("driver_id",), [ONE])
        i += 1
        time.sleep(0.01)
    assert log.writer_pid not in (first, None)
    assert log.dropped >= 1
    log.record(T0, {"driver_id": [1000]}, ("driver_id",), [ONE])
    log.close()
    logged = sorted(_entities(tmp_path / "log"))  # two writers: two commits, in any order
    assert logged[0] == 0 and logged[-1] == 1000
    assert len(set(logged)) == len(logged)
    assert len(logged) == i + 1 - log.dropped  # every lookup is logged or counted


def test_a_lookup_larger_than_a_message_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving_log, "MAX_MESSAGE", 4096)
    n = 1000
    fares = [float(i) for i in range(n)]
    view = LoggedView("fare_features", 1, ("fare",), {"fare": fares}, ["present"] * n, [T0] * n)
    log = ServingLog(str(tmp_path / "log"))
    log.record(
        T0,
        {"driver_id": list(range(n))},
        ("driver_id",),
        [
            view,
            ONE._replace(
                values={"rating": list(range(n))}, statuses=["present"] * n, events=[None] * n
            ),
        ],
    )
    log.close()
    rows = pl.read_delta(str(tmp_path / "log"))
    assert log.dropped == 0
    assert rows["request_id"].n_unique() == 1
    fare_rows = rows.filter(pl.col("view") == "fare_features")
    assert _entities_of(fare_rows) == list(range(n))
    assert [orjson.loads(f)["fare"] for f in fare_rows["features"]] == fares
    assert rows.filter(pl.col("view") == "ratings").height == n


def _entities_of(rows: pl.DataFrame) -> list[int]:
    return [orjson.loads(e)["driver_id"] for e in rows["entity"]]


def test_an_entity_row_larger_than_a_message_is_dropped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving_log, "MAX_MESSAGE", 4096)
    big = LoggedView("docs", 1, ("text",), {"text": ["x" * 10_000]}, ["present"], [None])
    log = ServingLog(str(tmp_path / "log"))
    log.record(T0, {"driver_id": [1]}, ("driver_id",), [big])
    log.record(T0, {"driver_id": [2]}, ("driver_id",), [ONE])
    log.close()
    assert log.dropped == 1
    assert _entities(tmp_path / "log") == [2]


def test_lookups_handed_over_before_the_serving_process_dies_are_written(
    tmp_path: Path,
) -> None:
    # no close(), no atexit: the writer reads to end of file, commits and exits. What the
    # sender thread had handed over is written; what was still pending is lost with the
    # process (at most the lookups of the last send interval), and nothing twice
    uri = tmp_path / "log"
    script = f"""
import os, sys, time
from featurekit.online.serving_log import LoggedView, ServingLog
one = LoggedView("ratings", 1, ("rating",), {{"rating": [4]}}, ["present"], [None])
log = ServingLog({str(uri)!r})
for i in range(50):
    log.record({T0}, {{"driver_id": [i]}}, ("driver_id",), [one])
deadline = time.monotonic() + 30
while log.pending and time.monotonic() < deadline:
    time.sleep(0.001)
handed = 50 - log.pending
for i in range(50, 60):
    log.record({T0}, {{"driver_id": [i]}}, ("driver_id",), [one])
print(log.dropped, log.writer_pid, handed, flush=True)
os._exit(0)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    dropped, pid, handed = int(out[0]), int(out[1]), int(out[2])
    assert (dropped, handed) == (0, 50)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the writer did not exit"
    logged = _entities(uri)
    assert logged[:50] == list(range(50))
    assert logged[50:] == list(range(50, len(logged)))  # a prefix of the pending ones


def test_storage_options_never_reach_the_writers_argv_or_environment(tmp_path: Path) -> None:
    secret = "wJalrXUtnFEMI-not-a-real-secret-7f3a"
    log = ServingLog(
        str(tmp_path / "log"),
        storage_options={"aws_secret_access_key": secret, "aws_access_key_id": "AKIA7F3A"},
    )
    pid = log.writer_pid
    try:
        assert log.flush()  # the writer has its configuration (and has exec'd)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"serving_log_writer" in cmdline
        for value in (secret.encode(), b"AKIA7F3A"):
            assert value not in cmdline and value not in environ
    finally:
        log.close()


def test_a_store_on_s3_logs_through_a_writer_that_got_its_credentials_on_the_socket(
    tmp_path: Path, data_dir: Path, s3_endpoint: str
) -> None:
    from s3_emulator import storage_options

    options = storage_options(s3_endpoint)
    secrets = [v.encode() for k, v in options.items() if "secret" in k or "key_id" in k]
    assert secrets
    root = f"s3://{S3_BUCKET}/logged-{os.getpid()}-{time.monotonic_ns()}"
    online = str(tmp_path / "online.sqlite")
    with fk.Store(
        root, progress=False, storage_options=options, online=online, log_serving=True
    ) as store:
        store.materialize(fare_view(data_dir, ttl=None))
        store.get_online_features(["fare_features:fare"], {"driver_id": [1, 2]})
        log = store.online_service().serving_log
        assert log is not None and log.flush()
        pid = log.writer_pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        for value in secrets:
            assert value not in cmdline and value not in environ
        rows = store.serving_log()
    assert rows.height == 2
    assert [orjson.loads(e)["driver_id"] for e in rows["entity"]] == [1, 2]


def _quiet_sender(monkeypatch: pytest.MonkeyPatch, bound: int = 8192) -> None:
    """The sender thread sleeps through the test: lookups stay pending until flush/close."""
    monkeypatch.setattr(serving_log, "SEND_SECONDS", 3600.0)
    monkeypatch.setattr(serving_log, "SEND_LOOKUPS", 1_000_000)
    monkeypatch.setattr(serving_log, "PENDING_LOOKUPS", bound)


def test_record_neither_pickles_nor_sends_on_the_lookups_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = ServingLog(str(tmp_path / "log"))
    assert log.flush()
    calls: list[tuple[str, int]] = []
    dumps, send = pickle.dumps, socket.socket.send

    def spy_dumps(*args: Any, **kwargs: Any) -> bytes:
        calls.append(("pickle", threading.get_ident()))
        return dumps(*args, **kwargs)

    def spy_send(self: socket.socket, *args: Any) -> int:
        calls.append(("send", threading.get_ident()))
        return send(self, *args)

    monkeypatch.setattr(pickle, "dumps", spy_dumps)
    monkeypatch.setattr(socket.socket, "send", spy_send)
    for i in range(5):
        log.record(T0, {"driver_id": [i]}, ("driver_id",), [ONE])
    on_caller = [kind for kind, thread in calls if thread == threading.get_ident()]
    assert on_caller == []
    deadline = time.monotonic() + 30
    while log.pending and time.monotonic() < deadline:
        time.sleep(0.001)
    assert {kind for kind, _ in calls} == {"pickle", "send"}  # on the sender thread
    log.close()
    assert _entities(tmp_path / "log") == [0, 1, 2, 3, 4]


def test_past_the_pending_bound_lookups_are_dropped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _quiet_sender(monkeypatch, bound=5)
    log = ServingLog(str(tmp_path / "log"))
    for i in range(8):
        log.record(T0, {"driver_id": [i]}, ("driver_id",), [ONE])
    assert (log.pending, log.dropped) == (5, 3)
    # flush() hands over what is pending when it is called, then waits for the commit
    assert log.flush()
    assert (log.pending, log.written) == (0, 5)
    assert _entities(tmp_path / "log") == [0, 1, 2, 3, 4]
    log.record(T0, {"driver_id": [8]}, ("driver_id",), [ONE])  # room again
    log.close()
    assert (log.written, log.dropped) == (6, 3)
    assert sorted(_entities(tmp_path / "log")) == [0, 1, 2, 3, 4, 8]  # two commits


def test_close_writes_the_lookups_still_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _quiet_sender(monkeypatch)
    log = ServingLog(str(tmp_path / "log"))
    for i in range(3):
        log.record(T0, {"driver_id": [i]}, ("driver_id",), [ONE])
    assert log.pending == 3
    log.close()
    assert (log.pending, log.written, log.dropped) == (0, 3, 0)
    assert _entities(tmp_path / "log") == [0, 1, 2]


def test_a_large_lookup_between_small_ones_keeps_one_request_id_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # handed over together: the small ones share messages, the large one is split into
    # several messages of its own, all with its one request id
    _quiet_sender(monkeypatch)
    monkeypatch.setattr(serving_log, "MAX_MESSAGE", 4096)
    n = 1000
    big = LoggedView(
        "ratings", 1, ("rating",), {"rating": list(range(n))}, ["present"] * n, [None] * n
    )
    log = ServingLog(str(tmp_path / "log"))
    log.record(T0, {"driver_id": [-1]}, ("driver_id",), [ONE])
    log.record(T0 + 1, {"driver_id": list(range(n))}, ("driver_id",), [big])
    log.record(T0 + 2, {"driver_id": [-2]}, ("driver_id",), [ONE])
    log.close()
    assert log.dropped == 0
    rows = pl.read_delta(str(tmp_path / "log"))
    assert _entities_of(rows) == [-1, *range(n), -2]
    assert rows["request_id"].unique_counts().to_list() == [1, n, 1]  # in the order recorded
    assert [orjson.loads(f)["rating"] for f in rows["features"][1:-1]] == list(range(n))


def test_a_forked_child_logs_through_a_sender_of_its_own(tmp_path: Path) -> None:
    log = ServingLog(str(tmp_path / "log"))
    log.record(T0, {"driver_id": [0]}, ("driver_id",), [ONE])  # the parent's, maybe pending
    pid = os.fork()
    if pid == 0:  # the child: its lookups are logged, the parent's are not sent twice
        ok = False
        try:
            log.record(T0, {"driver_id": [1]}, ("driver_id",), [ONE])
            ok = log.flush()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.close()
    assert sorted(_entities(tmp_path / "log")) == [0, 1]


def test_a_one_entity_lookup_is_held_flat_so_the_collector_stops_tracking_it(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # held as lists and dicts until the sender takes them, pending lookups reached the
    # collector's oldest generation by the thousand and set off full collections
    held: list[Any] = []
    monkeypatch.setattr(ServingLog, "record_one", lambda self, lookup: held.append(lookup))
    with fk.Store(tmp_path / "store", progress=False, log_serving=True) as store:
        store.materialize(fare_view(data_dir, ttl=None))
        served = store.get_online_features(["fare_features:fare"], {"driver_id": [1]})
    [lookup] = held
    gc.collect()  # the first pass stops tracking the key and feature name tuples inside
    gc.collect()
    assert not gc.is_tracked(lookup)
    assert lookup[1:] == (
        ("driver_id",),
        (1,),
        "fare_features",
        1,
        ("fare",),
        (served["fare"][0],),
        "present",
        lookup[-1],
    )
    assert isinstance(lookup[-1], int)  # the event time served


def test_a_lookup_of_many_values_is_pickled_by_its_own_thread_and_a_small_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pickled by the sender, a large lookup held the GIL in the middle of another lookup;
    # pickled by its own thread, its cost is proportional to its own work
    _quiet_sender(monkeypatch)
    log = ServingLog(str(tmp_path / "log"))
    assert log.flush()
    on_caller: list[int] = []
    dumps = pickle.dumps

    def spy_dumps(*args: Any, **kwargs: Any) -> bytes:
        if threading.get_ident() == caller:
            on_caller.append(len(args[0]))
        return dumps(*args, **kwargs)

    caller = threading.get_ident()
    monkeypatch.setattr(pickle, "dumps", spy_dumps)
    log.record(T0, {"driver_id": [-1]}, ("driver_id",), [ONE])
    assert on_caller == []
    n = serving_log.INLINE_CELLS // 4 + 1  # 4 values per entity row: past the limit
    big = LoggedView(
        "ratings", 1, ("rating",), {"rating": list(range(n))}, ["present"] * n, [None] * n
    )
    log.record(T0 + 1, {"driver_id": list(range(n))}, ("driver_id",), [big])
    assert on_caller == [1]  # the one lookup, pickled here
    assert log.pending == 2  # and both still wait for the sender
    log.close()
    assert log.dropped == 0
    rows = pl.read_delta(str(tmp_path / "log"))
    assert _entities_of(rows) == [-1, *range(n)]
    assert rows["request_id"].unique_counts().to_list() == [1, n]
    assert [orjson.loads(f)["rating"] for f in rows["features"][1:]] == list(range(n))


def test_large_lookups_handed_over_together_go_in_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each a send of its own, the sender's system calls (and the GIL each gives back)
    # came once per lookup; joined, the writer reads every pickle of the message
    _quiet_sender(monkeypatch)
    log = ServingLog(str(tmp_path / "log"))
    assert log.flush()
    n = serving_log.INLINE_CELLS // 4 + 1
    for i in range(3):
        big = LoggedView(
            "ratings", 1, ("rating",), {"rating": [i] * n}, ["present"] * n, [None] * n
        )
        log.record(T0 + i, {"driver_id": list(range(i * n, (i + 1) * n))}, ("driver_id",), [big])
    sent: list[int] = []  # pickles per system call
    send, sendmsg = socket.socket.send, socket.socket.sendmsg

    def spy_send(self: socket.socket, data: Any, *args: Any) -> int:
        sent.append(1)
        return send(self, data, *args)

    def spy_sendmsg(self: socket.socket, buffers: Any, *args: Any) -> int:
        # the pickles as they are, gathered into one message by the kernel (no join)
        sent.append(len(buffers))
        return sendmsg(self, buffers, *args)

    monkeypatch.setattr(socket.socket, "send", spy_send)
    monkeypatch.setattr(socket.socket, "sendmsg", spy_sendmsg)
    assert log.flush()
    assert sent == [3, 1]  # the three lookups in one message, then the flush marker
    log.close()
    rows = pl.read_delta(str(tmp_path / "log"))
    assert _entities_of(rows) == list(range(3 * n))
    assert rows["request_id"].unique_counts().to_list() == [n, n, n]
    assert [orjson.loads(f)["rating"] for f in rows["features"]] == [0] * n + [1] * n + [2] * n


def _commits(uri: Path) -> list[list[dict[str, Any]]]:
    """The actions of each commit in the table's log, oldest first."""
    return [
        [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted((uri / "_delta_log").glob("*.json"))
    ]


def _modes(commits: list[list[dict[str, Any]]]) -> list[str]:
    """The write mode of each commit (``Append``, ``Overwrite``)."""
    return [
        a["commitInfo"]["operationParameters"]["mode"]
        for c in commits
        for a in c
        if "commitInfo" in a
    ]


def test_each_commit_of_the_log_is_a_plain_append_without_statistics_of_its_json(
    tmp_path: Path,
) -> None:
    # a fresh batch id has no rows to replace: a replace by predicate would only cost
    log = ServingLog(str(tmp_path / "log"))
    for i in range(3):
        log.record(T0 + i, {"driver_id": [i]}, ("driver_id",), [ONE])
        assert log.flush()
    log.close()
    commits = _commits(tmp_path / "log")
    assert _modes(commits) == ["Append"] * 3
    # no statistics of the random ids and the JSON text (event_ts has none: all null)
    stats = [json.loads(a["add"]["stats"]) for c in commits for a in c if "add" in a]
    assert [sorted(s["minValues"]) for s in stats] == [
        ["batch_id", "lookup_at", "status", "version", "view"]
    ] * 3
    assert sorted(_entities(tmp_path / "log")) == [0, 1, 2]


def test_a_commit_that_landed_and_then_failed_is_replaced_not_written_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featurekit.online.serving_log_writer import Writer

    append = delta.Appender.append
    calls: list[int] = []

    def landed_then_failed(self: delta.Appender, *args: Any, **kwargs: Any) -> int:
        version = append(self, *args, **kwargs)
        calls.append(version)
        if len(calls) == 1:  # the first commit lands, and its caller hears of a failure
            raise OSError("connection reset after the commit")
        return version

    monkeypatch.setattr(delta.Appender, "append", landed_then_failed)
    uri = tmp_path / "log"
    config = serving_log.WriterConfig(str(uri), None, 256, 60.0, 10_000, 200_000, idle=False)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        two = LoggedView("ratings", 1, ("rating",), {"rating": [4, 5]}, ["present"] * 2, [None] * 2)
        lookups = [
            (T0 + i, ("driver_id",), {"driver_id": [i, i + 10]}, [two], None) for i in range(3)
        ]
        ours.send(pickle.dumps(lookups))
        ours.send(pickle.dumps(("close", 7)))
        Writer(config, theirs).run()
        assert pickle.loads(ours.recv(4096)) == (7, 3, 0)  # token, written, dropped
    assert sorted(_entities(uri)) == [0, 1, 2, 10, 11, 12]
    assert _modes(_commits(uri)) == [
        "Append",
        "Overwrite",
    ]  # the retry replaced the batch it had written


def test_appenders_of_two_writers_interleave_and_a_replace_is_not_refused_as_stale(
    tmp_path: Path,
) -> None:
    uri = str(tmp_path / "t")

    def batch(name: str, n: int) -> pl.DataFrame:
        return pl.DataFrame({"batch_id": [name] * n, "i": list(range(n))})

    ours, theirs = delta.Appender(uri), delta.Appender(uri)
    versions = [
        ours.append(batch("a0", 1), metadata={"by": "ours"}),
        theirs.append(batch("b0", 2), metadata={"by": "theirs"}),
        ours.append(batch("a1", 3), metadata={"by": "ours"}),
        theirs.append(batch("b1", 4), metadata={"by": "theirs"}),
    ]
    assert versions == [0, 1, 2, 3]
    # ours was held since version 2: the replace reads the table as it is now, with the
    # rows it replaces (held, it would be refused: a concurrent commit added such rows)
    assert ours.replace(batch("b1", 5), "batch_id = 'b1'", metadata={"by": "ours"}) == 4
    counts = pl.read_delta(uri).group_by("batch_id").len().sort("batch_id")
    assert counts.rows() == [("a0", 1), ("a1", 3), ("b0", 2), ("b1", 5)]
    assert [h["featurekit"]["by"] for h in delta.history(uri)] == ["ours", "theirs"] * 2 + ["ours"]


def test_an_appender_opens_its_table_afresh_every_few_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # held open, each commit costs more than the one before: delta-rs goes over every
    # commit since the table was opened
    monkeypatch.setattr(delta, "REOPEN_COMMITS", 3)
    opened: list[str] = []
    exists = delta.table_exists

    def looked_up(uri: str, storage_options: Any = None) -> bool:
        opened.append(uri)
        return exists(uri, storage_options)

    monkeypatch.setattr(delta, "table_exists", looked_up)
    uri = str(tmp_path / "t")
    log = delta.Appender(uri)
    versions = [log.append(pl.DataFrame({"i": [i]}), metadata={}) for i in range(8)]
    assert versions == list(range(8))
    # looked up (and opened when there) at the first commit, then every third one
    assert len(opened) == 3
    assert pl.read_delta(uri)["i"].sort().to_list() == list(range(8))


def test_the_log_reads_back_in_its_schema_and_filters_on_lookup_at(tmp_path: Path) -> None:
    # written as string views without statistics of the JSON: read as the log's schema
    uri = tmp_path / "log"
    log = ServingLog(str(uri))
    day = 86_400_000_000
    for i in range(3):
        log.record(T0 + i * day, {"driver_id": [i]}, ("driver_id",), [ONE])
        assert log.flush()  # a commit, hence a file, each
    log.close()
    version = delta.current_version(str(uri))
    assert version is not None
    since = datetime(2026, 1, 2, tzinfo=UTC)
    rows = delta.read_rows(str(uri), version=version, where=pl.col("lookup_at") >= since)
    assert dict(rows.drop("batch_id").schema) == serving_log.log_schema()
    assert sorted(_entities_of(rows)) == [1, 2]
