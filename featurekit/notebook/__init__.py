"""featurekit in Jupyter: the lineage widget, PIT explain, rich displays and progress bars.

Importing this package is light: the widget (anywidget/ipywidgets) and IPython are
imported only when used. Most of it works without asking: ``store.lineage(...)``,
``ts.explain(row)``, a ``Store`` or a ``TrainingSet`` display richly by themselves.

Example:
    >>> import featurekit.notebook as fkn
    >>> fkn.LineageWidget(store.lineage("model:churn"))      # the widget, explicitly
    >>> fkn.export_html(store.lineage(), "lineage.html")     # offline, standalone page
    >>> fkn.view_card(driver_stats, store)                   # a view and its versions
    >>> fkn.enable()    # rich displays for FeatureView, ModelRecord and VersionRecord too
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from featurekit.notebook.display import export_html, graph_mimebundle
from featurekit.notebook.explain import Explanation, ViewExplanation, explain
from featurekit.notebook.lineage import node_details, widget_state
from featurekit.notebook.progress import Progress

if TYPE_CHECKING:
    from featurekit.core.authoring import FeatureView
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

    Store, TrainingSet, LineageGraph and explanations display richly without this.
    Also available as ``%load_ext featurekit.notebook``.
    """
    import importlib

    shell = importlib.import_module("IPython").get_ipython()
    if shell is not None:
        load_ipython_extension(shell)


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext featurekit.notebook``: see :func:`enable`."""
    from featurekit.core.authoring import FeatureView
    from featurekit.notebook import reprs
    from featurekit.offline.models import ModelRecord
    from featurekit.storage.registry import VersionRecord

    formatter = shell.display_formatter.formatters["text/html"]
    formatter.for_type(FeatureView, lambda v: reprs.view_html(v))
    formatter.for_type(ModelRecord, reprs.model_html)
    formatter.for_type(VersionRecord, reprs.version_html)
