"""The package's shape, checked from source: layers, no import cycles, no reaching into privates.

Layers, lowest first (docs/architecture.md): core < kernels < storage < offline < lineage <
online < serving < notebook < surface (store, cli, demo, demo_data, mlflow, ``__init__``).
A module may import its own layer or a lower one.

Every ``import`` and ``from ... import`` counts: at module level *and* inside functions or
methods (a lazy import is still a dependency). Imports under ``if TYPE_CHECKING:`` are
excluded from these checks: they never run, and annotations may name a higher layer's type.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

import polars as pl
import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "featurekit"
LAYERS = ("core", "kernels", "storage", "offline", "lineage", "online", "serving", "notebook")
SURFACE = len(LAYERS)

#: Known violations being removed on other branches; each entry is deleted once they merge.
ALLOWED_UPWARD: set[tuple[str, str]] = set()
ALLOWED_PRIVATE: set[tuple[str, str]] = set()
#: Underscore names that are public API of the standard library (namedtuple, ast nodes).
STDLIB_UNDERSCORE = {"_asdict", "_fields", "_make", "_replace"}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    """``featurekit.<layer>`` and its modules: that layer's index; anything else: the surface."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else SURFACE


def is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def walk_runtime(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(node):
        if is_type_checking(child):
            for other in getattr(child, "orelse", []):
                yield other
                yield from walk_runtime(other)
            continue
        yield child
        yield from walk_runtime(child)


def imports_of(name: str, tree: ast.Module) -> Iterator[Import]:
    """featurekit modules ``name`` imports, resolved to the most specific module that exists."""
    known = modules()
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in walk_runtime(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "featurekit" and target != name:
                yield Import(name, target, node.lineno)


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for name, tree in modules().items():
        for imp in imports_of(name, tree):
            if imp.target in graph:
                graph[name].add(imp.target)
    return graph


def test_the_checker_sees_lazy_imports_and_skips_type_checking_blocks() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from featurekit.store import Store\n"
        "def f():\n"
        "    from featurekit.notebook.reprs import view_html\n"
        "    from . import registry\n"
    )
    found = {(i.target, i.line) for i in imports_of("featurekit.storage.delta", tree)}
    assert found == {("featurekit.notebook.reprs", 5), ("featurekit.storage.registry", 6)}


def test_layers_cover_every_module() -> None:
    names = set(modules())
    assert "featurekit.store" in names and "featurekit.core.errors" in names
    assert {layer(n) for n in names} == set(range(len(LAYERS) + 1))
    top = {n for n in names if n.count(".") == 1 and not _is_package(n)}
    assert {layer(n) for n in top} == {SURFACE}


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{i.importer} (layer {layer(i.importer)}) imports {i.target} "
        f"(layer {layer(i.target)}) at line {i.line}"
        for name, tree in sorted(modules().items())
        for i in imports_of(name, tree)
        if layer(i.target) > layer(i.importer) and (i.importer, i.target) not in ALLOWED_UPWARD
    ]
    assert upward == []


def test_allowed_upward_imports_still_exist() -> None:
    """An allow-list entry whose import is gone must be deleted, so it cannot hide a new one."""
    present = {(i.importer, i.target) for n, t in modules().items() for i in imports_of(n, t)}
    assert present >= ALLOWED_UPWARD


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_find_cycles_finds_a_lazy_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_has_no_cycles() -> None:
    assert find_cycles(import_graph()) == []


# ---- private names --------------------------------------------------------------------------
def is_private(name: str) -> bool:
    """``_name``: private. Dunders and IPython's ``_repr_html_`` protocol names are not."""
    return name.startswith("_") and not name.endswith("_")


def own_private_attributes(tree: ast.Module) -> set[str]:
    """Private names a module defines as attributes: ``x._a = ...``, class bodies, methods."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    own.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    own.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    own.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return own


def private_access(name: str, tree: ast.Module) -> Iterator[tuple[str, int]]:
    """``from featurekit.x import _y``; ``module._y`` on an imported module; ``obj._y`` where
    no class of this module defines ``_y`` (so it must be another module's private)."""
    imported_modules = {
        (a.asname or a.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for a in node.names
    }
    imported_modules |= {
        a.asname or a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("featurekit")
        for a in node.names
        if _is_package(f"{node.module}.{a.name}")
        or (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/"))
        .with_suffix(".py")
        .exists()
    }
    own = own_private_attributes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("featurekit"):
            for alias in node.names:
                if is_private(alias.name) and node.module != name:
                    yield f"from {node.module} import {alias.name}", node.lineno
        if not isinstance(node, ast.Attribute) or not is_private(node.attr):
            continue
        if node.attr in STDLIB_UNDERSCORE:
            continue
        receiver = node.value
        if (isinstance(receiver, ast.Name) and receiver.id in imported_modules) or (
            node.attr not in own
            and not (isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"))
        ):
            yield ast.unparse(node), node.lineno


def test_the_private_checker_catches_the_shapes_that_matter() -> None:
    tree = ast.parse(
        "from featurekit.storage import delta\n"
        "from featurekit.online.snapshot import _physical\n"
        "class A:\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def f(self, other, store, ts):\n"
        "        other._mine, self._mine, self._repr_html_()\n"
        "        delta._open(1), store._catalog, ts._registry, self._store._lookup(1)\n"
    )
    found = sorted(text for text, _ in private_access("featurekit.x", tree))
    assert found == [
        "delta._open",
        "from featurekit.online.snapshot import _physical",
        "self._store._lookup",
        "store._catalog",
        "ts._registry",
    ]


def test_no_module_reaches_into_another_modules_private_names() -> None:
    found = [
        f"{name}:{line}: {text}"
        for name, tree in sorted(modules().items())
        for text, line in private_access(name, tree)
        if (name, text) not in ALLOWED_PRIVATE
    ]
    assert found == []


def test_allowed_private_accesses_still_exist() -> None:
    """An allow-list entry whose access is gone must be deleted from ALLOWED_PRIVATE."""
    present = {(n, text) for n, t in modules().items() for text, _ in private_access(n, t)}
    assert present >= ALLOWED_PRIVATE


@pytest.mark.parametrize("layer_name", LAYERS)
def test_each_layer_is_a_package(layer_name: str) -> None:
    assert (PACKAGE / layer_name / "__init__.py").is_file()


# ---- displays attached from the notebook layer ----------------------------------------------
def test_lower_layer_classes_find_the_notebook_layers_displays() -> None:
    import featurekit as fk
    from featurekit.core import display
    from featurekit.notebook import reprs

    frame = pl.DataFrame({"driver_id": [1], "event_ts": [datetime(2024, 1, 1)], "fare": [3.5]})
    trips = fk.Source("trips", frame, timestamp="event_ts")

    @fk.feature_view(entity=fk.Entity("driver", keys=["driver_id"]), sources=[trips])
    def driver_stats(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select("driver_id", "event_ts", "fare")

    view = driver_stats
    assert view._repr_html_() == reprs.view_html(view)
    graph = fk.LineageGraph()
    assert display.mimebundle_for(graph) is not None
    assert graph._repr_mimebundle_()["text/plain"] == "LineageGraph(empty, edges=0)"


def test_a_type_without_a_formatter_has_no_rich_display() -> None:
    from featurekit.core import display

    class Plain:
        pass

    class Child(Plain):
        pass

    assert display.html_for(Plain()) is None
    assert display.mimebundle_for(Plain()) is None
    display.register_html(Plain, lambda obj: f"<i>{type(obj).__name__}</i>")
    assert display.html_for(Child()) == "<i>Child</i>"


def test_explain_without_a_registered_explainer_says_what_to_do() -> None:
    from featurekit.core import display
    from featurekit.core.errors import FeatureKitError

    with pytest.raises(FeatureKitError) as err:
        display.explain(object(), 0)
    assert str(err.value) == (
        "no explainer is registered for object: import featurekit (it registers the "
        "notebook layer's) before calling explain()."
    )


# ---- one mistake, one error class -------------------------------------------------------------
def test_a_bad_point_in_time_mode_is_a_definition_error_in_the_kernel_too() -> None:
    """``Store.training_set`` raises DefinitionError for it; the kernel must agree."""
    from featurekit.core.errors import DefinitionError
    from featurekit.kernels.pit import pit_join

    labels = pl.DataFrame({"driver_id": [1], "ts": [datetime(2024, 1, 1)]})
    with pytest.raises(DefinitionError) as err:
        pit_join(labels, timestamp="ts", views=[], point_in_time="now")  # type: ignore[arg-type]
    assert str(err.value) == "point_in_time must be 'knowledge' or 'event', got 'now'."


def test_a_lineage_node_id_of_the_wrong_type_is_a_definition_error() -> None:
    import featurekit as fk
    from featurekit.lineage.service import resolve_id

    with pytest.raises(fk.DefinitionError) as err:
        resolve_id(fk.LineageGraph(), 3, None)  # type: ignore[arg-type]
    assert str(err.value) == "a lineage node id must be a string, got int."


def _tree_parents(text: str) -> dict[str, str]:
    """Class -> parent, read from a drawn tree (``├──``/``└──`` lines under a root line)."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == "FeatureKitError":
            stack = [(line.index("F"), "FeatureKitError")]
            continue
        if not stack or not ("├── " in line or "└── " in line):
            continue
        depth = max(line.find("├── "), line.find("└── ")) + 4  # where the name starts
        name = line[depth:].split()[0]
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_every_error_class_is_in_both_drawn_trees_under_its_real_parent() -> None:
    from featurekit.core import errors
    from featurekit.online import errors as online_errors

    classes = {
        obj.__name__: obj.__mro__[1].__name__
        for module in (errors, online_errors)
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, errors.FeatureKitError)
        and obj is not errors.FeatureKitError
    }
    docs = (PACKAGE.parent / "docs" / "concepts.md").read_text()
    assert _tree_parents(errors.__doc__ or "") == classes
    assert _tree_parents(docs) == classes


def test_docs_architecture_lists_every_module_under_its_layer() -> None:
    """A new module gets its line in docs/architecture.md (table rows: layer, module, job)."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    listed: set[str] = set()
    for row in text.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] not in (*LAYERS, "surface"):
            continue
        for name in cells[1].replace("`", "").split(","):
            prefix = "featurekit" if cells[0] == "surface" else f"featurekit.{cells[0]}"
            listed.add(f"{prefix}.{name.strip()}")
    expected = {n for n in modules() if n.count(".") >= 1 and not _is_package(n)} | {
        "featurekit.__init__"
    }
    assert expected - listed == set()
