"""Errors of the online path (they extend the tree in :mod:`featurekit.core.errors`)."""

from __future__ import annotations

from featurekit.core.errors import DefinitionError, SchemaError, StorageError

__all__ = ["EntityError", "OnlineStoreError", "TooManyEntitiesError"]


class OnlineStoreError(StorageError):
    """The online store cannot be reached or used (e.g. Redis is down); retry or check it."""


class TooManyEntitiesError(DefinitionError):
    """A lookup asked for more entities than the server allows in one request."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class EntityError(SchemaError):
    """The entities of an online lookup are malformed; ``field`` names the column, if one.

    The HTTP server reports ``field`` as is, so clients can point at the bad input.
    """

    def __init__(self, message: str, *, field: str | None) -> None:
        super().__init__(message)
        self.field = field
