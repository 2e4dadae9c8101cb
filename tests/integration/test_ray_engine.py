"""engine="ray": a training set's per-bucket joins, and a materialization's map and
per-bucket stages, as Ray tasks on a real two-node cluster.

The cluster (a head and a second node, on 127.0.0.1) is started once for the module and
stopped by it; each node is its own ``ray start --block`` process group, stopped by its id.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import polars as pl
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'featurekit[ray]'")
cloudpickle = pytest.importorskip("ray.cloudpickle")

import test_distribute  # noqa: E402
from test_buckets import FEATURES, LABELS, SOURCE, _build, buckets  # noqa: E402

import featurekit as fk  # noqa: E402
from featurekit.offline import distribute, ray_engine  # noqa: E402
from featurekit.offline.engine import Task  # noqa: E402
from featurekit.storage import delta  # noqa: E402

REPO = Path(fk.__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_cli() -> str:
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else "ray"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="fkray", dir="/tmp")  # Ray's socket paths must be short
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    common = ["--num-cpus", "1", "--object-store-memory", str(80 * 2**20), "--block"]
    head = subprocess.Popen(
        [
            _ray_cli(),
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--include-dashboard",
            "false",
            "--temp-dir",
            temp,
            "--disable-usage-stats",
            *common,
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    nodes = [head]
    try:
        _wait(address, 1)
        nodes.append(
            subprocess.Popen(
                [
                    _ray_cli(),
                    "start",
                    "--address",
                    address,
                    "--node-ip-address",
                    "127.0.0.1",
                    *common,
                ],
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait(address, 2)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes):
            # `ray start --block` stops its node's processes itself, in seconds; signalling
            # the whole group makes the head's processes wait out a ~30 s shutdown
            os.kill(node.pid, signal.SIGTERM)
        for node in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)  # leftovers of the node's own group only
        shutil.rmtree(temp, ignore_errors=True)


def _wait(address: str, nodes: int) -> None:
    """Until the cluster at ``address`` has ``nodes`` live nodes (a fresh process asks)."""
    probe = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False); "
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=False
        )
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(nodes)]:
            return
        time.sleep(2)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {nodes} nodes")


def test_ray_engine_builds_the_same_training_set(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    root = tmp_path / "store"
    local = _build(root, source, 4)
    expected = local.training_set(LABELS, FEATURES, "ts")
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    remote = fk.Store(root, progress=False, engine="ray")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = remote.training_set(LABELS, FEATURES, "ts")
        assert sum(n["Alive"] for n in ray.nodes()) == 2
        assert (got.id, got.manifest.result_hash) == (expected.id, expected.manifest.result_hash)
        assert got.to_polars().equals(expected.to_polars())
        again = remote.training_set_by_id(got.id)  # rebuilt on the cluster, hash checked
        assert again.to_polars().equals(expected.to_polars())
        # out of core on the cluster: the same rows, written range by range
        tight = fk.Store(root, progress=False, engine="ray", memory_budget=1)
        spilled = tight.training_set(LABELS, FEATURES, "ts")
        assert spilled.manifest.result_hash == expected.manifest.result_hash
        assert isinstance(spilled.scan(), pl.LazyFrame)


def _dies_once(marker: Path) -> Callable[[Task], pl.DataFrame]:
    """A task runner whose first call kills its own worker process (as a crash would)."""

    def run(task: Task) -> pl.DataFrame:
        if not marker.exists():
            marker.touch()
            os._exit(1)  # the worker dies mid-task; Ray must retry the task elsewhere
        return task()

    return run


def test_a_worker_that_dies_mid_task_changes_nothing(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "trips.parquet"
    SOURCE.write_parquet(source)
    root = tmp_path / "store"
    expected = _build(root, source, 4).training_set(LABELS, FEATURES, "ts")
    marker = tmp_path / "died"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    monkeypatch.setattr(ray_engine, "_run", _dies_once(marker))
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = fk.Store(root, progress=False, engine="ray").training_set(LABELS, FEATURES, "ts")
    assert marker.exists()  # a worker did die
    assert len(got) == LABELS.height  # no row lost or duplicated
    assert (got.id, got.manifest.result_hash) == (expected.id, expected.manifest.result_hash)
    assert got.to_polars().equals(expected.to_polars())


def _materialized(store: fk.Store, source: fk.Source) -> dict[str, pl.DataFrame]:
    """Each of test_distribute's views materialized (4 buckets), its rows read back sorted."""
    out = {}
    with buckets(4), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for view in test_distribute.views(source):
            result = store.materialize(view)
            uri = store.registry.layout.table_uri(view.name, result.version)
            assert delta.current_version(uri) == 0  # one commit
            out[view.name] = test_distribute.table(store, view.name)
    return out


def _dies_after_once(marker: Path) -> Callable[[Task], pl.DataFrame]:
    """A task runner whose first call kills its worker after the task wrote its files."""

    def run(task: Task) -> pl.DataFrame:
        result = task()
        if not marker.exists():
            marker.touch()
            os._exit(1)  # the files are written, the result is lost: Ray runs it again
        return result

    return run


def test_materialize_on_ray_writes_the_local_engines_table(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = test_distribute.trips(test_distribute.write_source(tmp_path / "trips"))
    local = fk.Store(tmp_path / "local", progress=False)
    expected = _materialized(local, source)
    marker = tmp_path / "died"
    for module in (__name__, "test_distribute", "test_buckets"):  # workers cannot import tests
        cloudpickle.register_pickle_by_value(sys.modules[module])
    monkeypatch.setattr(ray_engine, "_run", _dies_after_once(marker))
    spy = mock.Mock(wraps=distribute.bucket_parts)
    monkeypatch.setattr(distribute, "bucket_parts", spy)
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    remote = fk.Store(tmp_path / "ray", progress=False, engine="ray")
    got = _materialized(remote, source)
    assert marker.exists()  # a worker did die, after writing a map task's parts
    assert spy.call_count == 3  # every view ran as Ray tasks, bucket by bucket
    for name, rows in expected.items():
        assert got[name].height == rows.height  # no row lost or duplicated
        assert got[name].equals(rows), name
    assert not list((tmp_path / "ray").rglob("staging/**/*.parquet"))  # staging cleaned up
    features = test_distribute.FEATURES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = local.training_set(LABELS, features, "ts")
        b = remote.training_set(LABELS, features, "ts")
    assert (b.id, b.manifest.result_hash) == (a.id, a.manifest.result_hash)


def test_a_view_failing_in_a_ray_task_raises_its_own_error(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = test_distribute.trips(test_distribute.write_source(tmp_path / "trips"))
    view = fk.feature_view(entity=test_distribute.DRIVER, sources=[source], entity_local=True)(
        test_distribute.fails_on_one_driver
    )
    for module in (__name__, "test_distribute", "test_buckets"):  # workers cannot import tests
        cloudpickle.register_pickle_by_value(sys.modules[module])
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    store = fk.Store(tmp_path / "ray", progress=False, engine="ray")
    with buckets(4), warnings.catch_warnings(), pytest.raises(fk.UserCodeError) as err:
        warnings.simplefilter("ignore")
        store.materialize(view)
    assert str(err.value) == (
        "view 'fails_on_one_driver' (version 1) raised ValueError: "
        f"driver {test_distribute.UNSAMPLED} is bad"
    )
    assert store.views() == []  # nothing committed
    assert not [p for p in (tmp_path / "ray").rglob("*") if "staging" in p.parts and p.is_file()]
