"""The store layout: one module builds every path, from validated names only."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import featurekit as fk
from featurekit.core.definitions import Aggregation
from featurekit.core.errors import StorageError
from featurekit.storage.layout import StoreLayout
from featurekit.storage.records import ModelRecord, OnDemandRecord, ServiceRecord, VersionRecord

PACKAGE = Path(fk.__file__).parent
ROOT = Path("/data/store")

BAD_NAMES = [
    "../x",
    "..",
    ".",
    "a/b",
    "a\\b",
    "/etc/passwd",
    "",
    "x" * 256,
    "a\x00b",
    "a\nb",
    " x",
    "__fk_internal",
    None,
    3,
]


# ---- paths ----------------------------------------------------------------------------------
def test_every_documented_path() -> None:
    layout = StoreLayout(ROOT)
    assert layout.marker_key == "_featurekit/store.json"
    assert layout.record_key("view", "trips", 3) == "_featurekit/views/trips/v3.json"
    assert layout.record_key("service", "pricing", 1) == "_featurekit/services/pricing/v1.json"
    assert layout.record_key("on_demand", "ratio", 2) == "_featurekit/on_demand/ratio/v2.json"
    assert layout.record_key("model", "churn", 12) == "_featurekit/models/churn/v12.json"
    assert layout.training_set_name_key("churn-2026.1") == (
        "_featurekit/training_set_names/churn-2026.1.json"
    )
    assert layout.lineage_key("model", "churn-v1") == "_featurekit/lineage/model/churn-v1.json"
    assert layout.lock_path("view", "trips") == ROOT / "_featurekit" / "locks" / "view.trips.lock"
    assert layout.table_key("trips", 3) == "features/trips/v3"
    assert layout.table_uri("trips", 3) == "/data/store/features/trips/v3"
    assert layout.manifest_key("abc123") == "training_sets/abc123/manifest.json"
    assert layout.training_set_uri("abc123") == "/data/store/training_sets/abc123"
    assert layout.training_set_uri("abc123", "labels") == "/data/store/training_sets/abc123/labels"
    assert layout.online_path("online.sqlite") == ROOT / "online" / "online.sqlite"
    assert layout.watch_path("service", "pricing") == ROOT / "_featurekit" / "services" / "pricing"


def test_keys_parse_back() -> None:
    layout = StoreLayout(ROOT)
    assert layout.parse_record_key("view", "_featurekit/views/trips/v3.json") == ("trips", 3)
    for other in (
        "_featurekit/views/trips/v0.json",
        "_featurekit/views/trips/v03.json",
        "_featurekit/views/trips/.tmp-x",
        "_featurekit/views/trips/sub/v1.json",
        "_featurekit/models/trips/v1.json",
    ):
        assert layout.parse_record_key("view", other) is None, other
    assert layout.parse_manifest_key("training_sets/abc/manifest.json") == "abc"
    assert layout.parse_manifest_key("training_sets/abc/labels/_delta_log/0.json") is None
    assert layout.key_of("/data/store/features/trips/v3") == "features/trips/v3"
    assert layout.uri("features/trips/v3") == "/data/store/features/trips/v3"


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_no_path_from_an_invalid_name(name: object) -> None:
    layout = StoreLayout(ROOT)
    builders = [
        lambda: layout.record_key("view", name, 1),  # type: ignore[arg-type]
        lambda: layout.record_prefix("service", name),  # type: ignore[arg-type]
        lambda: layout.record_key("on_demand", name, 1),  # type: ignore[arg-type]
        lambda: layout.record_key("model", name, 1),  # type: ignore[arg-type]
        lambda: layout.table_uri(name, 1),  # type: ignore[arg-type]
        lambda: layout.manifest_key(name),  # type: ignore[arg-type]
        lambda: layout.training_set_uri(name, "labels"),  # type: ignore[arg-type]
        lambda: layout.training_set_name_key(name),  # type: ignore[arg-type]
        lambda: layout.lineage_key("materialize", name),  # type: ignore[arg-type]
        lambda: layout.lock_path("view", name),  # type: ignore[arg-type]
        lambda: layout.watch_path("view", name),  # type: ignore[arg-type]
    ]
    for build in builders:
        with pytest.raises(fk.DefinitionError, match="is not valid") as info:
            build()
        assert len(str(info.value)) < 400  # a long name is cut, never echoed whole


def test_error_names_the_kind_and_cuts_long_values() -> None:
    layout = StoreLayout(ROOT)
    with pytest.raises(fk.DefinitionError) as info:
        layout.table_uri("../x", 1)
    assert str(info.value).startswith("view name '../x' is not valid: use letters, digits")
    with pytest.raises(fk.DefinitionError) as info:
        layout.manifest_key("y" * 256)
    assert str(info.value).startswith("training set id 'yyyy")
    assert "(258 characters)" in str(info.value)


@pytest.mark.parametrize(
    "key", ["../outside", "/etc/passwd", "features/../../x", "features/./v1", ""]
)
def test_stored_paths_cannot_leave_the_store(key: str) -> None:
    with pytest.raises(fk.StorageError, match="is not inside the store"):
        StoreLayout(ROOT).uri(key)


def test_versions_start_at_one() -> None:
    for bad in (0, -1, True):
        with pytest.raises(fk.StorageError, match="version numbers start at 1"):
            StoreLayout(ROOT).record_key("view", "trips", bad)


# ---- one owner: nothing else builds store paths ---------------------------------------------
#: Folder and file names of the layout; joining one onto a path outside the layout module
#: (``root / "features"``, ``"training_sets/..."``) means someone else builds store paths.
LAYOUT_NAMES = frozenset(
    {
        "_featurekit",
        "features",
        "training_sets",
        "training_set_names",
        "online",
        "lineage",
        "models",
        "locks",
        "views",
        "services",
        "on_demand",
        "manifest.json",
        "store.json",
        "config.json",
        "online.sqlite",
    }
)
OWNERS = {"storage/layout.py", "core/config.py"}


def store_paths_built(source: str) -> list[str]:
    """Places in ``source`` that build a path under a store root by hand."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and side.value in LAYOUT_NAMES:
                    found.append(f"{where}: / {side.value!r}")
                if isinstance(side, ast.Attribute) and side.attr in ("root", "dir"):
                    found.append(f"{where}: .{side.attr} / ...")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if any(node.value.startswith(f"{name}/") for name in LAYOUT_NAMES):
                found.append(f"{where}: {node.value[:40]!r}")
        elif isinstance(node, ast.Name) and node.id == "REGISTRY_DIR":
            found.append(f"{where}: REGISTRY_DIR")
    return found


def test_the_guard_catches_hand_built_paths() -> None:
    assert store_paths_built('str(root / "features" / view / f"v{version}")')
    assert store_paths_built('registry.dir / "services" / name')
    assert store_paths_built('self.registry.root / v["table"]')
    assert store_paths_built('f"training_sets/{ts_id}/manifest.json"')
    assert store_paths_built("root / REGISTRY_DIR / 'store.json'")
    assert not store_paths_built('demo_root / "data"')


def test_only_the_layout_module_builds_store_paths() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in OWNERS:
            continue
        found = store_paths_built(path.read_text())
        if found:
            offenders[relative] = found
    assert offenders == {}, "build store paths with featurekit.storage.layout instead"


# ---- typed records --------------------------------------------------------------------------
def version_v1() -> dict[str, object]:
    """A view version exactly as format 1 wrote it (no ``output``; aggregation dicts)."""
    return {
        "view": "trip_aggs",
        "version": 2,
        "fingerprint": "f" * 64,
        "created_at": "2026-01-02T03:04:05+00:00",
        "reason": ["code"],
        "entity": "driver",
        "keys": ["driver_id"],
        "timestamp": "ts",
        "created_timestamp": None,
        "features": {"fare_sum_7d": "Float64", "fare_count_lifetime": "UInt32"},
        "ttl_us": None,
        "parts": {"source_schema": {"output": {"driver_id": "Int64", "ts": "Datetime"}}},
        "description": "",
        "tags": {},
        "aggregations": [
            {
                "column": "fare",
                "function": "sum",
                "window_us": 604_800_000_000,
                "name": "fare_sum_7d",
            },
            {
                "column": "fare",
                "function": "count",
                "window_us": None,
                "name": "fare_count_lifetime",
            },
        ],
        "event_columns": ["fare"],
        "format_version": 1,
    }


def test_version_records_of_format_1_read_as_typed_fields() -> None:
    record = VersionRecord.model_validate(version_v1())
    assert record.output == {"driver_id": "Int64", "ts": "Datetime"}
    assert record.aggregations == [
        Aggregation("fare", "sum", "7d"),
        Aggregation("fare", "count", None),
    ]
    assert record.aggregations[0].window == timedelta(days=7)
    assert record.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_version_records_keep_their_stored_form() -> None:
    old = version_v1()
    dumped = VersionRecord.model_validate(old).model_dump(mode="json")
    assert dumped["aggregations"] == old["aggregations"]  # readable by older featurekits
    assert dumped["output"] == {"driver_id": "Int64", "ts": "Datetime"}
    again = VersionRecord.model_validate(dumped)
    assert again == VersionRecord.model_validate(old)


def test_service_on_demand_and_model_records_of_format_1() -> None:
    service = ServiceRecord.model_validate(
        {
            "name": "pricing",
            "version": 1,
            "hash": "h",
            "features": ["trips@1:*"],
            "description": "",
            "created_at": "2026-01-02T03:04:05+00:00",
        }
    )  # format 1 wrote services without a format_version
    assert (service.format_version, service.features) == (1, ["trips@1:*"])
    on_demand = OnDemandRecord.model_validate(
        {
            "name": "ratio",
            "version": 1,
            "fingerprint": "f",
            "inputs": ["trips@1:fare"],
            "request": ["amount"],
            "outputs": ["ratio"],
            "parts": {"code": "abc"},
            "created_at": "2026-01-02T03:04:05.123456+00:00",
            "format_version": 1,
        }
    )
    assert on_demand.code == "abc"
    model = ModelRecord.model_validate(
        {
            "name": "churn",
            "version": 3,
            "training_set": "abc",
            "created_at": "2026-01-02T03:04:05+00:00",
            "format_version": 1,
        }
    )
    assert (model.id, model.metrics) == ("model:churn@3", {})


# ---- object-storage roots -----------------------------------------------------------------
def test_remote_root_builds_uris_and_keys_under_the_prefix() -> None:
    from featurekit.storage.layout import StoreLayout

    layout = StoreLayout("s3://bucket/team/features/", storage_options={"aws_region": "eu"})
    assert not layout.is_local
    assert layout.root == "s3://bucket/team/features"
    assert layout.table_uri("trips", 2) == "s3://bucket/team/features/features/trips/v2"
    assert layout.key_of("s3://bucket/team/features/features/trips/v2") == "features/trips/v2"
    assert layout.training_set_uri("abc", "labels") == (
        "s3://bucket/team/features/training_sets/abc/labels"
    )
    assert layout.watch_path("view", "trips") is None
    with pytest.raises(StorageError, match="is not inside the store 's3://bucket/team/features'"):
        layout.key_of("s3://other/x")
    with pytest.raises(StorageError, match="on object storage, which cannot hold lock files"):
        layout.lock_path("view", "trips")
    with pytest.raises(StorageError, match="cannot hold an embedded online store"):
        layout.online_path("online.sqlite")


def test_storage_options_split_for_obstore() -> None:
    from featurekit.storage.remote import is_remote, split_options

    config, client = split_options(
        {
            "aws_access_key_id": "k",
            "AWS_ALLOW_HTTP": "true",
            "timeout": "30s",
            "aws_s3_locking_provider": "dynamodb",  # delta-rs only
        }
    )
    assert config == {"aws_access_key_id": "k"}
    assert client == {"allow_http": "true", "timeout": "30s"}
    assert [is_remote(u) for u in ("s3://b/p", "gs://b", "abfss://c@a/p", "/tmp/x", "ftp://h")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_locations_under_a_remote_root_get_its_options() -> None:
    """Tables under a team store (stats, quarantine, ...) open with the root's credentials."""
    from featurekit.storage.remote import options_for

    StoreLayout("s3://opts-bucket/team", storage_options={"aws_region": "eu-west-1"})
    StoreLayout("s3://opts-bucket/team/nested", storage_options={"aws_region": "us-east-2"})
    assert options_for("s3://opts-bucket/team/features/v/v1") == {"aws_region": "eu-west-1"}
    assert options_for("s3://opts-bucket/team/nested/stats/v/v1") == {"aws_region": "us-east-2"}
    assert options_for("s3://opts-bucket/teams/x") is None  # a sibling prefix, not inside
    assert options_for("/local/team/features") is None
