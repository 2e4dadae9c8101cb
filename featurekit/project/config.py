"""Finding a project: its store and its definitions.

A project is a folder with ``featurekit.toml``, or a ``pyproject.toml`` with a
``[tool.featurekit]`` table, holding two keys::

    store = "store"                    # the store root, relative to the config file,
                                       # or an object-storage URI ("s3://bucket/features")
    definitions = "features.py"        # or "features", or "my_pkg.features:defs"

The file is looked for in the working directory and then in its parents (the first one
found wins; ``featurekit.toml`` before ``pyproject.toml`` in the same folder), so the
commands work from any subfolder. ``--store`` and ``--definitions`` override the file.

``definitions`` names a module (``"pkg.features"``), an attribute of one
(``"pkg.features:defs"``) or a file (``"path/to/features.py"``). Without an attribute
the module must hold exactly one ``fk.Definitions`` object. The project folder is put on
``sys.path`` first, so a definitions module can import its neighbours, as in its tests.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from featurekit.core.errors import DefinitionError, FeatureKitError, NotFoundError, UserCodeError
from featurekit.project.definitions import Definitions
from featurekit.storage.roots import parse_root

__all__ = ["CONFIG_FILE", "Project", "find_config", "load_definitions", "load_project"]

#: The project file ``featurekit init`` writes.
CONFIG_FILE = "featurekit.toml"


@dataclass(frozen=True)
class ProjectConfig:
    """What a config file says, with paths made absolute against its folder."""

    path: Path | None
    store: Path | str | None
    definitions: str | None


@dataclass(frozen=True)
class Project:
    """A loaded project: where its store is and what it declares."""

    folder: Path
    store: Path | str
    definitions: Definitions
    definitions_target: str


def find_config(start: Path) -> ProjectConfig:
    """The first ``featurekit.toml`` / ``[tool.featurekit]`` at or above ``start``."""
    for folder in (start, *start.parents):
        own = folder / CONFIG_FILE
        if own.is_file():
            return _parse(own, _read_toml(own))
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            table = _read_toml(pyproject).get("tool", {}).get("featurekit")
            if isinstance(table, dict):
                return _parse(pyproject, table)
    return ProjectConfig(None, None, None)


def load_project(
    *,
    store: str | Path | None = None,
    definitions: str | None = None,
    cwd: Path | None = None,
) -> Project:
    """The project the flags and the config file describe (flags win).

    Raises:
        NotFoundError: no store or no definitions given anywhere, or a missing module/file.
        DefinitionError: the definitions target is not (or holds no single) ``fk.Definitions``.
        UserCodeError: importing the definitions module failed.
    """
    here = (cwd or Path.cwd()).resolve()
    config = find_config(here)
    folder = config.path.parent if config.path is not None else here
    root = parse_root(store) if store is not None else config.store
    target = definitions if definitions is not None else config.definitions
    if target is None:
        raise NotFoundError(
            f"no definitions to load: no {CONFIG_FILE} (or [tool.featurekit] in pyproject.toml) "
            f"at or above {str(here)!r} names them. Pass --definitions features.py, or run "
            "`featurekit init DIR` to start a project."
        )
    if root is None:
        raise NotFoundError(
            f'no store given: add store = "store" to {CONFIG_FILE}, or pass --store ROOT.'
        )
    base = folder if definitions is None else here
    return Project(folder, root, load_definitions(target, base=base), target)


def load_definitions(target: str, *, base: Path) -> Definitions:
    """The ``fk.Definitions`` that ``target`` names (see the module docstring)."""
    module_part, _, attr = target.partition(":")
    module = _import(module_part, base)
    if attr:
        value = getattr(module, attr, None)
        if not isinstance(value, Definitions):
            found = "nothing" if value is None else type(value).__name__
            raise DefinitionError(
                f"definitions {target!r}: {attr!r} in {module_part!r} is {found}, not an "
                "fk.Definitions object."
            )
        return value
    distinct: dict[int, tuple[str, Definitions]] = {}
    for key, value in vars(module).items():
        if isinstance(value, Definitions):
            distinct.setdefault(id(value), (key, value))
    if len(distinct) != 1:
        keys = [k for k, _ in distinct.values()]
        what = "no" if not keys else f"{len(keys)} ({', '.join(keys)})"
        raise DefinitionError(
            f"definitions {target!r} holds {what} fk.Definitions objects; define exactly one "
            f"(defs = fk.Definitions(views=[...])) or name it: {module_part}:defs."
        )
    return next(iter(distinct.values()))[1]


def _import(target: str, base: Path) -> ModuleType:
    folder = str(base)
    if folder not in sys.path:
        # the project's own modules (helpers, tests) import each other by plain name
        sys.path.insert(0, folder)
    if target.endswith(".py"):
        path = (base / target).resolve()
        if not path.is_file():
            raise NotFoundError(f"definitions file {str(path)!r} does not exist.")
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        name = path.stem
        loaded = sys.modules.get(name)
        if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return loaded
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise NotFoundError(f"cannot import definitions file {str(path)!r}.")
        module = importlib.util.module_from_spec(spec)
        # registered before running, like a normal import (dataclasses and pickling need it)
        sys.modules[name] = module
        _run(lambda: spec.loader.exec_module(module), target)  # type: ignore[union-attr]
        return module
    return _run(lambda: importlib.import_module(target), target)  # type: ignore[no-any-return]


def _run(fn: Any, target: str) -> Any:
    try:
        return fn()
    except FeatureKitError:
        raise
    except ModuleNotFoundError as err:
        if err.name and target.startswith(err.name):
            raise NotFoundError(
                f"definitions module {target!r} cannot be found (looked on sys.path, which "
                "starts with the project folder); check the name in featurekit.toml."
            ) from err
        raise UserCodeError(
            f"importing definitions {target!r} failed: {type(err).__name__}: {err}"
        ) from err
    except Exception as err:
        raise UserCodeError(
            f"importing definitions {target!r} failed: {type(err).__name__}: {err}"
        ) from err


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise DefinitionError(f"{str(path)!r} cannot be read as TOML: {err}") from err


def _parse(path: Path, table: dict[str, Any]) -> ProjectConfig:
    unknown = sorted(set(table) - {"store", "definitions"})
    if unknown:
        raise DefinitionError(
            f"{str(path)!r}: unknown featurekit keys {unknown}; the keys are 'store' and "
            "'definitions'."
        )
    for key in ("store", "definitions"):
        if key in table and not isinstance(table[key], str):
            raise DefinitionError(
                f"{str(path)!r}: {key!r} must be a string, got {type(table[key]).__name__}."
            )
    store = table.get("store")
    root = parse_root(store, base=path.parent) if store else None
    return ProjectConfig(path, root, table.get("definitions"))
