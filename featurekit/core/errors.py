"""Every error featurekit raises to users.

The tree (catch ``FeatureKitError`` to catch them all)::

    FeatureKitError
    ├── DefinitionError        a view, entity, source or feature reference is malformed
    │   ├── SqlError           a SQL view does not parse, or names unknown tables/columns
    │   └── TooManyEntitiesError  one online lookup asks for more entities than allowed
    ├── VersionError           a definition cannot be fingerprinted (no source code)
    ├── SchemaError            data has missing columns or wrong dtypes
    │   └── EntityError        the entities of an online lookup are malformed (``field`` names the column)
    ├── UserCodeError          a user's view function raised; the original is ``__cause__``
    ├── StorageError           the store root or a table is unusable (not a store, newer format)
    │   └── OnlineStoreError   the online store (SQLite file, Redis) cannot be reached or used
    ├── NotFoundError          an unknown view, version, feature or training set
    ├── ReproducibilityError   a rebuilt training set differs from its recorded hash
    └── ValidationError        data failed an error-level check (``fk.Check``)

``OnlineStoreError``, ``TooManyEntitiesError`` and ``EntityError`` live in :mod:`featurekit.online.errors`
(``fk.OnlineStoreError``; ``featurekit.online.TooManyEntitiesError``, with its ``limit``).
The same mistake raises the same class wherever it is caught: an invalid argument value
(``point_in_time``, a name, a duration) is a ``DefinitionError`` in the kernel as in
``Store``, and an unknown name is a ``NotFoundError``.

Warnings derive from ``FeatureKitWarning`` (a ``UserWarning``); ``LeakageWarning`` says a
view's event times may be earlier than the data behind them.

Messages name the offending object, say expected vs actual, and suggest a fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from featurekit.core.checks import CheckResult

__all__ = [
    "DefinitionError",
    "FeatureKitError",
    "FeatureKitWarning",
    "LeakageWarning",
    "NotFoundError",
    "ReproducibilityError",
    "SchemaError",
    "SqlError",
    "StorageError",
    "UserCodeError",
    "ValidationError",
    "VersionError",
    "did_you_mean",
]


class FeatureKitError(Exception):
    """Base of every error featurekit raises on purpose."""


class DefinitionError(FeatureKitError):
    """A definition (entity, source, view, aggregation, feature reference) is malformed."""


class SqlError(DefinitionError):
    """A SQL view does not parse or names unknown tables or columns.

    ``line`` and ``col`` point into the SQL text when known (1-based).
    """

    def __init__(self, message: str, *, line: int | None = None, col: int | None = None):
        super().__init__(message)
        self.line = line
        self.col = col


class VersionError(FeatureKitError):
    """A definition cannot be fingerprinted, so it cannot be versioned safely."""


class SchemaError(FeatureKitError):
    """Data is missing a column or has a column of the wrong dtype."""


class UserCodeError(FeatureKitError):
    """User code (a view function) raised. The original exception is ``__cause__``."""


class StorageError(FeatureKitError):
    """The store root, registry or a Delta table cannot be used as asked."""


class NotFoundError(FeatureKitError):
    """A named view, version, feature, training set or model does not exist."""


class ReproducibilityError(FeatureKitError):
    """A training set rebuilt from its manifest differs from what was recorded."""


class ValidationError(FeatureKitError):
    """Data failed an error-level check, so it must not be written.

    The message lists each failed check with its failing count and sample rows;
    ``failures`` holds the same as typed results (``featurekit.core.checks.CheckResult``).
    """

    def __init__(self, message: str, *, failures: Sequence[CheckResult] = ()):
        super().__init__(message)
        self.failures = tuple(failures)


class FeatureKitWarning(UserWarning):
    """Something worth knowing that is not an error (e.g. rows dropped for null timestamps)."""


class LeakageWarning(FeatureKitWarning):
    """A view's event times may be earlier than the data behind them (a future leak)."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest candidate, or a list of known names."""
    known = sorted(set(candidates))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if close:
        return f" Did you mean {close[0]!r}?"
    if not known:
        return " Nothing of that kind exists yet."
    shown = ", ".join(repr(k) for k in known[:10])
    more = f" (and {len(known) - 10} more)" if len(known) > 10 else ""
    return f" Known: {shown}{more}."
