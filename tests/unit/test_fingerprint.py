"""What changes a view's code fingerprint, and what must not (DESIGN.md "Version").

Every sample is written to a real file under ``tmp_path`` and imported, so it is
project-local code with a source file, exactly like a user's module.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import linecache
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from featurekit.core.errors import VersionError
from featurekit.core.fingerprint import code_fingerprint, describe_code, describe_source

REPO_ROOT = Path(__file__).resolve().parents[2]
_names = itertools.count()

Load = Callable[..., ModuleType]


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Load]:
    """load(source, name=None) writes tmp_path/<name>.py and imports it as a fresh module."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)

    def _load(source: str, name: str | None = None) -> ModuleType:
        name = name or f"fkfp_sample_{next(_names)}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    yield _load
    for name in set(sys.modules) - before:
        if name.startswith("fkfp_"):  # only our samples: pydantic etc. must stay imported once
            del sys.modules[name]


BASE = '''
import polars as pl

THRESHOLD = 10


def feature_view(**kwargs):
    return lambda fn: fn


def _inner(x):
    return x + 1


def _scale(x):
    return _inner(x) * 2


@feature_view(tags=["a"])
def driver_stats(df):
    """Daily driver stats."""
    return df.filter(pl.col("trips") > THRESHOLD).with_columns(score=_scale(pl.col("trips")))
'''

COSMETIC = '''
# A header comment, and the view moved further down the file.
import polars as pl

THRESHOLD = 10

def feature_view(**kwargs):
    """A dummy decorator standing in for fk.feature_view."""
    return lambda fn: fn

def _inner(x):
    """Now with a docstring."""
    return x+1   # trailing comment


def _scale(x):

    # a comment line and blank lines
    return _inner( x ) * 2

@feature_view(tags=["b", "c"], owner="someone else")
def driver_stats(df):
    # the docstring became a comment
    return (
        df.filter(pl.col("trips") > THRESHOLD)
          .with_columns(score = _scale(pl.col( "trips" )))
    )
'''


def edited(old: str, new: str, source: str = BASE) -> str:
    assert old in source, old
    return source.replace(old, new)


def test_fingerprint_is_a_full_sha256_hex(load: Load) -> None:
    fp = code_fingerprint(load(BASE).driver_stats)
    assert len(fp) == 64
    assert int(fp, 16) >= 0


def test_cosmetic_edits_in_another_file_and_module_keep_the_fingerprint(load: Load) -> None:
    a = load(BASE, name="fkfp_views_one")
    b = load(COSMETIC, name="fkfp_other_place")
    assert describe_code(a.driver_stats) == describe_code(b.driver_stats)
    assert code_fingerprint(a.driver_stats) == code_fingerprint(b.driver_stats)


def test_decorator_arguments_and_function_name_are_not_hashed(load: Load) -> None:
    base = load(BASE).driver_stats
    retagged = load(edited('@feature_view(tags=["a"])', "@feature_view(tags=[], ttl=3)"))
    renamed = load(edited("def driver_stats(df):", "def driver_stats_daily(df):"))
    assert code_fingerprint(retagged.driver_stats) == code_fingerprint(base)
    assert code_fingerprint(renamed.driver_stats_daily) == code_fingerprint(base)


def test_describe_code_shows_the_view_and_what_it_reaches(load: Load) -> None:
    described = describe_code(load(BASE).driver_stats)
    assert set(described) == {"<self>", "pl", "THRESHOLD", "_scale", "_inner"}
    assert described["pl"] == "module:polars"
    assert described["THRESHOLD"] == "10"
    assert "trips" in described["<self>"]
    assert "Daily driver stats" not in described["<self>"]
    assert "driver_stats" not in described["<self>"]
    assert "lineno" not in described["<self>"]


def test_describe_source_is_readable_and_walks_the_same_names(load: Load) -> None:
    view = load(BASE).driver_stats
    readable = describe_source(view)
    assert set(readable) == set(describe_code(view))
    assert readable["<self>"] == (
        "def driver_stats(df):\n"
        "    return df.filter(pl.col('trips') > THRESHOLD).with_columns(score=_scale(pl.col('trips')))"
    )
    assert readable["_scale"] == "def _scale(x):\n    return _inner(x) * 2"
    assert describe_source(load(COSMETIC, name="fkfp_cosmetic_src").driver_stats) == readable


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('pl.col("trips") > THRESHOLD', 'pl.col("trips") >= THRESHOLD'),  # view body
        ("return _inner(x) * 2", "return _inner(x) * 3"),  # helper, one level down
        ("return x + 1", "return x + 2"),  # helper of the helper, two levels down
        ("THRESHOLD = 10", "THRESHOLD = 11"),  # reached constant
    ],
)
def test_code_changes_change_the_fingerprint(load: Load, old: str, new: str) -> None:
    before = code_fingerprint(load(BASE).driver_stats)
    assert code_fingerprint(load(edited(old, new)).driver_stats) != before


def test_renaming_a_helper_changes_the_fingerprint(load: Load) -> None:
    before = code_fingerprint(load(BASE).driver_stats)
    renamed = edited("_scale", "_double", edited("def _scale", "def _double"))
    assert code_fingerprint(load(renamed).driver_stats) != before


def test_constant_mutated_at_runtime_is_read_at_fingerprint_time(load: Load) -> None:
    module = load(BASE)
    before = code_fingerprint(module.driver_stats)
    vars(module)["THRESHOLD"] = 11
    assert code_fingerprint(module.driver_stats) != before


HELPERS = """
LIMIT = {limit}


def _deep(x):
    return x - {deep}


def outer(x):
    return _deep(x) + LIMIT
"""

USES_HELPER_MODULE = """
import {helpers} as helpers


def view(df):
    return helpers.outer(df) + helpers.LIMIT
"""


def _view_over_helpers(load: Load, limit: int, deep: int, comment: str = "") -> Any:
    helpers = f"fkfp_helpers_{next(_names)}"
    load(comment + HELPERS.format(limit=limit, deep=deep), name=helpers)
    return load(USES_HELPER_MODULE.format(helpers=helpers)).view


def test_helpers_reached_through_a_project_module_attribute(load: Load) -> None:
    base = _view_over_helpers(load, limit=5, deep=1)
    described = describe_code(base)
    assert described["helpers"] == "module:<project>"
    assert described["helpers.LIMIT"] == "5"
    assert {"outer", "_deep", "LIMIT"} <= set(described)
    fp = code_fingerprint(base)
    # a copy of the helper module under another name, with a comment: same code, same hash
    assert code_fingerprint(_view_over_helpers(load, 5, 1, comment="# copy\n")) == fp
    assert code_fingerprint(_view_over_helpers(load, limit=5, deep=2)) != fp  # 2 levels deep
    assert code_fingerprint(_view_over_helpers(load, limit=6, deep=1)) != fp  # constant


def test_library_code_is_named_never_followed(load: Load) -> None:
    module = load(
        """
        import math
        import polars as pl
        from polars import when
        from featurekit.core.errors import did_you_mean


        def view(df):
            return df.with_columns(when(pl.col("a") > math.pi).then(1), x=did_you_mean("a", []))
        """
    )
    described = describe_code(module.view)
    assert described == {
        "<self>": described["<self>"],
        "did_you_mean": "featurekit.did_you_mean",
        "math": "module:math",
        "pl": "module:polars",
        "when": "polars.when",
    }


def test_wrapped_helpers_are_followed_and_odd_library_objects_are_safe(load: Load) -> None:
    source = """
        import functools
        from pathlib import Path
        from polars import col

        DATA = Path("data/{folder}")

        @functools.cache
        def lookup(key):
            return key * {factor}

        def view(df):
            return df.with_columns(col("x") * lookup(2), path=str(DATA))
        """
    a = load(source.format(folder="a", factor=2)).view
    described = describe_code(a)
    assert described["col"] == "instance:polars.Col"  # pl.col.__qualname__ would be an Expr
    assert described["DATA"] == "path:data/a"
    assert "functools" in described["lookup"]  # the cached function's own source
    assert code_fingerprint(load(source.format(folder="a", factor=3)).view) != code_fingerprint(a)
    assert code_fingerprint(load(source.format(folder="b", factor=2)).view) != code_fingerprint(a)


def test_builtins_are_ignored_and_unknown_names_do_not_raise(load: Load) -> None:
    module = load(
        """
        def view(df):
            return len(df) + not_defined_yet(df)
        """
    )
    described = describe_code(module.view)
    assert described["not_defined_yet"] == "unresolved:not_defined_yet"
    assert "len" not in described
    before = code_fingerprint(module.view)
    vars(module)["not_defined_yet"] = lambda df: 0  # defining it later changes what runs
    assert code_fingerprint(module.view) != before


def test_closure_variables_are_hashed(load: Load) -> None:
    module = load(
        """
        def make_view(threshold):
            def view(df):
                return df.filter(df["x"] > threshold)
            return view
        """
    )
    assert code_fingerprint(module.make_view(1)) == code_fingerprint(module.make_view(1))
    assert code_fingerprint(module.make_view(1)) != code_fingerprint(module.make_view(2))
    assert describe_code(module.make_view(3))["<self>.threshold"] == "3"


def test_default_argument_values_are_hashed(load: Load) -> None:
    source = """
        WINDOW = {window}

        def view(df, window=WINDOW):
            return df.tail(window)
        """
    a = load(source.format(window=7)).view
    b = load(source.format(window=30)).view
    assert code_fingerprint(a) != code_fingerprint(b)


def test_container_constants_are_canonical(load: Load) -> None:
    source = """
        import datetime as dt
        KEYS = {keys}
        WEIGHTS = {weights}
        TTL = dt.timedelta(days={days})

        def view(df):
            return df.select(sorted(KEYS)).with_columns(w=WEIGHTS, ttl=TTL)
        """
    a = load(source.format(keys="{'b', 'a', 'c'}", weights="{'x': 1, 'y': (2, 3)}", days=1))
    b = load(source.format(keys="{'c', 'b', 'a'}", weights="{'y': (2, 3), 'x': 1}", days=1))
    c = load(source.format(keys="{'c', 'b', 'a'}", weights="{'y': (2, 3), 'x': 1}", days=2))
    d = load(source.format(keys="{'c', 'b', 'a'}", weights="{'y': [2, 3], 'x': 1}", days=1))
    assert code_fingerprint(a.view) == code_fingerprint(b.view)
    assert code_fingerprint(c.view) != code_fingerprint(a.view)
    assert code_fingerprint(d.view) != code_fingerprint(a.view)  # tuple vs list
    assert describe_code(a.view)["KEYS"] == "set{'a', 'b', 'c'}"


def test_other_objects_contribute_their_type_and_pydantic_models_their_json(
    load: Load,
) -> None:
    source = """
        import pydantic

        class Config(pydantic.BaseModel):
            threshold: int

        class Model:
            def __init__(self, weight):
                self.weight = weight

        CONFIG = Config(threshold={threshold})
        MODEL = Model({weight})

        def view(df):
            return MODEL.weight * df.filter(df["x"] > CONFIG.threshold)
        """
    a = load(source.format(threshold=1, weight=1)).view
    assert describe_code(a)["MODEL"] == "instance:Model"
    assert describe_code(a)["CONFIG"] == 'instance:Config {"threshold":1}'
    assert code_fingerprint(load(source.format(threshold=2, weight=1)).view) != code_fingerprint(a)
    # Documented limitation: a plain object's data is not hashed.
    assert code_fingerprint(load(source.format(threshold=1, weight=9)).view) == code_fingerprint(a)


def test_project_classes_are_followed_into_their_methods(load: Load) -> None:
    source = """
        import dataclasses

        OFFSET = {offset}

        @dataclasses.dataclass(frozen=True)
        class Scaler:
            factor: int = 3

            def apply(self, x):
                return x * self.factor + OFFSET

        def view(df):
            return Scaler().apply(df)
        """
    a = load(source.format(offset=1)).view
    described = describe_code(a)
    assert {"Scaler", "OFFSET", "dataclasses"} <= set(described)
    assert "dataclass" in described["Scaler"]  # a helper's decorators are code: kept
    assert code_fingerprint(load(source.format(offset=2)).view) != code_fingerprint(a)


def test_mutually_recursive_helpers_terminate(load: Load) -> None:
    source = """
        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - {step})

        def view(df):
            return df.filter(is_even(len(df)))
        """
    a = load(source.format(step=1)).view
    assert {"is_even", "is_odd"} <= set(describe_code(a))
    assert code_fingerprint(load(source.format(step=3)).view) != code_fingerprint(a)


def test_single_lambda_is_fingerprinted(load: Load) -> None:
    source = """
        FACTOR = 2
        view = lambda df: df * FACTOR  # noqa: E731
        in_a_call = dict(
            a=1,
            b=lambda df: df + {offset},
        )["b"]
        """
    a = load(source.format(offset=1))
    b = load("\n\n" + source.format(offset=1))
    c = load(source.format(offset=5))
    assert describe_code(a.view)["FACTOR"] == "2"
    assert code_fingerprint(a.view) == code_fingerprint(b.view)
    assert code_fingerprint(a.in_a_call) == code_fingerprint(b.in_a_call)
    assert code_fingerprint(a.in_a_call) != code_fingerprint(c.in_a_call)


def test_two_lambdas_on_one_line_are_ambiguous(load: Load) -> None:
    module = load("pair = (lambda df: df + 1, lambda df: df + 2)\n")
    with pytest.raises(VersionError, match=r"cannot read the source of <lambda>.*2 lambdas"):
        code_fingerprint(module.pair[0])


def test_exec_built_function_raises_version_error() -> None:
    namespace: dict[str, Any] = {}
    exec("def runtime_view(df):\n    return df\n", namespace)
    with pytest.raises(VersionError) as caught:
        code_fingerprint(namespace["runtime_view"])
    message = str(caught.value)
    assert "featurekit cannot read the source of runtime_view" in message
    assert "so it cannot tell when it changes" in message
    assert '@fk.feature_view(..., version="2")' in message


def test_exec_built_helper_raises_version_error_naming_it(load: Load) -> None:
    module = load(
        """
        exec("def runtime_helper(x):\\n    return x\\n")

        def view(df):
            return runtime_helper(df)
        """
    )
    with pytest.raises(VersionError, match=re.escape("source of runtime_helper (used by view)")):
        code_fingerprint(module.view)


def test_non_functions_raise_version_error() -> None:
    with pytest.raises(VersionError, match="source of len"):
        code_fingerprint(len)


def test_notebook_cells_fingerprint_through_linecache() -> None:
    """IPython keeps cell source in linecache under a fake filename, with __name__ '__main__'."""

    def run_cell(source: str, cell: int, namespace: dict[str, Any]) -> None:
        filename = f"<ipython-input-{cell}-fkfp>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), namespace)

    namespace: dict[str, Any] = {"__name__": "__main__"}
    run_cell("def helper(x):\n    return x + 1\n", 1, namespace)
    run_cell("def view(df):\n    return helper(df)\n", 2, namespace)
    first = code_fingerprint(namespace["view"])
    run_cell("def helper(x):\n    return x + 2\n", 3, namespace)  # redefine the helper cell
    assert code_fingerprint(namespace["view"]) != first
    run_cell("def helper(x):\n    # same code again\n    return x + 1\n", 4, namespace)
    assert code_fingerprint(namespace["view"]) == first


def test_fingerprint_does_not_depend_on_pythonhashseed(load: Load, tmp_path: Path) -> None:
    source = """
        TAGS = frozenset({"alpha", "beta", "gamma", "delta"})
        MAPPING = {"z": {"q", "r", "s"}, "a": ("x", "y")}

        def helper_b(x):
            return x

        def helper_a(x):
            return helper_b(x)

        def view(df):
            return helper_a(df).select(sorted(TAGS), MAPPING)
        """
    module = load(source, name="fkfp_seeded")
    script = (
        "import fkfp_seeded\n"
        "from featurekit.core.fingerprint import code_fingerprint\n"
        "print(code_fingerprint(fkfp_seeded.view))\n"
    )
    outputs = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO_ROOT)])
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        outputs.append(result.stdout.strip())
    assert outputs[0] == outputs[1] == code_fingerprint(module.view)
