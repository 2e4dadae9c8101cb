"""The docs cannot rot: every python and bash example in README.md and docs/ runs, every link resolves.

Each page runs as one session, like a notebook: its ```python and ```bash blocks in page
order (the python ones in one namespace), in a fresh temporary folder that holds the demo
data under ``data/`` (``generate_rideshare(Path("data"))``), with ``featurekit`` on the PATH.
That convention is stated in docs/index.md, so readers can run the pages the same way.

A block that cannot run says so with an HTML comment right before its fence, which readers
do not see: ``<!-- no-run: why -->``. The reason is required.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from featurekit.demo_data import generate_rideshare

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
NO_RUN = re.compile(r"^<!--\s*no-run:\s*(.*?)\s*-->$")
#: Optional extras a page's examples use (the CI installs them; a bare dev install skips the page).
REQUIRES = {"notebooks.md": ["anywidget", "ipywidgets"]}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)|href=\"([^\"]+)\"")


@dataclass(frozen=True)
class Block:
    """One fenced example: its language, its first line number, its text, and why it may not run."""

    lang: str
    line: int
    code: str
    no_run: str | None


def blocks(page: Path) -> list[Block]:
    """The fenced ```python and ```bash blocks of ``page``, in order."""
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if opened is None:
            index += 1
            continue
        lang, start = opened.group(1), index
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        previous = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = NO_RUN.match(previous)
        if lang in ("python", "bash"):
            reason = marker.group(1) if marker else None
            out.append(Block(lang, start + 1, "\n".join(lines[start + 1 : end]) + "\n", reason))
        index = end + 1
    return out


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs-data") / "data"
    generate_rideshare(folder)
    return folder


@pytest.fixture()
def workdir(tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data").symlink_to(demo_data, target_is_directory=True)
    # `featurekit` on PATH is this checkout's CLI, whatever is installed
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "featurekit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m featurekit.cli "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_python(block: Block, page: Path, namespace: dict[str, object], workdir: Path) -> None:
    # a real file per block, so the views it defines have readable source (versions need it)
    script = workdir / f"{page.stem}_line{block.line}.py"
    script.write_text(block.code)
    try:
        exec(compile(block.code, str(script), "exec"), namespace)
    except Exception as err:
        raise AssertionError(f"{page.name}:{block.line}: the example raised {err!r}") from err


def _run_bash(block: Block, page: Path, workdir: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{workdir / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO_ROOT),
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (
        f"{page.name}:{block.line}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    )


def test_every_page_has_runnable_examples_and_reasons_for_the_rest() -> None:
    found = {page.name: blocks(page) for page in PAGES}
    assert sum(len(b) for b in found.values()) > 25  # the parser finds the examples
    skipped = [(name, b.line, b.no_run) for name, bs in found.items() for b in bs if b.no_run]
    assert all(reason for _, _, reason in skipped), skipped  # a marker must say why
    runnable = sum(1 for bs in found.values() for b in bs if not b.no_run)
    assert len(skipped) * 3 < runnable, f"too many examples do not run: {skipped}"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_examples_run(page: Path, workdir: Path) -> None:
    for module in REQUIRES.get(page.name, []):
        pytest.importorskip(module)
    import polars as pl

    import featurekit as fk

    namespace: dict[str, object] = {"__name__": "__main__", "pl": pl, "fk": fk}  # docs/index.md
    for block in blocks(page):
        if block.no_run:
            continue
        if block.lang == "python":
            _run_python(block, page, namespace, workdir)
        else:
            _run_bash(block, page, workdir)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_point_to_files_in_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    # links inside code are code, not links
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    missing = []
    for match in LINK.finditer(prose):
        target = next(group for group in match.groups() if group)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor on the same page
        path = unquote(target.split("#", 1)[0])
        if not (page.parent / path).exists():
            missing.append(target)
    assert missing == [], f"{page.relative_to(REPO_ROOT)} links to missing files: {missing}"


REPO_PATH = re.compile(
    r"`((?:\.\./)+[^`\s]+|(?:featurekit|tests|benchmarks|docs|notebooks|examples|\.ci)/[^`\s<>*]+)`"
)
DOC_NAME = re.compile(r"\b([A-Z][A-Z_]+\.md)\b")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_files_the_prose_names_are_in_the_repository(page: Path) -> None:
    """Paths in backticks and DESIGN.md-style names are files a reader of the repository has."""
    prose = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    missing = []
    for match in REPO_PATH.finditer(prose):
        name = match.group(1).split("::")[0]
        found = [p.resolve() for p in (REPO_ROOT / name, page.parent / name) if p.exists()]
        if not any(p.is_relative_to(REPO_ROOT) for p in found):
            missing.append(name)
    for match in DOC_NAME.finditer(prose):
        if (
            not (REPO_ROOT / match.group(1)).exists()
            and not (page.parent / match.group(1)).exists()
        ):
            missing.append(match.group(1))
    assert missing == [], f"{page.relative_to(REPO_ROOT)} names files it does not hold: {missing}"
