"""The README's promises stay true: its quickstart runs, its commands are the real ones."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert first_block is not None
    lines = [ln.split("#")[0].strip() for ln in first_block.group(1).strip().splitlines()]
    assert lines == ["pip install -e . && featurekit demo", "bash .ci/run"]


def test_readme_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "quickstart.py"  # a real file, so the view's source can be read
    script.write_text(code.group(1))
    namespace: dict[str, object] = {"__name__": "__main__", "__file__": str(script)}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    ts = namespace["ts"]
    assert len(ts) > 1000  # type: ignore[arg-type]
    assert os.path.isdir(tmp_path / "quickstart-store" / "features" / "driver_fares" / "v1")


def test_quickstart_notebook_cells_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    notebook = README.parent / "notebooks" / "quickstart.ipynb"
    cells = json.loads(notebook.read_text())["cells"]
    assert all(c.get("outputs", []) == [] for c in cells), "outputs must be stripped in git"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for index, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        cell_file = tmp_path / f"cell_{index}.py"  # like IPython, each cell has its own source
        cell_file.write_text("".join(cell["source"]))
        exec(compile(cell_file.read_text(), str(cell_file), "exec"), namespace)
    ts = namespace["ts"]
    assert ts.to_polars().columns[-2:] == ["fare", "distance_km"]  # type: ignore[attr-defined]
    assert "<b>TrainingSet</b>" in ts._repr_html_()  # type: ignore[attr-defined]
