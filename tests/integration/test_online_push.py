"""Pushed rows: online at once, offline from their ingestion time on, and online == offline.

After pushes at random instants (rows older than the served one, in the future, for new
entities, ties, NaN), ``get_online_features(at=t)`` equals ``training_set`` at ``t`` for
every entity and every instant around each ingestion, on SQLite and on a real Redis, for
a plain view (with TTL) and an aggregation view. A later materialization neither drops
nor duplicates pushed rows.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from test_online_support import redis_server

import featurekit as fk
from featurekit.core.hashing import frame_hash
from featurekit.offline.push import PUSH_COLUMN
from featurekit.online import push as push_module
from featurekit.storage import delta

rider = fk.Entity("rider", keys=["rider_id"])
N = 12
AGGS = [
    fk.Aggregation("fare", "sum", window="1h"),
    fk.Aggregation("fare", "count", window="2h"),
    fk.Aggregation("fare", "last", window="1d"),
]


def rides(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Per-ride fare and tip, with the knowledge time."""
    return trips.select("rider_id", "event_ts", "ingested_at", "fare", "tip")


def fares(trips: pl.LazyFrame) -> pl.LazyFrame:
    """Raw fare events for the windowed aggregates."""
    return trips.select("rider_id", "event_ts", "ingested_at", "fare")


def write_trips(path: Path, now: datetime, seed: int, n_rows: int = 60) -> None:
    rng = random.Random(seed)
    events = [now - timedelta(minutes=rng.randint(5, 300)) for _ in range(n_rows)]
    pl.DataFrame(
        {
            "rider_id": [rng.randrange(N - 3) for _ in range(n_rows)],
            "event_ts": events,
            "ingested_at": [e + timedelta(minutes=rng.randint(0, 4)) for e in events],
            "fare": [round(rng.uniform(3, 60), 2) for _ in range(n_rows)],
            "tip": [rng.randint(0, 9) for _ in range(n_rows)],
        },
        schema_overrides={"event_ts": pl.Datetime("us"), "ingested_at": pl.Datetime("us")},
    ).write_parquet(path)


def make_views(path: Path) -> tuple[fk.FeatureView, fk.FeatureView]:
    trips = fk.Source("trips", path, timestamp="event_ts", created_timestamp="ingested_at")
    plain = fk.feature_view(entity=rider, sources=[trips], ttl="2h")(rides)
    windowed = fk.feature_view(entity=rider, sources=[trips], aggregations=AGGS)(fares)
    return plain, windowed


@pytest.fixture(params=["sqlite", "redis"])
def online(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        with redis_server() as url:
            yield url


def random_rows(rng: random.Random, now: datetime, aggregated: bool) -> list[dict[str, Any]]:
    rows = []
    for _ in range(rng.randint(1, 5)):
        minutes = rng.choice([-400, -200, -90, -30, -5, 0, 1, 20, 45])
        row: dict[str, Any] = {
            "rider_id": rng.randrange(N),  # the last ids are new entities
            "event_ts": now + timedelta(minutes=minutes, microseconds=rng.randint(0, 10**6)),
            "fare": math.nan if rng.random() < 0.1 else round(rng.uniform(3, 60), 2),
        }
        if not aggregated:
            row["tip"] = rng.randint(0, 9)
        rows.append(row)
    if rows and rng.random() < 0.3:
        rows.append({**rows[0], "fare": 1.25})  # same entity and instant: the later row wins
    return rows


def lookup_equals_training_set(store: fk.Store, features: list[str], at: datetime) -> None:
    ids = [*range(N), 10**6]
    online = store.get_online_features(features, {"rider_id": ids}, at=at)
    labels = pl.DataFrame({"rider_id": ids, "label_ts": [at] * len(ids)}).with_columns(
        pl.col("label_ts").cast(pl.Datetime("us", "UTC"))
    )
    offline = store.training_set(labels, features=features, timestamp="label_ts").to_polars()
    columns = [c for c in online.columns if c != "rider_id"]
    a, b = online.select(columns), offline.select(columns)
    assert a.schema == b.schema
    assert frame_hash(a) == frame_hash(b), f"at {at}:\n{a}\n{b}"


@pytest.mark.parametrize("seed", [1, 2])
def test_pushed_rows_online_equal_training_sets(
    tmp_path: Path, online: str | None, seed: int
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    path = tmp_path / "trips.parquet"
    write_trips(path, now, seed)
    store = fk.Store(tmp_path / "store", progress=False, online=online)
    plain, windowed = make_views(path)
    store.materialize(plain)
    store.materialize(windowed)
    rng = random.Random(seed)
    instants = []
    for _ in range(5):
        for view, aggregated in (("rides", False), ("fares", True)):
            result = store.push(view, random_rows(rng, datetime.now(UTC), aggregated))
            instants.append(result.ingested_at)
    checks = {datetime.now(UTC) + timedelta(minutes=m) for m in (0, 25, 50, 130, 200)}
    for when in instants:
        checks |= {when - timedelta(microseconds=1), when, when + timedelta(milliseconds=1)}
    plain_features = ["rides:fare", "rides:tip"]
    windowed_features = ["fares:fare_sum_1h", "fares:fare_count_2h", "fares:fare_last_1d"]
    for when in sorted(checks):
        lookup_equals_training_set(store, plain_features, when)
        lookup_equals_training_set(store, windowed_features, when)

    # a new source file lands: the incremental run keeps the pushed rows, once each
    pushed = store.read("rides").filter(pl.col(PUSH_COLUMN).is_not_null()).height
    write_trips(path, datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=10), seed + 9, 80)
    result = store.materialize(plain)
    assert result.mode in ("incremental", "full")
    assert store.read("rides").filter(pl.col(PUSH_COLUMN).is_not_null()).height == pushed
    store.materialize(windowed, full_refresh=True)
    later = datetime.now(UTC) + timedelta(minutes=1)
    lookup_equals_training_set(store, plain_features, later)
    lookup_equals_training_set(store, windowed_features, later)


def test_push_is_visible_at_once_and_only_from_its_ingestion(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    path = tmp_path / "trips.parquet"
    write_trips(path, now, 5)
    store = fk.Store(tmp_path / "store", progress=False)
    plain, _ = make_views(path)
    store.materialize(plain)
    event = datetime.now(UTC) - timedelta(minutes=1)
    result = store.push(plain, [{"rider_id": 11, "event_ts": event, "fare": 9.5, "tip": 3}])
    assert (result.view, result.version, result.rows) == ("rides", 1, 1)
    got = store.get_online_features(["rides:fare", "rides:tip"], {"rider_id": [11]})
    assert got.row(0, named=True) == {"rider_id": 11, "fare": 9.5, "tip": 3}
    # an older row does not replace the served one
    store.push(
        "rides", [{"rider_id": 11, "event_ts": event - timedelta(hours=1), "fare": 1.0, "tip": 0}]
    )
    got = store.get_online_features(["rides:fare"], {"rider_id": [11]})
    assert got.get_column("fare").to_list() == [9.5]
    # offline: seen by labels at or after the ingestion time, not before it
    labels = pl.DataFrame(
        {
            "rider_id": [11, 11],
            "label_ts": [result.ingested_at - timedelta(microseconds=1), result.ingested_at],
        }
    ).with_columns(pl.col("label_ts").cast(pl.Datetime("us", "UTC")))
    ts = store.training_set(labels, features=["rides:fare"], timestamp="label_ts").to_polars()
    assert ts.get_column("fare").to_list() == [None, 9.5]
    runs = store.runs("rides")
    assert [r.mode for r in runs][-2:] == ["push", "push"]
    # compaction keeps pushed rows (and their marker) and changes no training set
    store.optimize("rides")
    assert store.read("rides").filter(pl.col(PUSH_COLUMN).is_not_null()).height == 2
    again = store.training_set(labels, features=["rides:fare"], timestamp="label_ts").to_polars()
    assert again.get_column("fare").to_list() == [None, 9.5]


def test_push_refuses_bad_rows_and_writes_nothing(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    path = tmp_path / "trips.parquet"
    write_trips(path, now, 6)
    store = fk.Store(tmp_path / "store", progress=False)
    plain, _ = make_views(path)
    store.materialize(plain)
    before = store.read("rides").height
    ts = datetime.now(UTC)
    with pytest.raises(fk.SchemaError, match=r"lack column\(s\) \['tip'\]"):
        store.push("rides", [{"rider_id": 1, "event_ts": ts, "fare": 2.0}])
    with pytest.raises(fk.SchemaError, match="set 'ingested_at', the created time"):
        store.push(
            "rides",
            [{"rider_id": 1, "event_ts": ts, "fare": 2.0, "tip": 1, "ingested_at": ts}],
        )
    with pytest.raises(fk.SchemaError, match="unknown column"):
        store.push("rides", [{"rider_id": 1, "event_ts": ts, "fare": 2.0, "tip": 1, "x": 1}])
    with pytest.raises(fk.SchemaError, match="column 'fare' of view 'rides' does not hold"):
        store.push("rides", [{"rider_id": 1, "event_ts": ts, "fare": "cheap", "tip": 1}])
    with pytest.raises(fk.SchemaError, match="null 'rider_id'"):
        store.push("rides", [{"rider_id": None, "event_ts": ts, "fare": 2.0, "tip": 1}])
    assert store.read("rides").height == before


def test_push_needs_a_created_time_column(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    path = tmp_path / "trips.parquet"
    write_trips(path, now, 7)
    trips = fk.Source("trips", path, timestamp="event_ts")

    def no_created(trips: pl.LazyFrame) -> pl.LazyFrame:
        """No knowledge time."""
        return trips.select("rider_id", "event_ts", "fare")

    view = fk.feature_view(entity=rider, sources=[trips])(no_created)
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(view)
    with pytest.raises(fk.DefinitionError, match="has no created-time column"):
        store.push("no_created", [{"rider_id": 1, "event_ts": now, "fare": 2.0}])


def test_pushed_rows_pass_the_views_checks(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    path = tmp_path / "trips.parquet"
    write_trips(path, now, 8)
    trips = fk.Source("trips", path, timestamp="event_ts", created_timestamp="ingested_at")
    view = fk.feature_view(
        entity=rider, sources=[trips], checks=[fk.Check(pl.col("fare") >= 0, name="fare_ok")]
    )(rides)
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(view)
    before = store.read("rides").height
    bad = [{"rider_id": 1, "event_ts": datetime.now(UTC), "fare": -2.0, "tip": 1}]
    with pytest.raises(fk.ValidationError, match=r"fare_ok: 1 failing row\(s\)"):
        store.push(view, bad)
    assert store.read("rides").height == before
    assert store.get_online_features(["rides:fare"], {"rider_id": [1]}).item(0, "fare") != -2.0


def test_http_push_is_served_without_a_restart(tmp_path: Path) -> None:
    import httpx
    from test_online_support import served

    now = datetime.now(UTC).replace(tzinfo=None)
    path = tmp_path / "trips.parquet"
    write_trips(path, now, 9)
    store = fk.Store(tmp_path / "store", progress=False)
    plain, _ = make_views(path)
    store.materialize(plain)
    event = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    lookup = {"features": ["rides:fare", "rides:tip"], "entities": {"rider_id": [11, 10]}}
    with (
        served(tmp_path / "store", "--max-entities", "3") as base,
        httpx.Client(base_url=base) as c,
    ):
        body = {
            "view": "rides",
            "rows": [{"rider_id": 11, "event_ts": event, "fare": 7.5, "tip": 2}],
        }
        reply = c.post("/v1/push", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["rows"] == 1 and reply.json()["version"] == 1
        got = c.post("/v1/features", json=lookup).json()["columns"]
        assert got == {"rider_id": [11, 10], "fare": [7.5, None], "tip": [2, None]}
        # a push from another process is served by the running server at once
        store.push(
            "rides", [{"rider_id": 10, "event_ts": datetime.now(UTC), "fare": 3.0, "tip": 1}]
        )
        got = c.post("/v1/features", json=lookup).json()["columns"]
        assert got == {"rider_id": [11, 10], "fare": [7.5, 3.0], "tip": [2, 1]}

        unknown = c.post("/v1/push", json={"view": "ridez", "rows": []})
        assert unknown.status_code == 404
        assert "no view named 'ridez'" in unknown.json()["error"]["message"]
        bad_name = c.post("/v1/push", json={"view": "../etc", "rows": []})
        assert bad_name.status_code == 422
        assert bad_name.json()["error"]["field"] == "view"
        many = c.post("/v1/push", json={"view": "rides", "rows": [body["rows"][0]] * 4})
        assert many.status_code == 413
        assert many.json()["error"] == {
            "type": "TooManyEntitiesError",
            "message": "4 rows in one push; the limit is 3. Split the rows into batches.",
            "limit": 3,
        }
        extra = c.post("/v1/push", json={"view": "rides", "rows": [], "entities": {}})
        assert extra.status_code == 422
        assert extra.json()["error"]["message"] == (
            "entities: Extra inputs are not permitted (allowed: view, version, rows)"
        )
        missing = c.post("/v1/push", json={"view": "rides", "rows": [{"rider_id": 1}]})
        assert missing.status_code == 422
        assert "lack column(s) ['event_ts', 'fare', 'tip']" in missing.json()["error"]["message"]


def test_pushing_no_rows_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "trips.parquet"
    write_trips(path, datetime.now(UTC).replace(tzinfo=None), 10)
    store = fk.Store(tmp_path / "store", progress=False)
    plain, _ = make_views(path)
    first = store.materialize(plain)
    result = store.push("rides", [])
    assert (result.rows, result.delta_version) == (0, first.delta_version)
    assert [r.mode for r in store.runs("rides")] == ["full"]


def test_http_push_needs_a_push_grant(tmp_path: Path) -> None:
    import httpx
    from test_online_support import http_server

    from featurekit.serving.app import create_app
    from featurekit.serving.auth import ApiKeys, add_key

    path = tmp_path / "trips.parquet"
    write_trips(path, datetime.now(UTC).replace(tzinfo=None), 12)
    store = fk.Store(tmp_path / "store", progress=False)
    plain, _ = make_views(path)
    store.materialize(plain)
    keys = tmp_path / "keys.json"
    reader = add_key(keys, "reader", ["view:rides"])
    writer = add_key(keys, "writer", ["push:rides"])
    row = {"rider_id": 11, "event_ts": datetime.now(UTC).isoformat(), "fare": 4.0, "tip": 1}
    body = {"view": "rides", "rows": [row]}
    app = create_app(store, api_keys=ApiKeys.load(keys))
    with http_server(app) as base, httpx.Client(base_url=base) as c:
        assert c.post("/v1/push", json=body).status_code == 401
        denied = c.post("/v1/push", json=body, headers={"Authorization": f"Bearer {reader}"})
        assert denied.status_code == 403
        assert denied.json()["error"]["message"] == (
            "API key 'reader' is not granted pushing to view 'rides'; a key needs "
            "'push:rides' for it (featurekit keys add NAME --grant push:rides)."
        )
        done = c.post("/v1/push", json=body, headers={"Authorization": f"Bearer {writer}"})
        assert done.status_code == 200, done.text
    got = store.get_online_features(["rides:fare"], {"rider_id": [11]})
    assert got.get_column("fare").to_list() == [4.0]


# ---- group commit: concurrent pushes share Delta commits ----------------------------------
class Gate:
    """Holds the first push commit until released, so the pushes after it queue up.

    Records how many pushes each push commit holds, and the store's Pusher (to see how
    many pushes wait), without timing: the test waits for the queue, then releases.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.groups: list[int] = []
        self.pushers: list[push_module.Pusher] = []
        real = delta.append_rows
        gate = self

        def append_rows(uri: str, frame: pl.DataFrame, **kw: Any) -> int:
            if kw["metadata"].get("mode") == "push":
                self.groups.append(int(kw["metadata"]["pushes"]))
                if len(self.groups) == 1:
                    self.entered.set()
                    assert self.release.wait(60)
                elif fail is not None and len(self.groups) == 2:
                    raise fail
            return real(uri, frame, **kw)

        class Recorded(push_module.Pusher):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                gate.pushers.append(self)

        monkeypatch.setattr(delta, "append_rows", append_rows)
        monkeypatch.setattr(push_module, "Pusher", Recorded)

    def queue(self, view: str, waiting: int) -> None:
        """Wait until ``waiting`` pushes wait behind the held commit, then release it."""
        assert self.entered.wait(60)
        deadline = time.monotonic() + 60
        while self.pushers[0].waiting(view, 1) < waiting:
            assert time.monotonic() < deadline, f"{self.pushers[0].waiting(view, 1)} waiting"
            time.sleep(0.002)
        self.release.set()


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except Exception as err:
            out["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


Ran = tuple[threading.Thread, dict[str, Any]]


def one_group(gate: Gate, first: Callable[[], Any], rest: list[Callable[[], Any]]) -> list[Ran]:
    """Run ``first`` until it holds the gate, then ``rest`` queued behind it, so that they
    commit as one group; wait for all. Returns each call's thread and outcome, in order."""
    started = in_thread(first)
    assert gate.entered.wait(60)
    others = [in_thread(fn) for fn in rest]
    gate.queue("rides", len(rest))
    for thread, _ in [started, *others]:
        thread.join(60)
    return [started, *others]


def grouped_store(tmp_path: Path, seed: int, **view: Any) -> tuple[fk.Store, fk.FeatureView]:
    path = tmp_path / "trips.parquet"
    write_trips(path, datetime.now(UTC).replace(tzinfo=None), seed)
    trips = fk.Source("trips", path, timestamp="event_ts", created_timestamp="ingested_at")
    plain = fk.feature_view(entity=rider, sources=[trips], ttl="2h", **view)(rides)
    store = fk.Store(tmp_path / "store", progress=False)
    store.materialize(plain)
    return store, plain


def one_row(rider_id: int, fare: float, event: datetime | None = None) -> list[dict[str, Any]]:
    when = event or datetime.now(UTC) - timedelta(seconds=30)
    return [{"rider_id": rider_id, "event_ts": when, "fare": fare, "tip": 1}]


def push_runs(store: fk.Store) -> list[int]:
    """Rows of each push commit in the Delta history, oldest first."""
    return [r.rows_written or 0 for r in store.runs("rides") if r.mode == "push"]


def test_concurrent_pushes_share_commits_and_land_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = grouped_store(tmp_path, 20)
    gate = Gate(monkeypatch)
    n = 8
    ran = one_group(
        gate,
        lambda: store.push("rides", one_row(100, 100.0)),
        [lambda i=i: store.push("rides", one_row(100 + i, 100.0 + i)) for i in range(1, n)],
    )
    results = [out["result"] for _, out in ran]
    assert gate.groups == [1, n - 1]
    assert push_runs(store) == [1, n - 1]  # 2 commits for 8 pushes, from the Delta history
    assert len({r.delta_version for r in results[1:]}) == 1
    assert results[1].delta_version == results[0].delta_version + 1
    pushed = store.read("rides").filter(pl.col(PUSH_COLUMN).is_not_null()).sort("rider_id")
    assert pushed.get_column("rider_id").to_list() == list(range(100, 100 + n))
    assert pushed.get_column("fare").to_list() == [100.0 + i for i in range(n)]
    assert pushed.get_column(PUSH_COLUMN).to_list() == [r.push_id for r in results]
    ingested = pushed.get_column("ingested_at").dt.replace_time_zone("UTC").to_list()
    assert ingested == [r.ingested_at for r in results]  # each push's own ingestion time
    online = store.get_online_features(["rides:fare"], {"rider_id": list(range(100, 100 + n))})
    assert online.get_column("fare").to_list() == [100.0 + i for i in range(n)]


def test_a_push_failing_its_checks_leaves_its_group_mates_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, view = grouped_store(
        tmp_path, 21, checks=[fk.Check(pl.col("fare") >= 0, name="fare_ok")]
    )
    gate = Gate(monkeypatch)
    first = in_thread(lambda: store.push(view, one_row(100, 1.0)))
    assert gate.entered.wait(60)
    good = [in_thread(lambda i=i: store.push(view, one_row(100 + i, float(i)))) for i in (1, 2, 3)]
    bad = in_thread(lambda: store.push(view, one_row(110, -5.0)))
    bad[0].join(60)
    gate.queue("rides", 3)
    for thread, _ in [first, *good]:
        thread.join(60)
    err = bad[1]["error"]
    assert isinstance(err, fk.ValidationError)
    assert "fare_ok: 1 failing row(s)" in str(err)
    assert all("result" in out for _, out in [first, *good])
    assert gate.groups == [1, 3]
    pushed = store.read("rides").filter(pl.col(PUSH_COLUMN).is_not_null()).sort("rider_id")
    assert pushed.get_column("rider_id").to_list() == [100, 101, 102, 103]
    online = store.get_online_features(["rides:fare"], {"rider_id": [101, 102, 103, 110]})
    assert online.get_column("fare").to_list() == [1.0, 2.0, 3.0, None]


def test_a_failed_group_commit_fails_every_push_of_the_group_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = grouped_store(tmp_path, 22)
    gate = Gate(monkeypatch, fail=fk.StorageError("appending to Delta table failed: disk full"))
    first, *rest = one_group(
        gate,
        lambda: store.push("rides", one_row(100, 1.0)),
        [lambda i=i: store.push("rides", one_row(100 + i, float(i))) for i in (1, 2, 3)],
    )
    committed = first[1]["result"].delta_version
    errors = [out["error"] for _, out in rest]
    assert [type(e) for e in errors] == [fk.StorageError] * 3
    assert all(str(e) == "appending to Delta table failed: disk full" for e in errors)
    assert len({id(e) for e in errors}) == 3  # each push raises its own exception object
    assert gate.groups == [1, 3]
    assert [r.delta_version for r in store.runs("rides")][-1] == committed
    pushed = store.read("rides").filter(pl.col(PUSH_COLUMN).is_not_null())
    assert pushed.get_column("rider_id").to_list() == [100]
    online = store.get_online_features(["rides:fare"], {"rider_id": [100, 101, 102, 103]})
    assert online.get_column("fare").to_list() == [1.0, None, None, None]
    # the queue is not stuck: the next push commits on its own
    assert store.push("rides", one_row(101, 7.0)).delta_version == committed + 1


def test_the_later_ingested_push_wins_a_tie_inside_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = grouped_store(tmp_path, 23)
    gate = Gate(monkeypatch)
    base = datetime.now(UTC)  # after the snapshot, so lookups at these instants work
    # the push that queues first is ingested later: ingestion time decides, not arrival
    clocks = {
        "first": base,
        "a": base + timedelta(milliseconds=2),
        "b": base + timedelta(milliseconds=1),
    }
    monkeypatch.setattr(
        push_module, "utcnow", lambda: clocks.get(threading.current_thread().name, base)
    )
    event = base - timedelta(minutes=1)

    def named(name: str, fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
        out: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: out.update(result=fn()), name=name)
        thread.start()
        return thread, out

    first = named("first", lambda: store.push("rides", one_row(100, 0.0)))
    assert gate.entered.wait(60)
    a = named("a", lambda: store.push("rides", one_row(50, 1.0, event)))
    gate_wait = time.monotonic() + 60
    while gate.pushers[0].waiting("rides", 1) < 1:
        assert time.monotonic() < gate_wait
        time.sleep(0.002)
    b = named("b", lambda: store.push("rides", one_row(50, 2.0, event)))
    gate.queue("rides", 2)
    for thread, _ in (first, a, b):
        thread.join(60)
    assert gate.groups == [1, 2]
    assert a[1]["result"].delta_version == b[1]["result"].delta_version
    assert a[1]["result"].ingested_at > b[1]["result"].ingested_at
    got = store.get_online_features(["rides:fare"], {"rider_id": [50]})
    assert got.get_column("fare").to_list() == [1.0]
    labels = pl.DataFrame(
        {
            "rider_id": [50, 50, 50],
            "label_ts": [clocks["b"], clocks["a"] - timedelta(microseconds=1), clocks["a"]],
        }
    ).with_columns(pl.col("label_ts").cast(pl.Datetime("us", "UTC")))
    ts = store.training_set(labels, features=["rides:fare"], timestamp="label_ts").to_polars()
    assert ts.get_column("fare").to_list() == [2.0, 2.0, 1.0]
    for when in (clocks["b"], clocks["a"], datetime.now(UTC)):
        lookup_equals_training_set(store, ["rides:fare", "rides:tip"], when)


def test_concurrent_http_pushes_share_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx
    from test_online_support import http_server

    from featurekit.serving.app import create_app

    store, _ = grouped_store(tmp_path, 24)
    gate = Gate(monkeypatch)
    app = create_app(store)
    n = 8

    def post(i: int) -> dict[str, Any]:
        row = one_row(100 + i, 100.0 + i)[0]
        body = {"view": "rides", "rows": [{**row, "event_ts": row["event_ts"].isoformat()}]}
        with httpx.Client(base_url=base, timeout=60) as c:
            reply = c.post("/v1/push", json=body)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    with http_server(app) as base:
        ran = one_group(gate, lambda: post(0), [lambda i=i: post(i) for i in range(1, n)])
        replies = [out["result"] for _, out in ran]
        with httpx.Client(base_url=base) as c:
            lookup = {"features": ["rides:fare"], "entities": {"rider_id": list(range(100, 108))}}
            columns = c.post("/v1/features", json=lookup).json()["columns"]
    assert [r["rows"] for r in replies] == [1] * n
    assert len({r["delta_version"] for r in replies[1:]}) == 1
    assert push_runs(store) == [1, n - 1]
    assert columns["fare"] == [100.0 + i for i in range(n)]
    pushed = store.read("rides").filter(pl.col(PUSH_COLUMN).is_not_null()).sort("rider_id")
    assert pushed.get_column("rider_id").to_list() == list(range(100, 100 + n))


PUSHING_PROCESS = """
import sys, threading
from datetime import UTC, datetime, timedelta
import featurekit as fk

store = fk.Store(sys.argv[1], progress=False)
first = int(sys.argv[2])
errors = []

def pusher(t):
    try:
        for k in range(3):
            rider = first + 10 * t + k
            event = datetime.now(UTC) - timedelta(seconds=30)
            row = {"rider_id": rider, "event_ts": event, "fare": float(rider), "tip": 1}
            store.push("rides", [row])
    except Exception as err:
        errors.append(err)

threads = [threading.Thread(target=pusher, args=(t,)) for t in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    raise errors[0]
"""


def test_two_processes_pushing_at_once_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    store, _ = grouped_store(tmp_path, 25)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUSHING_PROCESS, str(tmp_path / "store"), str(first)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in (200, 300)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    riders = sorted(200 + p * 100 + 10 * t + k for p in (0, 1) for t in range(4) for k in range(3))
    pushed = store.read("rides").filter(pl.col(PUSH_COLUMN).is_not_null()).sort("rider_id")
    assert pushed.get_column("rider_id").to_list() == riders
    assert pushed.get_column(PUSH_COLUMN).n_unique() == len(riders)
    assert sum(push_runs(store)) == len(riders)
    online = store.get_online_features(["rides:fare"], {"rider_id": riders})
    assert online.get_column("fare").to_list() == [float(r) for r in riders]
    lookup_equals_training_set(store, ["rides:fare", "rides:tip"], datetime.now(UTC))


def test_an_online_failure_after_a_group_commit_names_the_group_in_every_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, plain = grouped_store(tmp_path, 26)
    gate = Gate(monkeypatch)
    online = store.online
    real = online.update_entries  # type: ignore[attr-defined]
    calls: list[int] = []

    def update_entries(*args: Any) -> bool:
        calls.append(1)
        if len(calls) == 2:  # the group's merge
            raise RuntimeError("disk I/O error")
        return bool(real(*args))

    monkeypatch.setattr(online, "update_entries", update_entries)
    first, *rest = one_group(
        gate,
        lambda: store.push("rides", one_row(100, 1.0)),
        [lambda i=i: store.push("rides", one_row(100 + i, float(i))) for i in (1, 2, 3)],
    )
    version = first[1]["result"].delta_version + 1
    for _, out in rest:
        assert isinstance(out["error"], fk.OnlineStoreError)
        assert str(out["error"]).startswith(
            "3 row(s) pushed to view 'rides' version 1 by 3 pushes committed together are "
            f"committed offline (Delta version {version}), but the online store was not "
            "updated: RuntimeError: disk I/O error Training sets already see the rows."
        )
    pushed = store.read("rides").filter(pl.col(PUSH_COLUMN).is_not_null()).sort("rider_id")
    assert pushed.get_column("rider_id").to_list() == [100, 101, 102, 103]
    store.materialize(plain)  # finds online behind the table and rewrites it
    got = store.get_online_features(["rides:fare"], {"rider_id": [100, 101, 102, 103]})
    assert got.get_column("fare").to_list() == [1.0, 1.0, 2.0, 3.0]
