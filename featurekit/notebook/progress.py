"""Progress bars: tqdm's notebook front end in Jupyter, plain text in a terminal, off on demand.

``tqdm.auto`` picks the front end. Bars are transient (``leave=False``): they show while a
step runs and leave no noise in logs or saved notebooks.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

#: Set to ``0`` (or ``false``/``no``/``off``) to turn every featurekit progress bar off.
ENV = "FEATUREKIT_PROGRESS"


def enabled(show: bool | None) -> bool:
    """Whether to show a bar: an explicit True/False wins; otherwise ``FEATUREKIT_PROGRESS``."""
    if show is not None:
        return show
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class Progress:
    """A step counter that draws a tqdm bar when shown, and does nothing otherwise.

    Example:
        >>> with Progress("materialize trips", total=3, show=True) as bar:
        ...     bar.step("computing")
    """

    def __init__(self, label: str, total: int | None, *, show: bool | None = True) -> None:
        self._bar: Any = None
        if enabled(show):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=label, leave=False, dynamic_ncols=True)

    @property
    def shown(self) -> bool:
        """Whether a bar is drawn."""
        return self._bar is not None

    def step(self, text: str, n: int = 1) -> None:
        """Advance by ``n`` and show ``text`` as the current step."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(n)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
