"""Damaged stored data, seen from a training-set rebuild.

A rebuild promises the recorded rows or a :class:`ReproducibilityError`. When a pinned
feature table or the stored labels were truncated, edited or deleted outside featurekit,
the storage layer raises a :class:`StorageError` naming the table and file; for a rebuild
that is a reproducibility failure, so it is reported as one (the storage error is kept as
``__cause__`` and its text is repeated).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from featurekit.core.errors import ReproducibilityError, StorageError

F = TypeVar("F", bound=Callable[..., Any])


def damaged_data_is_irreproducible(rebuild: F) -> F:
    """Decorate a rebuild ``(registry, manifest, ...)``: StorageError -> ReproducibilityError."""

    @functools.wraps(rebuild)
    def guarded(registry: Any, manifest: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return rebuild(registry, manifest, *args, **kwargs)
        except StorageError as err:
            raise ReproducibilityError(
                f"training set {_id_of(manifest)!r} cannot be rebuilt from the data it was "
                f"built from: {err}"
            ) from err

    return cast(F, guarded)


def _id_of(manifest: object) -> str:
    if isinstance(manifest, Mapping):
        return str(manifest.get("id"))
    return str(getattr(manifest, "id", "?"))
