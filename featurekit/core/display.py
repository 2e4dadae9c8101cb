"""Notebook displays attached from above: formatters registered by type, looked up by objects.

Definitions, registry records, training sets and lineage graphs live in layers below the
notebook layer, so they cannot import it to draw themselves. Instead each keeps a one-line
``_repr_html_`` (or ``_repr_mimebundle_``) that asks this registry for its formatter, and
:mod:`featurekit.notebook` registers the formatters when it is imported. ``import featurekit``
imports the notebook layer, so every object reached through the package finds its display;
an object whose type has no formatter shows its plain ``repr`` (IPython treats ``None`` from a
``_repr_*_`` method as "no such rendering").

The same seam attaches :meth:`TrainingSet.explain <featurekit.TrainingSet.explain>`, whose
explanation is a notebook object (a timeline per view) built by the notebook layer.

Example:
    >>> from featurekit.core import display
    >>> display.register_html(MyRecord, lambda record: f"<b>{record.name}</b>")
    >>> display.html_for(MyRecord(name="x"))
    '<b>x</b>'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from featurekit.core.errors import FeatureKitError

T = TypeVar("T")

_HTML: dict[type, Callable[[Any], str]] = {}
_MIMEBUNDLE: dict[type, Callable[[Any], dict[str, Any]]] = {}
_EXPLAINERS: dict[type, Callable[[Any, int], Any]] = {}


def _find(table: dict[type, T], obj: object) -> T | None:
    """The entry for ``type(obj)`` or its nearest base class (subclasses inherit displays)."""
    for cls in type(obj).__mro__:
        found = table.get(cls)
        if found is not None:
            return found
    return None


def register_html(cls: type[T], formatter: Callable[[T], str]) -> None:
    """Render instances of ``cls`` (and its subclasses) as HTML with ``formatter``."""
    _HTML[cls] = formatter


def register_mimebundle(cls: type[T], formatter: Callable[[T], dict[str, Any]]) -> None:
    """Render instances of ``cls`` as a Jupyter mime bundle (e.g. a widget with a fallback)."""
    _MIMEBUNDLE[cls] = formatter


def register_explainer(cls: type[T], explainer: Callable[[T, int], Any]) -> None:
    """Explain row ``n`` of instances of ``cls`` with ``explainer(obj, n)``."""
    _EXPLAINERS[cls] = explainer


def html_for(obj: object) -> str | None:
    """``obj`` as HTML, or None when no formatter is registered for its type."""
    formatter = _find(_HTML, obj)
    return None if formatter is None else formatter(obj)


def mimebundle_for(obj: object) -> dict[str, Any] | None:
    """``obj`` as a mime bundle, or None when no formatter is registered for its type."""
    formatter = _find(_MIMEBUNDLE, obj)
    return None if formatter is None else formatter(obj)


def explain(obj: object, row: int) -> Any:
    """The registered explanation of row ``row`` of ``obj``.

    Raises:
        FeatureKitError: nothing registered an explainer for ``obj``'s type (the notebook
            layer does, and ``import featurekit`` imports it).
    """
    explainer = _find(_EXPLAINERS, obj)
    if explainer is None:
        raise FeatureKitError(
            f"no explainer is registered for {type(obj).__name__}: import featurekit "
            "(it registers the notebook layer's) before calling explain()."
        )
    return explainer(obj, row)
