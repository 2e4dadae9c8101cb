"""featurekit in Jupyter: the lineage widget, PIT explain, rich displays and progress bars.

Importing this package is light: the widget (anywidget/ipywidgets) and IPython are
imported only when used. Most of it works without asking: ``store.lineage(...)``,
``ts.explain(row)``, a ``Store`` or a ``TrainingSet`` display richly by themselves.

Example:
    >>> import featurekit.notebook as fkn
    >>> fkn.LineageWidget(store.lineage("model:churn"))      # the widget, explicitly
    >>> fkn.export_html(store.lineage(), "lineage.html")     # offline, standalone page
    >>> fkn.view_card(driver_stats, store)                   # a view and its versions
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from featurekit.core.authoring import FeatureView
from featurekit.core.display import register_explainer, register_html, register_mimebundle
from featurekit.lineage.graph import LineageGraph
from featurekit.notebook import reprs
from featurekit.notebook.display import export_html, graph_mimebundle
from featurekit.notebook.explain import Explanation, ViewExplanation, explain
from featurekit.notebook.lineage import node_details, widget_state
from featurekit.notebook.progress import Progress
from featurekit.notebook.quality import drift_html, stats_html
from featurekit.offline.models import ModelRecord
from featurekit.offline.monitoring import ViewDrift
from featurekit.offline.quality import StatsTable
from featurekit.offline.training import TrainingSet
from featurekit.storage.registry import VersionRecord

if TYPE_CHECKING:
    from featurekit.notebook.widget import LineageWidget
    from featurekit.store import Store

__all__ = [
    "Explanation",
    "LineageWidget",
    "Progress",
    "ViewExplanation",
    "enable",
    "explain",
    "export_html",
    "graph_mimebundle",
    "load_ipython_extension",
    "node_details",
    "view_card",
    "widget_state",
]


def __getattr__(name: str) -> Any:
    """``LineageWidget`` imports anywidget, so it is loaded on first use."""
    if name == "LineageWidget":
        from featurekit.notebook.widget import LineageWidget

        return LineageWidget
    raise AttributeError(f"module 'featurekit.notebook' has no attribute {name!r}")


def _attach() -> None:
    """Give the lower layers' objects their notebook displays and ``TrainingSet.explain``.

    Those classes cannot import this layer, so they look their display up in
    :mod:`featurekit.core.display`; importing this package (``import featurekit`` does)
    fills that registry in.
    """
    register_html(FeatureView, lambda view: reprs.view_html(view))
    register_html(VersionRecord, reprs.version_html)
    register_html(ModelRecord, reprs.model_html)
    register_html(TrainingSet, reprs.training_set_html)
    register_mimebundle(LineageGraph, graph_mimebundle)
    register_explainer(TrainingSet, explain)
    register_html(StatsTable, stats_html)
    register_html(ViewDrift, drift_html)


_attach()


class Card:
    """Any HTML fragment that Jupyter displays as HTML (``_repr_html_``)."""

    def __init__(self, html: str, text: str) -> None:
        self.html = html
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def view_card(view: FeatureView, store: Store | None = None) -> Card:
    """A feature view's signature, features with dtypes and (given a store) version history.

    Example:
        >>> view_card(driver_stats, store)
    """
    from featurekit.notebook.reprs import view_html

    return Card(view_html(view, store), repr(view))


def enable() -> None:
    """Register rich HTML displays for FeatureView, ModelRecord and VersionRecord in IPython.

    They display richly without this (their ``_repr_html_`` finds the formatters this
    package registers); it stays so that notebooks that call it keep working. Also
    available as ``%load_ext featurekit.notebook``.
    """
    import importlib

    shell = importlib.import_module("IPython").get_ipython()
    if shell is not None:
        load_ipython_extension(shell)


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext featurekit.notebook``: see :func:`enable`."""
    formatter = shell.display_formatter.formatters["text/html"]
    formatter.for_type(FeatureView, lambda v: reprs.view_html(v))
    formatter.for_type(ModelRecord, reprs.model_html)
    formatter.for_type(VersionRecord, reprs.version_html)
