"""Property: cosmetic edits never change a code fingerprint; any literal edit always does.

Cosmetic edits are generated on a fixed set of sample modules, each written to its own file
and imported: comment lines at any indentation, blank lines with stray whitespace, added or
removed docstrings, and extra spaces around operators (placed with ``tokenize`` so they never
split a token or touch indentation). The samples contain no f-strings, backslash
continuations or multi-line strings other than docstrings, so every such edit is cosmetic.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import itertools
import re
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurekit.core.fingerprint import code_fingerprint, describe_code

SAMPLES = [
    '''
import polars as pl

THRESHOLD = 10


def feature_view(**kwargs):
    return lambda fn: fn


def _clip(x, lo=0, hi=100):
    return pl.min_horizontal(pl.max_horizontal(x, lo), hi)


def _score(x):
    """Scaled score."""
    return _clip(x * 3 + 1) / 2


@feature_view(tags=["drivers"], owner="ml")
def view(df):
    """Daily driver stats."""
    trips = pl.col("trips")
    return df.filter(trips > THRESHOLD).with_columns(
        score=_score(trips),
        ratio=(trips - 1) ** 2 / (trips + 4),
    )
''',
    """
import math

WEIGHTS = {"a": 1, "b": 2}
NAMES = ("a", "b")
OFFSET = 7


def feature_view(**kwargs):
    return lambda fn: fn


class Scaler:
    factor = 3

    def apply(self, x):
        return x * self.factor + OFFSET


@feature_view(tags=["x"])
def view(rows):
    def weight(name):
        return WEIGHTS.get(name, 0) * 2

    total = sum(weight(n) for n in NAMES if n != "c")
    pairs = {k: v for k, v in zip(NAMES, [1, 2])}
    return [math.floor(Scaler().apply(total) / 5), pairs, sorted(rows, key=lambda r: -r)]
""",
    """
def feature_view(**kwargs):
    return lambda fn: fn


def make_view(offset):
    @feature_view(tags=["made"])
    def view(df):
        return df + offset * 2

    return view


view = make_view(5)
""",
]

_names = itertools.count()
_DEF = re.compile(r"^(\s*)def .*:\s*$")
_DOCSTRING = re.compile(r'^\s*""".*"""\s*$')


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("fingerprint_samples")
    sys.path.insert(0, str(path))
    yield path
    sys.path.remove(str(path))


def fingerprint_of(directory: Path, source: str) -> tuple[str, dict[str, str]]:
    """Import source from a new file under a new module name; fingerprint its ``view``."""
    name = f"fkfp_prop_{next(_names)}"
    path = directory / f"{name}.py"
    path.write_text(source)
    importlib.invalidate_caches()
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        return code_fingerprint(module.view), describe_code(module.view)
    finally:
        del sys.modules[name]


def toggle_docstrings(lines: list[str], chosen: set[int], text: str) -> list[str]:
    """Remove the one-line docstring after each chosen ``def`` line, or add one if absent."""
    out: list[str] = []
    skip_next = False
    for i, line in enumerate(lines):
        if skip_next:
            skip_next = False
            continue
        out.append(line)
        if i in chosen and _DEF.match(line) and i + 1 < len(lines):
            following = lines[i + 1]
            if _DOCSTRING.match(following):
                skip_next = True
            else:
                indent = following[: len(following) - len(following.lstrip())]
                out.append(f'{indent}"""{text}"""')
    return out


def space_operators(source: str, chosen: list[int], widths: list[int]) -> str:
    """Insert spaces before/after the chosen OP tokens, never at the start of a line."""
    positions = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.OP:
            positions += [tok.start, tok.end]
    lines = source.splitlines(keepends=True)
    picked = sorted({positions[i % len(positions)] for i in chosen}, reverse=True)
    for (row, col), width in zip(picked, itertools.cycle(widths), strict=False):
        line = lines[row - 1]
        if col > len(line) - len(line.lstrip()):
            lines[row - 1] = line[:col] + " " * width + line[col:]
    return "".join(lines)


@st.composite
def cosmetic_variant(draw: st.DrawFn, source: str) -> str:
    lines = source.splitlines()
    def_lines = {i for i, line in enumerate(lines) if _DEF.match(line)}
    chosen = draw(st.sets(st.sampled_from(sorted(def_lines))))
    doc = draw(st.text(alphabet="abcdefgh xyz0123", max_size=20))
    lines = toggle_docstrings(lines, chosen, doc)
    inserts = draw(
        st.lists(
            st.tuples(
                st.integers(0, len(lines)),
                st.integers(0, 12),
                st.one_of(st.just(""), st.text(alphabet="abc #()'\"", max_size=15)),
            ),
            max_size=8,
        )
    )
    for at, indent, comment in sorted(inserts, reverse=True):
        text = f"# {comment}" if comment or indent % 2 else ""  # comment or stray-blank line
        lines.insert(at, " " * indent + text)
    edited = "\n".join(lines) + "\n"
    spots = draw(st.lists(st.integers(0, 10_000), max_size=12))
    widths = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    return space_operators(edited, spots, widths)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), index=st.sampled_from(range(len(SAMPLES))))
def test_cosmetic_edits_keep_the_fingerprint(
    sample_dir: Path, data: st.DataObject, index: int
) -> None:
    original = SAMPLES[index]
    variant = data.draw(cosmetic_variant(original), label="variant")
    before_fp, before = fingerprint_of(sample_dir, original)
    after_fp, after = fingerprint_of(sample_dir, variant)
    assert after == before
    assert after_fp == before_fp


@settings(max_examples=40, deadline=None)
@given(data=st.data(), index=st.sampled_from(range(len(SAMPLES))))
def test_changing_any_number_changes_the_fingerprint(
    sample_dir: Path, data: st.DataObject, index: int
) -> None:
    original = SAMPLES[index]
    tokens = list(tokenize.generate_tokens(io.StringIO(original).readline))
    numbers = [tok for tok in tokens if tok.type == tokenize.NUMBER]
    tok = data.draw(st.sampled_from(numbers), label="number")
    bump = data.draw(st.integers(1, 50), label="bump")
    lines = original.splitlines(keepends=True)
    (row, start), (_, end) = tok.start, tok.end
    line = lines[row - 1]
    lines[row - 1] = line[:start] + str(int(tok.string) + bump) + line[end:]
    assert fingerprint_of(sample_dir, "".join(lines))[0] != fingerprint_of(sample_dir, original)[0]
