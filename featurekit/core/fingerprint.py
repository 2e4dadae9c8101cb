"""Fingerprint the *code* of a view so its version changes exactly when its logic does.

What goes into the hash (see ``describe_code`` to inspect it):

* the view's own AST, without decorators, docstrings, its name, comments, whitespace and
  line numbers (lambdas: the single ``lambda`` node on their line);
* every project-local function or class it reaches through globals, closure cells,
  default values or ``module.attr`` chains on a project-local module, transitively, by
  normalized AST (helpers keep their decorators, because those can change behaviour);
* the value of every constant it reaches (numbers, strings, bytes, None, dates, enums and
  containers of those), as a canonical repr with sorted sets and dict keys;
* for everything from libraries (stdlib, site-packages, featurekit): only a qualified name
  such as ``module:polars`` or ``polars.col``, so upgrading a library never bumps a view.

Any other object (e.g. a fitted model) contributes only its type name, plus
``model_dump_json()`` for a pydantic model: editing such an object's data does NOT change
the fingerprint. Hash inputs are keyed by qualified names, never by module, file, line or
``id()``, so moving a view between files or notebook cells keeps its fingerprint.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import datetime as dt
import dis
import enum
import functools
import hashlib
import inspect
import json
import numbers
import sys
import sysconfig
import textwrap
import types
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

from featurekit.core.config import FORMAT_VERSION
from featurekit.core.errors import VersionError

__all__ = ["code_fingerprint", "describe_code", "describe_source"]

SELF_KEY = "<self>"

_PACKAGE_DIR = Path(__file__).resolve().parent
_LIBRARY_ROOTS: tuple[Path, ...] = (
    *{
        Path(path).resolve()
        for key, path in sysconfig.get_paths().items()
        if key in ("stdlib", "platstdlib", "purelib", "platlib")
    },
    _PACKAGE_DIR,
)
_DEFINITION = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """SHA-256 hex (full 64 chars) of the normalized code of fn plus every project-local helper
    function and constant it reaches, transitively.

    Raises VersionError when a reached source cannot be read, rather than silently
    fingerprinting less than the code that runs.
    """
    payload = json.dumps([FORMAT_VERSION, sorted(describe_code(fn).items())])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def describe_code(fn: Callable[..., Any]) -> dict[str, str]:
    """{qualified name: normalized source or repr} of everything that went into the fingerprint
    (the view itself under key '<self>'), for debugging 'why did my version change'."""
    root = _unwrap(fn.__func__ if inspect.ismethod(fn) else fn)
    label = getattr(root, "__qualname__", repr(root))
    if not isinstance(root, types.FunctionType):
        raise VersionError(_no_source(label, f"{type(root).__name__} is not a Python function"))
    collector = _Collector(label)
    collector.visit_definition(root, root=True)
    return dict(sorted(collector.entries.items()))


def describe_source(fn: Callable[..., Any]) -> dict[str, str]:
    """Like :func:`describe_code`, with definitions as normalized *source* instead of AST dumps.

    The same walk and keys (so the same helpers and constants), but each function or class
    is ``ast.unparse`` of the normalized node (no comments, docstrings or formatting; the
    view's own decorators dropped), which a person can read in a diff of two versions.
    """
    root = _unwrap(fn.__func__ if inspect.ismethod(fn) else fn)
    label = getattr(root, "__qualname__", repr(root))
    if not isinstance(root, types.FunctionType):
        raise VersionError(_no_source(label, f"{type(root).__name__} is not a Python function"))
    collector = _Collector(label, readable=True)
    collector.visit_definition(root, root=True)
    return dict(sorted(collector.entries.items()))


class _Collector:
    """Walks from the root function through everything it reaches, filling ``entries``."""

    def __init__(self, root_label: str, *, readable: bool = False) -> None:
        self.root_label = root_label
        self.readable = readable
        self.entries: dict[str, str] = {}
        self._seen: dict[int, object] = {}  # id -> object (kept alive so ids stay unique)

    def add(self, key: str, value: str) -> str:
        name, n = key, 1
        while name in self.entries and self.entries[name] != value:
            n += 1
            name = f"{key}#{n}"
        self.entries[name] = value
        return name

    def visit_definition(self, obj: Any, *, root: bool = False) -> None:
        if id(obj) in self._seen:
            return
        self._seen[id(obj)] = obj
        label = self.root_label if root else f"{obj.__qualname__} (used by {self.root_label})"
        node = _normalized_node(obj, label, drop_decorators=root)
        text = _readable(node, obj) if self.readable else _dump(node)
        key = self.add(SELF_KEY if root else obj.__qualname__, text)
        names = _outer_names(node)
        closure: dict[str, Any] = {}
        if isinstance(obj, type):
            module = sys.modules.get(obj.__module__)
            namespace: dict[str, Any] = dict(vars(module)) if module is not None else {}
            for function in _methods(obj):
                names |= _code_globals(function.__code__)
        else:
            namespace = obj.__globals__
            names |= _code_globals(obj.__code__)
            cells = obj.__closure__ or ()
            for name, cell in zip(obj.__code__.co_freevars, cells, strict=True):
                try:
                    closure[name] = cell.cell_contents
                except ValueError:
                    self.add(f"{key}.{name}", f"unresolved:{name}")
        for name in sorted(names):
            if name in namespace:
                self.visit_value(name, namespace[name], node)
            elif name not in vars(builtins):
                self.add(name, f"unresolved:{name}")
        for name in sorted(closure):
            if name != "__class__":
                self.visit_value(f"{key}.{name}", closure[name], node, ref=name)

    def visit_value(self, key: str, value: Any, node: ast.AST, ref: str | None = None) -> None:
        unwrapped = _unwrap(value.__func__ if inspect.ismethod(value) else value)
        if isinstance(unwrapped, types.FunctionType | type) and _is_local_object(unwrapped):
            value = unwrapped  # e.g. an @functools.cache helper: follow the code it wraps
        if isinstance(value, types.ModuleType) and _is_local_module(value):
            self.add(key, "module:<project>")  # its name is like a file name: not hashed
            for chain in sorted(_attribute_chains(node, ref or key)):
                self._visit_chain(value, chain)
        elif isinstance(value, types.ModuleType):
            self.add(key, f"module:{value.__name__}")
        elif (text := _constant_repr(value)) is not None:
            self.add(key, text)
        elif isinstance(value, types.FunctionType | type) and _is_local_object(value):
            self.visit_definition(value)
        elif isinstance(value, types.FunctionType | type) or _str_attr(value, "__qualname__"):
            self.add(key, _library_name(value))
        else:
            self.add(key, _instance_repr(value))

    def _visit_chain(self, module: types.ModuleType, chain: tuple[str, ...]) -> None:
        value: Any = module
        for i, attr in enumerate(chain[1:], start=2):
            key = ".".join(chain[:i])
            if not hasattr(value, attr):
                self.add(key, f"unresolved:{key}")
                return
            value = getattr(value, attr)
            if not (isinstance(value, types.ModuleType) and _is_local_module(value)):
                self.visit_value(key, value, ast.Module(body=[], type_ignores=[]))
                return


def _unwrap(value: Any) -> Any:
    """Follow ``__wrapped__`` without triggering ``__getattr__`` (``pl.col.x`` is a column)."""
    for _ in range(100):
        inner = inspect.getattr_static(value, "__wrapped__", None)
        if inner is None:
            return value
        value = inner
    return value


def _no_source(name: str, cause: str) -> str:
    return (
        f"featurekit cannot read the source of {name}, so it cannot tell when it changes. "
        f'Pass an explicit version, e.g. @fk.feature_view(..., version="2"), and bump it when '
        f"the code changes. (Cause: {cause}.)"
    )


def _parse(text: str) -> ast.Module | None:
    """Parse a source fragment; an indented one (e.g. after a multi-line string) is wrapped."""
    for candidate in (text, "if 1:\n" + text):
        try:
            return ast.parse(candidate)
        except SyntaxError:
            continue
    return None


def _normalized_node(obj: Any, label: str, *, drop_decorators: bool) -> ast.AST:
    """The def/class/lambda node of obj, without its name, docstrings and (maybe) decorators."""
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError) as exc:
        raise VersionError(_no_source(label, str(exc) or type(exc).__name__)) from exc
    node: ast.AST | None
    if getattr(obj, "__name__", None) == "<lambda>":
        node = _lambda_node(obj, source, label)
    else:
        tree = _parse(textwrap.dedent(source))
        defs = [n for n in ast.walk(tree) if isinstance(n, _DEFINITION)] if tree else []
        node = defs[0] if defs else None
    if node is None:
        raise VersionError(_no_source(label, "its source does not parse on its own"))
    for sub in list(ast.walk(node)):
        if isinstance(sub, _DEFINITION) and sub.body and _is_docstring(sub.body[0]):
            sub.body = sub.body[1:]
    if isinstance(node, _DEFINITION):
        node.name = ""
        if drop_decorators:
            node.decorator_list = []
    return node


def _is_docstring(stmt: ast.stmt) -> bool:
    value = stmt.value if isinstance(stmt, ast.Expr) else None
    return isinstance(value, ast.Constant) and isinstance(value.value, str)


def _lambda_node(fn: Any, source: str, label: str) -> ast.Lambda:
    """The one lambda starting on fn's line: from getsource's block, else from the whole file."""
    where = f"{label} at {fn.__code__.co_filename}:{fn.__code__.co_firstlineno}"
    tree = _parse(textwrap.dedent(source))
    lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)] if tree else []
    if lambdas:
        first = min(n.lineno for n in lambdas)  # getsource's block starts at fn's line
        lambdas = [n for n in lambdas if n.lineno == first]
    else:  # the block alone does not parse (e.g. inside a multi-line call): widen to the file
        try:
            lines, _ = inspect.findsource(fn)
        except OSError:
            lines = []
        tree = _parse("".join(lines))
        line = fn.__code__.co_firstlineno
        lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)] if tree else []
        lambdas = [n for n in lambdas if n.lineno == line]
    if len(lambdas) != 1:
        cause = f"its line holds {len(lambdas)} lambdas, so it is ambiguous which one this is"
        raise VersionError(_no_source(where, cause))
    return lambdas[0]


def _readable(node: ast.AST, obj: Any) -> str:
    """Normalized source of a definition node, its name restored (the hash leaves it out)."""
    shown = copy.deepcopy(node)
    if isinstance(shown, _DEFINITION):
        shown.name = getattr(obj, "__name__", "") or "_"
    return ast.unparse(shown)


def _dump(node: Any) -> str:
    """``ast.dump`` without attributes, empty fields or string ``kind`` (stable across 3.11+)."""
    if isinstance(node, ast.AST):
        fields = []
        for name in node._fields:
            value = getattr(node, name, None)
            if value is None or value == [] or name == "kind":
                continue
            fields.append(f"{name}={_dump(value)}")
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return "[" + ", ".join(_dump(item) for item in node) + "]"
    return repr(node)


def _code_globals(code: types.CodeType) -> set[str]:
    """Global names a code object (and its nested functions/comprehensions) reads."""
    names = {
        ins.argval
        for ins in dis.get_instructions(code)
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(ins.argval, str)
    }
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_globals(const)
    return names


def _outer_names(node: ast.AST) -> set[str]:
    """Names evaluated where node is defined (decorators, defaults, class body), not inside."""
    todo: list[ast.AST] = []
    loads: set[str] = set()
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        todo += [*getattr(node, "decorator_list", []), *node.args.defaults]
        todo += [d for d in node.args.kw_defaults if d is not None]
    elif isinstance(node, ast.ClassDef):
        todo += [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
        for stmt in node.body:
            if isinstance(stmt, _DEFINITION):
                loads |= _outer_names(stmt)
            else:
                todo.append(stmt)
    stores: set[str] = set()
    for sub in todo:
        for n in ast.walk(sub):
            if isinstance(n, ast.Name):
                (loads if isinstance(n.ctx, ast.Load) else stores).add(n.id)
    return loads - stores


def _methods(cls: type) -> list[types.FunctionType]:
    found = []
    for member in vars(cls).values():
        candidates = [getattr(member, a, None) for a in ("__func__", "fget", "fset", "fdel")]
        found += [f for f in [member, *candidates] if isinstance(f, types.FunctionType)]
    return found


def _attribute_chains(node: ast.AST, name: str) -> set[tuple[str, ...]]:
    """Maximal ``name.a.b`` chains in node (e.g. ``helpers.f`` for ``helpers.f(x)``)."""
    attributes = [n for n in ast.walk(node) if isinstance(n, ast.Attribute)]
    inner = {id(n.value) for n in attributes}
    chains = set()
    for attribute in attributes:
        if id(attribute) in inner:
            continue
        parts: list[str] = []
        current: ast.expr = attribute
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if isinstance(current, ast.Name) and current.id == name:
            chains.add((name, *reversed(parts)))
    return chains


def _constant_repr(value: Any, depth: int = 0) -> str | None:
    """Canonical repr of a plain constant (sets and dict keys sorted), or None if not one."""
    if depth > 32:
        return None
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, enum.Enum):
        inner = _constant_repr(value.value, depth + 1)
        return None if inner is None else f"{type(value).__qualname__}.{value.name}={inner}"
    for kind in (int, float, complex, str, bytes):
        if isinstance(value, kind):
            return kind.__repr__(value)
    if isinstance(value, dt.date | dt.time | dt.timedelta | numbers.Number):
        return repr(value)  # numbers: Decimal, Fraction, numpy scalars
    if isinstance(value, PurePath):
        return f"path:{value.as_posix()}"
    if isinstance(value, list | tuple | set | frozenset):
        items = [_constant_repr(item, depth + 1) for item in value]
        texts = [text for text in items if text is not None]
        if len(texts) < len(items):
            return None
        if isinstance(value, set | frozenset):
            return f"{type(value).__name__}{{{', '.join(sorted(texts))}}}"
        return ("[{}]" if isinstance(value, list) else "({},)").format(", ".join(texts))
    if isinstance(value, dict):
        pairs = [
            (_constant_repr(k, depth + 1), _constant_repr(v, depth + 1)) for k, v in value.items()
        ]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "{" + ", ".join(sorted(f"{k}: {v}" for k, v in pairs)) + "}"
    return None


@functools.cache
def _is_local_file(filename: str) -> bool:
    if filename.startswith("<"):  # <string>, <ipython-input-...>: not a library
        return True
    path = Path(filename).resolve()
    return not any(path.is_relative_to(root) for root in _LIBRARY_ROOTS)


def _is_local_module(module: types.ModuleType) -> bool:
    """Project code: __main__, notebook cells, or files outside stdlib/site-packages/featurekit."""
    name = module.__name__
    top = name.partition(".")[0]
    if name == "__main__" or top == "featurekit":
        return name == "__main__"
    filename = _str_attr(module, "__file__")
    if filename is not None:
        return _is_local_file(filename)
    if top in sys.stdlib_module_names or name in sys.builtin_module_names:
        return False  # built-in or frozen
    paths = list(getattr(module, "__path__", []))  # a namespace package, or a notebook
    return not paths or any(_is_local_file(p) for p in paths)


def _is_local_object(obj: Any) -> bool:
    """Whether obj's code is the project's; an unknown module counts as project when code has
    a file to judge by (exec'd code then fails loudly for want of source), else as library."""
    module_name = _str_attr(obj, "__module__") or ""
    for name in (module_name, module_name.partition(".")[0]):
        if name in sys.modules:
            return _is_local_module(sys.modules[name])
    code = getattr(obj, "__code__", None)
    return isinstance(code, types.CodeType) and _is_local_file(code.co_filename)


def _str_attr(obj: Any, name: str) -> str | None:
    """obj.name if it is a str; objects with ``__getattr__`` (``pl.col``) may return anything."""
    try:
        value = getattr(obj, name, None)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _library_name(obj: Any) -> str:
    """``polars.col``: top-level package plus qualname, stable across library refactors."""
    qualname = _str_attr(obj, "__qualname__") or _str_attr(obj, "__name__") or "?"
    module = _str_attr(obj, "__module__")
    if not module or _is_local_object(obj):
        return qualname
    return f"{module.partition('.')[0]}.{qualname}"


def _instance_repr(value: Any) -> str:
    """Type name only (documented limitation), plus the JSON dump of a pydantic model."""
    cls = type(value)
    text = f"instance:{_library_name(cls)}"
    if any(c.__name__ == "BaseModel" and c.__module__.startswith("pydantic") for c in cls.__mro__):
        with contextlib.suppress(Exception):  # an unserializable model keeps its type name
            text += " " + str(value.model_dump_json())
    return text
