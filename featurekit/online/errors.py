"""Errors of the online path (they extend the tree in :mod:`featurekit.core.errors`)."""

from __future__ import annotations

from featurekit.core.errors import DefinitionError, StorageError

__all__ = ["OnlineStoreError", "TooManyEntitiesError"]


class OnlineStoreError(StorageError):
    """The online store cannot be reached or used (e.g. Redis is down); retry or check it."""


class TooManyEntitiesError(DefinitionError):
    """A lookup asked for more entities than the server allows in one request."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit
