"""Store roots as typed on a command line or in a project file, and their options."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurekit.core.errors import DefinitionError, StorageError
from featurekit.project.config import find_config
from featurekit.storage.roots import OPTIONS_ENV, options_for_root, options_from_env, parse_root


def test_folders_become_absolute_paths_and_uris_stay_text(tmp_path: Path) -> None:
    assert parse_root("s3://bucket/features/") == "s3://bucket/features"
    assert parse_root("gs://bucket/x") == "gs://bucket/x"
    assert parse_root("store", base=tmp_path) == tmp_path / "store"
    assert parse_root(f"file://{tmp_path}/a") == tmp_path / "a"
    assert parse_root(tmp_path / "b" / ".." / "c") == tmp_path / "c"
    with pytest.raises(StorageError, match="scheme 'http' is not supported"):
        parse_root("http://example.com/store")


def test_options_come_from_the_environment_as_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    assert options_from_env() == {}
    monkeypatch.setenv(OPTIONS_ENV, '{"aws_allow_http": true, "timeout": 30, "aws_region": "x"}')
    assert options_from_env() == {"aws_allow_http": "true", "timeout": "30", "aws_region": "x"}
    # only remote roots read it, and explicit options (even empty ones) win
    assert options_for_root("s3://b/p", None)["aws_region"] == "x"
    assert options_for_root(Path("/tmp/x"), None) == {}
    assert options_for_root("s3://b/p", {}) == {}


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"nested": {"a": 1}}'])
def test_malformed_options_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv(OPTIONS_ENV, text)
    with pytest.raises(DefinitionError, match=f"{OPTIONS_ENV} must be a JSON object") as info:
        options_from_env()
    assert text not in str(info.value)


def test_a_project_file_may_name_an_object_storage_root(tmp_path: Path) -> None:
    (tmp_path / "featurekit.toml").write_text('store = "s3://bucket/team"\n')
    assert find_config(tmp_path).store == "s3://bucket/team"
    (tmp_path / "featurekit.toml").write_text('store = "store"\n')
    assert find_config(tmp_path).store == tmp_path.resolve() / "store"
